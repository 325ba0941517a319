//! Prometheus metrics: requests and latency by route and status, tokens issued by kind, store
//! errors by kind.
//! Labels are route templates, never raw paths or query strings, so no id or secret leaks.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

const BUCKETS_MS: [f64; 12] = [
    0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0,
];

#[derive(Default)]
struct Series {
    count: AtomicU64,
    sum_us: AtomicU64,
    buckets: [AtomicU64; 12],
}

type SeriesKey = (String, &'static str, u16);

#[derive(Default)]
pub struct Metrics {
    requests: RwLock<HashMap<SeriesKey, Arc<Series>>>,
    issued: RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
    store_errors: RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
    /// Rows the purger deleted, by kind.
    purged: RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
    /// The retention gauges, rendered by the purger when it last counted (see `retention`).
    gauges: RwLock<String>,
}

/// Adds one to `key`'s counter in `map`.
fn bump(map: &RwLock<HashMap<&'static str, Arc<AtomicU64>>>, key: &'static str) {
    bump_by(map, key, 1);
}

/// Adds `n` to `key`'s counter in `map`.
fn bump_by(map: &RwLock<HashMap<&'static str, Arc<AtomicU64>>>, key: &'static str, n: u64) {
    let c = {
        let read = map.read().unwrap_or_else(|p| p.into_inner());
        read.get(key).cloned()
    };
    let c = match c {
        Some(c) => c,
        None => map
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key)
            .or_default()
            .clone(),
    };
    c.fetch_add(n, Ordering::Relaxed);
}

/// Renders one counter family labelled by `label`.
fn render_counters(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    map: &RwLock<HashMap<&'static str, Arc<AtomicU64>>>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} counter");
    let map = map.read().unwrap_or_else(|p| p.into_inner());
    let mut keys: Vec<_> = map.iter().collect();
    keys.sort_by_key(|(k, _)| **k);
    for (k, v) in keys {
        let _ = writeln!(
            out,
            "{name}{{{label}=\"{k}\"}} {}",
            v.load(Ordering::Relaxed)
        );
    }
}

impl Metrics {
    pub fn observe(&self, route: &str, method: &'static str, status: u16, micros: u64) {
        let key = (route.to_string(), method, status);
        let series = {
            let read = self.requests.read().unwrap_or_else(|p| p.into_inner());
            read.get(&key).cloned()
        };
        let series = match series {
            Some(s) => s,
            None => self
                .requests
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .entry(key)
                .or_default()
                .clone(),
        };
        series.count.fetch_add(1, Ordering::Relaxed);
        series.sum_us.fetch_add(micros, Ordering::Relaxed);
        let ms = micros as f64 / 1000.0;
        for (i, b) in BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                series.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn token_issued(&self, kind: &'static str) {
        bump(&self.issued, kind);
    }

    /// A store error of `kind` ([`cardgate_store::StoreError::kind`]: never its message).
    pub fn store_error(&self, kind: &'static str) {
        bump(&self.store_errors, kind);
    }

    /// `n` rows of `kind` deleted by the purger.
    pub fn rows_purged(&self, kind: &'static str, n: u64) {
        bump_by(&self.purged, kind, n);
    }

    /// Replaces the retention gauges (Prometheus text, rendered by their owner).
    pub fn set_gauges(&self, text: String) {
        *self.gauges.write().unwrap_or_else(|p| p.into_inner()) = text;
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP cardgate_http_requests_total HTTP requests by route template, method and status.\n");
        out.push_str("# TYPE cardgate_http_requests_total counter\n");
        let reqs = self.requests.read().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<_> = reqs.keys().collect();
        keys.sort();
        for k in &keys {
            let s = &reqs[*k];
            let _ = writeln!(
                out,
                "cardgate_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{}\"}} {}",
                k.0,
                k.1,
                k.2,
                s.count.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP cardgate_http_request_duration_seconds Request latency by route template, method and status.\n");
        out.push_str("# TYPE cardgate_http_request_duration_seconds histogram\n");
        for k in &keys {
            let s = &reqs[*k];
            let labels = format!("route=\"{}\",method=\"{}\",status=\"{}\"", k.0, k.1, k.2);
            for (i, b) in BUCKETS_MS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "cardgate_http_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {}",
                    b / 1000.0,
                    s.buckets[i].load(Ordering::Relaxed)
                );
            }
            let count = s.count.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "cardgate_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"
            );
            let _ = writeln!(
                out,
                "cardgate_http_request_duration_seconds_sum{{{labels}}} {}",
                s.sum_us.load(Ordering::Relaxed) as f64 / 1e6
            );
            let _ = writeln!(
                out,
                "cardgate_http_request_duration_seconds_count{{{labels}}} {count}"
            );
        }
        render_counters(
            &mut out,
            "cardgate_tokens_issued_total",
            "Tokens issued by kind.",
            "kind",
            &self.issued,
        );
        render_counters(
            &mut out,
            "cardgate_store_errors_total",
            "Store errors met by requests and background refreshes, by kind (unavailable, commit_unknown, statement, corrupt, writer_gone).",
            "kind",
            &self.store_errors,
        );
        render_counters(
            &mut out,
            "cardgate_purged_rows_total",
            "Expired rows the purger deleted, by kind.",
            "kind",
            &self.purged,
        );
        out.push_str(&self.gauges.read().unwrap_or_else(|p| p.into_inner()));
        out
    }
}
