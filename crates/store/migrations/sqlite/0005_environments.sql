-- cardgate schema v5 (SQLite). Keep in step with ../postgres/0005_environments.sql.
-- Persons, accounts, cards and data keys record the environment they belong to, as clients,
-- tokens and MFA sessions already do; an instance reads and changes only its own
-- environment's. Ids stay unique per tenant across environments (an import naming another
-- environment's id is refused), and an object's environment never changes.
--
-- Existing rows go to production when a production card token or MFA session refers to them,
-- or to an object they are linked to (a card's account and cardholder, an account's holders,
-- transitively), or when every client of their tenant is a production client; otherwise to
-- sandbox. A card, its cardholder and its account therefore always share one environment.
-- A tenant's data key rows are copied into every environment its persons, accounts and cards
-- ended up in (sandbox if it has none): the sealed bytes are unchanged, their associated data
-- names no environment.

CREATE TABLE migrate_production (
    kind TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (kind, tenant_id, id)
);

WITH RECURSIVE
    links (kind, tenant_id, id, to_kind, to_id) AS (
        SELECT 'card', tenant_id, id, 'account', account_id FROM cards
        UNION ALL SELECT 'account', tenant_id, account_id, 'card', id FROM cards
        UNION ALL SELECT 'card', tenant_id, id, 'person', person_id FROM cards
        UNION ALL SELECT 'person', tenant_id, person_id, 'card', id FROM cards
        UNION ALL SELECT 'account', a.tenant_id, a.id, 'person', h.value
            FROM accounts a, json_each(a.person_ids) h
        UNION ALL SELECT 'person', a.tenant_id, h.value, 'account', a.id
            FROM accounts a, json_each(a.person_ids) h
    ),
    production_tenants (tenant_id) AS (
        SELECT tenant_id FROM clients WHERE environment = 'production'
        EXCEPT SELECT tenant_id FROM clients WHERE environment <> 'production'
    ),
    seeds (kind, tenant_id, id) AS (
        SELECT 'card', tenant_id, card_id FROM card_tokens
            WHERE environment = 'production' AND card_id IS NOT NULL
        UNION SELECT 'person', tenant_id, person_id FROM card_tokens
            WHERE environment = 'production' AND person_id IS NOT NULL
        UNION SELECT 'person', tenant_id, person_id FROM mfa_sessions
            WHERE environment = 'production'
        UNION SELECT 'card', tenant_id, id FROM cards
            WHERE tenant_id IN (SELECT tenant_id FROM production_tenants)
        UNION SELECT 'account', tenant_id, id FROM accounts
            WHERE tenant_id IN (SELECT tenant_id FROM production_tenants)
        UNION SELECT 'person', tenant_id, id FROM persons
            WHERE tenant_id IN (SELECT tenant_id FROM production_tenants)
    ),
    production (kind, tenant_id, id) AS (
        SELECT kind, tenant_id, id FROM seeds
        UNION
        SELECT l.to_kind, l.tenant_id, l.to_id
            FROM links l JOIN production p
            ON p.kind = l.kind AND p.tenant_id = l.tenant_id AND p.id = l.id
    )
INSERT INTO migrate_production (kind, tenant_id, id) SELECT kind, tenant_id, id FROM production;

-- The tables are rebuilt so that `environment` has no default: every write names it.
CREATE TABLE persons_v5 (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    environment TEXT NOT NULL CHECK (environment IN ('sandbox', 'production')),
    profile TEXT NOT NULL,
    totp_secret_enc BLOB,
    key_version BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO persons_v5 (tenant_id, id, environment, profile, totp_secret_enc, key_version)
    SELECT o.tenant_id, o.id,
        CASE WHEN EXISTS (SELECT 1 FROM migrate_production m
                          WHERE m.kind = 'person' AND m.tenant_id = o.tenant_id AND m.id = o.id)
             THEN 'production' ELSE 'sandbox' END,
        o.profile, o.totp_secret_enc, o.key_version
    FROM persons o;
DROP TABLE persons;
ALTER TABLE persons_v5 RENAME TO persons;

CREATE TABLE accounts_v5 (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    environment TEXT NOT NULL CHECK (environment IN ('sandbox', 'production')),
    account_number TEXT NOT NULL,
    person_ids TEXT NOT NULL,
    PRIMARY KEY (tenant_id, id)
);
INSERT INTO accounts_v5 (tenant_id, id, environment, account_number, person_ids)
    SELECT o.tenant_id, o.id,
        CASE WHEN EXISTS (SELECT 1 FROM migrate_production m
                          WHERE m.kind = 'account' AND m.tenant_id = o.tenant_id AND m.id = o.id)
             THEN 'production' ELSE 'sandbox' END,
        o.account_number, o.person_ids
    FROM accounts o;
DROP TABLE accounts;
ALTER TABLE accounts_v5 RENAME TO accounts;

CREATE TABLE cards_v5 (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    id TEXT NOT NULL,
    environment TEXT NOT NULL CHECK (environment IN ('sandbox', 'production')),
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
INSERT INTO cards_v5 (tenant_id, id, environment, account_id, person_id, status, wallet_eligible,
                      last4, vault, key_version, updated_at)
    SELECT o.tenant_id, o.id,
        CASE WHEN EXISTS (SELECT 1 FROM migrate_production m
                          WHERE m.kind = 'card' AND m.tenant_id = o.tenant_id AND m.id = o.id)
             THEN 'production' ELSE 'sandbox' END,
        o.account_id, o.person_id, o.status, o.wallet_eligible, o.last4, o.vault, o.key_version,
        o.updated_at
    FROM cards o;
DROP TABLE cards;
ALTER TABLE cards_v5 RENAME TO cards;

DROP TABLE migrate_production;

-- Data keys are per (tenant, environment, version).
CREATE TABLE data_keys_v5 (
    tenant_id TEXT NOT NULL REFERENCES tenants(id),
    environment TEXT NOT NULL CHECK (environment IN ('sandbox', 'production')),
    version BIGINT NOT NULL,
    key_enc BLOB NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant_id, environment, version)
);
WITH
    used (tenant_id, environment) AS (
        SELECT tenant_id, environment FROM persons
        UNION SELECT tenant_id, environment FROM accounts
        UNION SELECT tenant_id, environment FROM cards
    ),
    homes (tenant_id, environment) AS (
        SELECT tenant_id, environment FROM used
        UNION SELECT id, 'sandbox' FROM tenants WHERE id NOT IN (SELECT tenant_id FROM used)
    )
INSERT INTO data_keys_v5 (tenant_id, environment, version, key_enc, created_at)
    SELECT d.tenant_id, h.environment, d.version, d.key_enc, d.created_at
    FROM data_keys d JOIN homes h ON h.tenant_id = d.tenant_id;
DROP TABLE data_keys;
ALTER TABLE data_keys_v5 RENAME TO data_keys;
