//! Why a message failed authentication. Owns the error type and its bounded `kind` labels; must
//! never carry secret material, an expected signature or text copied from the request (only
//! header names, which come from configuration, and fixed reasons), so an error can be logged
//! as is.

/// Why a message was refused. The HTTP layer answers every variant with the same generic 401 so
/// a caller learns nothing; the [`kind`](VerifyError::kind) goes to the log and a metric.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the configured scheme needs is absent.
    #[error("header `{header}` is missing")]
    MissingHeader { header: String },
    /// A header is present but cannot be read: bad encoding, wrong shape, or sent more than once
    /// (an attacker must not get to choose which copy counts).
    #[error("header `{header}` is malformed: {reason}")]
    MalformedHeader { header: String, reason: &'static str },
    /// The header is well formed but carries signatures of versions this bridge does not check
    /// only (Standard Webhooks `v1a`, Stripe `v0`).
    #[error("header `{header}` carries no signature of a supported version")]
    NoSupportedSignature { header: String },
    /// No signature matched any configured secret.
    #[error("no signature in header `{header}` matched a configured secret")]
    BadSignature { header: String },
    /// Correctly signed, but older than the tolerance allows.
    #[error("timestamp is {age_secs}s old, beyond the {tolerance_secs}s tolerance")]
    TimestampTooOld { age_secs: u64, tolerance_secs: u64 },
    /// Correctly signed, but further ahead of our clock than the tolerance allows.
    #[error("timestamp is {ahead_secs}s in the future, beyond the {tolerance_secs}s tolerance")]
    TimestampInFuture { ahead_secs: u64, tolerance_secs: u64 },
    /// Correctly signed and fresh, but this message was already accepted within its window.
    #[error("message was already accepted within the replay window")]
    Replayed,
    /// Bearer token or Basic credentials did not match.
    #[error("credentials in header `{header}` did not match")]
    BadCredentials { header: String },
}

impl VerifyError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader { .. } => "missing_header",
            VerifyError::MalformedHeader { .. } => "malformed_header",
            VerifyError::NoSupportedSignature { .. } => "no_supported_signature",
            VerifyError::BadSignature { .. } => "bad_signature",
            VerifyError::TimestampTooOld { .. } => "timestamp_too_old",
            VerifyError::TimestampInFuture { .. } => "timestamp_in_future",
            VerifyError::Replayed => "replayed",
            VerifyError::BadCredentials { .. } => "bad_credentials",
        }
    }

    /// Every label [`kind`](VerifyError::kind) can return, to pre-register metric series.
    pub const KINDS: [&'static str; 8] = [
        "missing_header",
        "malformed_header",
        "no_supported_signature",
        "bad_signature",
        "timestamp_too_old",
        "timestamp_in_future",
        "replayed",
        "bad_credentials",
    ];

    pub(crate) fn missing(header: &str) -> Self {
        VerifyError::MissingHeader { header: header.to_owned() }
    }

    pub(crate) fn malformed(header: &str, reason: &'static str) -> Self {
        VerifyError::MalformedHeader { header: header.to_owned(), reason }
    }

    pub(crate) fn bad_signature(header: &str) -> Self {
        VerifyError::BadSignature { header: header.to_owned() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_lists_every_label() {
        let all = [
            VerifyError::missing("h"),
            VerifyError::malformed("h", "r"),
            VerifyError::NoSupportedSignature { header: "h".into() },
            VerifyError::bad_signature("h"),
            VerifyError::TimestampTooOld { age_secs: 1, tolerance_secs: 0 },
            VerifyError::TimestampInFuture { ahead_secs: 1, tolerance_secs: 0 },
            VerifyError::Replayed,
            VerifyError::BadCredentials { header: "h".into() },
        ];
        let kinds: Vec<_> = all.iter().map(VerifyError::kind).collect();
        assert_eq!(kinds, VerifyError::KINDS);
    }
}
