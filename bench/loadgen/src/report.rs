//! The result of a run: the readable line, the loud error block, the JSON line, and the exit code.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::{json, Value};

use crate::config::Config;
use crate::procfs::clk_tck;
use crate::run::Measured;
use crate::scenario::Ctx;

fn r1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Reports a failed preflight; exit code 3.
pub fn preflight_failed(cfg: &Config, e: &str) -> u8 {
    eprintln!(
        "!!! PREFLIGHT FAILED for scenario {} against {}: {e}",
        cfg.scenario_name, cfg.url
    );
    outln!(
        "{:<18} PREFLIGHT FAILED: {e}  <<< ERRORS",
        cfg.scenario_name
    );
    let line = json!({"scenario": cfg.scenario_name, "ok": false, "preflight_error": e});
    emit_json(cfg, &line);
    3
}

/// Prints the run's lines (stdout) and error block (stderr); exit code 0, or 2 on any error.
pub fn report(cfg: &Config, ctx: &Ctx, m: &Measured) -> u8 {
    let total = &m.total;
    let pid = cfg.server_pid.map(|p| p.to_string());
    let tck = clk_tck();
    let secs = cfg.duration.as_secs_f64();
    let n = total.hist.total;
    let rate = n as f64 / secs;
    let server_cpu_s = match m.server_ticks {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck),
        _ => None,
    };
    let server_gone = pid.is_some() && m.server_ticks.1.is_none();
    let cpu_per_op_us = server_cpu_s.filter(|_| n > 0).map(|c| c * 1e6 / n as f64);
    let loadgen_cpu_pct = match m.own_ticks {
        (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / tck / secs * 100.0),
        _ => None,
    };
    let pair = ctx.is_pair();
    // HTTP requests per iteration.
    let per_iter = ctx.steps.len();
    let ok = total.errors == 0
        && total.warmup_errors == 0
        && m.lost_workers == 0
        && !server_gone
        && n > 0;

    // ---- human-readable line
    let mut line = format!(
        "{:<18} {:>4} conns {:>5.1}s  {:>10.1} {}  p50 {:>7.3} ms  p99 {:>7.3} ms  errors {}",
        cfg.scenario_name,
        cfg.connections,
        secs,
        rate,
        if pair { "pairs/s" } else { "req/s  " },
        total.hist.pct_ms(0.50),
        total.hist.pct_ms(0.99),
        total.errors + total.warmup_errors,
    );
    if let Some(c) = cpu_per_op_us {
        let _ = write!(
            line,
            "  server {:.1} µs CPU/{}",
            c,
            if pair { "pair" } else { "req" }
        );
    }
    if let Some(h) = m.server_hwm_kb {
        let _ = write!(line, "  peak RSS {:.1} MB", h as f64 / 1024.0);
    }
    if let Some(l) = loadgen_cpu_pct {
        let _ = write!(line, "  loadgen CPU {:.0}%", l);
    }
    if total.connects as usize > cfg.connections {
        let _ = write!(
            line,
            "  reconnects {}",
            total.connects as usize - cfg.connections
        );
    }
    if !ok {
        line.push_str("  <<< ERRORS");
    }
    outln!("{line}");
    if pair {
        // e.g. "   mint   p50 … ms  p99 … ms   redeem p50 … ms  p99 … ms   (N HTTP req/s)"
        let mut steps = format!("{:<18}", "");
        for s in &total.steps {
            let _ = write!(
                steps,
                "   {:<6} p50 {:>7.3} ms  p99 {:>7.3} ms",
                s.name,
                s.hist.pct_ms(0.50),
                s.hist.pct_ms(0.99)
            );
        }
        outln!("{steps}   ({} HTTP req/s)", r1(rate * per_iter as f64));
    }

    // ---- loud error report
    if !ok {
        let mut e = String::new();
        let _ = writeln!(
            e,
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        let _ = writeln!(
            e,
            "!!! SCENARIO {} HAD ERRORS: {} in the measured window, {} during warm-up",
            cfg.scenario_name, total.errors, total.warmup_errors
        );
        let kinds: Vec<String> = total
            .by_kind
            .iter()
            .filter(|k| k.1 > 0)
            .map(|k| format!("{}={}", k.0, k.1))
            .collect();
        if !kinds.is_empty() {
            let _ = writeln!(e, "!!! by kind: {}", kinds.join(" "));
        }
        if server_gone {
            let _ = writeln!(
                e,
                "!!! server process {} is gone",
                pid.as_deref().unwrap_or("?")
            );
        }
        if m.lost_workers > 0 {
            let _ = writeln!(e, "!!! {} workers did not finish", m.lost_workers);
        }
        if n == 0 {
            let _ = writeln!(e, "!!! no successful request in the measured window");
        }
        for s in &total.samples {
            let _ = writeln!(e, "!!!   {s}");
        }
        let _ = write!(
            e,
            "!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"
        );
        eprintln!("{e}");
    }
    if total.connects as usize > cfg.connections {
        eprintln!(
            "WARNING: {}: {} TCP connections opened for {} workers — keep-alive not honoured or connections dropped",
            cfg.scenario_name, total.connects, cfg.connections
        );
    }

    // ---- JSON line
    let mut j = json!({
        "scenario": cfg.scenario_name,
        "ok": ok,
        "unit": if pair { "pair" } else { "request" },
        "url": cfg.url,
        "connections": cfg.connections,
        "loadgen_threads": cfg.threads,
        "duration_s": secs,
        "warmup_s": cfg.warmup.as_secs_f64(),
        "requests": n,
        "http_requests": n * per_iter as u64,
        "rps": r1(rate),
        "p50_ms": r3(total.hist.pct_ms(0.50)),
        "p90_ms": r3(total.hist.pct_ms(0.90)),
        "p99_ms": r3(total.hist.pct_ms(0.99)),
        "p999_ms": r3(total.hist.pct_ms(0.999)),
        "max_ms": r3(total.hist.max_ms()),
        "mean_ms": r3(total.hist.mean_ms()),
        "errors": total.errors,
        "warmup_errors": total.warmup_errors,
        "errors_by_kind": total.by_kind.iter().map(|k| (k.0.to_string(), json!(k.1))).collect::<serde_json::Map<_, _>>(),
        "error_samples": total.samples,
        "connects": total.connects,
        "keepalive_ok": total.connects as usize <= cfg.connections,
        "server_pid": cfg.server_pid,
        "server_cpu_s": server_cpu_s.map(r3),
        "server_cpu_us_per_req": cpu_per_op_us.map(r1),
        "server_peak_rss_mb": m.server_hwm_kb.map(|k| r1(k as f64 / 1024.0)),
        "server_rss_mb": m.server_rss_kb.map(|k| r1(k as f64 / 1024.0)),
        "loadgen_cpu_pct": loadgen_cpu_pct.map(r1),
        "clk_tck": tck,
    });
    if pair {
        if let Some(o) = j.as_object_mut() {
            o.insert("pairs_per_s".into(), json!(r1(rate)));
            // serde_json's map keeps its keys sorted: the order of these inserts does not show.
            for s in &total.steps {
                let name = s.name;
                o.insert(format!("{name}_p50_ms"), json!(r3(s.hist.pct_ms(0.50))));
                o.insert(format!("{name}_p99_ms"), json!(r3(s.hist.pct_ms(0.99))));
                o.insert(format!("{name}_errors"), json!(s.errors));
            }
            o.insert(
                "server_cpu_us_per_http_req".into(),
                json!(cpu_per_op_us.map(|c| r1(c / per_iter as f64))),
            );
        }
    }
    emit_json(cfg, &j);

    if ok {
        0
    } else {
        2
    }
}

/// Prints the JSON line, and appends it to `--json-out` if given.
fn emit_json(cfg: &Config, v: &Value) {
    let s = v.to_string();
    if let Some(path) = &cfg.json_out {
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{s}"));
        if let Err(e) = r {
            eprintln!("cannot append to {path}: {e}");
        }
    }
    outln!("{s}");
}
