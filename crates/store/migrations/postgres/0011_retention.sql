-- cardgate schema v11 (PostgreSQL). Keep in step with ../sqlite/0011_retention.sql.
-- Retention: expired rows are deleted by the purger a grace period after they expire, oldest
-- first, a small batch per transaction; these indexes find them without scanning a table.
-- (Claims have theirs since 0006.)
CREATE INDEX IF NOT EXISTS access_tokens_expiry ON access_tokens (expires_at);
CREATE INDEX IF NOT EXISTS card_tokens_expiry ON card_tokens (expires_at);
CREATE INDEX IF NOT EXISTS mfa_sessions_expiry ON mfa_sessions (expires_at);
CREATE INDEX IF NOT EXISTS revocations_expiry ON revocations (expires_at);

-- Marks on each audit chain, each an HMAC under the audit key (`mac`) over what it says, so
-- only a holder of the master key can move one: `exported` is the last event `cardgate audit
-- export` wrote out (and flushed); `pruned` is the last event deleted after it was exported
-- and had outlived the audit retention: the chain's verifiable start from then on.
CREATE TABLE audit_marks (
    kind TEXT NOT NULL CHECK (kind IN ('exported', 'pruned')),
    chain BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    ts_ms BIGINT NOT NULL,
    mac TEXT NOT NULL,
    PRIMARY KEY (kind, chain)
);
