-- cardgate schema v3 (PostgreSQL). Keep in step with ../sqlite/0003_audit_chains.sql.
-- The audit log becomes a few independent hash chains (chain, seq), each with its own head
-- row, so that writers committing in parallel (of one replica or several) never queue behind
-- one another's append and WAL flush. Existing events form chain 1 unchanged.
ALTER TABLE audit_events ADD COLUMN chain BIGINT NOT NULL DEFAULT 1;
ALTER TABLE audit_events ALTER COLUMN chain DROP DEFAULT;
ALTER TABLE audit_events DROP CONSTRAINT audit_events_pkey;
ALTER TABLE audit_events ADD PRIMARY KEY (chain, seq);
INSERT INTO audit_head (id, seq, hash) VALUES
    (2, 0, '0000000000000000000000000000000000000000000000000000000000000000'),
    (3, 0, '0000000000000000000000000000000000000000000000000000000000000000'),
    (4, 0, '0000000000000000000000000000000000000000000000000000000000000000');
