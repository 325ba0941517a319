-- cardgate schema v6 (PostgreSQL). Keep in step with ../sqlite/0006_claims.sql.
-- Claim-once keys (an idempotency key, a request's reference id, a DPoP proof's jti): the
-- first claimant of (namespace, key) holds it until it expires, and stores what a repeat is
-- answered with. `key` is a digest of what was claimed, so no presented value is stored;
-- `fingerprint` tells a retry of the same request from another request with the same key;
-- `value` is what the first claimant stored (sealed by the caller if it holds a secret).
CREATE TABLE claims (
    namespace TEXT NOT NULL,
    key BYTEA NOT NULL,
    fingerprint BYTEA NOT NULL,
    value BYTEA,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (namespace, key)
);
-- Expired claims are deleted oldest first, a few at a time.
CREATE INDEX claims_expiry ON claims (expires_at);
