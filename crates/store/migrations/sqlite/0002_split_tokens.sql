-- cardgate schema v2 (SQLite). Keep in step with ../postgres/0002_split_tokens.sql.
-- Opaque and card tokens are looked up by their public, time-ordered id (the token's first
-- 16 bytes) and verified against the digest of the whole token, so a commit of many new
-- tokens appends to the end of one b-tree instead of dirtying a random index page per token.
-- Tokens minted before this version stop working (they live an hour at most).
DROP TABLE access_tokens;
CREATE TABLE access_tokens (
    id BLOB PRIMARY KEY,
    hash BLOB NOT NULL,
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    environment TEXT NOT NULL,
    scope TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked BOOLEAN NOT NULL
) WITHOUT ROWID;

DROP TABLE card_tokens;
CREATE TABLE card_tokens (
    id BLOB PRIMARY KEY,
    hash BLOB NOT NULL,
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
) WITHOUT ROWID;

-- The audit sequence number becomes the rowid itself: one b-tree instead of a table and a
-- separate index on `seq`.
CREATE TABLE audit_events_v2 (
    seq INTEGER PRIMARY KEY,
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
INSERT INTO audit_events_v2 (seq, ts_ms, tenant_id, environment, actor, action, outcome, subject, details, prev_hash, hash)
    SELECT seq, ts_ms, tenant_id, environment, actor, action, outcome, subject, details, prev_hash, hash FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_v2 RENAME TO audit_events;
