//! SCWM's recent calls as people judge its health: the outcome and latency of the last few
//! hundred HTTP attempts, summed up as an error rate and p50/p99 over the last minutes. It owns
//! that window only; the breaker keeps its own (this one decides nothing), and the metrics are
//! the record for dashboards.

use std::{
    collections::VecDeque,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

use super::Verdict;

/// Attempts kept: enough for stable percentiles, small enough to sort on every look.
const KEPT: usize = 512;
/// Attempts older than this say nothing about SCWM now.
const WINDOW: Duration = Duration::from_secs(300);

#[derive(Debug, Default)]
pub struct Recent {
    attempts: Mutex<VecDeque<(Instant, Duration, Verdict)>>,
}

/// The attempts of the last minutes, summed up.
#[derive(Debug, Clone, PartialEq)]
pub struct CallStats {
    pub window: Duration,
    pub attempts: usize,
    /// Attempts SCWM answered with a 5xx, or did not answer at all.
    pub failures: usize,
    pub p50: Option<Duration>,
    pub p99: Option<Duration>,
}

impl CallStats {
    /// Failures per attempt, 0 when there were none.
    pub fn error_rate(&self) -> f64 {
        if self.attempts == 0 { 0.0 } else { self.failures as f64 / self.attempts as f64 }
    }
}

impl Recent {
    pub fn record(&self, took: Duration, verdict: Verdict) {
        let mut a = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
        if a.len() == KEPT {
            a.pop_front();
        }
        a.push_back((Instant::now(), took, verdict));
    }

    pub fn stats(&self) -> CallStats {
        let since = Instant::now().checked_sub(WINDOW);
        let mut took: Vec<Duration> = Vec::new();
        let mut failures = 0;
        {
            let a = self.attempts.lock().unwrap_or_else(PoisonError::into_inner);
            for (_, d, verdict) in a.iter().filter(|(at, ..)| since.is_none_or(|s| *at >= s)) {
                took.push(*d);
                failures += usize::from(*verdict != Verdict::Up);
            }
        }
        took.sort_unstable();
        // Nearest rank: the smallest latency at or above the share asked for.
        let rank = |q: f64| {
            (!took.is_empty())
                .then(|| took[((q * took.len() as f64).ceil() as usize).clamp(1, took.len()) - 1])
        };
        CallStats { window: WINDOW, attempts: took.len(), failures, p50: rank(0.5), p99: rank(0.99) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn percentiles_and_error_rate_over_the_window_only() {
        let r = Recent::default();
        assert_eq!(r.stats().p50, None);
        // Old attempts: slow failures that must not count once they are out of the window.
        for _ in 0..10 {
            r.record(Duration::from_secs(9), Verdict::Unreachable);
        }
        tokio::time::advance(WINDOW + Duration::from_secs(1)).await;
        for ms in 1..=100 {
            r.record(Duration::from_millis(ms), if ms % 10 == 0 { Verdict::Failed } else { Verdict::Up });
        }
        let s = r.stats();
        assert_eq!((s.attempts, s.failures), (100, 10));
        assert_eq!(s.p50, Some(Duration::from_millis(50)));
        assert_eq!(s.p99, Some(Duration::from_millis(99)));
        assert!((s.error_rate() - 0.1).abs() < 1e-9);
    }

    #[test]
    fn only_the_newest_attempts_are_kept() {
        let r = Recent::default();
        for _ in 0..KEPT {
            r.record(Duration::from_secs(1), Verdict::Failed);
        }
        for _ in 0..KEPT {
            r.record(Duration::from_millis(1), Verdict::Up);
        }
        let s = r.stats();
        assert_eq!((s.attempts, s.failures, s.p99), (KEPT, 0, Some(Duration::from_millis(1))));
    }
}
