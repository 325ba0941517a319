//! A SQLite connection the store owns (rusqlite, on the calling thread): how a statement is
//! prepared (cached), bound (`$n` is `args[n - 1]`) and run, and the write transaction the
//! shared write path (`exec`) runs its statements in. Every statement of a write batch runs on
//! the group committer's thread and every read on the request's own: no statement is a round
//! trip to another thread.

use crate::exec::{Arg, Table, WriteTx};
use crate::rows::db_err;
use crate::sql::Map;
use crate::{Result, StoreError};
use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::OpenFlags;
use std::path::Path;
use std::time::Duration;

/// Prepared statements kept per connection: every statement the store runs, with room to spare.
const STATEMENT_CACHE: usize = 64;

/// How long a statement waits for another process's lock (a CLI import beside the server)
/// before the database counts as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// One SQLite connection.
pub(crate) struct Conn {
    db: rusqlite::Connection,
}

impl Conn {
    /// Opens the write connection, creating the database if needed: WAL (readers never wait
    /// for the writer), `synchronous=FULL` (a commit is on disk before it is answered), foreign
    /// keys enforced.
    pub fn open_writer(path: &Path) -> Result<Self> {
        let db = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        let conn = Self::configure(db)?;
        // Before the first table exists (a new database), this makes freed pages reclaimable
        // with `PRAGMA incremental_vacuum` (the purger does that); an existing database keeps
        // the mode it was created with until a `VACUUM` (see the README, Retention).
        conn.db
            .execute_batch("PRAGMA auto_vacuum = INCREMENTAL")
            .map_err(db_err)?;
        // Switching a new database to WAL takes a lock SQLite does not wait for with the busy
        // timeout (two processes creating one database at once): try again for a while.
        let mut tries = 0;
        let mode: String = loop {
            match conn
                .db
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::DatabaseBusy && tries < 200 =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                other => break other.map_err(db_err)?,
            }
        };
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Database(format!(
                "SQLite would not switch to WAL (journal mode {mode})"
            )));
        }
        conn.db
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(db_err)?;
        Ok(conn)
    }

    /// Opens a read-only connection to an existing database (opened by the writer first).
    pub fn open_reader(path: &Path) -> Result<Self> {
        let db = rusqlite::Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(db_err)?;
        Self::configure(db)
    }

    fn configure(db: rusqlite::Connection) -> Result<Self> {
        db.busy_timeout(BUSY_TIMEOUT).map_err(db_err)?;
        db.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(Self { db })
    }

    /// The connection itself, for what runs outside the store's statements (migrations).
    pub fn raw(&mut self) -> &mut rusqlite::Connection {
        &mut self.db
    }

    /// Runs a query and maps every row it returns.
    pub fn fetch_all<T>(&mut self, sql: &str, args: &[Arg<'_>], map: Map<T>) -> Result<Vec<T>> {
        fetch_all(&self.db, sql, args, map)
    }

    /// Begins a write transaction (`BEGIN IMMEDIATE`: it waits for, then excludes, every
    /// other writer, such as a CLI import running beside the server).
    pub fn begin(&mut self) -> Result<SqliteTx<'_>> {
        self.db.execute_batch("BEGIN IMMEDIATE").map_err(db_err)?;
        Ok(SqliteTx { conn: &mut self.db })
    }
}

fn fetch_all<T>(
    db: &rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
    map: Map<T>,
) -> Result<Vec<T>> {
    let mut st = db.prepare_cached(sql).map_err(db_err)?;
    bind(&mut st, args)?;
    let mut rows = st.raw_query();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db_err)? {
        out.push(map(row)?);
    }
    Ok(out)
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
        fetch_all(self.conn, sql, &args, map)
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
