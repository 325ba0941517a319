//! Retention, written once for both engines: deleting what has expired in small batches,
//! counting what is stored, reclaiming space, and the audit log's export and prune marks.
//! Every statement here runs in a transaction of its own, beside the group committer's
//! (never inside one of its batches), and each batch is bounded, so a purge holds the write
//! lock (SQLite) or its rows (PostgreSQL) for a few milliseconds at most.

use crate::exec::Arg;
use crate::rows::Cols;
use crate::sql::{Engine, SqlStore};
use crate::Result;

/// A kind of row that expires and is purged a grace period after it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expiring {
    AccessTokens,
    CardTokens,
    MfaSessions,
    Claims,
    Revocations,
}

impl Expiring {
    pub const ALL: [Expiring; 5] = [
        Self::AccessTokens,
        Self::CardTokens,
        Self::MfaSessions,
        Self::Claims,
        Self::Revocations,
    ];

    /// The label in metrics and `cardgate status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccessTokens => "access_token",
            Self::CardTokens => "card_token",
            Self::MfaSessions => "mfa_session",
            Self::Claims => "claim",
            Self::Revocations => "revocation",
        }
    }
}

/// Deletes at most `$2` rows of `$table` that expired by `$1`, oldest first. On PostgreSQL
/// rows another replica's purge holds are skipped, not waited for: two purgers never delete
/// (or count) the same row, and neither waits for the other.
macro_rules! purge_sql {
    ($table:literal, $key:literal, $cols:literal, $pg:expr) => {
        if $pg {
            concat!(
                "DELETE FROM ",
                $table,
                " WHERE ",
                $key,
                " IN (SELECT ",
                $cols,
                " FROM ",
                $table,
                " WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED)"
            )
        } else {
            concat!(
                "DELETE FROM ",
                $table,
                " WHERE ",
                $key,
                " IN (SELECT ",
                $cols,
                " FROM ",
                $table,
                " WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)"
            )
        }
    };
}

fn purge_sql(kind: Expiring, pg: bool) -> &'static str {
    match kind {
        Expiring::AccessTokens => purge_sql!("access_tokens", "id", "id", pg),
        Expiring::CardTokens => purge_sql!("card_tokens", "id", "id", pg),
        Expiring::MfaSessions => purge_sql!("mfa_sessions", "id", "id", pg),
        Expiring::Revocations => purge_sql!("revocations", "token_id", "token_id", pg),
        Expiring::Claims => purge_sql!("claims", "(namespace, key)", "namespace, key", pg),
    }
}

/// How many rows of a table there are, how many expired by `$1`, how many by `$2` (the
/// purger's cut-off: the backlog) and the earliest expiry present.
macro_rules! stats_sql {
    ($table:literal) => {
        concat!(
            "SELECT (SELECT COUNT(*) FROM ",
            $table,
            ") AS n, (SELECT COUNT(*) FROM ",
            $table,
            " WHERE expires_at <= $1) AS expired, (SELECT COUNT(*) FROM ",
            $table,
            " WHERE expires_at <= $2) AS backlog, (SELECT MIN(expires_at) FROM ",
            $table,
            ") AS oldest"
        )
    };
}

fn stats_sql(kind: Expiring) -> &'static str {
    match kind {
        Expiring::AccessTokens => stats_sql!("access_tokens"),
        Expiring::CardTokens => stats_sql!("card_tokens"),
        Expiring::MfaSessions => stats_sql!("mfa_sessions"),
        Expiring::Revocations => stats_sql!("revocations"),
        Expiring::Claims => stats_sql!("claims"),
    }
}

/// What one kind of expiring row amounts to now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiringStats {
    pub kind: Expiring,
    pub rows: i64,
    /// Rows whose expiry has passed.
    pub expired: i64,
    /// Rows past the purger's cut-off (expiry plus grace): what it has yet to delete.
    pub backlog: i64,
    /// The earliest expiry of a row still present.
    pub oldest_expiry_ms: Option<i64>,
}

/// The audit log's size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditStats {
    pub events: i64,
    pub oldest_ts_ms: Option<i64>,
}

/// The database's size as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Space {
    /// The database's size (SQLite: the main file, not its WAL; PostgreSQL: the database).
    pub bytes: i64,
    /// Free pages inside it, reusable (SQLite); 0 where the engine does not say.
    pub free_bytes: i64,
    /// How freed space comes back: SQLite's `auto_vacuum` mode, or `autovacuum`.
    pub reclaim: String,
}

/// Which mark an [`AuditMark`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkKind {
    /// The last event an export wrote out.
    Exported,
    /// The last event pruned: the chain's start from then on.
    Pruned,
}

impl MarkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exported => "exported",
            Self::Pruned => "pruned",
        }
    }
}

/// A mark on an audit chain: event `seq` (whose link is `hash`), recorded at `ts_ms`, with
/// `mac`, the audit key's HMAC over what it says (made and checked by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditMark {
    pub kind: MarkKind,
    pub chain: i64,
    pub seq: i64,
    pub hash: String,
    pub ts_ms: i64,
    pub mac: String,
}

fn mark_row(r: &dyn Cols) -> Result<AuditMark> {
    let kind = match r.text("kind")?.as_str() {
        "exported" => MarkKind::Exported,
        "pruned" => MarkKind::Pruned,
        _ => return Err(crate::rows::corrupt("audit mark")),
    };
    Ok(AuditMark {
        kind,
        chain: r.int("chain")?,
        seq: r.int("seq")?,
        hash: r.text("hash")?,
        ts_ms: r.int("ts_ms")?,
        mac: r.text("mac")?,
    })
}

const MARK_INSERT: &str = "INSERT INTO audit_marks (kind, chain, seq, hash, ts_ms, mac) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (kind, chain) DO NOTHING";
const MARK_MOVE: &str = "UPDATE audit_marks SET seq = $3, hash = $4, ts_ms = $5, mac = $6 \
     WHERE kind = $1 AND chain = $2 AND seq = $7";

/// The statement that records `mark` where the chain has none (`expect` is `None`) or moves
/// it from `expect`: it changes one row only if no other process moved the mark meanwhile.
fn mark_statement(mark: &AuditMark, expect: Option<i64>) -> (&'static str, Vec<Arg<'_>>) {
    let mut args = vec![
        Arg::text(mark.kind.as_str()),
        Arg::int(mark.chain),
        Arg::int(mark.seq),
        Arg::text(&mark.hash),
        Arg::int(mark.ts_ms),
        Arg::text(&mark.mac),
    ];
    match expect {
        None => (MARK_INSERT, args),
        Some(seq) => {
            args.push(Arg::int(seq));
            (MARK_MOVE, args)
        }
    }
}

fn pg<E: Engine>(_: &SqlStore<E>) -> bool {
    E::BACKEND == "postgres"
}

pub(crate) async fn purge<E: Engine>(
    s: &SqlStore<E>,
    kind: Expiring,
    before_ms: i64,
    limit: i64,
) -> Result<u64> {
    s.engine
        .write_one(
            purge_sql(kind, pg(s)),
            vec![Arg::int(before_ms), Arg::int(limit)],
        )
        .await
}

pub(crate) async fn stats<E: Engine>(
    s: &SqlStore<E>,
    kind: Expiring,
    now_ms: i64,
    before_ms: i64,
) -> Result<ExpiringStats> {
    let found = s
        .engine
        .fetch_opt(
            stats_sql(kind),
            vec![Arg::int(now_ms), Arg::int(before_ms)],
            |r: &dyn Cols| {
                Ok((
                    r.int("n")?,
                    r.int("expired")?,
                    r.int("backlog")?,
                    r.opt_int("oldest")?,
                ))
            },
        )
        .await?;
    let (rows, expired, backlog, oldest) =
        found.ok_or_else(|| crate::rows::corrupt("row counts"))?;
    Ok(ExpiringStats {
        kind,
        rows,
        expired,
        backlog,
        oldest_expiry_ms: oldest,
    })
}

pub(crate) async fn audit_size<E: Engine>(s: &SqlStore<E>) -> Result<AuditStats> {
    let found = s
        .engine
        .fetch_opt(
            "SELECT (SELECT COUNT(*) FROM audit_events) AS n, (SELECT MIN(ts_ms) FROM audit_events) AS oldest",
            vec![],
            |r: &dyn Cols| Ok((r.int("n")?, r.opt_int("oldest")?)),
        )
        .await?;
    let (events, oldest_ts_ms) = found.ok_or_else(|| crate::rows::corrupt("audit size"))?;
    Ok(AuditStats {
        events,
        oldest_ts_ms,
    })
}

pub(crate) async fn space_used<E: Engine>(s: &SqlStore<E>) -> Result<Space> {
    let sql = if pg(s) {
        "SELECT pg_database_size(current_database())::int8 AS bytes, 0::int8 AS free, 'autovacuum' AS mode"
    } else {
        "SELECT (SELECT page_count FROM pragma_page_count()) * (SELECT page_size FROM pragma_page_size()) AS bytes, \
         (SELECT freelist_count FROM pragma_freelist_count()) * (SELECT page_size FROM pragma_page_size()) AS free, \
         CASE (SELECT auto_vacuum FROM pragma_auto_vacuum()) WHEN 0 THEN 'none' WHEN 1 THEN 'full' ELSE 'incremental' END AS mode"
    };
    let found = s
        .engine
        .fetch_opt(sql, vec![], |r: &dyn Cols| {
            Ok(Space {
                bytes: r.int("bytes")?,
                free_bytes: r.int("free")?,
                reclaim: r.text("mode")?,
            })
        })
        .await?;
    found.ok_or_else(|| crate::rows::corrupt("database size"))
}

pub(crate) async fn marks<E: Engine>(s: &SqlStore<E>) -> Result<Vec<AuditMark>> {
    s.engine
        .fetch_all(
            "SELECT kind, chain, seq, hash, ts_ms, mac FROM audit_marks ORDER BY kind, chain",
            vec![],
            mark_row,
        )
        .await
}

pub(crate) async fn set_mark<E: Engine>(
    s: &SqlStore<E>,
    mark: &AuditMark,
    expect: Option<i64>,
) -> Result<bool> {
    let (sql, args) = mark_statement(mark, expect);
    Ok(s.engine.write_one(sql, args).await? == 1)
}

/// Moves the chain's `pruned` mark to `mark` and deletes its events up to there, in one
/// transaction: `None` (nothing done) if another process moved the mark first.
pub(crate) async fn prune<E: Engine>(
    s: &SqlStore<E>,
    mark: &AuditMark,
    expect: Option<i64>,
) -> Result<Option<u64>> {
    let (sql, args) = mark_statement(mark, expect);
    let after = expect.unwrap_or(0);
    let delete = (
        "DELETE FROM audit_events WHERE chain = $1 AND seq > $2 AND seq <= $3",
        vec![Arg::int(mark.chain), Arg::int(after), Arg::int(mark.seq)],
    );
    let changed = s.engine.write_if(vec![(sql, args), delete]).await?;
    Ok(changed.map(|c| c.get(1).copied().unwrap_or(0)))
}
