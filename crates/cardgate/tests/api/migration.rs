//! Migration 0005 on a database of schema version 3 (made by the store's own migration files
//! 1–3, then filled with rows): persons, accounts, cards and data keys go to the environment
//! of the tokens and MFA sessions that refer to them. Run on SQLite here and on PostgreSQL by
//! the PostgreSQL suite.

use crate::environments::{acme, mint, reveal, unknown_id};
use crate::helpers::*;
use cardgate_core::{CardId, Environment, PersonId, TenantId};
use serde_json::json;

/// Migrations 1–3, as the store holds them: running these makes a database of schema version 3.
fn files_v3(postgres: bool) -> [(i64, &'static str, &'static str); 3] {
    if postgres {
        [
            (
                1,
                "init",
                include_str!("../../../store/migrations/postgres/0001_init.sql"),
            ),
            (
                2,
                "split tokens",
                include_str!("../../../store/migrations/postgres/0002_split_tokens.sql"),
            ),
            (
                3,
                "audit chains",
                include_str!("../../../store/migrations/postgres/0003_audit_chains.sql"),
            ),
        ]
    } else {
        [
            (
                1,
                "init",
                include_str!("../../../store/migrations/sqlite/0001_init.sql"),
            ),
            (
                2,
                "split tokens",
                include_str!("../../../store/migrations/sqlite/0002_split_tokens.sql"),
            ),
            (
                3,
                "audit chains",
                include_str!("../../../store/migrations/sqlite/0003_audit_chains.sql"),
            ),
        ]
    }
}

/// sqlx's migrator over [`files_v3`] of PostgreSQL.
fn migrator_v3_postgres() -> sqlx::migrate::Migrator {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    use std::borrow::Cow;
    Migrator {
        migrations: Cow::Owned(
            files_v3(true)
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

/// A bound value of an old row.
enum V {
    T(String),
    I(i64),
    B(Vec<u8>),
    F(bool),
}

fn t(s: impl Into<String>) -> V {
    V::T(s.into())
}

/// What the old database holds, and the tokens minted in it.
struct OldDatabase {
    master_key: String,
    rows: Vec<(&'static str, Vec<V>)>,
    sandbox_token: String,
    production_token: String,
}

const OLD_SB: (&str, &str) = ("old-sandbox", "old-sandbox-secret-0123456789abcdefghijklmn");
const OLD_PR: (&str, &str) = ("old-prod", "old-prod-secret-0123456789abcdefghijklmnopq");
const SOLO_PR: (&str, &str) = ("solo-prod", "solo-prod-secret-0123456789abcdefghijklmnop");
const P_SB: &str = "5ab0c0de-0000-4000-8000-000000000001";
const P_MFA: &str = "5ab0c0de-0000-4000-8000-000000000002";
const P_CARD: &str = "5ab0c0de-0000-4000-8000-000000000003";
const P_BOTH: &str = "5ab0c0de-0000-4000-8000-000000000004";
const P_SOLO: &str = "5ab0c0de-0000-4000-8000-000000000005";
const C_SB: &str = "c0ffee01-0000-4000-8000-000000000001";
const C_NONE: &str = "c0ffee01-0000-4000-8000-000000000002";
const C_PR: &str = "c0ffee01-0000-4000-8000-000000000003";
const C_PR2: &str = "c0ffee01-0000-4000-8000-000000000004";
const C_BOTH: &str = "c0ffee01-0000-4000-8000-000000000005";
const C_SOLO: &str = "c0ffee01-0000-4000-8000-000000000006";
/// The PAN of each old card (all different, all passing Luhn).
const OLD_PANS: [(&str, &str); 6] = [
    (C_SB, "4111111111111111"),
    (C_NONE, "5555555555554444"),
    (C_PR, "4012888888881881"),
    (C_PR2, "6011111111111117"),
    (C_BOTH, "5105105105105100"),
    (C_SOLO, "4242424242424242"),
];

fn old_pan(card: &str) -> &'static str {
    OLD_PANS.iter().find(|(c, _)| *c == card).unwrap().1
}

/// A schema-3 database's rows: tenant acme with a sandbox and a production client, and tenant
/// solo with a production client only. acme's objects:
/// - C_SB (account A_SB, cardholder P_SB) has a sandbox card token; C_NONE (same account and
///   cardholder) none;
/// - C_PR (A_PR, P_CARD) has a production card token; C_PR2 (same account and cardholder) none;
/// - C_BOTH (A_BOTH, P_BOTH) has card tokens of both environments;
/// - P_MFA holds nothing but has a production MFA session.
///
/// solo has C_SOLO (A_SOLO, P_SOLO), never used.
fn old_database(now_ms: i64) -> OldDatabase {
    use cardgate_core::cards::CardSecrets;
    use cardgate_core::model::{ClientSettings, PersonProfile, TenantSettings};
    use cardgate_core::secret::SecretHash;
    use cardgate_core::tokens::{mint_token, CARD_TOKEN_PREFIX};
    use cardgate_jose::aead::AeadKey;
    use cardgate_jose::vault::{aad, MasterKey};

    let master = MasterKey::generate().unwrap();
    let mut rows: Vec<(&'static str, Vec<V>)> = Vec::new();
    let mut tokens = Vec::new();
    let ym = cardgate_core::import::year_month(now_ms);
    let tenants: [(&str, Vec<(&str, &str, &str)>); 2] = [
        (
            "acme",
            vec![
                (OLD_SB.0, OLD_SB.1, "sandbox"),
                (OLD_PR.0, OLD_PR.1, "production"),
            ],
        ),
        ("solo", vec![(SOLO_PR.0, SOLO_PR.1, "production")]),
    ];
    let mut keys = std::collections::HashMap::new();
    for (tenant, clients) in tenants {
        let tid = TenantId::parse(tenant).unwrap();
        let settings = TenantSettings {
            name: tenant.into(),
            financial_institution_id: None,
            widget_origins: vec![],
            mfa_required_for: vec![],
            webhook_url: None,
            rate_limit_per_minute: 600,
            card_token_ttl_seconds: 300,
            card_token_max_ttl_seconds: 3600,
            card_token_max_uses: 100,
            mfa_lockout: Default::default(),
            widget_token_ttl_seconds: None,
            dpop_nonce_required: false,
            sdk_token_ttl_seconds: None,
        };
        rows.push((
            "INSERT INTO tenants (id, settings, updated_at) VALUES ($1, $2, 0)",
            vec![t(tenant), t(serde_json::to_string(&settings).unwrap())],
        ));
        let key = AeadKey::generate().unwrap();
        rows.push((
            "INSERT INTO data_keys (tenant_id, version, key_enc, created_at) VALUES ($1, 1, $2, $3)",
            vec![
                t(tenant),
                V::B(master.seal(&aad::data_key(tid.as_str(), 1), key.bytes()).unwrap()),
                V::I(now_ms),
            ],
        ));
        keys.insert(tenant, key);
        for (id, secret, env) in clients {
            let settings = ClientSettings {
                scopes: cardgate_core::scope::ScopeSet::parse("cards:read:any").unwrap(),
                person_id: None,
                encryption_jwk: None,
                access_token_format: cardgate_core::AccessTokenFormat::Jwt,
            };
            rows.push((
                "INSERT INTO clients (id, tenant_id, environment, secret_hash, disabled, settings, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, 0)",
                vec![
                    t(id),
                    t(tenant),
                    t(env),
                    V::B(SecretHash::of(secret.as_bytes()).0.to_vec()),
                    V::F(false),
                    t(serde_json::to_string(&settings).unwrap()),
                ],
            ));
        }
    }
    let persons = [
        ("acme", P_SB, "Sam", "Sandbox"),
        ("acme", P_MFA, "Mia", "Mfa"),
        ("acme", P_CARD, "Pat", "Prod"),
        ("acme", P_BOTH, "Bo", "Both"),
        ("solo", P_SOLO, "Sol", "Solo"),
    ];
    for (tenant, id, first, last) in persons {
        let profile = PersonProfile {
            first_name: first.into(),
            last_name: last.into(),
            email: None,
            isd_code: None,
            mobile_number: None,
            dob: None,
        };
        let aad = aad::totp(
            TenantId::parse(tenant).unwrap().as_str(),
            &PersonId::parse(id).unwrap().to_string(),
            1,
        );
        rows.push((
            "INSERT INTO persons (tenant_id, id, profile, totp_secret_enc, key_version) VALUES ($1, $2, $3, $4, 1)",
            vec![
                t(tenant),
                t(id),
                t(serde_json::to_string(&profile).unwrap()),
                V::B(keys[tenant].seal(aad.as_bytes(), TOTP_KEY).unwrap()),
            ],
        ));
    }
    for (tenant, id, holder) in [
        ("acme", "A_SB", P_SB),
        ("acme", "A_PR", P_CARD),
        ("acme", "A_BOTH", P_BOTH),
        ("solo", "A_SOLO", P_SOLO),
    ] {
        rows.push((
            "INSERT INTO accounts (tenant_id, id, account_number, person_ids) VALUES ($1, $2, '42', $3)",
            vec![t(tenant), t(id), t(json!([holder]).to_string())],
        ));
    }
    for (tenant, id, account, holder) in [
        ("acme", C_SB, "A_SB", P_SB),
        ("acme", C_NONE, "A_SB", P_SB),
        ("acme", C_PR, "A_PR", P_CARD),
        ("acme", C_PR2, "A_PR", P_CARD),
        ("acme", C_BOTH, "A_BOTH", P_BOTH),
        ("solo", C_SOLO, "A_SOLO", P_SOLO),
    ] {
        let secrets = CardSecrets::parse(old_pan(id), "123", "2031-01", None, ym).unwrap();
        let aad = aad::card(
            TenantId::parse(tenant).unwrap().as_str(),
            &CardId::parse(id).unwrap().to_string(),
            1,
        );
        let vault = keys[tenant]
            .seal(aad.as_bytes(), &serde_json::to_vec(&secrets).unwrap())
            .unwrap();
        rows.push((
            "INSERT INTO cards (tenant_id, id, account_id, person_id, status, wallet_eligible, last4, vault, key_version, updated_at) \
             VALUES ($1, $2, $3, $4, 'ACTIVE', $5, $6, $7, 1, 0)",
            vec![
                t(tenant),
                t(id),
                t(account),
                t(holder),
                V::F(true),
                t(&old_pan(id)[old_pan(id).len() - 4..]),
                V::B(vault),
            ],
        ));
    }
    for (client, env, card, holder) in [
        (OLD_SB.0, "sandbox", C_SB, P_SB),
        (OLD_PR.0, "production", C_PR, P_CARD),
        (OLD_SB.0, "sandbox", C_BOTH, P_BOTH),
        (OLD_PR.0, "production", C_BOTH, P_BOTH),
    ] {
        let minted = mint_token(CARD_TOKEN_PREFIX, now_ms).unwrap();
        tokens.push(minted.token.expose().to_string());
        rows.push((
            "INSERT INTO card_tokens (id, hash, kind, tenant_id, client_id, environment, card_id, person_id, \
             operations, issued_at, expires_at, uses_made, revoked) \
             VALUES ($1, $2, 'card_token', 'acme', $3, $4, $5, $6, 'VIEW_CARD', $7, $8, 0, $9)",
            vec![
                V::B(minted.id.0.to_vec()),
                V::B(minted.hash.0.to_vec()),
                t(client),
                t(env),
                t(card),
                t(holder),
                V::I(now_ms),
                V::I(now_ms + 300_000),
                V::F(false),
            ],
        ));
    }
    rows.push((
        "INSERT INTO mfa_sessions (id, tenant_id, person_id, environment, channel, attempts, created_at, expires_at, consumed) \
         VALUES ($1, 'acme', $2, 'production', 'totp', 0, $3, $4, $5)",
        vec![
            t(unknown_id()),
            t(P_MFA),
            V::I(now_ms),
            V::I(now_ms + 300_000),
            V::F(false),
        ],
    ));
    OldDatabase {
        master_key: master.to_base64(),
        rows,
        sandbox_token: tokens[0].clone(),
        production_token: tokens[1].clone(),
    }
}

/// Inserts `rows` into the SQLite database `db` (each statement's `$n` in order).
fn insert_sqlite_rows(db: &rusqlite::Connection, rows: Vec<(&'static str, Vec<V>)>) {
    for (sql, args) in rows {
        let params: Vec<&dyn rusqlite::ToSql> = args
            .iter()
            .map(|a| match a {
                V::T(v) => v as &dyn rusqlite::ToSql,
                V::I(v) => v as &dyn rusqlite::ToSql,
                V::B(v) => v as &dyn rusqlite::ToSql,
                V::F(v) => v as &dyn rusqlite::ToSql,
            })
            .collect();
        db.execute(sql, params.as_slice()).unwrap();
    }
}

macro_rules! insert_rows {
    ($conn:expr, $rows:expr) => {
        for (sql, args) in $rows {
            let mut q = sqlx::query(sql);
            for a in args {
                q = match a {
                    V::T(v) => q.bind(v),
                    V::I(v) => q.bind(v),
                    V::B(v) => q.bind(v),
                    V::F(v) => q.bind(v),
                };
            }
            q.execute(&mut $conn).await.unwrap();
        }
    };
}

/// Creates a schema-3 database at `url` (SQLite or PostgreSQL) holding [`old_database`]'s
/// rows; returns its master key and the old sandbox and production card tokens.
async fn create_version_3_database(url: &str) -> OldDatabase {
    use sqlx::Connection;
    let old = old_database(cardgate_app::Clock::default().now_ms());
    let OldDatabase {
        master_key,
        rows,
        sandbox_token,
        production_token,
    } = old;
    if url.starts_with("sqlite:") {
        let db = crate::store_suite::migrate_as_sqlx_did(url, &files_v3(false));
        insert_sqlite_rows(&db, rows);
    } else {
        let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
        migrator_v3_postgres().run(&mut conn).await.unwrap();
        insert_rows!(conn, rows);
        conn.close().await.unwrap();
    }
    OldDatabase {
        master_key,
        rows: Vec::new(),
        sandbox_token,
        production_token,
    }
}

/// Creates a schema-3 database at `url`, opens a sandbox and a production instance on it
/// (migrating it), and checks where every old row went.
pub async fn a_version_3_database_migrates_its_rows_to_the_environments_of_their_tokens(url: &str) {
    let old = create_version_3_database(url).await;
    let sandbox = TestApp::open(url, &old.master_key, Environment::Sandbox).await;
    let production = TestApp::open(url, &old.master_key, Environment::Production).await;

    // Cards go where their card tokens were minted: a card with tokens of both environments
    // to production, a card without tokens to its linked objects' environment, else sandbox.
    let expected = [
        (C_SB, Environment::Sandbox, "Sam Sandbox", "a sandbox token"),
        (
            C_NONE,
            Environment::Sandbox,
            "Sam Sandbox",
            "no token, linked to sandbox objects only",
        ),
        (
            C_PR,
            Environment::Production,
            "Pat Prod",
            "a production token",
        ),
        (
            C_PR2,
            Environment::Production,
            "Pat Prod",
            "no token, on a production card's account",
        ),
        (
            C_BOTH,
            Environment::Production,
            "Bo Both",
            "tokens of both environments",
        ),
    ];
    for (card, env, holder, why) in expected {
        let (here, here_client, there, there_client) = match env {
            Environment::Sandbox => (&sandbox, OLD_SB, &production, OLD_PR),
            Environment::Production => (&production, OLD_PR, &sandbox, OLD_SB),
        };
        assert_eq!(
            reveal(here, here_client, card).await,
            (old_pan(card).to_string(), holder.to_string()),
            "{card} ({why}) is revealed in {env}, with its cardholder"
        );
        let (status, body) = mint(there, there_client, card).await;
        assert_eq!(
            status, 404,
            "{card} ({why}) is unknown outside {env}: {body}"
        );
    }
    // A tenant whose clients are all production keeps even its unused objects in production.
    assert_eq!(
        reveal(&production, SOLO_PR, C_SOLO).await,
        (old_pan(C_SOLO).to_string(), "Sol Solo".to_string())
    );
    let solo = TenantId::parse("solo").unwrap();
    let solo_card = CardId::parse(C_SOLO).unwrap();
    assert!(sandbox
        .svc
        .store
        .get_card(&solo, Environment::Sandbox, &solo_card)
        .await
        .unwrap()
        .is_none());
    // Accounts follow their cards.
    for (account, env) in [
        ("A_SB", Environment::Sandbox),
        ("A_PR", Environment::Production),
        ("A_BOTH", Environment::Production),
    ] {
        for (app, e) in [
            (&sandbox, Environment::Sandbox),
            (&production, Environment::Production),
        ] {
            let seen = app
                .svc
                .store
                .get_account(&acme(), e, account)
                .await
                .unwrap();
            assert_eq!(seen.is_some(), e == env, "account {account} in {e}");
        }
    }
    // A person with only a production MFA session is production's; each instance starts
    // sessions for its own persons only.
    for (person, env) in [
        (P_MFA, Environment::Production),
        (P_SB, Environment::Sandbox),
        (P_CARD, Environment::Production),
    ] {
        let (here, here_client, there, there_client) = match env {
            Environment::Sandbox => (&sandbox, OLD_SB, &production, OLD_PR),
            Environment::Production => (&production, OLD_PR, &sandbox, OLD_SB),
        };
        here.mfa_session(here_client, person, "totp").await;
        let res = there.post_mfa_session(there_client, person, "totp").await;
        assert_eq!(res.status(), 404, "{person} is unknown outside {env}");
    }
    // acme has objects in both environments, so its data key is in both; solo's only in
    // production.
    for (env, app, tenants) in [
        (Environment::Sandbox, &sandbox, vec!["acme"]),
        (Environment::Production, &production, vec!["acme", "solo"]),
    ] {
        let mut with_keys: Vec<String> = app
            .svc
            .store
            .load_data_keys(env)
            .await
            .unwrap()
            .iter()
            .map(|k| k.tenant_id.to_string())
            .collect();
        with_keys.dedup();
        assert_eq!(with_keys, tenants, "{env}: tenants with data keys");
    }
    // Card tokens minted before the migration keep working where they were minted.
    let (status, body) =
        status_and_json(production.get_details(&old.production_token, C_PR).await).await;
    assert_eq!(
        (status, body["pan"].as_str()),
        (200, Some(old_pan(C_PR))),
        "{body}"
    );
    let (status, body) = status_and_json(sandbox.get_details(&old.sandbox_token, C_SB).await).await;
    assert_eq!(
        (status, body["pan"].as_str()),
        (200, Some(old_pan(C_SB))),
        "{body}"
    );
}

#[tokio::test]
async fn a_version_3_sqlite_database_migrates_its_rows_to_the_environments_of_their_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/cardgate.db", dir.path().display());
    a_version_3_database_migrates_its_rows_to_the_environments_of_their_tokens(&url).await;
}
