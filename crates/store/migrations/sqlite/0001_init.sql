-- cardgate schema v1 (SQLite). Keep in step with ../postgres/0001_init.sql.
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('config_version', '0');

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    settings TEXT NOT NULL,
    webhook_secret_enc BLOB,
    updated_at BIGINT NOT NULL
);

CREATE TABLE data_keys (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    version BIGINT NOT NULL,
    key_enc BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, version)
);

CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    environment TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    api_key_hash BLOB UNIQUE,
    sdk_api_key_hash BLOB,
    payload_key_enc BLOB,
    disabled BOOLEAN NOT NULL,
    settings TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE persons (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    profile TEXT NOT NULL,
    totp_secret_enc BLOB,
    key_version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE accounts (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    account_number TEXT NOT NULL,
    person_ids TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE cards (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    person_id TEXT NOT NULL,
    status TEXT NOT NULL,
    wallet_eligible BOOLEAN NOT NULL,
    last4 TEXT NOT NULL,
    vault BLOB NOT NULL,
    key_version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

CREATE TABLE access_tokens (
    hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    scope TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL
);

CREATE TABLE card_tokens (
    hash BLOB PRIMARY KEY,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    card_id TEXT,
    person_id TEXT,
    operations TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    max_uses BIGINT,
    uses_made BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL
);

CREATE TABLE revocations (
    token_id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX revocations_created ON revocations (created_at);

CREATE TABLE mfa_sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    person_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    channel TEXT NOT NULL,
    code_hash BLOB,
    attempts BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    consumed BOOLEAN NOT NULL
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    alg TEXT NOT NULL,
    private_enc BLOB NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    retired_at BIGINT
);

CREATE TABLE audit_events (
    seq BIGINT PRIMARY KEY,
    ts_ms BIGINT NOT NULL,
    tenant_id TEXT,
    environment TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);

CREATE TABLE audit_head (id BIGINT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');
