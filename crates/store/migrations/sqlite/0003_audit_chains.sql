-- cardgate schema v3 (SQLite). Keep in step with ../postgres/0003_audit_chains.sql.
-- The audit log becomes a few independent hash chains (chain, seq), each with its own head
-- row, so that writers committing in parallel never queue behind one another's append.
-- Existing events form chain 1 unchanged. SQLite has one writer and uses chain 1 only.
CREATE TABLE audit_events_v3 (
    chain INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    ts_ms BIGINT NOT NULL,
    tenant_id TEXT,
    environment TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (chain, seq)
) WITHOUT ROWID;
INSERT INTO audit_events_v3 (chain, seq, ts_ms, tenant_id, environment, actor, action, outcome, subject, details, prev_hash, hash)
    SELECT 1, seq, ts_ms, tenant_id, environment, actor, action, outcome, subject, details, prev_hash, hash FROM audit_events;
DROP TABLE audit_events;
ALTER TABLE audit_events_v3 RENAME TO audit_events;
INSERT INTO audit_head (id, seq, hash) VALUES
    (2, 0, '0000000000000000000000000000000000000000000000000000000000000000'),
    (3, 0, '0000000000000000000000000000000000000000000000000000000000000000'),
    (4, 0, '0000000000000000000000000000000000000000000000000000000000000000');
