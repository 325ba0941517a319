//! The SQLite schema migrations, run by the store itself on its write connection and recorded
//! exactly as sqlx's migrator records them (the store used sqlx's until it owned its SQLite
//! connections): the `_sqlx_migrations` table with the same columns, one row per migration
//! applied, its checksum the SHA-384 of the migration's SQL text. So a database migrated by an
//! earlier cardgate upgrades in place, and one migrated here looks to an earlier cardgate like
//! one it migrated itself (which refuses, as sqlx does, a database that has migrations it does
//! not know).

use crate::rows::db_err;
use crate::{Result, StoreError};
use rusqlite::{Connection, OptionalExtension};
use std::time::Instant;

/// One migration: its version, its description and its SQL.
pub(crate) type Migration = (i64, &'static str, &'static str);

/// sqlx 0.8's table, word for word.
const MIGRATIONS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);
";

/// What sqlx records as a migration's checksum.
pub(crate) fn checksum(sql: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA384, sql.as_bytes())
        .as_ref()
        .to_vec()
}

fn refused(what: String) -> StoreError {
    StoreError::Database(format!("cannot migrate the database: {what}"))
}

/// Brings the database up to the last of `migrations` (in version order), each in a
/// transaction of its own that also records it, as sqlx's migrator does. Refuses, changing
/// nothing, a database where a migration failed part-way, one that has a migration this
/// store does not know (made by a newer cardgate) and one whose applied migration differs
/// from this store's. Each migration is applied under `BEGIN IMMEDIATE` after checking that
/// it still is not, so two processes starting together apply it once.
pub(crate) fn run(db: &mut Connection, migrations: &[Migration]) -> Result<()> {
    db.execute_batch(MIGRATIONS_TABLE).map_err(db_err)?;
    let dirty: Option<i64> = db
        .query_row(
            "SELECT version FROM _sqlx_migrations WHERE success = false ORDER BY version LIMIT 1",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err)?;
    if let Some(v) = dirty {
        return Err(refused(format!("migration {v} failed part-way earlier")));
    }
    let applied = {
        let mut st = db
            .prepare("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
            .map_err(db_err)?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))
            .map_err(db_err)?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db_err)?
    };
    for (version, sum) in &applied {
        check_applied(migrations, *version, sum)?;
    }
    for (version, description, sql) in migrations {
        if applied.iter().any(|(v, _)| v == version) {
            continue;
        }
        let started = Instant::now();
        let tx = db
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db_err)?;
        let meanwhile: Option<Vec<u8>> = tx
            .query_row(
                "SELECT checksum FROM _sqlx_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()
            .map_err(db_err)?;
        if let Some(sum) = meanwhile {
            // Another process applied it since the list was read.
            check_applied(migrations, *version, &sum)?;
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|e| refused(format!("migration {version} ({description}) failed: {e}")))?;
        tx.execute(
            "INSERT INTO _sqlx_migrations ( version, description, success, checksum, execution_time ) \
             VALUES ( ?1, ?2, TRUE, ?3, -1 )",
            rusqlite::params![version, description, checksum(sql)],
        )
        .map_err(db_err)?;
        tx.commit()
            .map_err(|e| StoreError::CommitUnknown(e.to_string()))?;
        let nanos = i64::try_from(started.elapsed().as_nanos()).unwrap_or(i64::MAX);
        db.execute(
            "UPDATE _sqlx_migrations SET execution_time = ?1 WHERE version = ?2",
            [nanos, *version],
        )
        .map_err(db_err)?;
        tracing::info!(version, description, "migrated the SQLite database");
    }
    Ok(())
}

/// An applied migration must be one of ours, unchanged.
fn check_applied(migrations: &[Migration], version: i64, sum: &[u8]) -> Result<()> {
    match migrations.iter().find(|(v, _, _)| *v == version) {
        None => Err(refused(format!(
            "it has migration {version}, which this cardgate does not know (made by a newer version?)"
        ))),
        Some((_, _, sql)) if checksum(sql) != sum => Err(refused(format!(
            "its migration {version} differs from this cardgate's"
        ))),
        Some(_) => Ok(()),
    }
}
