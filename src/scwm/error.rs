//! What can go wrong when calling SCWM, and how each failure is classified: transient (retry
//! with backoff) or permanent (dead-letter), and whether it says SCWM is unavailable (feeds the
//! circuit breaker).
//!
//! Classification follows the contract's "Response" section and nothing else: callers decide
//! from [`ScwmError::is_retryable`] and [`ScwmError::kind`], never from the message text.

use std::time::Duration;

use crate::ids::LicensePlate;

/// One failed call (or attempt) to SCWM.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScwmError {
    /// No complete answer within the request timeout.
    #[error("SCWM did not answer in time")]
    Timeout,

    /// The TCP/TLS connection could not be established.
    #[error("cannot connect to SCWM: {0}")]
    Connect(String),

    /// Any other I/O failure, including a connection dropped while the body was being read.
    #[error("transport error talking to SCWM: {0}")]
    Transport(String),

    /// SCWM answered with an error: an envelope with `isErr: true`, or an envelope with a
    /// non-2xx HTTP status. `status` is the numeric part of `errCode` when it has one (the
    /// contract says the number decides), else the HTTP status.
    #[error("SCWM rejected the request: {status} {err_code}")]
    Rejected {
        status: u16,
        err_code: String,
        /// From the `Retry-After` response header, if SCWM sent one.
        retry_after: Option<Duration>,
    },

    /// The body is not an SCWM envelope (a proxy's HTML page, truncated JSON, ...). `status` is
    /// the HTTP status it came with; it alone decides whether a retry may help.
    #[error("SCWM answered HTTP {status} with a body that is not an envelope: {reason}")]
    InvalidResponse { status: u16, reason: String },

    /// A successful answer that belongs to another request. Retrying cannot fix it and the
    /// answer cannot be trusted, so it is permanent.
    #[error("SCWM answered licensePlate `{got}` to request `{expected}`")]
    LicensePlateMismatch { expected: LicensePlate, got: String },

    /// The circuit breaker is open: no request was sent.
    #[error("SCWM circuit is open; retry in {}", whole_seconds(*retry_after))]
    CircuitOpen { retry_after: Duration },

    /// The request envelope could not be serialised. Nothing was sent.
    #[error("cannot encode the SCWM request: {0}")]
    Encode(String),
}

/// Statuses the contract calls transient: 408, 429 and every 5xx.
fn is_transient_status(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// A wait as people read it: whole seconds, rounded up (`8.4s` → `9s`).
fn whole_seconds(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    humantime::format_duration(Duration::from_secs(secs.max(1))).to_string()
}

impl ScwmError {
    /// Whether the same request, with the same licensePlate, may succeed if sent again.
    ///
    /// Transient: 408, 429, 5xx (whether carried by the HTTP status or by `errCode` inside a
    /// 200), timeouts, connection errors, a non-envelope body with such a status, an open
    /// circuit. Permanent: every other status, a non-envelope body with any other status, a
    /// licensePlate mismatch, an unencodable request.
    pub fn is_retryable(&self) -> bool {
        match self {
            ScwmError::Timeout
            | ScwmError::Connect(_)
            | ScwmError::Transport(_)
            | ScwmError::CircuitOpen { .. } => true,
            ScwmError::Rejected { status, .. } | ScwmError::InvalidResponse { status, .. } => {
                is_transient_status(*status)
            }
            ScwmError::LicensePlateMismatch { .. } | ScwmError::Encode(_) => false,
        }
    }

    /// Whether this failure says SCWM itself is unavailable, which is what the circuit breaker
    /// counts. A 4xx (429 included) proves SCWM is up and answering, so it does not count.
    pub fn is_availability_failure(&self) -> bool {
        match self {
            ScwmError::Timeout | ScwmError::Connect(_) | ScwmError::Transport(_) => true,
            ScwmError::Rejected { status, .. } | ScwmError::InvalidResponse { status, .. } => {
                (500..=599).contains(status)
            }
            ScwmError::LicensePlateMismatch { .. } | ScwmError::CircuitOpen { .. } | ScwmError::Encode(_) => {
                false
            }
        }
    }

    /// What this failure tells the circuit breaker about SCWM.
    pub fn verdict(&self) -> super::breaker::Verdict {
        use super::breaker::Verdict;
        match self {
            ScwmError::Timeout | ScwmError::Connect(_) | ScwmError::Transport(_) => Verdict::Unreachable,
            e if e.is_availability_failure() => Verdict::Failed,
            _ => Verdict::Up,
        }
    }

    /// How long SCWM (or the breaker) asked us to wait before trying again.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ScwmError::Rejected { retry_after, .. } => *retry_after,
            ScwmError::CircuitOpen { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// A short, bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            ScwmError::Timeout => "timeout",
            ScwmError::Connect(_) => "connect",
            ScwmError::Transport(_) => "transport",
            ScwmError::Rejected { .. } => "rejected",
            ScwmError::InvalidResponse { .. } => "invalid_response",
            ScwmError::LicensePlateMismatch { .. } => "license_plate_mismatch",
            ScwmError::CircuitOpen { .. } => "circuit_open",
            ScwmError::Encode(_) => "encode",
        }
    }

    /// The status that decided the classification, when SCWM (or something in front of it)
    /// answered at all.
    pub fn status(&self) -> Option<u16> {
        match self {
            ScwmError::Rejected { status, .. } | ScwmError::InvalidResponse { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Maps a reqwest failure (while sending or while reading the body) onto our kinds. The
    /// URL is stripped from the message: per-tenant URLs can carry credentials in the query.
    pub(crate) fn from_reqwest(err: reqwest::Error) -> Self {
        if err.is_timeout() {
            return ScwmError::Timeout;
        }
        let connect = err.is_connect();
        let message = error_chain(&err.without_url());
        if connect { ScwmError::Connect(message) } else { ScwmError::Transport(message) }
    }
}

/// `outer: inner: innermost`, skipping a source that only repeats its parent's text.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let text = inner.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = inner.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16) -> ScwmError {
        ScwmError::Rejected { status, err_code: String::new(), retry_after: None }
    }

    fn invalid(status: u16) -> ScwmError {
        ScwmError::InvalidResponse { status, reason: "expected value".into() }
    }

    #[test]
    fn rejected_statuses_follow_the_contract() {
        let table: &[(u16, bool, bool)] = &[
            // (status, retryable, availability failure)
            (200, false, false),
            (302, false, false),
            (400, false, false),
            (401, false, false),
            (403, false, false),
            (404, false, false),
            (408, true, false),
            (409, false, false),
            (422, false, false),
            (429, true, false),
            (499, false, false),
            (500, true, true),
            (502, true, true),
            (503, true, true),
            (504, true, true),
            (599, true, true),
        ];
        for &(status, retryable, availability) in table {
            let e = rejected(status);
            assert_eq!(e.is_retryable(), retryable, "retryable for {status}");
            assert_eq!(e.is_availability_failure(), availability, "availability for {status}");
            assert_eq!(e.status(), Some(status));
            assert_eq!(e.kind(), "rejected");
        }
    }

    #[test]
    fn a_non_envelope_body_is_transient_only_with_a_transient_status() {
        assert!(invalid(500).is_retryable());
        assert!(invalid(502).is_retryable());
        assert!(invalid(503).is_availability_failure());
        assert!(!invalid(200).is_retryable());
        assert!(!invalid(200).is_availability_failure());
        assert!(!invalid(404).is_retryable());
        assert!(!invalid(301).is_retryable());
        assert_eq!(invalid(502).kind(), "invalid_response");
        assert_eq!(invalid(502).status(), Some(502));
    }

    #[test]
    fn io_failures_are_transient_availability_failures() {
        for e in
            [ScwmError::Timeout, ScwmError::Connect("refused".into()), ScwmError::Transport("reset".into())]
        {
            assert!(e.is_retryable(), "{e}");
            assert!(e.is_availability_failure(), "{e}");
            assert_eq!(e.status(), None);
            assert_eq!(e.retry_after(), None);
        }
    }

    #[test]
    fn a_license_plate_mismatch_is_permanent() {
        let e = ScwmError::LicensePlateMismatch {
            expected: LicensePlate::generate(),
            got: "someone-else".into(),
        };
        assert!(!e.is_retryable());
        assert!(!e.is_availability_failure());
        assert_eq!(e.kind(), "license_plate_mismatch");
    }

    #[test]
    fn an_open_circuit_is_transient_and_says_when_to_come_back() {
        let e = ScwmError::CircuitOpen { retry_after: Duration::from_secs(3) };
        assert!(e.is_retryable());
        assert!(!e.is_availability_failure());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
        assert_eq!(e.kind(), "circuit_open");
        assert_eq!(e.to_string(), "SCWM circuit is open; retry in 3s");
    }

    #[test]
    fn retry_after_is_reported_from_a_rejection() {
        let e = ScwmError::Rejected {
            status: 429,
            err_code: "429_TOO_MANY_REQUESTS".into(),
            retry_after: Some(Duration::from_secs(7)),
        };
        assert_eq!(e.retry_after(), Some(Duration::from_secs(7)));
        assert!(!ScwmError::Encode("x".into()).is_retryable());
    }
}
