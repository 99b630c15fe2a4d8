//! Latency percentiles.

use serde::Serialize;

/// Percentiles of a set of latencies, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    /// How many samples.
    pub count: usize,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Percentiles {
    /// Percentiles of `micros` (sorted in place), nearest-rank; all zero when empty.
    pub fn of(micros: &mut [u64]) -> Self {
        micros.sort_unstable();
        let rank = |p: f64| -> f64 {
            if micros.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest sample with at least p of the samples at or below it.
            let n = micros.len();
            let index = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            micros.get(index).map_or(0.0, |&us| us as f64 / 1000.0)
        };
        Percentiles {
            count: micros.len(),
            p50_ms: rank(0.50),
            p90_ms: rank(0.90),
            p99_ms: rank(0.99),
            max_ms: rank(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut samples: Vec<u64> = (1..=100).map(|ms| ms * 1000).rev().collect();
        let p = Percentiles::of(&mut samples);
        assert_eq!(
            (p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
            (100, 50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(Percentiles::of(&mut []).max_ms, 0.0);
        assert_eq!(Percentiles::of(&mut [1500]).p50_ms, 1.5);
    }
}
