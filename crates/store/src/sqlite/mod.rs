//! The SQLite engine: one write connection and a few read connections, all opened,
//! configured and migrated by sqlx and then driven directly (see `direct`), so no statement
//! costs a round trip to another thread.

use crate::direct::DirectConn;
use crate::exec::{self, Arg};
use crate::sql::{migrator, Engine, Map, SqlStore};
use crate::write::{WriteOutcome, WriteSet};
use crate::{Result, StoreError};
use async_trait::async_trait;
use cardgate_core::audit::{AuditKey, Relink, Relinking};
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqliteSynchronous};
use sqlx::Connection as _;
use std::path::Path;
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
    pub async fn connect(url: &str, audit_key: AuditKey) -> Result<Self> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if !path.is_empty() && path != ":memory:" {
            create_private(Path::new(path))?;
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
        Ok(Self::new(
            SqliteEngine {
                writer: tokio::sync::Mutex::new(writer),
                readers,
                next_reader: AtomicUsize::new(0),
            },
            audit_key,
        ))
    }
}

/// Creates the database's folder (`0700`) and file (`0600`) if they do not exist yet, so that
/// only their owner can read them; SQLite gives the `-wal` and `-shm` files it creates beside
/// the database the database file's permissions. An empty file is an empty database to
/// SQLite. Existing folders and files keep their permissions; a database file that others
/// may read is reported once.
fn create_private(db: &Path) -> Result<()> {
    let failed = |what: &Path, e: std::io::Error| {
        StoreError::Database(format!("cannot create {}: {e}", what.display()))
    };
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        let mut folder = std::fs::DirBuilder::new();
        folder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut folder, 0o700);
        folder.create(dir).map_err(|e| failed(dir, e))?;
    }
    let mut file = std::fs::OpenOptions::new();
    file.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut file, 0o600);
    match file.open(db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            #[cfg(unix)]
            if let Ok(meta) = std::fs::metadata(db) {
                use std::os::unix::fs::PermissionsExt;
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %db.display(), mode = format!("{mode:o}"), "the database file is open to other users; `chmod 600` it (and its -wal and -shm files)");
                }
            }
            Ok(())
        }
        Err(e) => Err(failed(db, e)),
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

    async fn apply(
        &self,
        sets: &[WriteSet],
        chain: i64,
        key: &AuditKey,
    ) -> Result<Vec<WriteOutcome>> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin()?;
        let outcomes = exec::apply_sets(&mut tx, sets, chain, key).await?;
        tx.commit()?;
        Ok(outcomes)
    }

    async fn relink(&self, key: &AuditKey, note: &Relinking) -> Result<Relink> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin()?;
        let outcome = exec::relink(&mut tx, key, note).await?;
        if matches!(outcome, Relink::Relinked { .. }) {
            tx.commit()?;
        }
        Ok(outcome)
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
