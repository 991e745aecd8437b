//! How long to wait between attempts of one SCWM call: exponential backoff with full jitter,
//! overridden by the server's `Retry-After`, and the [`Sleeper`] that does the waiting.
//!
//! Everything here is pure except [`TokioSleeper`]: the delay is a function of the attempt
//! number, the server's hint and a caller-supplied random source, so tests can pin all three
//! and record delays instead of waiting them out. Which errors are retried is not decided here
//! (see [`super::error::ScwmError::is_retryable`]).

use std::time::{Duration, SystemTime};

use futures::{FutureExt, future::BoxFuture};
use http::HeaderValue;
use rand::Rng;

/// The retry schedule of one logical SCWM request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, the first one included. 1 means "never retry".
    pub max_attempts: u32,
    /// Upper bound of the first backoff; doubles with every further retry.
    pub initial_backoff: Duration,
    /// Upper bound no backoff exceeds, however many retries came before.
    pub max_backoff: Duration,
    /// A server's `Retry-After` is honoured up to this long; beyond it we would rather hand the
    /// event back to the caller (which can redeliver later) than hold a task for minutes.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Exponents beyond this only ever hit `max_backoff`; stopping here keeps the arithmetic
/// far from overflow.
const MAX_EXPONENT: u32 = 32;

impl RetryPolicy {
    /// The backoff before retry number `retry` (0 for the first retry): uniform in
    /// `[0, min(max_backoff, initial_backoff * 2^retry)]`. Full jitter spreads the retries of
    /// many callers that failed together, so they do not hit a recovering SCWM in lockstep.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self
            .initial_backoff
            .checked_mul(1u32 << retry.min(MAX_EXPONENT - 1))
            .unwrap_or(Duration::MAX)
            .min(self.max_backoff);
        let ceiling_nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling_nanos))
    }

    /// The delay before retry number `retry`: the server's `Retry-After` (capped at
    /// `max_retry_after`) when it sent one, else [`RetryPolicy::backoff`]. SCWM knows its own
    /// load better than our schedule does.
    pub fn delay_for(&self, retry: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        match retry_after {
            Some(hint) => hint.min(self.max_retry_after),
            None => self.backoff(retry, rng),
        }
    }
}

/// Reads a `Retry-After` header: delta-seconds (`120`) or an HTTP-date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), relative to `now`. A date in the past means "now"
/// (zero). Anything else is ignored (`None`), so a malformed hint falls back to backoff.
pub fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits for a u64 is still a (silly) number of seconds; the policy caps it.
        let secs = text.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Waits between attempts. The client only ever waits through this, so tests can substitute
/// one that records the delays and returns at once.
pub trait Sleeper: Send + Sync {
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
}

/// The real thing: a tokio timer (which `tokio::time::pause()` also controls).
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioSleeper;

impl Sleeper for TokioSleeper {
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        tokio::time::sleep(d).boxed()
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};

    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::default()
    }

    #[test]
    fn backoff_stays_within_the_exponential_ceiling() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(7);
        let ceilings_ms = [200, 400, 800, 1_600, 3_200, 6_400, 10_000, 10_000];
        for (retry, ceiling) in ceilings_ms.into_iter().enumerate() {
            for _ in 0..500 {
                let d = p.backoff(retry as u32, &mut rng);
                assert!(d <= Duration::from_millis(ceiling), "retry {retry}: {d:?}");
            }
        }
    }

    #[test]
    fn backoff_uses_full_jitter_over_the_whole_range() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(42);
        // Retry 3: ceiling 1.6 s. Full jitter means values near 0 and near the ceiling both
        // occur, and the mean sits near the middle.
        let samples: Vec<Duration> = (0..2_000).map(|_| p.backoff(3, &mut rng)).collect();
        let min = samples.iter().min().copied().unwrap_or_default();
        let max = samples.iter().max().copied().unwrap_or_default();
        let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
        assert!(min < Duration::from_millis(50), "min {min:?}");
        assert!(max > Duration::from_millis(1_550), "max {max:?}");
        assert!(mean > Duration::from_millis(700) && mean < Duration::from_millis(900), "mean {mean:?}");
    }

    #[test]
    fn backoff_is_reproducible_with_a_seeded_rng() {
        let p = policy();
        let a: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(1);
            (0..5).map(|r| p.backoff(r, &mut rng)).collect()
        };
        let b: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(1);
            (0..5).map(|r| p.backoff(r, &mut rng)).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn backoff_survives_huge_retry_numbers_and_durations() {
        let mut rng = StdRng::seed_from_u64(3);
        let p = RetryPolicy { initial_backoff: Duration::MAX, max_backoff: Duration::MAX, ..policy() };
        let _ = p.backoff(u32::MAX, &mut rng);
        assert!(policy().backoff(u32::MAX, &mut rng) <= Duration::from_secs(10));
        let zero = RetryPolicy { initial_backoff: Duration::ZERO, ..policy() };
        assert_eq!(zero.backoff(4, &mut rng), Duration::ZERO);
    }

    #[test]
    fn retry_after_wins_over_backoff_and_is_capped() {
        let p = policy();
        let mut rng = StdRng::seed_from_u64(9);
        assert_eq!(p.delay_for(0, Some(Duration::from_secs(30)), &mut rng), Duration::from_secs(30));
        assert_eq!(p.delay_for(0, Some(Duration::from_secs(3_600)), &mut rng), Duration::from_secs(60));
        assert_eq!(p.delay_for(2, Some(Duration::ZERO), &mut rng), Duration::ZERO);
        assert!(p.delay_for(0, None, &mut rng) <= Duration::from_millis(200));
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        let now = SystemTime::now();
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(parse_retry_after(&v("120"), now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after(&v("0"), now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(&v(" 5 "), now), Some(Duration::from_secs(5)));
        assert_eq!(
            parse_retry_after(&v("99999999999999999999999"), now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    #[test]
    fn retry_after_reads_http_dates_relative_to_now() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            parse_retry_after(&v("Wed, 21 Oct 2015 07:28:30 GMT"), now),
            Some(Duration::from_secs(30))
        );
        // The obsolete RFC 850 and asctime forms are valid HTTP-dates too.
        assert_eq!(
            parse_retry_after(&v("Wednesday, 21-Oct-15 07:29:00 GMT"), now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_retry_after(&v("Wed Oct 21 07:28:10 2015"), now), Some(Duration::from_secs(10)));
        // Already past: retry now.
        assert_eq!(parse_retry_after(&v("Wed, 21 Oct 2015 07:00:00 GMT"), now), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_ignores_garbage() {
        let now = SystemTime::now();
        for s in ["", "  ", "-5", "1.5", "soon", "5s", "Wed, 32 Oct 2015 07:28:00 GMT", "0x10"] {
            assert_eq!(parse_retry_after(&HeaderValue::from_static(s), now), None, "{s:?}");
        }
        let opaque = HeaderValue::from_bytes(b"\xff\xfe").unwrap();
        assert_eq!(parse_retry_after(&opaque, now), None);
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_sleeper_waits_on_the_tokio_clock() {
        let start = tokio::time::Instant::now();
        TokioSleeper.sleep(Duration::from_secs(5)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }
}
