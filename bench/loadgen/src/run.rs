//! One run of a scenario: preflight, the workers through warm-up and window, /proc samples at the window's edges.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::Config;
use crate::procfs::{proc_cpu_ticks, proc_status_kb};
use crate::report;
use crate::scenario::build_ctx;
use crate::worker::{worker, Stats, Times};

/// What a run measured, before any figure is derived from it.
pub struct Measured {
    /// All workers' counts merged.
    pub total: Stats,
    /// Workers that had not finished 10 s after the window.
    pub lost_workers: usize,
    /// Server utime+stime (clock ticks) at the start and the end of the window.
    pub server_ticks: (Option<u64>, Option<u64>),
    /// The loadgen's own utime+stime at the same edges.
    pub own_ticks: (Option<u64>, Option<u64>),
    pub server_hwm_kb: Option<u64>,
    pub server_rss_kb: Option<u64>,
}

/// Runs the scenario and reports it; the exit code.
pub async fn run(cfg: Config) -> u8 {
    let ctx = match build_ctx(&cfg).await {
        Ok(c) => Arc::new(c),
        Err(e) => return report::preflight_failed(&cfg, &e),
    };

    let now = Instant::now();
    let t = Times {
        start: now + cfg.warmup,
        end: now + cfg.warmup + cfg.duration,
    };
    let pid = cfg.server_pid.map(|p| p.to_string());

    let mut handles = Vec::with_capacity(cfg.connections);
    for _ in 0..cfg.connections {
        handles.push(tokio::spawn(worker(ctx.clone(), t)));
    }

    // Sample server and own CPU exactly at the window edges.
    tokio::time::sleep_until(t.start).await;
    let srv0 = pid.as_deref().and_then(proc_cpu_ticks);
    let me0 = proc_cpu_ticks("self");
    tokio::time::sleep_until(t.end).await;
    let srv1 = pid.as_deref().and_then(proc_cpu_ticks);
    let me1 = proc_cpu_ticks("self");
    let server_hwm_kb = pid.as_deref().and_then(|p| proc_status_kb(p, "VmHWM:"));
    let server_rss_kb = pid.as_deref().and_then(|p| proc_status_kb(p, "VmRSS:"));

    let mut total = Stats::new(&ctx.steps);
    let join_deadline = Instant::now() + Duration::from_secs(10);
    let mut lost_workers = 0;
    for h in handles {
        match tokio::time::timeout_at(join_deadline, h).await {
            Ok(Ok(s)) => total.merge(s),
            _ => lost_workers += 1,
        }
    }

    let m = Measured {
        total,
        lost_workers,
        server_ticks: (srv0, srv1),
        own_ticks: (me0, me1),
        server_hwm_kb,
        server_rss_kb,
    };
    report::report(&cfg, &ctx, &m)
}
