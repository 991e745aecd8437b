//! The simulator's rate limit: the token bucket behind the fault plan's `rate_limit`, which
//! decides whether one operation request may go on or must be answered 429, and with which
//! `Retry-After`. It owns the bucket's arithmetic only: the time is an argument (the caller reads
//! the clock), and it never touches HTTP, the fault plan's other fields or the incident store.

use std::time::Duration;

use tokio::time::Instant;

use super::faults::RateLimit;

/// The slowest refill an unchecked plan (a rate of zero, negative or NaN) is clamped to: one
/// token an hour, so the bucket still answers a finite `Retry-After`.
const SLOWEST_PER_SECOND: f64 = 1.0 / 3600.0;

/// A bucket of `burst` tokens refilled at `per_second`, full when made.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    pub fn full(limit: RateLimit, now: Instant) -> Self {
        let per_second = if limit.per_second.is_finite() && limit.per_second > 0.0 {
            limit.per_second
        } else {
            SLOWEST_PER_SECOND
        };
        let burst = f64::from(limit.burst.max(1));
        Self { per_second, burst, tokens: burst, refilled: now }
    }

    /// Takes a token for a request arriving at `now`: `Ok` if there was one, else the whole
    /// seconds until the next one (at least 1), for `Retry-After`. A refused request takes
    /// nothing. A `now` earlier than the last call (it cannot be, from a monotonic clock) adds
    /// nothing.
    pub fn take(&mut self, now: Instant) -> Result<(), u64> {
        let elapsed = now.saturating_duration_since(self.refilled);
        self.tokens = (self.tokens + elapsed.as_secs_f64() * self.per_second).min(self.burst);
        self.refilled = self.refilled.max(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let wait = Duration::from_secs_f64((1.0 - self.tokens) / self.per_second);
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Err(secs.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(per_second: f64, burst: u32, now: Instant) -> TokenBucket {
        TokenBucket::full(RateLimit { per_second, burst }, now)
    }

    fn admitted(bucket: &mut TokenBucket, n: usize, now: Instant) -> usize {
        (0..n).filter(|_| bucket.take(now).is_ok()).count()
    }

    #[test]
    fn a_full_bucket_admits_the_burst_at_once_then_refuses() {
        let t0 = Instant::now();
        let mut b = bucket(50.0, 50, t0);
        assert_eq!(admitted(&mut b, 60, t0), 50);
        assert_eq!(b.take(t0), Err(1), "one token is 20 ms away, which rounds up to 1 s");
    }

    #[test]
    fn tokens_come_back_at_the_rate_and_never_beyond_the_burst() {
        let t0 = Instant::now();
        let mut b = bucket(50.0, 50, t0);
        assert_eq!(admitted(&mut b, 50, t0), 50);
        // 100 ms at 50/s: 5 tokens.
        assert_eq!(admitted(&mut b, 10, t0 + Duration::from_millis(100)), 5);
        // An hour later the bucket is full again, not fuller.
        assert_eq!(admitted(&mut b, 100, t0 + Duration::from_secs(3600)), 50);
    }

    #[test]
    fn a_steady_stream_is_admitted_at_the_rate_over_time() {
        let t0 = Instant::now();
        let mut b = bucket(50.0, 50, t0);
        // 1,000 requests a second for 10 s, every millisecond: the burst, then 50 a second.
        let ok = (0..10_000u64).filter(|ms| b.take(t0 + Duration::from_millis(*ms)).is_ok()).count();
        assert!((50 + 499..=50 + 500).contains(&ok), "{ok} admitted");
    }

    #[test]
    fn retry_after_is_the_whole_seconds_until_the_next_token() {
        let t0 = Instant::now();
        let mut slow = bucket(0.25, 1, t0);
        assert_eq!(slow.take(t0), Ok(()));
        assert_eq!(slow.take(t0), Err(4));
        assert_eq!(slow.take(t0 + Duration::from_millis(1500)), Err(3), "2.5 s left rounds up");
        assert_eq!(slow.take(t0 + Duration::from_secs(3)), Err(1));
        assert_eq!(slow.take(t0 + Duration::from_secs(4)), Ok(()));
    }

    #[test]
    fn an_unchecked_limit_is_clamped_rather_than_dividing_by_zero() {
        let t0 = Instant::now();
        for per_second in [0.0, -3.0, f64::NAN, f64::INFINITY] {
            let mut b = bucket(per_second, 0, t0);
            assert_eq!(b.take(t0), Ok(()), "burst 0 is treated as 1 ({per_second})");
            assert_eq!(b.take(t0), Err(3600), "{per_second}");
        }
    }

    #[test]
    fn time_going_backwards_adds_no_token() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(10);
        let mut b = bucket(1.0, 1, t0);
        assert_eq!(b.take(later), Ok(()));
        assert_eq!(b.take(t0), Err(1));
    }
}
