//! The SQLite engine: the store owns its connections (rusqlite) — one write connection and a
//! few read connections — runs the migrations itself (`migrate`) and runs every statement on
//! the calling thread (`conn`).

mod conn;
mod migrate;

use crate::exec::{self, Arg};
use crate::sql::{Engine, Map, SqlStore};
use crate::write::{WriteOutcome, WriteSet};
use crate::{Result, StoreError};
use async_trait::async_trait;
use cardgate_core::audit::{AuditKey, Relink, Relinking};
use conn::Conn;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

const MIGRATIONS: &[migrate::Migration] = &[
    (
        1,
        "init",
        include_str!("../../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "split tokens",
        include_str!("../../migrations/sqlite/0002_split_tokens.sql"),
    ),
    (
        3,
        "audit chains",
        include_str!("../../migrations/sqlite/0003_audit_chains.sql"),
    ),
    (
        4,
        "mfa lockout",
        include_str!("../../migrations/sqlite/0004_mfa_lockout.sql"),
    ),
    (
        5,
        "environments",
        include_str!("../../migrations/sqlite/0005_environments.sql"),
    ),
    (
        6,
        "claims",
        include_str!("../../migrations/sqlite/0006_claims.sql"),
    ),
    (
        7,
        "key binding",
        include_str!("../../migrations/sqlite/0007_key_binding.sql"),
    ),
    (
        10,
        "sdk tokens",
        include_str!("../../migrations/sqlite/0010_sdk_tokens.sql"),
    ),
    (
        11,
        "retention",
        include_str!("../../migrations/sqlite/0011_retention.sql"),
    ),
];

/// Read connections. Reads run on the calling thread and take microseconds, so a few serve
/// every worker thread.
const READERS: usize = 4;

pub struct SqliteEngine {
    writer: tokio::sync::Mutex<Conn>,
    readers: Vec<Mutex<Conn>>,
    next_reader: AtomicUsize,
}

/// The store on SQLite (the default, embedded).
pub type SqliteStore = SqlStore<SqliteEngine>;

impl SqlStore<SqliteEngine> {
    /// Opens (creating if needed) a SQLite database in WAL mode with `synchronous=FULL`, so a
    /// commit is durable before any response that depends on it leaves, and migrates it.
    pub async fn connect(url: &str, audit_key: AuditKey) -> Result<Self> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if path.is_empty() || path == ":memory:" {
            // Every connection would have a database of its own.
            return Err(StoreError::UnsupportedUrl);
        }
        let path = PathBuf::from(path);
        let (writer, readers) = tokio::task::spawn_blocking(move || open(&path))
            .await
            .map_err(|e| StoreError::Database(format!("opening the database failed: {e}")))??;
        Ok(Self::new(
            SqliteEngine {
                writer: tokio::sync::Mutex::new(writer),
                readers: readers.into_iter().map(Mutex::new).collect(),
                next_reader: AtomicUsize::new(0),
            },
            audit_key,
        ))
    }
}

/// Creates the database (private to its owner) if needed, opens the write connection,
/// migrates, and opens the read connections.
fn open(path: &Path) -> Result<(Conn, Vec<Conn>)> {
    create_private(path)?;
    let mut writer = Conn::open_writer(path)?;
    migrate::run(writer.raw(), MIGRATIONS)?;
    let readers = (0..READERS)
        .map(|_| Conn::open_reader(path))
        .collect::<Result<Vec<_>>>()?;
    Ok((writer, readers))
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
    fn reader(&self) -> std::sync::MutexGuard<'_, Conn> {
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

    async fn write_one(&self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin()?;
        let changed = tx.run(sql, &args)?;
        tx.commit()?;
        Ok(changed)
    }

    async fn write_if(
        &self,
        statements: Vec<(&'static str, Vec<Arg<'_>>)>,
    ) -> Result<Option<Vec<u64>>> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin()?;
        let mut changed = Vec::with_capacity(statements.len());
        for (sql, args) in &statements {
            let n = tx.run(sql, args)?;
            if changed.is_empty() && n == 0 {
                // Dropping the transaction rolls it back.
                return Ok(None);
            }
            changed.push(n);
        }
        tx.commit()?;
        Ok(Some(changed))
    }

    async fn reclaim(&self, pages: i64) -> Result<()> {
        // Between two of the committer's batches, like any write: a bounded number of pages
        // moved, so the write lock is held for milliseconds.
        let mut writer = self.writer.lock().await;
        writer
            .raw()
            .execute_batch(&format!("PRAGMA incremental_vacuum({})", pages.max(1)))
            .map_err(crate::rows::db_err)
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
