//! The closed loop: one worker per keep-alive connection running iterations, and what it counts.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::histogram::Histogram;
use crate::http::{connect, exchange, Fail, Sender};
use crate::scenario::{Ctx, Step};

/// The measured window: warm-up before `start`, nothing counted from `end` on.
#[derive(Clone, Copy)]
pub struct Times {
    pub start: Instant,
    pub end: Instant,
}

impl Times {
    fn in_window(&self, t: Instant) -> bool {
        t >= self.start && t < self.end
    }
}

/// Latency and errors of one step of a multi-step iteration.
pub struct StepStats {
    pub name: &'static str,
    pub hist: Histogram,
    pub errors: u64,
}

pub struct Stats {
    /// Whole iterations (the pair, for a multi-step scenario).
    pub hist: Histogram,
    /// Per step, for multi-step scenarios only.
    pub steps: Vec<StepStats>,
    pub errors: u64,
    pub warmup_errors: u64,
    pub by_kind: [(&'static str, u64); 4],
    pub connects: u64,
    pub samples: Vec<String>,
}

impl Stats {
    pub fn new(steps: &[Step]) -> Self {
        let steps = if steps.len() > 1 {
            steps
                .iter()
                .map(|s| StepStats {
                    name: s.name,
                    hist: Histogram::new(),
                    errors: 0,
                })
                .collect()
        } else {
            Vec::new()
        };
        Stats {
            hist: Histogram::new(),
            steps,
            errors: 0,
            warmup_errors: 0,
            by_kind: [
                ("status", 0),
                ("invalid", 0),
                ("transport", 0),
                ("timeout", 0),
            ],
            connects: 0,
            samples: Vec::new(),
        }
    }

    fn fail(&mut self, t: &Times, at: Instant, what: &str, f: &Fail) {
        if at >= t.end {
            return;
        }
        if at < t.start {
            self.warmup_errors += 1;
        } else {
            self.errors += 1;
            if let Some(s) = self.steps.iter_mut().find(|s| s.name == what) {
                s.errors += 1;
            }
            for k in self.by_kind.iter_mut() {
                if k.0 == f.kind() {
                    k.1 += 1;
                }
            }
        }
        if self.samples.len() < 5 {
            let phase = if at < t.start { "warm-up" } else { "measured" };
            self.samples
                .push(format!("[{phase}] {what}: {}", f.describe()));
        }
    }

    /// A successful iteration: `marks` are its start and the end of each step.
    fn record(&mut self, marks: &[Instant]) {
        let (Some(first), Some(last)) = (marks.first(), marks.last()) else {
            return;
        };
        for (s, w) in self.steps.iter_mut().zip(marks.windows(2)) {
            s.hist.record(w[1] - w[0]);
        }
        self.hist.record(*last - *first);
    }

    pub fn merge(&mut self, o: Stats) {
        self.hist.merge(&o.hist);
        for (a, b) in self.steps.iter_mut().zip(o.steps.iter()) {
            a.hist.merge(&b.hist);
            a.errors += b.errors;
        }
        self.errors += o.errors;
        self.warmup_errors += o.warmup_errors;
        for (a, b) in self.by_kind.iter_mut().zip(o.by_kind.iter()) {
            a.1 += b.1;
        }
        self.connects += o.connects;
        for s in o.samples {
            if self.samples.len() < 8 {
                self.samples.push(s);
            }
        }
    }
}

/// Deadline for one request starting now: per-request timeout, capped at the end of the run.
fn deadline(ctx: &Ctx, t: &Times) -> (Instant, bool) {
    let d = Instant::now() + ctx.req_timeout;
    if d >= t.end {
        (t.end, true)
    } else {
        (d, false)
    }
}

/// Runs iterations on one connection (reconnecting when it dies) until the end of the window.
pub async fn worker(ctx: Arc<Ctx>, t: Times) -> Stats {
    let mut st = Stats::new(&ctx.steps);
    let mut sender: Option<Sender> = None;
    // The iteration's start and the end of each of its steps.
    let mut marks: Vec<Instant> = Vec::with_capacity(ctx.steps.len() + 1);

    'run: loop {
        if Instant::now() >= t.end {
            break;
        }
        if sender.is_none() {
            let (dl, at_end) = deadline(&ctx, &t);
            match connect(&ctx.authority, dl, at_end).await {
                Ok(s) => {
                    st.connects += 1;
                    sender = Some(s);
                }
                Err(Fail::Deadline) => break,
                Err(f) => {
                    st.fail(&t, Instant::now(), "connect", &f);
                    // Bounded back-off so a dead server does not spin the CPU.
                    let pause = Instant::now() + Duration::from_millis(50);
                    tokio::time::sleep_until(pause.min(t.end)).await;
                }
            }
            continue;
        }
        let Some(s) = sender.as_mut() else { continue };

        let mut started = Instant::now();
        marks.clear();
        marks.push(started);
        // What the previous step handed on (the card token, for a redeem).
        let mut carried: Option<String> = None;
        for (i, step) in ctx.steps.iter().enumerate() {
            let req = match step.request(&ctx.host, carried.as_deref()) {
                Ok(r) => r,
                // A first request that cannot be built now never will be: stop this worker.
                Err(f) if i == 0 => {
                    st.fail(&t, started, "build", &f);
                    break 'run;
                }
                Err(f) => {
                    st.fail(&t, started, step.name, &f);
                    continue 'run;
                }
            };
            let (dl, at_end) = deadline(&ctx, &t);
            let r = exchange(s, req, dl, at_end).await;
            let done = Instant::now();
            marks.push(done);
            match r.and_then(|(status, body)| step.check(status, &body)) {
                Ok(next) => {
                    carried = next;
                    started = done;
                }
                Err(Fail::Deadline) => break 'run,
                Err(f) => {
                    if f.kills_connection() {
                        sender = None;
                    }
                    // A connection the server closed between iterations is not an error (the
                    // next one reconnects); closed between the steps, it loses the iteration.
                    if i > 0 || !matches!(f, Fail::Closed) {
                        st.fail(&t, done, step.name, &f);
                    }
                    continue 'run;
                }
            }
        }
        if marks.last().is_some_and(|end| t.in_window(*end)) {
            st.record(&marks);
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use hyper::Method;

    use super::*;
    use crate::http::ReqSpec;

    fn steps(names: &[&'static str]) -> Vec<Step> {
        names
            .iter()
            .map(|n| {
                let spec = ReqSpec::new(Method::GET, "/x", vec![], Bytes::new());
                Step::new(n, spec.unwrap_or_else(|e| panic!("{e}")), |_, _| Ok(None))
            })
            .collect()
    }

    #[test]
    fn an_error_counts_by_phase_kind_and_step() {
        let now = Instant::now();
        let t = Times {
            start: now + Duration::from_secs(10),
            end: now + Duration::from_secs(20),
        };
        let warmup = now + Duration::from_secs(1);
        let window = now + Duration::from_secs(11);
        let after = now + Duration::from_secs(21);
        let status = || Fail::Status(500, "boom".into());
        // (when, what, failure, errors, warm-up errors, mint errors, redeem errors, status kind)
        let cases = [
            (warmup, "mint", status(), 0, 1, 0, 0, 0),
            (window, "mint", status(), 1, 0, 1, 0, 1),
            (window, "redeem", Fail::Timeout, 1, 0, 0, 1, 0),
            (window, "connect", status(), 1, 0, 0, 0, 1),
            (after, "redeem", status(), 0, 0, 0, 0, 0),
        ];
        for (at, what, f, errors, warmup_errors, mint, redeem, by_status) in cases {
            let mut st = Stats::new(&steps(&["mint", "redeem"]));
            st.fail(&t, at, what, &f);
            let case = format!("{what} {f:?}");
            assert_eq!(st.errors, errors, "{case}");
            assert_eq!(st.warmup_errors, warmup_errors, "{case}");
            assert_eq!(st.steps[0].errors, mint, "{case}");
            assert_eq!(st.steps[1].errors, redeem, "{case}");
            assert_eq!(st.by_kind[0], ("status", by_status), "{case}");
            assert_eq!(st.samples.len(), usize::from(at < t.end), "{case}");
        }
    }

    #[test]
    fn a_pair_records_each_step_and_the_whole_iteration() {
        let mut st = Stats::new(&steps(&["mint", "redeem"]));
        let t0 = Instant::now();
        let marks = [
            t0,
            t0 + Duration::from_millis(2),
            t0 + Duration::from_millis(5),
        ];
        st.record(&marks);
        assert_eq!(st.hist.total, 1);
        assert!((st.hist.pct_ms(0.5) - 5.0).abs() < 0.05);
        assert!((st.steps[0].hist.pct_ms(0.5) - 2.0).abs() < 0.02);
        assert!((st.steps[1].hist.pct_ms(0.5) - 3.0).abs() < 0.03);

        let mut single = Stats::new(&steps(&["request"]));
        single.record(&marks[..2]);
        assert!(single.steps.is_empty(), "one step has no per-step figures");
        assert!((single.hist.pct_ms(0.5) - 2.0).abs() < 0.02);
    }
}
