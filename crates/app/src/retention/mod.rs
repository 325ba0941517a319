//! Running for months: the purger (a background task on every replica) deletes tokens, MFA
//! sessions, claims and revocation entries a grace period after they expire, in small
//! batches of their own beside the group committer's; on SQLite it gives freed pages back;
//! it prunes audit events that were exported and have outlived the audit retention (moving
//! the chain's signed checkpoint); and it counts what is stored for `cardgate status` and
//! the Prometheus gauges. The audit log's export and its checks are in `export`.

pub mod export;

use crate::{facade, AppError};
use cardgate_core::audit::{AuditKey, ChainBreak};
use cardgate_store::{AuditMark, AuditStats, Expiring, ExpiringStats, MarkKind, Space};
use serde_json::json;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

facade!(
    /// Retention: the purger, the audit log's export and prune, the status figures.
    Retention,
    retention
);

/// How the purger runs (serve flags `--purge-*`, `--audit-retention-days`).
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// How long after its expiry a row is kept: longer than any clock difference between
    /// replicas, so nothing a replica could still accept is deleted.
    pub grace: Duration,
    /// Rows deleted per transaction.
    pub batch: i64,
    /// How often the purger runs.
    pub interval: Duration,
    /// The pause between two batches while a backlog is worked off, leaving the write lock
    /// to the committer.
    pub pause: Duration,
    /// Audit events younger than this are never pruned (and older ones only once exported).
    pub audit_retention: Duration,
    /// Free pages given back to the file system per run (SQLite).
    pub vacuum_pages: i64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(10 * 60),
            batch: 1000,
            interval: Duration::from_secs(10),
            pause: Duration::from_millis(20),
            audit_retention: Duration::from_secs(365 * 24 * 3600),
            vacuum_pages: 4096,
        }
    }
}

/// The pause after a full batch while a backlog is worked off: at least `pause`, and four
/// times what the batch took, so the purger holds the store (and a core) at most a fifth of
/// the time however slow its deletes are on a busy machine.
fn backlog_pause(pause: Duration, batch_took: Duration) -> Duration {
    pause.max(batch_took.saturating_mul(4))
}

/// What the purger did in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeReport {
    /// Rows deleted, by kind (kinds with none left out).
    pub purged: Vec<(Expiring, u64)>,
    /// Audit events pruned.
    pub audit_pruned: u64,
}

impl PurgeReport {
    pub fn rows(&self) -> u64 {
        self.purged.iter().map(|(_, n)| n).sum()
    }
}

/// What is stored, for `cardgate status` and the gauges.
#[derive(Debug, Clone)]
pub struct Status {
    pub now_ms: i64,
    pub grace: Duration,
    pub kinds: Vec<ExpiringStats>,
    pub audit: AuditStats,
    pub audit_retention: Duration,
    /// Per chain: the last event exported, and the prune checkpoint.
    pub marks: Vec<AuditMark>,
    pub space: Space,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Whether a mark read from the store was made with the audit key.
pub(crate) fn mark_ok(key: &AuditKey, m: &AuditMark) -> bool {
    key.mark_is(&m.mac, m.kind.as_str(), m.chain, m.seq, &m.hash)
}

impl Retention<'_> {
    pub fn settings(&self) -> RetentionSettings {
        self.retention_settings
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_settings(&self, s: RetentionSettings) {
        *self
            .retention_settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// One run of the purger: every kind's expired rows past the grace period, batch by
    /// batch, then the audit events due for pruning, then (SQLite) freed pages.
    pub async fn purge_once(&self) -> Result<PurgeReport, AppError> {
        let s = self.settings();
        let before = self.now_ms().saturating_sub(ms(s.grace));
        let mut report = PurgeReport::default();
        for kind in Expiring::ALL {
            let mut total = 0;
            loop {
                let started = std::time::Instant::now();
                let n = self
                    .store
                    .purge_expired(kind, before, s.batch)
                    .await
                    .map_err(|e| self.store_failed(e))?;
                total += n;
                self.metrics.rows_purged(kind.as_str(), n);
                if n < u64::try_from(s.batch).unwrap_or(0) {
                    break;
                }
                tokio::time::sleep(backlog_pause(s.pause, started.elapsed())).await;
            }
            if total > 0 {
                report.purged.push((kind, total));
            }
        }
        report.audit_pruned = self.prune_audit(&s).await?;
        if report.rows() + report.audit_pruned > 0 {
            // Free pages are reused by new rows: only a surplus (more than a quarter of the
            // file, as after a backlog was purged) goes back to the file system, so a steady
            // load does not shrink the file only to grow it again.
            let space = self.store.space().await?;
            if space.free_bytes > 0 && space.free_bytes * 4 > space.bytes {
                self.store
                    .reclaim_space(s.vacuum_pages)
                    .await
                    .map_err(|e| self.store_failed(e))?;
            }
        }
        Ok(report)
    }

    /// Prunes, chain by chain, the events that are both exported (up to the chain's export
    /// mark) and older than the audit retention, oldest first, a batch at a time: each batch
    /// moves the chain's prune checkpoint (signed with the audit key) and deletes up to it in
    /// one transaction, so the chain verifies from its checkpoint at every moment. Stops at
    /// the first event that is too young or not exported. Records each prune as an event.
    async fn prune_audit(&self, s: &RetentionSettings) -> Result<u64, AppError> {
        let now = self.now_ms();
        let cutoff = now.saturating_sub(ms(s.audit_retention));
        let key = crate::audit_key(self.master());
        let marks = self.store.audit_marks().await?;
        let mut pruned_total = 0;
        for exported in marks.iter().filter(|m| m.kind == MarkKind::Exported) {
            if !mark_ok(&key, exported) {
                tracing::error!(
                    chain = exported.chain,
                    "the audit export mark was not made with the audit key: nothing pruned"
                );
                continue;
            }
            let chain = exported.chain;
            let mut at = marks
                .iter()
                .find(|m| m.kind == MarkKind::Pruned && m.chain == chain)
                .map(|m| m.seq);
            let mut pruned = 0;
            loop {
                let page = self
                    .store
                    .audit_page((chain, at.unwrap_or(0)), s.batch)
                    .await?;
                let due: Vec<_> = page
                    .iter()
                    .take_while(|e| e.chain == chain && e.seq <= exported.seq && e.ts_ms < cutoff)
                    .collect();
                let Some(last) = due.last() else { break };
                let mark = AuditMark {
                    kind: MarkKind::Pruned,
                    chain,
                    seq: last.seq,
                    hash: last.hash.clone(),
                    ts_ms: now,
                    mac: key.mark(MarkKind::Pruned.as_str(), chain, last.seq, &last.hash),
                };
                match self.store.prune_audit(&mark, at).await? {
                    Some(n) => pruned += n,
                    // Another replica pruned this chain meanwhile: it goes on from there.
                    None => break,
                }
                at = Some(last.seq);
                if due.len() < page.len() {
                    break;
                }
                tokio::time::sleep(s.pause).await;
            }
            if pruned > 0 {
                pruned_total += pruned;
                let event = self.audit(
                    None,
                    "system",
                    "audit.pruned",
                    "ok",
                    "audit_log",
                    json!({"chain": chain, "through_seq": at, "events": pruned}),
                );
                self.commit(cardgate_store::WriteSet::of(vec![event]))
                    .await?;
            }
        }
        Ok(pruned_total)
    }

    /// Counts what is stored now.
    pub async fn status(&self) -> Result<Status, AppError> {
        let s = self.settings();
        let now = self.now_ms();
        let before = now.saturating_sub(ms(s.grace));
        let mut kinds = Vec::with_capacity(Expiring::ALL.len());
        for kind in Expiring::ALL {
            kinds.push(self.store.expiring_stats(kind, now, before).await?);
        }
        Ok(Status {
            now_ms: now,
            grace: s.grace,
            kinds,
            audit: self.store.audit_stats().await?,
            audit_retention: s.audit_retention,
            marks: self.store.audit_marks().await?,
            space: self.store.space().await?,
        })
    }

    /// Counts what is stored and publishes it as the retention gauges.
    pub async fn refresh_gauges(&self) -> Result<Status, AppError> {
        let status = self.status().await?;
        self.metrics.set_gauges(gauges(&status));
        Ok(status)
    }

    /// Starts the purger: a run every `interval` (and the gauges counted every
    /// `stats_every`), until the application is dropped. Safe on every replica at once.
    pub fn spawn_purger(&self, stats_every: Duration) {
        let weak = std::sync::Arc::downgrade(self.0);
        let last_stats = AtomicI64::new(i64::MIN);
        tokio::spawn(async move {
            loop {
                let Some(app) = weak.upgrade() else { break };
                let every = app.retention().settings().interval;
                match app.retention().purge_once().await {
                    Ok(r) if r.rows() + r.audit_pruned > 0 => {
                        tracing::debug!(rows = r.rows(), audit = r.audit_pruned, "purged")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "purge failed"),
                }
                let now = app.now_ms();
                if now.saturating_sub(last_stats.load(Ordering::Relaxed)) >= ms(stats_every) {
                    last_stats.store(now, Ordering::Relaxed);
                    if let Err(e) = app.retention().refresh_gauges().await {
                        tracing::warn!(error = %e, "counting rows failed");
                    }
                }
                drop(app);
                tokio::time::sleep(every).await;
            }
        });
    }
}

/// The retention figures as Prometheus gauges.
pub fn gauges(s: &Status) -> String {
    let mut out = String::new();
    let mut family = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, v) in rows {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    };
    let by_kind = |f: &dyn Fn(&ExpiringStats) -> Option<f64>| {
        s.kinds
            .iter()
            .filter_map(|k| f(k).map(|v| (format!("{{kind=\"{}\"}}", k.kind.as_str()), v)))
            .collect::<Vec<_>>()
    };
    family(
        "cardgate_rows",
        "Rows stored, by kind.",
        by_kind(&|k| Some(k.rows as f64)),
    );
    family(
        "cardgate_expired_rows",
        "Rows past their expiry still stored, by kind.",
        by_kind(&|k| Some(k.expired as f64)),
    );
    family(
        "cardgate_purge_backlog_rows",
        "Rows past expiry plus grace, which the purger has yet to delete, by kind.",
        by_kind(&|k| Some(k.backlog as f64)),
    );
    family(
        "cardgate_oldest_expired_row_age_seconds",
        "How long ago the oldest expired row still stored expired, by kind (0: none).",
        by_kind(&|k| {
            Some(
                k.oldest_expiry_ms
                    .filter(|e| *e <= s.now_ms)
                    .map_or(0.0, |e| (s.now_ms - e) as f64 / 1000.0),
            )
        }),
    );
    family(
        "cardgate_audit_events",
        "Audit events stored.",
        vec![(String::new(), s.audit.events as f64)],
    );
    family(
        "cardgate_audit_oldest_event_timestamp_seconds",
        "Time of the oldest audit event stored (0: none).",
        vec![(
            String::new(),
            s.audit.oldest_ts_ms.map_or(0.0, |t| t as f64 / 1000.0),
        )],
    );
    family(
        "cardgate_audit_retention_seconds",
        "How long audit events are kept before an exported one may be pruned.",
        vec![(String::new(), s.audit_retention.as_secs_f64())],
    );
    let marks = |kind: MarkKind, f: &dyn Fn(&AuditMark) -> f64| {
        s.marks
            .iter()
            .filter(|m| m.kind == kind)
            .map(|m| (format!("{{chain=\"{}\"}}", m.chain), f(m)))
            .collect::<Vec<_>>()
    };
    family(
        "cardgate_audit_exported_seq",
        "The last audit event exported, by chain.",
        marks(MarkKind::Exported, &|m| m.seq as f64),
    );
    family(
        "cardgate_audit_last_export_timestamp_seconds",
        "When the last export of each chain was recorded.",
        marks(MarkKind::Exported, &|m| m.ts_ms as f64 / 1000.0),
    );
    family(
        "cardgate_audit_pruned_seq",
        "The last audit event pruned (the chain's verified start), by chain.",
        marks(MarkKind::Pruned, &|m| m.seq as f64),
    );
    family(
        "cardgate_database_bytes",
        "The database's size (SQLite: main file; PostgreSQL: the database).",
        vec![(String::new(), s.space.bytes as f64)],
    );
    family(
        "cardgate_database_free_bytes",
        "Free pages inside the SQLite file, reused before it grows (0 on PostgreSQL).",
        vec![(String::new(), s.space.free_bytes as f64)],
    );
    out
}

/// The prune checkpoints of `marks` that the audit key made, as chain starts for the
/// verifier; a checkpoint it did not make breaks the chain.
pub(crate) fn checkpoints(
    key: &AuditKey,
    marks: &[AuditMark],
) -> Result<Vec<cardgate_core::audit::ChainHead>, ChainBreak> {
    marks
        .iter()
        .filter(|m| m.kind == MarkKind::Pruned)
        .map(|m| {
            if mark_ok(key, m) {
                Ok(cardgate_core::audit::ChainHead {
                    chain: m.chain,
                    seq: m.seq,
                    hash: m.hash.clone(),
                })
            } else {
                Err(ChainBreak::Checkpoint {
                    chain: m.chain,
                    seq: m.seq,
                })
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_batch_is_followed_by_a_longer_pause() {
        let pause = Duration::from_millis(20);
        assert_eq!(
            backlog_pause(pause, Duration::from_millis(1)),
            pause,
            "a quick batch waits the configured pause"
        );
        assert_eq!(
            backlog_pause(pause, Duration::from_millis(50)),
            Duration::from_millis(200),
            "a slow batch leaves the store four times as long to everyone else"
        );
    }
}
