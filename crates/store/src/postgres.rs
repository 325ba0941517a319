//! The PostgreSQL engine: one sqlx pool for reads and for the group committer's writers.

use crate::exec::{self, Arg, Table, WriteTx};
use crate::sql::{Engine, Map, SqlStore};
use crate::write::{Guard, StoredClaim, WriteOutcome, WriteSet};
use crate::{Result, StoreError};
use async_trait::async_trait;
use cardgate_core::audit::{AuditEvent, AuditKey, Relink, Relinking};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{Postgres, Row};
use std::borrow::Cow;
use std::collections::HashMap;
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
    (
        4,
        "mfa lockout",
        include_str!("../migrations/postgres/0004_mfa_lockout.sql"),
    ),
    (
        5,
        "environments",
        include_str!("../migrations/postgres/0005_environments.sql"),
    ),
    (
        6,
        "claims",
        include_str!("../migrations/postgres/0006_claims.sql"),
    ),
    (
        7,
        "key binding",
        include_str!("../migrations/postgres/0007_key_binding.sql"),
    ),
    (
        10,
        "sdk tokens",
        include_str!("../migrations/postgres/0010_sdk_tokens.sql"),
    ),
    (
        11,
        "retention",
        include_str!("../migrations/postgres/0011_retention.sql"),
    ),
];

/// sqlx's migrator over [`MIGRATIONS`].
fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            files
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

/// Rows per multi-row INSERT: 14 columns × 64 rows stays far below PostgreSQL's limit on
/// bound parameters, and one statement per chunk saves a network round trip per row.
const ROWS_PER_INSERT: usize = 64;

/// How long a statement waits for a connection (a free one, or a new one being opened) before
/// the database counts as unreachable: an outage is answered, not waited out.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(1);

fn commit_unknown(e: sqlx::Error) -> StoreError {
    StoreError::CommitUnknown(e.to_string())
}

pub struct PgEngine {
    pool: sqlx::Pool<Postgres>,
    /// Each audit chain's head as this process's last commit on it left it: the guess that
    /// lets a writer append without first reading (and locking) the head. Taken out while a
    /// transaction uses it, put back only once that transaction has committed.
    heads: std::sync::Mutex<HashMap<i64, (i64, String)>>,
}

/// The store on PostgreSQL (several replicas may share the database).
pub type PostgresStore = SqlStore<PgEngine>;

impl SqlStore<PgEngine> {
    /// Connects to PostgreSQL; migrations take the migrator's advisory lock, so replicas
    /// starting together migrate once.
    pub async fn connect(url: &str, audit_key: AuditKey) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(opts)
            .await?;
        migrator(MIGRATIONS)
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Self::new(
            PgEngine {
                pool,
                heads: std::sync::Mutex::default(),
            },
            audit_key,
        ))
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

    async fn apply(
        &self,
        sets: &[WriteSet],
        chain: i64,
        key: &AuditKey,
    ) -> Result<Vec<WriteOutcome>> {
        let head = self.known_heads().remove(&chain);
        let mut tx = PgTx {
            tx: self.pool.begin().await?,
            head,
        };
        let outcomes = exec::apply_sets(&mut tx, sets, chain, key).await?;
        let PgTx { tx, head } = tx;
        // Whatever goes wrong from here on, the server may have committed.
        tx.commit().await.map_err(commit_unknown)?;
        if let Some(head) = head {
            self.known_heads().insert(chain, head);
        }
        Ok(outcomes)
    }

    async fn relink(&self, key: &AuditKey, note: &Relinking) -> Result<Relink> {
        let mut tx = PgTx {
            tx: self.pool.begin().await?,
            head: None,
        };
        let outcome = exec::relink(&mut tx, key, note).await?;
        if matches!(outcome, Relink::Relinked { .. }) {
            tx.tx.commit().await?;
            // Every head moved: what this process remembers of them is stale.
            self.known_heads().clear();
        }
        Ok(outcome)
    }

    async fn write_one(&self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        // One statement outside a transaction block commits by itself.
        let done = args
            .iter()
            .fold(sqlx::query(sql), bind)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn write_if(
        &self,
        statements: Vec<(&'static str, Vec<Arg<'_>>)>,
    ) -> Result<Option<Vec<u64>>> {
        let mut tx = self.pool.begin().await?;
        let mut changed = Vec::with_capacity(statements.len());
        for (sql, args) in &statements {
            let n = args
                .iter()
                .fold(sqlx::query(sql), bind)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if changed.is_empty() && n == 0 {
                tx.rollback().await?;
                return Ok(None);
            }
            changed.push(n);
        }
        tx.commit().await.map_err(commit_unknown)?;
        Ok(Some(changed))
    }

    async fn reclaim(&self, _pages: i64) -> Result<()> {
        // Autovacuum makes dead rows' space reusable (see the README, Retention).
        Ok(())
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
        tx.commit().await.map_err(commit_unknown)?;
        Ok(v)
    }
}

impl PgEngine {
    fn known_heads(&self) -> std::sync::MutexGuard<'_, HashMap<i64, (i64, String)>> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// An open PostgreSQL write transaction, with what it believes its audit chain's head is.
struct PgTx {
    tx: sqlx::Transaction<'static, Postgres>,
    head: Option<(i64, String)>,
}

/// A batch's audit events, column by column (for `unnest`).
#[derive(Default)]
struct AuditColumns<'a> {
    seq: Vec<i64>,
    ts: Vec<i64>,
    tenant: Vec<Option<&'a str>>,
    env: Vec<&'a str>,
    actor: Vec<&'a str>,
    action: Vec<&'a str>,
    outcome: Vec<&'a str>,
    subject: Vec<&'a str>,
    details: Vec<&'a str>,
    prev: Vec<&'a str>,
    hash: Vec<&'a str>,
}

#[async_trait]
impl WriteTx for PgTx {
    async fn exec(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        let q = args.iter().fold(sqlx::query(sql), bind);
        Ok(q.execute(&mut *self.tx).await?.rows_affected())
    }

    async fn count(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        let q = args.iter().fold(sqlx::query(sql), bind);
        Ok(q.fetch_all(&mut *self.tx).await?.len() as u64)
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
            q.build().execute(&mut *self.tx).await?;
        }
        Ok(())
    }

    async fn fetch_all<U: Send + 'static>(
        &mut self,
        sql: &'static str,
        args: Vec<Arg<'_>>,
        map: Map<U>,
    ) -> Result<Vec<U>> {
        let q = args.iter().fold(sqlx::query(sql), bind);
        let rows = q.fetch_all(&mut *self.tx).await?;
        rows.iter().map(|r| map(r)).collect()
    }

    async fn set_links(&mut self, links: &[(i64, i64, String, String)]) -> Result<()> {
        let chains: Vec<i64> = links.iter().map(|l| l.0).collect();
        let seqs: Vec<i64> = links.iter().map(|l| l.1).collect();
        let prevs: Vec<&str> = links.iter().map(|l| l.2.as_str()).collect();
        let hashes: Vec<&str> = links.iter().map(|l| l.3.as_str()).collect();
        sqlx::query(
            "UPDATE audit_events e SET prev_hash = u.prev, hash = u.hash \
             FROM unnest($1::int8[], $2::int8[], $3::text[], $4::text[]) AS u(chain, seq, prev, hash) \
             WHERE e.chain = u.chain AND e.seq = u.seq",
        )
        .bind(&chains)
        .bind(&seqs)
        .bind(&prevs)
        .bind(&hashes)
        .persistent(false)
        .execute(&mut *self.tx)
        .await?;
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
        .fetch_all(&mut *self.tx)
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
        .fetch_all(&mut *self.tx)
        .await?;
        let counted: std::collections::HashSet<&[u8]> = counted.iter().map(|v| &v[..]).collect();
        let mut out = vec![false; redeems.len()];
        for (id, _, i) in rows {
            out[i] = counted.contains(id);
        }
        Ok(out)
    }

    /// One statement claims them all; where keys were taken, a second reads what their
    /// claimants stored. The second must be a statement of its own: a key another transaction
    /// claimed while this one waited for it (the insert waits for that commit, then finds the
    /// key taken) is not in the first statement's snapshot.
    async fn claim_all(&mut self, claims: &[&Guard]) -> Result<Vec<Option<StoredClaim>>> {
        /// One claim, with its place among `claims`.
        struct Row<'a> {
            namespace: &'a str,
            key: &'a [u8],
            at: usize,
            fingerprint: &'a [u8],
            value: Option<&'a [u8]>,
            now_ms: i64,
            expires_at_ms: i64,
        }
        let mut rows = Vec::with_capacity(claims.len());
        for (i, g) in claims.iter().enumerate() {
            let Guard::Claim {
                namespace,
                key,
                fingerprint,
                value,
                now_ms,
                expires_at_ms,
            } = g
            else {
                return Err(StoreError::Database("claim_all takes claims only".into()));
            };
            rows.push(Row {
                namespace,
                key: &key.0,
                at: i,
                fingerprint,
                value: value.as_deref(),
                now_ms: *now_ms,
                expires_at_ms: *expires_at_ms,
            });
        }
        // In key order, so that concurrent writers lock the rows in the same order.
        rows.sort_unstable_by(|a, b| (a.namespace, a.key).cmp(&(b.namespace, b.key)));
        let namespaces: Vec<&str> = rows.iter().map(|r| r.namespace).collect();
        let keys: Vec<&[u8]> = rows.iter().map(|r| r.key).collect();
        let fingerprints: Vec<&[u8]> = rows.iter().map(|r| r.fingerprint).collect();
        let values: Vec<Option<&[u8]>> = rows.iter().map(|r| r.value).collect();
        let nows: Vec<i64> = rows.iter().map(|r| r.now_ms).collect();
        let expiries: Vec<i64> = rows.iter().map(|r| r.expires_at_ms).collect();
        let claimed: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "INSERT INTO claims (namespace, key, fingerprint, value, created_at, expires_at) \
             SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[], $4::bytea[], $5::int8[], $6::int8[]) \
             ON CONFLICT (namespace, key) DO UPDATE SET fingerprint = excluded.fingerprint, value = excluded.value, \
             created_at = excluded.created_at, expires_at = excluded.expires_at \
             WHERE claims.expires_at <= excluded.created_at RETURNING namespace, key",
        )
        .bind(&namespaces)
        .bind(&keys)
        .bind(&fingerprints)
        .bind(&values)
        .bind(&nows)
        .bind(&expiries)
        .persistent(false)
        .fetch_all(&mut *self.tx)
        .await?;
        let claimed: std::collections::HashSet<(&str, &[u8])> =
            claimed.iter().map(|(n, k)| (n.as_str(), &k[..])).collect();
        let taken: Vec<&Row> = rows
            .iter()
            .filter(|r| !claimed.contains(&(r.namespace, r.key)))
            .collect();
        let mut out = vec![None; claims.len()];
        if taken.is_empty() {
            return Ok(out);
        }
        let found: Vec<(i64, Vec<u8>, Option<Vec<u8>>, i64)> = sqlx::query_as(
            "SELECT u.i, c.fingerprint, c.value, c.expires_at \
             FROM unnest($1::text[], $2::bytea[]) WITH ORDINALITY AS u(namespace, key, i) \
             JOIN claims c ON c.namespace = u.namespace AND c.key = u.key",
        )
        .bind(taken.iter().map(|r| r.namespace).collect::<Vec<_>>())
        .bind(taken.iter().map(|r| r.key).collect::<Vec<_>>())
        .persistent(false)
        .fetch_all(&mut *self.tx)
        .await?;
        let mut read = vec![false; taken.len()];
        for (i, fingerprint, value, expires_at_ms) in found {
            let Some(t) = usize::try_from(i - 1).ok().filter(|t| *t < taken.len()) else {
                continue;
            };
            read[t] = true;
            out[taken[t].at] = Some(StoredClaim {
                fingerprint,
                value,
                expires_at_ms,
            });
        }
        // A claim deleted between the two statements (a purge with a later clock): that key
        // is claimed again on its own.
        for (r, _) in taken.iter().zip(read).filter(|(_, read)| !read) {
            out[r.at] = exec::claim(self, claims[r.at]).await?;
        }
        Ok(out)
    }

    /// One statement on the usual path: the events are linked after the head this process
    /// last left, and the head moves only if it is still there (its row lock then held
    /// until commit), the insert only if the head moved. If another replica appended to the
    /// chain meanwhile, nothing was written: read and lock the head, and link again.
    async fn append_audit(
        &mut self,
        key: &AuditKey,
        chain: i64,
        events: &[&AuditEvent],
    ) -> Result<()> {
        if let Some((seq, head)) = self.head.take() {
            let links = exec::link(key, chain, events, seq, &head);
            if let Some((last_seq, _, last_hash)) = links.last() {
                let mut cols: AuditColumns = Default::default();
                for (ev, (seq, prev, hash)) in events.iter().zip(&links) {
                    cols.seq.push(*seq);
                    cols.ts.push(ev.ts_ms);
                    cols.tenant.push(ev.tenant_id.as_deref());
                    cols.env.push(&ev.environment);
                    cols.actor.push(&ev.actor);
                    cols.action.push(&ev.action);
                    cols.outcome.push(&ev.outcome);
                    cols.subject.push(&ev.subject);
                    cols.details.push(&ev.details);
                    cols.prev.push(prev);
                    cols.hash.push(hash);
                }
                let inserted = sqlx::query(
                    "WITH head AS (UPDATE audit_head SET seq = $1, hash = $2 \
                       WHERE id = $3 AND seq = $4 AND hash = $5 RETURNING id) \
                     INSERT INTO audit_events (chain, seq, ts_ms, tenant_id, environment, actor, action, \
                       outcome, subject, details, prev_hash, hash) \
                     SELECT $3, u.* FROM unnest($6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[], \
                       $11::text[], $12::text[], $13::text[], $14::text[], $15::text[], $16::text[]) AS u \
                     WHERE EXISTS (SELECT 1 FROM head)",
                )
                .bind(last_seq)
                .bind(last_hash)
                .bind(chain)
                .bind(seq)
                .bind(&head)
                .bind(&cols.seq)
                .bind(&cols.ts)
                .bind(&cols.tenant)
                .bind(&cols.env)
                .bind(&cols.actor)
                .bind(&cols.action)
                .bind(&cols.outcome)
                .bind(&cols.subject)
                .bind(&cols.details)
                .bind(&cols.prev)
                .bind(&cols.hash)
                .execute(&mut *self.tx)
                .await?
                .rows_affected();
                if inserted == events.len() as u64 {
                    self.head = Some((*last_seq, last_hash.clone()));
                    return Ok(());
                }
                if inserted != 0 {
                    return Err(StoreError::Database(format!(
                        "audit append wrote {inserted} of {} events",
                        events.len()
                    )));
                }
            }
        }
        self.head = Some(exec::append_after_head(self, key, chain, events).await?);
        Ok(())
    }

    async fn chain_head(&mut self, chain: i64) -> Result<(i64, String)> {
        // Serialises this chain's appends (the same writer number of every replica) until
        // commit; the other chains' writers go on in parallel.
        let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = $1 FOR UPDATE")
            .bind(chain)
            .fetch_one(&mut *self.tx)
            .await?;
        Ok((r.try_get("seq")?, r.try_get("hash")?))
    }
}
