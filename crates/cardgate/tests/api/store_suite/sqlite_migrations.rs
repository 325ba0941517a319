//! The SQLite store migrates its database itself and records its migrations exactly as sqlx's
//! migrator did (which ran them until the store owned its connections): a database sqlx
//! migrated upgrades in place, a new one has the schema and the records sqlx would have made
//! (so an earlier cardgate reads it as one of its own), and a database whose records it cannot
//! trust is refused and left as it is. sqlx's own `Migration` computes the checksums here.

use super::{audit_key, card_token, keyed_store, tid};
use crate::helpers::sqlite_file;
use cardgate_core::tokens::UseLimit;
use cardgate_core::{CardId, Environment, Operation};
use cardgate_store::{ClaimKey, Guard, WriteOutcome, WriteSet};

/// The store's SQLite migrations: versions, descriptions and SQL.
const MIGRATIONS: [(i64, &str, &str); 9] = [
    (
        1,
        "init",
        include_str!("../../../../store/migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "split tokens",
        include_str!("../../../../store/migrations/sqlite/0002_split_tokens.sql"),
    ),
    (
        3,
        "audit chains",
        include_str!("../../../../store/migrations/sqlite/0003_audit_chains.sql"),
    ),
    (
        4,
        "mfa lockout",
        include_str!("../../../../store/migrations/sqlite/0004_mfa_lockout.sql"),
    ),
    (
        5,
        "environments",
        include_str!("../../../../store/migrations/sqlite/0005_environments.sql"),
    ),
    (
        6,
        "claims",
        include_str!("../../../../store/migrations/sqlite/0006_claims.sql"),
    ),
    (
        7,
        "key binding",
        include_str!("../../../../store/migrations/sqlite/0007_key_binding.sql"),
    ),
    (
        10,
        "sdk tokens",
        include_str!("../../../../store/migrations/sqlite/0010_sdk_tokens.sql"),
    ),
    (
        11,
        "retention",
        include_str!("../../../../store/migrations/sqlite/0011_retention.sql"),
    ),
];

/// sqlx 0.8's migrations table on SQLite (`sqlx-sqlite`'s `ensure_migrations_table`).
const SQLX_MIGRATIONS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);
";

/// A migration as sqlx records it.
type Record = (i64, String, bool, Vec<u8>);

/// What sqlx's migrator records for `files`: the checksum as sqlx computes it.
fn sqlx_records(files: &[(i64, &str, &str)]) -> Vec<Record> {
    use sqlx::migrate::{Migration, MigrationType};
    files
        .iter()
        .map(|(v, d, sql)| {
            let m = Migration::new(
                *v,
                d.to_string().into(),
                MigrationType::Simple,
                sql.to_string().into(),
                false,
            );
            (*v, d.to_string(), true, m.checksum.to_vec())
        })
        .collect()
}

/// Makes the SQLite database at `url` as the store did while sqlx's migrator ran `files`
/// (the store's connection settings, sqlx's table, each migration in a transaction of its
/// own with its record, then its execution time); returns a plain connection to it.
pub fn migrate_as_sqlx_did(url: &str, files: &[(i64, &str, &str)]) -> rusqlite::Connection {
    let mut db = sqlite_file(url);
    db.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;",
    )
    .unwrap();
    db.execute_batch(SQLX_MIGRATIONS_TABLE).unwrap();
    for (version, description, _, checksum) in sqlx_records(files) {
        let sql = files.iter().find(|f| f.0 == version).unwrap().2;
        let tx = db.transaction().unwrap();
        tx.execute_batch(sql).unwrap();
        tx.execute(
            "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) \
             VALUES ( ?1, ?2, TRUE, ?3, -1 )",
            rusqlite::params![version, description, checksum],
        )
        .unwrap();
        tx.commit().unwrap();
        db.execute(
            "UPDATE _sqlx_migrations SET execution_time = ?1 WHERE version = ?2",
            [1_234_567, version],
        )
        .unwrap();
    }
    db
}

/// Every table, index and trigger with its SQL.
fn schema(db: &rusqlite::Connection) -> Vec<(String, String, Option<String>)> {
    let mut st = db
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

/// The migrations recorded in the database.
fn records(db: &rusqlite::Connection) -> Vec<Record> {
    let mut st = db
        .prepare(
            "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version",
        )
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap();
    rows.collect::<rusqlite::Result<_>>().unwrap()
}

fn sqlite_url(dir: &tempfile::TempDir, name: &str) -> String {
    format!("sqlite://{}/{name}.db", dir.path().display())
}

#[tokio::test]
async fn a_new_sqlite_database_has_the_schema_and_migration_records_sqlx_would_have_made() {
    let dir = tempfile::tempdir().unwrap();
    let by_store = sqlite_url(&dir, "store");
    drop(keyed_store(&by_store).await);
    let by_sqlx = migrate_as_sqlx_did(&sqlite_url(&dir, "sqlx"), &MIGRATIONS);
    let store_made = sqlite_file(&by_store);
    assert_eq!(records(&store_made), sqlx_records(&MIGRATIONS));
    assert_eq!(schema(&store_made), schema(&by_sqlx));
    let times: Vec<i64> = store_made
        .prepare("SELECT execution_time FROM _sqlx_migrations")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert!(
        times.iter().all(|t| *t >= 0),
        "each execution time is recorded after its commit: {times:?}"
    );
}

#[tokio::test]
async fn a_sqlite_database_sqlx_migrated_to_version_5_upgrades_in_place_and_keeps_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir, "old");
    let old = migrate_as_sqlx_did(&url, &MIGRATIONS[..5]);
    let (id, card) = (tid(b"old token"), CardId::new_random());
    old.execute(
        "INSERT INTO card_tokens (id, hash, kind, tenant_id, client_id, environment, card_id, person_id, \
         operations, issued_at, expires_at, max_uses, uses_made, revoked) \
         VALUES (?1, ?2, 'card_token', 't1', 'c1', 'sandbox', ?3, NULL, ?4, 1000, 10000, 1, 0, FALSE)",
        rusqlite::params![
            &id.0[..],
            &cardgate_core::secret::SecretHash::of(&id.0).0[..],
            card.to_string(),
            format!("{},{}", Operation::ViewCard.as_str(), Operation::GetPin.as_str()),
        ],
    )
    .unwrap();
    drop(old);

    let store = keyed_store(&url).await;
    assert_eq!(
        store
            .get_card_token(&id, Environment::Sandbox)
            .await
            .unwrap(),
        Some(card_token(id, card, UseLimit::Once)),
        "a token stored before the upgrade reads back, bound to no key"
    );
    let claim = Guard::Claim {
        namespace: "test.upgrade",
        key: ClaimKey::of(&[b"k"]),
        fingerprint: vec![1],
        value: None,
        now_ms: 1,
        expires_at_ms: 2,
    };
    assert_eq!(
        store
            .apply(&[WriteSet::guarded(vec![claim], vec![], vec![])])
            .await
            .unwrap(),
        vec![WriteOutcome::Applied],
        "the new tables are there"
    );
    let upgraded = sqlite_file(&url);
    assert_eq!(records(&upgraded), sqlx_records(&MIGRATIONS));
    let fresh = sqlite_url(&dir, "fresh");
    drop(keyed_store(&fresh).await);
    assert_eq!(
        schema(&upgraded),
        schema(&sqlite_file(&fresh)),
        "an upgraded database has a new one's schema"
    );
}

#[tokio::test]
async fn a_sqlite_database_with_a_failed_changed_or_unknown_migration_is_refused_and_left_as_it_is()
{
    let cases = [
        (
            "a migration that failed part-way",
            "UPDATE _sqlx_migrations SET success = FALSE WHERE version = 5",
            "migration 5 failed part-way",
        ),
        (
            "a migration that differs from the store's",
            "UPDATE _sqlx_migrations SET checksum = X'00' WHERE version = 3",
            "migration 3 differs",
        ),
        (
            "a migration of a newer cardgate",
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES (99, 'future', TRUE, X'00', 0)",
            "migration 99, which this cardgate does not know",
        ),
    ];
    for (what, tamper, says) in cases {
        let dir = tempfile::tempdir().unwrap();
        let url = sqlite_url(&dir, "db");
        let db = migrate_as_sqlx_did(&url, &MIGRATIONS[..5]);
        db.execute(tamper, []).unwrap();
        let before = (schema(&db), records(&db));
        let err = match cardgate_store::connect(&url, audit_key()).await {
            Ok(_) => panic!("{what}: opened"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(says), "{what}: {err}");
        assert_eq!((schema(&db), records(&db)), before, "{what}: changed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_stores_opening_a_new_sqlite_database_together_migrate_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir, "both");
    let (a, b) = tokio::join!(
        cardgate_store::connect(&url, audit_key()),
        cardgate_store::connect(&url, audit_key())
    );
    assert!(a.is_ok() && b.is_ok(), "{:?} {:?}", a.err(), b.err());
    assert_eq!(records(&sqlite_file(&url)), sqlx_records(&MIGRATIONS));
}
