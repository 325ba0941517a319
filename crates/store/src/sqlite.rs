//! The SQLite engine: one write connection and a few read connections, all opened,
//! configured and migrated by sqlx and then driven directly (see `direct`), so no statement
//! costs a round trip to another thread.

use crate::direct::DirectConn;
use crate::exec::{self, Arg};
use crate::sql::{migrator, Engine, Map, SqlStore};
use crate::write::{WriteOutcome, WriteSet};
use crate::{Result, StoreError};
use async_trait::async_trait;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::Connection as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "split tokens",
        include_str!("../migrations/sqlite/0002_split_tokens.sql"),
    ),
    (
        3,
        "audit chains",
        include_str!("../migrations/sqlite/0003_audit_chains.sql"),
    ),
    (
        4,
        "mfa lockout",
        include_str!("../migrations/sqlite/0004_mfa_lockout.sql"),
    ),
    (
        5,
        "environments",
        include_str!("../migrations/sqlite/0005_environments.sql"),
    ),
];

/// Read connections. Reads run on the calling thread and take microseconds, so a few serve
/// every worker thread.
const READERS: usize = 4;

pub struct SqliteEngine {
    writer: tokio::sync::Mutex<DirectConn>,
    readers: Vec<Mutex<DirectConn>>,
    next_reader: AtomicUsize,
}

/// The store on SQLite (the default, embedded).
pub type SqliteStore = SqlStore<SqliteEngine>;

impl SqlStore<SqliteEngine> {
    /// Opens (creating if needed) a SQLite database in WAL mode with `synchronous=FULL`, so a
    /// commit is durable before any response that depends on it leaves.
    pub async fn connect(url: &str) -> Result<Self> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let mut write = SqliteConnection::connect_with(&opts).await?;
        migrator(MIGRATIONS)
            .run(&mut write)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let writer = DirectConn::open(write).await?;
        let read_opts = opts.read_only(true);
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let conn = SqliteConnection::connect_with(&read_opts).await?;
            readers.push(Mutex::new(DirectConn::open(conn).await?));
        }
        Ok(Self {
            engine: SqliteEngine {
                writer: tokio::sync::Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            },
        })
    }
}

impl SqliteEngine {
    /// A free read connection, else the next one in turn (waiting for it).
    fn reader(&self) -> std::sync::MutexGuard<'_, DirectConn> {
        let start = self.next_reader.fetch_add(1, Ordering::Relaxed);
        for i in 0..self.readers.len() {
            if let Ok(g) = self.readers[(start + i) % self.readers.len()].try_lock() {
                return g;
            }
        }
        let m = &self.readers[start % self.readers.len()];
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl Engine for SqliteEngine {
    const BACKEND: &'static str = "sqlite";
    /// SQLite has one writer.
    const WRITERS: usize = 1;

    async fn fetch_all<T: Send + 'static>(
        &self,
        sql: &'static str,
        args: Vec<Arg<'_>>,
        map: Map<T>,
    ) -> Result<Vec<T>> {
        self.reader().fetch_all(sql, &args, map)
    }

    async fn apply(&self, sets: &[WriteSet], chain: i64) -> Result<Vec<WriteOutcome>> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin()?;
        let outcomes = exec::apply_sets(&mut tx, sets, chain).await?;
        tx.commit()?;
        Ok(outcomes)
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin()?;
        tx.run(exec::META_INIT, &[Arg::text(key), Arg::text(value)])?;
        let v = tx
            .query_text("SELECT value FROM meta WHERE key = $1", &[Arg::text(key)])?
            .ok_or_else(|| crate::rows::corrupt("meta"))?;
        tx.commit()?;
        Ok(v)
    }
}
