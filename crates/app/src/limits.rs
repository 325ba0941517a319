//! Per-client request budgets for the token endpoints and step-up session starts: token
//! buckets in memory, per replica (a client behind N replicas gets up to N× its tenant's rate).

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Default)]
pub(crate) struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

impl RateLimiter {
    /// Takes one request from `client`'s bucket; `Err(seconds to wait)` when it is empty.
    pub(crate) fn take(&self, client: &str, per_minute: u32, now_ms: i64) -> Result<(), u64> {
        let cap = f64::from(per_minute.max(1));
        let rate_per_ms = cap / 60_000.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(client.to_string()).or_insert((cap, now_ms));
        *tokens = (*tokens + (now_ms - *last).max(0) as f64 * rate_per_ms).min(cap);
        *last = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - *tokens) / rate_per_ms).ceil();
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        }
    }
}
