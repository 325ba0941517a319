//! The SQLite write connection, driven directly. sqlx opens it (WAL, `synchronous=FULL`,
//! busy timeout, foreign keys) and runs the migrations; then the store locks its handle out
//! of sqlx's worker thread for the store's whole life (`SqliteConnection::lock_handle`, sqlx's
//! way to make direct SQLite API calls) and runs each write batch through rusqlite's prepared
//! statements on the calling thread — the group committer's own. Without this, every
//! statement of a batch was a round trip to sqlx's worker thread, and on a busy 2-core machine
//! those round trips, not SQLite, made the single SQLite writer the server's bottleneck.

use crate::exec::{Arg, Table, WriteTx};
use crate::{Result, StoreError};
use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use sqlx::sqlite::{LockedSqliteHandle, SqliteConnection};
use std::mem::ManuallyDrop;
use std::ptr::NonNull;

use crate::rows::db_err;
use crate::sql::Map;

/// sqlx's connection with its handle locked out, and rusqlite's view of that handle.
pub(crate) struct DirectConn {
    // Dropped in this order (see `Drop`): the view (finalizing its cached statements) while
    // the lock is still held, then the lock, then the connection it borrows from.
    view: ManuallyDrop<rusqlite::Connection>,
    lock: ManuallyDrop<LockedSqliteHandle<'static>>,
    conn: NonNull<SqliteConnection>,
}

// SAFETY: the handle is used only through `&mut DirectConn` (the store keeps it behind a
// mutex), never from two threads at once; sqlx's own worker thread is parked on the lock we
// hold for as long as the view exists.
unsafe impl Send for DirectConn {}

impl DirectConn {
    /// Takes over `conn`: locks its handle for good and opens the rusqlite view on it.
    pub async fn open(conn: SqliteConnection) -> Result<Self> {
        let conn = NonNull::from(Box::leak(Box::new(conn)));
        // SAFETY: the box lives until `Drop` (or the error path below) frees it, after the
        // lock borrowing it is gone, and nothing else touches it meanwhile.
        let locked = unsafe { &mut *conn.as_ptr() }.lock_handle().await;
        let mut lock = match locked {
            Ok(l) => l,
            Err(e) => {
                // SAFETY: no borrow of the box survives a failed `lock_handle`.
                drop(unsafe { Box::from_raw(conn.as_ptr()) });
                return Err(e.into());
            }
        };
        let raw = lock.as_raw_handle();
        // SAFETY: the handle stays open and exclusively ours while `lock` is held, which
        // outlives the view (see `Drop`); `from_handle` does not close it when dropped.
        let view = match unsafe { rusqlite::Connection::from_handle(raw.as_ptr()) } {
            Ok(v) => v,
            Err(e) => {
                drop(lock);
                // SAFETY: the lock, the only borrow of the box, is gone.
                drop(unsafe { Box::from_raw(conn.as_ptr()) });
                return Err(db_err(e));
            }
        };
        view.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            view: ManuallyDrop::new(view),
            lock: ManuallyDrop::new(lock),
            conn,
        })
    }

    /// Runs a query and maps every row it returns.
    pub fn fetch_all<T>(&mut self, sql: &str, args: &[Arg<'_>], map: Map<T>) -> Result<Vec<T>> {
        let mut st = self.view.prepare_cached(sql).map_err(db_err)?;
        bind(&mut st, args)?;
        let mut rows = st.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_err)? {
            out.push(map(row)?);
        }
        Ok(out)
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`: it waits for, then excludes, every
    /// other writer, such as a CLI import running beside the server).
    pub fn begin(&mut self) -> Result<SqliteTx<'_>> {
        self.view.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
        Ok(SqliteTx {
            conn: &mut self.view,
        })
    }
}

impl Drop for DirectConn {
    fn drop(&mut self) {
        // SAFETY: each field is dropped exactly once, in the order the borrows require; the
        // box was leaked in `open` and nothing borrows it once the lock is dropped.
        unsafe {
            ManuallyDrop::drop(&mut self.view);
            ManuallyDrop::drop(&mut self.lock);
            drop(Box::from_raw(self.conn.as_ptr()));
        }
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Arg::Int(Some(v)) => ValueRef::Integer(*v),
            Arg::Text(Some(v)) => ValueRef::Text(v.as_bytes()),
            Arg::Blob(Some(v)) => ValueRef::Blob(v),
            Arg::Bool(b) => ValueRef::Integer(i64::from(*b)),
            Arg::Int(None) | Arg::Text(None) | Arg::Blob(None) => ValueRef::Null,
        }))
    }
}

/// Binds `$n` to `args[n - 1]`, whatever order the parameters appear in (SQLite numbers named
/// parameters by first appearance, so `$n` is usually parameter `n`: checked cheaply first).
fn bind(st: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> Result<()> {
    const IN_ORDER: [&str; 16] = [
        "$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8", "$9", "$10", "$11", "$12", "$13", "$14",
        "$15", "$16",
    ];
    for i in 1..=st.parameter_count() {
        let name = st.parameter_name(i);
        let n = match (name, IN_ORDER.get(i - 1)) {
            (Some(name), Some(expected)) if name == *expected => i,
            _ => name
                .and_then(|name| name.strip_prefix('$'))
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| StoreError::Database(format!("parameter {i} is not $n")))?,
        };
        let arg = args
            .get(n.wrapping_sub(1))
            .ok_or_else(|| StoreError::Database(format!("no argument for ${n}")))?;
        st.raw_bind_parameter(i, arg).map_err(db_err)?;
    }
    Ok(())
}

/// An open SQLite write transaction; rolled back unless committed.
pub(crate) struct SqliteTx<'c> {
    conn: &'c mut rusqlite::Connection,
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if !self.conn.is_autocommit() {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::error!(error = %e, "SQLite rollback failed");
            }
        }
    }
}

impl SqliteTx<'_> {
    /// Commits (and, with `synchronous=FULL`, syncs the log). On failure, `Drop` rolls back
    /// what is left of the transaction, but the outcome is unknown: the log may already hold
    /// the commit.
    pub fn commit(self) -> Result<()> {
        self.conn
            .execute_batch("COMMIT")
            .map_err(|e| StoreError::CommitUnknown(e.to_string()))
    }

    /// The first column of the first row `sql` returns, if any.
    pub fn query_text(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<Option<String>> {
        let mut st = self.conn.prepare_cached(sql).map_err(db_err)?;
        bind(&mut st, args)?;
        let mut rows = st.raw_query();
        match rows.next().map_err(db_err)? {
            Some(row) => Ok(Some(row.get::<_, String>(0).map_err(db_err)?)),
            None => Ok(None),
        }
    }

    pub fn run(&mut self, sql: &str, args: &[Arg<'_>]) -> Result<u64> {
        let mut st = self.conn.prepare_cached(sql).map_err(db_err)?;
        bind(&mut st, args)?;
        Ok(st.raw_execute().map_err(db_err)? as u64)
    }
}

#[async_trait]
impl WriteTx for SqliteTx<'_> {
    async fn exec(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        self.run(sql, &args)
    }

    async fn count(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        let mut st = self.conn.prepare_cached(sql).map_err(db_err)?;
        bind(&mut st, &args)?;
        let mut rows = st.raw_query();
        let mut n = 0;
        while rows.next().map_err(db_err)?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    async fn insert_rows(&mut self, table: &'static Table, rows: Vec<Vec<Arg<'_>>>) -> Result<()> {
        // In-process, one prepared single-row INSERT per row is the cheapest form.
        for row in &rows {
            self.run(table.insert_one, row)?;
        }
        Ok(())
    }

    async fn fetch_all<U: Send + 'static>(
        &mut self,
        sql: &'static str,
        args: Vec<Arg<'_>>,
        map: Map<U>,
    ) -> Result<Vec<U>> {
        let mut st = self.conn.prepare_cached(sql).map_err(db_err)?;
        bind(&mut st, &args)?;
        let mut rows = st.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(db_err)? {
            out.push(map(row)?);
        }
        Ok(out)
    }

    async fn chain_head(&mut self, chain: i64) -> Result<(i64, String)> {
        // The write transaction (BEGIN IMMEDIATE) already excludes every other writer.
        let mut st = self
            .conn
            .prepare_cached("SELECT seq, hash FROM audit_head WHERE id = ?1")
            .map_err(db_err)?;
        st.query_row([chain], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(db_err)
    }
}
