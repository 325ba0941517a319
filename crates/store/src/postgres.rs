//! The PostgreSQL engine: one sqlx pool for reads and for the group committer's writers.

use crate::exec::{self, Arg, Table, WriteTx};
use crate::sql::{migrator, Engine, Map, SqlStore};
use crate::write::{Guard, WriteOutcome, WriteSet};
use crate::{Result, StoreError};
use async_trait::async_trait;
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use std::str::FromStr;
use std::time::Duration;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "split tokens",
        include_str!("../migrations/postgres/0002_split_tokens.sql"),
    ),
    (
        3,
        "audit chains",
        include_str!("../migrations/postgres/0003_audit_chains.sql"),
    ),
];

/// Rows per multi-row INSERT: 14 columns × 64 rows stays far below PostgreSQL's limit on
/// bound parameters, and one statement per chunk saves a network round trip per row.
const ROWS_PER_INSERT: usize = 64;

pub struct PgEngine {
    pool: sqlx::Pool<Postgres>,
}

/// The store on PostgreSQL (several replicas may share the database).
pub type PostgresStore = SqlStore<PgEngine>;

impl SqlStore<PgEngine> {
    /// Connects to PostgreSQL; migrations take the migrator's advisory lock, so replicas
    /// starting together migrate once.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        migrator(MIGRATIONS)
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Self {
            engine: PgEngine { pool },
        })
    }
}

fn bind<'q>(
    q: Query<'q, Postgres, PgArguments>,
    a: &'q Arg<'_>,
) -> Query<'q, Postgres, PgArguments> {
    match a {
        Arg::Int(v) => q.bind(*v),
        Arg::Text(v) => q.bind(v.as_deref()),
        Arg::Blob(v) => q.bind(*v),
        Arg::Bool(v) => q.bind(*v),
    }
}

#[async_trait]
impl Engine for PgEngine {
    const BACKEND: &'static str = "postgres";
    /// Two writers, each appending to an audit chain of its own, overlap entirely. On the
    /// 2-core benchmark machine two beat one (a batch's round trips overlap the other's
    /// commit) and four (smaller batches: more statements and commits per request for the
    /// database, which shares the cores): card pairs 6.0k / 7.0k / 5.6k per second.
    const WRITERS: usize = 2;

    async fn fetch_all<T: Send + 'static>(
        &self,
        sql: &'static str,
        args: Vec<Arg<'_>>,
        map: Map<T>,
    ) -> Result<Vec<T>> {
        let rows = args
            .iter()
            .fold(sqlx::query(sql), bind)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| map(r)).collect()
    }

    async fn apply(&self, sets: &[WriteSet], chain: i64) -> Result<Vec<WriteOutcome>> {
        let mut tx = PgTx(self.pool.begin().await?);
        let outcomes = exec::apply_sets(&mut tx, sets, chain).await?;
        tx.0.commit().await?;
        Ok(outcomes)
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(exec::META_INIT)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(v)
    }
}

/// An open PostgreSQL write transaction.
struct PgTx(sqlx::Transaction<'static, Postgres>);

#[async_trait]
impl WriteTx for PgTx {
    async fn exec(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        let q = args.iter().fold(sqlx::query(sql), bind);
        Ok(q.execute(&mut *self.0).await?.rows_affected())
    }

    async fn count(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        let q = args.iter().fold(sqlx::query(sql), bind);
        Ok(q.fetch_all(&mut *self.0).await?.len() as u64)
    }

    async fn insert_rows(&mut self, table: &'static Table, rows: Vec<Vec<Arg<'_>>>) -> Result<()> {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<Postgres>::new(format!(
                "INSERT INTO {} ({}) ",
                table.name, table.columns
            ));
            q.push_values(chunk, |mut b, row| {
                for a in row {
                    match a {
                        Arg::Int(v) => b.push_bind(*v),
                        Arg::Text(v) => b.push_bind(v.as_deref()),
                        Arg::Blob(v) => b.push_bind(*v),
                        Arg::Bool(v) => b.push_bind(*v),
                    };
                }
            });
            q.build().execute(&mut *self.0).await?;
        }
        Ok(())
    }

    async fn cards_are(&mut self, checks: &[&Guard]) -> Result<Vec<bool>> {
        let (mut tenants, mut cards, mut statuses, mut vaults) = (vec![], vec![], vec![], vec![]);
        for g in checks {
            let Guard::CardIs {
                tenant,
                card,
                status,
                vault,
            } = g
            else {
                return Err(StoreError::Database(
                    "cards_are takes card checks only".into(),
                ));
            };
            tenants.push(tenant.as_str());
            cards.push(card.to_string());
            statuses.push(status.as_str());
            vaults.push(vault.as_slice());
        }
        let held: Vec<i64> = sqlx::query_scalar(
            "SELECT u.i FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[]) \
             WITH ORDINALITY AS u(tenant_id, id, status, vault, i) \
             JOIN cards c ON c.tenant_id = u.tenant_id AND c.id = u.id AND c.status = u.status AND c.vault = u.vault \
             WHERE c.id = ANY($2)",
        )
        .bind(&tenants)
        .bind(&cards)
        .bind(&statuses)
        .bind(&vaults)
        .persistent(false)
        .fetch_all(&mut *self.0)
        .await?;
        let mut out = vec![false; checks.len()];
        for i in held {
            if let Some(slot) = usize::try_from(i - 1).ok().and_then(|i| out.get_mut(i)) {
                *slot = true;
            }
        }
        Ok(out)
    }

    async fn redeem_all(&mut self, redeems: &[&Guard]) -> Result<Vec<bool>> {
        let mut rows: Vec<(&[u8], i64, usize)> = Vec::with_capacity(redeems.len());
        for (i, g) in redeems.iter().enumerate() {
            let Guard::RedeemCardToken { id, now_ms } = g else {
                return Err(StoreError::Database(
                    "redeem_all takes redemptions only".into(),
                ));
            };
            rows.push((&id.0[..], *now_ms, i));
        }
        // In id order, so that concurrent writers lock the rows in the same order. Both bulk
        // statements are planned afresh each time (not persistent): a cached plan made while
        // the table was small scans the whole table once it has grown.
        rows.sort_unstable();
        let ids: Vec<&[u8]> = rows.iter().map(|r| r.0).collect();
        let nows: Vec<i64> = rows.iter().map(|r| r.1).collect();
        let counted: Vec<Vec<u8>> = sqlx::query_scalar(
            "UPDATE card_tokens t SET uses_made = t.uses_made + 1 \
             FROM unnest($1::bytea[], $2::int8[]) AS u(id, now_ms) \
             WHERE t.id = ANY($1) AND t.id = u.id AND t.revoked = FALSE AND t.expires_at > u.now_ms \
             AND (t.max_uses IS NULL OR t.uses_made < t.max_uses) RETURNING t.id",
        )
        .bind(&ids)
        .bind(&nows)
        .persistent(false)
        .fetch_all(&mut *self.0)
        .await?;
        let counted: std::collections::HashSet<&[u8]> = counted.iter().map(|v| &v[..]).collect();
        let mut out = vec![false; redeems.len()];
        for (id, _, i) in rows {
            out[i] = counted.contains(id);
        }
        Ok(out)
    }

    async fn chain_head(&mut self, chain: i64) -> Result<(i64, String)> {
        // Serialises this chain's appends (the same writer number of every replica) until
        // commit; the other chains' writers go on in parallel.
        let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = $1 FOR UPDATE")
            .bind(chain)
            .fetch_one(&mut *self.0)
            .await?;
        Ok((r.try_get("seq")?, r.try_get("hash")?))
    }
}
