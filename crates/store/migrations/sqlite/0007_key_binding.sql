-- cardgate schema v7 (SQLite). Keep in step with ../postgres/0007_key_binding.sql.
-- A token's key binding (`cnf.jkt`, RFC 9449 §6): the RFC 7638 thumbprint of the public key
-- its DPoP proofs must be signed with; NULL for a token bound to no key.
ALTER TABLE access_tokens ADD COLUMN cnf_jkt TEXT;
ALTER TABLE card_tokens ADD COLUMN cnf_jkt TEXT;
