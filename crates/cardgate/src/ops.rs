//! Running for months, from the command line: the purger's settings (serve flags), `cardgate
//! status`, `cardgate audit export` and `cardgate audit verify --file`.

use cardgate_app::retention::export::{verify_export, ExportRange, Since};
use cardgate_app::retention::Status;
use cardgate_app::{App, RetentionSettings};
use cardgate_store::MarkKind;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The purger's settings (every replica runs one).
#[derive(Args, Clone, Debug)]
pub struct PurgeArgs {
    /// How long after expiry a token, MFA session, claim or revocation entry is deleted:
    /// longer than any clock difference between replicas.
    #[arg(long, env = "CARDGATE_PURGE_GRACE_SECS", default_value_t = 600)]
    pub purge_grace_secs: u64,
    /// Rows deleted per transaction (small: the write lock is held that long).
    #[arg(long, env = "CARDGATE_PURGE_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub purge_batch: i64,
    /// Seconds between two runs of the purger; 0 turns it off on this replica.
    #[arg(long, env = "CARDGATE_PURGE_INTERVAL_SECS", default_value_t = 10)]
    pub purge_interval_secs: u64,
    /// Pause between two batches while a backlog is worked off, in milliseconds.
    #[arg(long, env = "CARDGATE_PURGE_PAUSE_MS", default_value_t = 20)]
    pub purge_pause_ms: u64,
    /// Free SQLite pages given back to the file system per run (incremental vacuum).
    #[arg(long, env = "CARDGATE_VACUUM_PAGES", default_value_t = 4096)]
    pub vacuum_pages: i64,
    /// How long audit events are kept; older ones are pruned once exported.
    #[arg(long, env = "CARDGATE_AUDIT_RETENTION_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub audit_retention_days: u64,
    /// The audit retention in seconds, instead of days (for tests and soak runs).
    #[arg(long, env = "CARDGATE_AUDIT_RETENTION_SECS", hide = true)]
    pub audit_retention_secs: Option<u64>,
    /// Seconds between two counts of the rows for the Prometheus gauges.
    #[arg(long, env = "CARDGATE_STATS_INTERVAL_SECS", default_value_t = 60)]
    pub stats_interval_secs: u64,
}

impl PurgeArgs {
    pub fn settings(&self) -> RetentionSettings {
        RetentionSettings {
            grace: Duration::from_secs(self.purge_grace_secs),
            batch: self.purge_batch,
            interval: Duration::from_secs(self.purge_interval_secs.max(1)),
            pause: Duration::from_millis(self.purge_pause_ms),
            audit_retention: Duration::from_secs(
                self.audit_retention_secs
                    .unwrap_or(self.audit_retention_days * 24 * 3600),
            ),
            vacuum_pages: self.vacuum_pages,
        }
    }

    /// Applies the settings and, unless turned off, starts the purger.
    pub fn start(&self, svc: &Arc<App>) {
        svc.retention().set_settings(self.settings());
        if self.purge_interval_secs > 0 {
            svc.retention()
                .spawn_purger(Duration::from_secs(self.stats_interval_secs.max(1)));
        }
    }
}

#[derive(Args)]
pub struct ExportArgs {
    /// Where to start: `last` (after the last export recorded: resumable, the default), `all`
    /// (the oldest event stored), or a time (RFC 3339, or milliseconds since the epoch).
    #[arg(long, default_value = "last")]
    pub since: String,
    /// Stop each chain before its first event at or after this time (RFC 3339 or ms).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many events (run again for the rest).
    #[arg(long)]
    pub limit: Option<u64>,
    /// Write to this file (created, never overwritten) instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A time given as RFC 3339 or as milliseconds since the epoch.
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is neither RFC 3339 nor milliseconds: {e}"))?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).map_err(|e| e.to_string())
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

pub async fn export(svc: &Arc<App>, args: ExportArgs) -> Result<(), String> {
    let since = match args.since.as_str() {
        "last" => Since::Last,
        "all" => Since::All,
        t => Since::Time(parse_time(t)?),
    };
    let range = ExportRange {
        since,
        until_ms: args.until.as_deref().map(parse_time).transpose()?,
        limit: args.limit,
    };
    let ranges = match &args.out {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let mut out = std::io::BufWriter::new(file);
            svc.retention()
                .export(&mut out, range, |w| {
                    use std::io::Write;
                    w.flush()?;
                    w.get_ref().sync_all()
                })
                .await
        }
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            svc.retention()
                .export(&mut out, range, std::io::Write::flush)
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    let events: i64 = ranges.iter().map(|r| r.to_seq - r.from_seq + 1).sum();
    eprintln!("exported {events} audit events");
    for r in &ranges {
        eprintln!(
            "  chain {}: events {}..{}{}",
            r.chain,
            r.from_seq,
            r.to_seq,
            if r.recorded {
                " (recorded as exported)"
            } else {
                " (not recorded: does not continue the last export)"
            }
        );
    }
    Ok(())
}

pub fn verify_files(
    master: &cardgate_jose::vault::MasterKey,
    files: &[PathBuf],
) -> Result<(), String> {
    let mut readers = Vec::with_capacity(files.len());
    for f in files {
        let file =
            std::fs::File::open(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        readers.push(std::io::BufReader::new(file));
    }
    let key = cardgate_app::audit_key(master);
    let v = verify_export(&key, readers).map_err(|e| format!("export broken: {e}"))?;
    println!("export intact: {} events", v.events);
    for (chain, (from, to)) in &v.chains {
        println!("  chain {chain}: events {from}..{to}");
    }
    Ok(())
}

pub async fn status(svc: &Arc<App>, args: &PurgeArgs) -> Result<(), String> {
    svc.retention().set_settings(args.settings());
    let s = svc.retention().status().await.map_err(|e| e.to_string())?;
    print!("{}", render_status(&s));
    Ok(())
}

fn render_status(s: &Status) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "database: {} bytes ({} free, space reclaimed by {})",
        s.space.bytes, s.space.free_bytes, s.space.reclaim
    );
    let _ = writeln!(out, "rows (purged {} s after expiry):", s.grace.as_secs());
    let _ = writeln!(
        out,
        "  {:<14} {:>10} {:>10} {:>10}  oldest expired",
        "kind", "rows", "expired", "backlog"
    );
    for k in &s.kinds {
        let oldest = k
            .oldest_expiry_ms
            .filter(|e| *e <= s.now_ms)
            .map_or("-".to_string(), rfc3339);
        let _ = writeln!(
            out,
            "  {:<14} {:>10} {:>10} {:>10}  {oldest}",
            k.kind.as_str(),
            k.rows,
            k.expired,
            k.backlog
        );
    }
    let secs = s.audit_retention.as_secs();
    let retention = if secs.is_multiple_of(86_400) {
        format!("{} days", secs / 86_400)
    } else {
        format!("{secs} s")
    };
    let _ = writeln!(
        out,
        "audit: {} events, oldest {}, retention {retention} (pruned only once exported)",
        s.audit.events,
        s.audit.oldest_ts_ms.map_or("-".to_string(), rfc3339),
    );
    for m in &s.marks {
        let what = match m.kind {
            MarkKind::Exported => "exported through",
            MarkKind::Pruned => "pruned through",
        };
        let _ = writeln!(
            out,
            "  chain {}: {what} event {} (at {})",
            m.chain,
            m.seq,
            rfc3339(m.ts_ms)
        );
    }
    if !s.marks.iter().any(|m| m.kind == MarkKind::Exported) {
        let _ = writeln!(out, "  last export: never");
    }
    out
}
