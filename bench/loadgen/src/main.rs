//! cardgate load generator: wires the command line to a run of one scenario, or to `summarize`.
//!
//! Closed loop: each of C workers owns ONE keep-alive HTTP/1.1 connection and
//! sends its next request only when the previous response has been fully read.
//! After a warm-up (not counted) the run is measured for a fixed duration; every
//! request that completes inside the measured window is recorded in a
//! log-bucketed latency histogram (<0.8 % relative error).
//!
//! Usage: `loadgen --help`.

#![forbid(unsafe_code)]

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

/// println! that ignores a closed stdout (e.g. piped into `head`) instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

mod config;
mod encode;
mod histogram;
mod http;
mod procfs;
mod report;
mod run;
mod scenario;
mod summary;
mod worker;

use config::{parse_args, USAGE};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("es256-verify") {
        return match scenario::dpop::es256_verify_micros() {
            Ok(us) => {
                outln!("{{\"es256_verify_us\":{us:.2}}}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("es256-verify: {e}");
                ExitCode::from(1)
            }
        };
    }
    if args.first().map(String::as_str) == Some("summarize") {
        return match args.get(1) {
            Some(p) => ExitCode::from(summary::summarize(p)),
            None => {
                eprintln!("usage: loadgen summarize RESULTS.jsonl");
                ExitCode::from(1)
            }
        };
    }
    let cfg = match parse_args(args) {
        Ok(c) => c,
        Err(e) if e.is_empty() => {
            let _ = write!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{USAGE}");
            return ExitCode::from(1);
        }
    };

    // Hard watchdog: whatever happens, the generator exits on its own.
    let budget = cfg.warmup + cfg.duration + Duration::from_secs(60);
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("!!! loadgen watchdog: still running after {budget:?}, exiting");
        std::process::exit(4);
    });

    let rt = if cfg.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let code = rt.block_on(run::run(cfg));
    rt.shutdown_timeout(Duration::from_secs(1));
    ExitCode::from(code)
}
