//! `loadgen summarize`: the table of a results file, each figure relative to the healthz run just before it.

use std::fmt::Write as _;
use std::io::Write as _;

use serde_json::Value;

/// Prints the summary of the results file at `path`; exit code 0, 2 if a scenario had errors, 1 if unreadable.
pub fn summarize(path: &str) -> u8 {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {path}: {e}");
            return 1;
        }
    };
    let (table, code) = table(&text);
    let _ = write!(std::io::stdout(), "{table}");
    code
}

/// Appends one line to a `String` (which cannot fail).
macro_rules! put {
    ($out:expr, $($t:tt)*) => {{
        let _ = writeln!($out, $($t)*);
    }};
}

/// The summary of the JSON lines in `text`, and the exit code.
fn table(text: &str) -> (String, u8) {
    let mut out = String::new();
    let rows: Vec<Value> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
    let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    let opt = |x: Option<f64>, prec: usize| {
        x.map(|v| format!("{v:.prec$}"))
            .unwrap_or_else(|| "-".into())
    };

    put!(
        out,
        "{:<18} {:>11} {:>9} {:>12} {:>9} {:>9} {:>7} {:>11} {:>9} {:>10}",
        "scenario",
        "rps|pairs/s",
        "x healthz",
        "healthz/op",
        "p50_ms",
        "p99_ms",
        "errors",
        "srv_cpu_us",
        "x cpu",
        "peak_rss_mb"
    );
    let mut any_err = false;
    // Each figure is relative to the healthz run just before it (the machine's speed drifts
    // over a run); per scenario: (ratio, cost, p99, cpu ratio) of every repetition.
    let mut healthz: Option<&Value> = None;
    let mut seen_healthz = false;
    let mut per: Vec<(String, Vec<[Option<f64>; 4]>)> = Vec::new();
    // Absolute server CPU µs per request (or pair), by scenario; and ES256 verification µs.
    let mut cpu_abs: Vec<(String, Vec<f64>)> = Vec::new();
    let mut es256: Vec<f64> = Vec::new();
    for r in &rows {
        let name = s(r, "scenario");
        if name == "es256-verify" {
            es256.extend(f(r, "es256_verify_us"));
            continue;
        }
        if let Some(c) = f(r, "server_cpu_us_per_req") {
            match cpu_abs.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(c),
                None => cpu_abs.push((name.clone(), vec![c])),
            }
        }
        if r.get("ok") == Some(&Value::Bool(false)) {
            any_err = true;
        }
        if r.get("preflight_error").is_some() {
            put!(
                out,
                "{:<18} PREFLIGHT FAILED: {}",
                name,
                s(r, "preflight_error")
            );
            continue;
        }
        if name == "healthz" {
            healthz = Some(r);
            seen_healthz = true;
        }
        let h_rps = healthz.and_then(|h| f(h, "rps")).filter(|x| *x > 0.0);
        let h_cpu = healthz
            .and_then(|h| f(h, "server_cpu_us_per_req"))
            .filter(|x| *x > 0.0);
        let rps = f(r, "rps");
        let ratio = match (rps, h_rps) {
            (Some(a), Some(h)) => Some(a / h),
            _ => None,
        };
        let cost = match (rps, h_rps) {
            (Some(a), Some(h)) if a > 0.0 => Some(h / a),
            _ => None,
        };
        let cpu = f(r, "server_cpu_us_per_req");
        let cpu_x = match (cpu, h_cpu) {
            (Some(a), Some(h)) => Some(a / h),
            _ => None,
        };
        if name != "healthz" {
            let entry = [ratio, cost, f(r, "p99_ms"), cpu_x];
            match per.iter_mut().find(|(n, _)| *n == name) {
                Some((_, v)) => v.push(entry),
                None => per.push((name.clone(), vec![entry])),
            }
        }
        let errors = f(r, "errors").unwrap_or(0.0) + f(r, "warmup_errors").unwrap_or(0.0);
        put!(
            out,
            "{:<18} {:>11} {:>9} {:>12} {:>9} {:>9} {:>7} {:>11} {:>9} {:>10}{}",
            name,
            opt(rps, 1),
            opt(ratio, 3),
            opt(cost, 2),
            opt(f(r, "p50_ms"), 3),
            opt(f(r, "p99_ms"), 3),
            errors as u64,
            opt(cpu, 1),
            opt(cpu_x, 2),
            opt(f(r, "server_peak_rss_mb"), 1),
            if r.get("ok") == Some(&Value::Bool(false)) {
                "  <<< ERRORS"
            } else {
                ""
            }
        );
        if s(r, "unit") == "pair" {
            let steps = step_names(r);
            for step in &steps {
                put!(
                    out,
                    "{:<18} {:>11} {:>9} {:>12} {:>9} {:>9}",
                    format!("  {step}"),
                    "",
                    "",
                    "",
                    opt(f(r, &format!("{step}_p50_ms")), 3),
                    opt(f(r, &format!("{step}_p99_ms")), 3)
                );
            }
            if let Some(c) = cost {
                put!(
                    out,
                    "{:<18} cost of one {} pair = {:.2} healthz requests",
                    "",
                    steps.join("+"),
                    c
                );
            }
        }
    }
    if per.iter().any(|(_, v)| v.len() > 1) {
        let median = |v: &[[Option<f64>; 4]], i: usize| {
            let mut xs: Vec<f64> = v.iter().filter_map(|e| e[i]).collect();
            xs.sort_by(|a, b| a.total_cmp(b));
            xs.get(xs.len() / 2).copied()
        };
        put!(out, "");
        put!(
            out,
            "medians over the repetitions (each against its adjacent healthz):"
        );
        put!(
            out,
            "{:<18} {:>5} {:>9} {:>12} {:>9} {:>9}",
            "scenario",
            "runs",
            "x healthz",
            "healthz/op",
            "p99_ms",
            "x cpu"
        );
        for (name, v) in &per {
            put!(
                out,
                "{:<18} {:>5} {:>9} {:>12} {:>9} {:>9}",
                name,
                v.len(),
                opt(median(v, 0), 3),
                opt(median(v, 1), 2),
                opt(median(v, 2), 3),
                opt(median(v, 3), 2)
            );
        }
    }
    // DPoP's cost: the server CPU a DPoP scenario adds over its plain twin, in ES256
    // verifications measured in the same run (target: at most 1.5 per request).
    let med = |v: &[f64]| {
        let mut xs = v.to_vec();
        xs.sort_by(|a, b| a.total_cmp(b));
        xs.get(xs.len() / 2).copied()
    };
    let cpu_of = |n: &str| {
        cpu_abs
            .iter()
            .find(|(m, _)| m == n)
            .and_then(|(_, v)| med(v))
    };
    if let Some(verify) = med(&es256) {
        put!(out, "");
        put!(out, "one ES256 verification (loadgen, ring, 1 thread) = {verify:.1} µs");
        for (plain, dpop, requests) in [("token-jwt", "token-dpop", 1.0), ("card-pair", "card-pair-dpop", 2.0)] {
            if let (Some(a), Some(b)) = (cpu_of(plain), cpu_of(dpop)) {
                let extra = (b - a) / requests;
                put!(
                    out,
                    "{dpop:<18} adds {extra:.1} µs server CPU per request over {plain} = {:.2} ES256 verifications",
                    extra / verify
                );
            }
        }
    }
    if !seen_healthz {
        put!(out, "(no healthz result: ratios unavailable)");
    }
    put!(out, "x healthz = rps / the healthz rps measured just before;  healthz/op = healthz rps / rps (cost in healthz requests per request or pair);");
    put!(out, "srv_cpu_us = server CPU µs per request (per pair for card-pair);  x cpu = srv_cpu_us / healthz srv_cpu_us");
    if any_err {
        put!(
            out,
            "!!! SOME SCENARIOS HAD ERRORS — their figures are not trustworthy"
        );
        (out, 2)
    } else {
        (out, 0)
    }
}

/// The steps of a pair row, from its `<step>_p50_ms` keys (`mint`, `redeem` for card-pair), in
/// key order.
fn step_names(row: &Value) -> Vec<&str> {
    row.as_object()
        .map(|o| o.keys().filter_map(|k| k.strip_suffix("_p50_ms")).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// healthz, a card-pair against it, then a healthz, a token run with errors and a failed preflight.
    const RESULTS: &str = concat!(
        r#"{"scenario":"healthz","ok":true,"unit":"request","rps":20000.0,"p50_ms":0.3,"p99_ms":1.2,"errors":0,"warmup_errors":0,"server_cpu_us_per_req":20.0,"server_peak_rss_mb":30.5}"#,
        "\n",
        r#"{"scenario":"card-pair","ok":true,"unit":"pair","rps":2500.0,"p50_ms":3.1,"p99_ms":9.75,"errors":0,"warmup_errors":0,"server_cpu_us_per_req":180.0,"server_peak_rss_mb":41.2,"mint_p50_ms":2.0,"mint_p99_ms":6.5,"redeem_p50_ms":1.1,"redeem_p99_ms":3.25,"mint_errors":0,"redeem_errors":0,"pairs_per_s":2500.0}"#,
        "\n",
        r#"{"scenario":"healthz","ok":true,"unit":"request","rps":18000.0,"p50_ms":0.35,"p99_ms":1.4,"errors":0,"warmup_errors":0,"server_cpu_us_per_req":22.0,"server_peak_rss_mb":31.0}"#,
        "\n",
        r#"{"scenario":"token-jwt","ok":false,"unit":"request","rps":9000.0,"p50_ms":1.0,"p99_ms":4.0,"errors":3,"warmup_errors":1,"server_cpu_us_per_req":66.0,"server_peak_rss_mb":41.2}"#,
        "\n",
        r#"{"scenario":"introspect-opaque","ok":false,"preflight_error":"POST /oauth2/token: HTTP 401: {\"error\":\"invalid_client\"}"}"#,
        "\n",
    );

    #[test]
    fn the_table_gives_ratios_to_the_adjacent_healthz_and_a_row_per_step_of_a_pair() {
        let (table, code) = table(RESULTS);
        let expected = [
            "scenario           rps|pairs/s x healthz   healthz/op    p50_ms    p99_ms  errors  srv_cpu_us     x cpu peak_rss_mb",
            "healthz                20000.0     1.000         1.00     0.300     1.200       0        20.0      1.00       30.5",
            "card-pair               2500.0     0.125         8.00     3.100     9.750       0       180.0      9.00       41.2",
            "  mint                                                    2.000     6.500",
            "  redeem                                                  1.100     3.250",
            "                   cost of one mint+redeem pair = 8.00 healthz requests",
            "healthz                18000.0     1.000         1.00     0.350     1.400       0        22.0      1.00       31.0",
            "token-jwt               9000.0     0.500         2.00     1.000     4.000       4        66.0      3.00       41.2  <<< ERRORS",
            "introspect-opaque  PREFLIGHT FAILED: POST /oauth2/token: HTTP 401: {\"error\":\"invalid_client\"}",
            "x healthz = rps / the healthz rps measured just before;  healthz/op = healthz rps / rps (cost in healthz requests per request or pair);",
            "srv_cpu_us = server CPU µs per request (per pair for card-pair);  x cpu = srv_cpu_us / healthz srv_cpu_us",
            "!!! SOME SCENARIOS HAD ERRORS — their figures are not trustworthy",
        ];
        assert_eq!(table.lines().collect::<Vec<_>>(), expected);
        assert_eq!(code, 2, "a scenario had errors");
    }

    #[test]
    fn without_a_healthz_row_the_ratios_are_dashes_and_said_to_be_unavailable() {
        let (table, code) = table(concat!(
            r#"{"scenario":"token-jwt","ok":true,"unit":"request","rps":9000.0,"p50_ms":1.0,"p99_ms":4.0,"errors":0,"warmup_errors":0}"#,
            "\n"
        ));
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[1],
            "token-jwt               9000.0         -            -     1.000     4.000       0           -         -          -"
        );
        assert!(lines.contains(&"(no healthz result: ratios unavailable)"));
        assert_eq!(code, 0);
    }
}
