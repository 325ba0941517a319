-- cardgate schema v4 (SQLite). Keep in step with ../postgres/0004_mfa_lockout.sql.
-- Step-up state per cardholder: the last TOTP time step accepted (a code is accepted once per
-- person, RFC 6238 §5.2) and the failures that lock the cardholder's step-up for a while.
CREATE TABLE mfa_persons (
    tenant_id TEXT NOT NULL,
    person_id TEXT NOT NULL,
    failures BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT NOT NULL,
    totp_step BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, person_id)
);
-- Tokens a client was issued before this moment (ms) are refused: set when it is disabled.
ALTER TABLE clients ADD COLUMN tokens_not_before BIGINT NOT NULL DEFAULT 0;
