-- cardgate schema v10 (PostgreSQL). Keep in step with ../sqlite/0010_sdk_tokens.sql.
-- BankEzy (SPEC §4.5). Each tenant has, per environment, a static P-256 server key whose
-- public half is the `serverPubKey` of its SDK tokens; the private scalar is sealed under the
-- master key. Rotation adds a version; older versions stay, for the tokens issued with them.
CREATE TABLE sdk_server_keys (
    tenant_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    version BIGINT NOT NULL,
    private_enc BYTEA NOT NULL,
    public_jwk TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, environment, version)
);
-- SDK tokens: stored as the digest of the token (split token, as card tokens), with the
-- account they reach, the SDK's public key card data is encrypted to, and the server key
-- version. `reference_key` is the digest of the client and its referenceId (the claim-once
-- guard keeps it unique per client), by which the partner invalidates the token.
CREATE TABLE sdk_tokens (
    id BYTEA PRIMARY KEY,
    hash BYTEA NOT NULL,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    reference_key BYTEA NOT NULL,
    account_id TEXT NOT NULL,
    sdk_public_jwk TEXT NOT NULL,
    server_key_version BIGINT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL
);
CREATE INDEX sdk_tokens_reference ON sdk_tokens (reference_key);
