//! The latency histogram: log-linear buckets over nanoseconds, 64 sub-buckets per octave (<0.8 % error).

use std::time::Duration;

const SUB_BITS: u32 = 6; // 64 sub-buckets per power of two
const SUB: u64 = 1 << SUB_BITS;
const LINEAR: u64 = SUB * 2; // values < 128 ns are stored exactly
const NBUCKETS: usize = (LINEAR + (64 - (SUB_BITS as u64 + 1)) * SUB) as usize;

#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    pub total: u64,
    sum_ns: u128,
    max_ns: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Histogram {
            counts: vec![0; NBUCKETS],
            total: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }

    fn index(v: u64) -> usize {
        if v < LINEAR {
            return v as usize;
        }
        let e = 63 - v.leading_zeros() as u64; // >= 7
        let m = v >> (e - SUB_BITS as u64); // in [64, 128)
        (LINEAR + (e - (SUB_BITS as u64 + 1)) * SUB + (m - SUB)) as usize
    }

    /// Midpoint of the bucket's value range.
    fn value_of(idx: usize) -> u64 {
        let idx = idx as u64;
        if idx < LINEAR {
            return idx;
        }
        let k = idx - LINEAR;
        let e = k / SUB + SUB_BITS as u64 + 1;
        let m = k % SUB + SUB;
        let shift = e - SUB_BITS as u64;
        let low = m << shift;
        low + ((1u64 << shift) >> 1)
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.counts[Self::index(ns)] += 1;
        self.total += 1;
        self.sum_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn merge(&mut self, o: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(o.counts.iter()) {
            *a += *b;
        }
        self.total += o.total;
        self.sum_ns += o.sum_ns;
        self.max_ns = self.max_ns.max(o.max_ns);
    }

    /// Percentile in milliseconds (q in 0..=1); 0 when empty.
    pub fn pct_ms(&self, q: f64) -> f64 {
        if self.total == 0 {
            return 0.0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut acc = 0u64;
        for (i, c) in self.counts.iter().enumerate() {
            acc += *c;
            if acc >= rank {
                return (Self::value_of(i).min(self.max_ns)) as f64 / 1e6;
            }
        }
        self.max_ns as f64 / 1e6
    }

    pub fn mean_ms(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            (self.sum_ns / self.total as u128) as f64 / 1e6
        }
    }

    pub fn max_ms(&self) -> f64 {
        self.max_ns as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_precision() {
        let mut h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let p50 = h.pct_ms(0.5);
        let p99 = h.pct_ms(0.99);
        assert!((p50 - 5.0).abs() / 5.0 < 0.01, "{p50}");
        assert!((p99 - 9.9).abs() / 9.9 < 0.01, "{p99}");
        for v in [0u64, 1, 127, 128, 129, 1_000_000, u64::MAX / 2, u64::MAX] {
            let i = Histogram::index(v);
            assert!(i < NBUCKETS);
            let back = Histogram::value_of(i);
            if v > 0 {
                assert!(
                    (back as f64 - v as f64).abs() / (v as f64) < 0.016,
                    "{v} -> {back}"
                );
            }
        }
    }
}
