-- cardgate schema v2 (PostgreSQL). Keep in step with ../sqlite/0002_split_tokens.sql.
-- Opaque and card tokens are looked up by their public, time-ordered id (the token's first
-- 16 bytes) and verified against the digest of the whole token, so new tokens append to the
-- right edge of the primary-key index instead of landing on a random page of it. Card tokens
-- leave room on each page so counting a use is a HOT update.
-- Tokens minted before this version stop working (they live an hour at most).
DROP TABLE access_tokens;
CREATE TABLE access_tokens (
    id BYTEA PRIMARY KEY,
    hash BYTEA NOT NULL,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    scope TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL
);

DROP TABLE card_tokens;
CREATE TABLE card_tokens (
    id BYTEA PRIMARY KEY,
    hash BYTEA NOT NULL,
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
) WITH (fillfactor = 80);
