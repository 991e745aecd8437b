//! Signed Unix timestamps: parsing them strictly and checking them against an injected clock.
//! Must not read the wall clock: every check takes `now`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::VerifyError;

/// The tolerance when none is configured, in both directions; the one Standard Webhooks and
/// Stripe use.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// How far a signed timestamp may be from our clock, either way, in whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) tolerance_secs: u64,
}

impl Window {
    /// Refuses `ts` outside `[now - tolerance, now + tolerance]`. The edges are accepted, as the
    /// reference libraries accept them. Future timestamps are refused too, unlike Stripe's
    /// library: a sender whose clock runs ahead could otherwise mint messages that stay valid
    /// (and replayable once evicted) for longer than the window.
    pub(crate) fn check(self, ts: u64, now: u64) -> Result<(), VerifyError> {
        let tolerance_secs = self.tolerance_secs;
        if ts < now.saturating_sub(tolerance_secs) {
            return Err(VerifyError::TimestampTooOld { age_secs: now - ts, tolerance_secs });
        }
        if ts > now.saturating_add(tolerance_secs) {
            return Err(VerifyError::TimestampInFuture { ahead_secs: ts - now, tolerance_secs });
        }
        Ok(())
    }

    /// When the replay-cache entry of a message signed at `ts` may go: from then on the
    /// timestamp check refuses the message anyway.
    pub(crate) fn expiry(self, ts: u64) -> u64 {
        ts.saturating_add(self.tolerance_secs)
    }
}

/// Whole seconds since the Unix epoch; a clock before 1970 reads as 0 rather than panicking.
pub(crate) fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Decimal Unix seconds: ASCII digits only (no sign, no fraction, no spaces inside), at most 12
/// of them, so the value cannot overflow and every sender's form is accepted.
pub(crate) fn parse_unix(header: &str, text: &str) -> Result<u64, VerifyError> {
    if text.is_empty() || text.len() > 12 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::malformed(header, "not a Unix timestamp in seconds"));
    }
    text.parse().map_err(|_| VerifyError::malformed(header, "not a Unix timestamp in seconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Window = Window { tolerance_secs: 300 };

    #[test]
    fn the_window_is_inclusive_at_both_edges() {
        assert!(W.check(1000 - 300, 1000).is_ok());
        assert!(W.check(1000 + 300, 1000).is_ok());
        assert_eq!(W.check(1000 - 301, 1000).unwrap_err().kind(), "timestamp_too_old");
        assert_eq!(W.check(1000 + 301, 1000).unwrap_err().kind(), "timestamp_in_future");
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        assert!(W.check(0, 0).is_ok());
        assert_eq!(W.check(0, u64::MAX).unwrap_err().kind(), "timestamp_too_old");
        assert_eq!(W.check(u64::MAX, 0).unwrap_err().kind(), "timestamp_in_future");
        assert_eq!(W.expiry(u64::MAX), u64::MAX);
    }

    #[test]
    fn timestamps_are_plain_digits() {
        assert_eq!(parse_unix("h", "1614265330").unwrap(), 1614265330);
        for bad in ["", "+1", "-1", "1.5", "1e9", "0x10", "1 2", "9999999999999"] {
            assert_eq!(parse_unix("h", bad).unwrap_err().kind(), "malformed_header", "{bad}");
        }
    }

    #[test]
    fn a_clock_before_the_epoch_reads_as_zero() {
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(5)), 0);
        assert_eq!(unix_secs(UNIX_EPOCH + Duration::from_millis(1500)), 1);
    }
}
