//! What an SCWM answer means, per the contract's "Response" section: a complete HTTP answer
//! (status, `Retry-After`, body) in, a success with its envelope or a typed [`ScwmError`] out.
//! Pure except for reading the body to its end; it sends nothing and retries nothing.

use std::time::Duration;

use bytes::{Bytes, BytesMut};

use super::{envelope::ResponseEnvelope, error::ScwmError};
use crate::ids::LicensePlate;

/// A response body larger than this is not an SCWM envelope we want to hold in memory: incident
/// answers are a few kilobytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// What one HTTP attempt came to.
pub(super) enum Answer {
    Success { envelope: ResponseEnvelope, status: u16 },
    Failure { error: ScwmError, envelope: Option<ResponseEnvelope> },
}

/// Reads the whole body, refusing one larger than [`MAX_RESPONSE_BYTES`].
pub(super) async fn read_body(mut response: reqwest::Response, status: u16) -> Result<Bytes, ScwmError> {
    let too_large = || ScwmError::InvalidResponse {
        status,
        reason: format!("body larger than {MAX_RESPONSE_BYTES} bytes"),
    };
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(ScwmError::from_reqwest)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Decides what a complete HTTP answer means, per the contract's "Response" section.
///
/// - Not an envelope: `InvalidResponse` with the HTTP status (transient only if that is).
/// - `isErr: true`: `Rejected`, with the errCode's number deciding when it has one that is not
///   itself a success code, else the HTTP status.
/// - `isErr: false` with a non-2xx HTTP status: `Rejected` with the HTTP status; an envelope
///   does not make an error status a success.
/// - `isErr: false`, 2xx, but another licensePlate (or none): `LicensePlateMismatch`. ULIDs and
///   UUIDs are case-insensitive, so the echo is compared ignoring ASCII case.
/// - Otherwise success.
pub(super) fn classify(
    status: u16,
    retry_after: Option<Duration>,
    body: Bytes,
    expected: &LicensePlate,
) -> Answer {
    let envelope = match ResponseEnvelope::parse(body) {
        Ok(envelope) => envelope,
        Err(not_an_envelope) => {
            return Answer::Failure {
                error: ScwmError::InvalidResponse { status, reason: not_an_envelope.0 },
                envelope: None,
            };
        }
    };
    let is_success = |s: u16| (200..300).contains(&s);
    let header = envelope.header();
    let error = if header.is_err {
        let code = header.err_status().filter(|s| !is_success(*s));
        Some(ScwmError::Rejected {
            status: code.unwrap_or(status),
            err_code: header.err_code.clone(),
            retry_after,
        })
    } else if !is_success(status) {
        Some(ScwmError::Rejected { status, err_code: header.err_code.clone(), retry_after })
    } else if !header.license_plate.eq_ignore_ascii_case(expected.as_str()) {
        Some(ScwmError::LicensePlateMismatch {
            expected: expected.clone(),
            got: header.license_plate.clone(),
        })
    } else {
        None
    };
    match error {
        Some(error) => Answer::Failure { error, envelope: Some(envelope) },
        None => Answer::Success { envelope, status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLATE: &str = "01JD1X4Y0ZKQ6N0M7W7E3H5T9B";

    fn plate() -> LicensePlate {
        LicensePlate::parse(PLATE).expect("a valid plate")
    }

    fn envelope(is_err: bool, err_code: &str, license_plate: &str) -> Bytes {
        Bytes::from(
            serde_json::json!({
                "header": {
                    "headerVersion": 1,
                    "eventName": "agile-process-teams:add-change-response:v3",
                    "ownerId": "OWNER",
                    "isErr": is_err,
                    "errCode": err_code,
                    "licensePlate": license_plate,
                },
                "payload": {"id": "IT-1"},
            })
            .to_string(),
        )
    }

    fn error_of(answer: Answer) -> (ScwmError, bool) {
        match answer {
            Answer::Success { .. } => panic!("expected a failure"),
            Answer::Failure { error, envelope } => (error, envelope.is_some()),
        }
    }

    #[test]
    fn a_matching_ok_envelope_is_a_success() {
        match classify(200, None, envelope(false, "200_OK", PLATE), &plate()) {
            Answer::Success { envelope: env, .. } => {
                assert_eq!(env.item_id().map(|i| i.to_string()), Some("IT-1".into()))
            }
            Answer::Failure { error, .. } => panic!("unexpected {error}"),
        }
        // 201 is a success status too, and the echo may differ in case.
        assert!(matches!(
            classify(201, None, envelope(false, "200_OK", &PLATE.to_lowercase()), &plate()),
            Answer::Success { status: 201, .. }
        ));
    }

    #[test]
    fn the_err_code_inside_a_200_decides() {
        let table: &[(&str, u16, bool)] = &[
            ("400_BAD_REQUEST", 400, false),
            ("401_UNAUTHORIZED", 401, false),
            ("404_NOT_FOUND", 404, false),
            ("408_REQUEST_TIMEOUT", 408, true),
            ("409_CONFLICT", 409, false),
            ("429_TOO_MANY_REQUESTS", 429, true),
            ("500_INTERNAL_SERVER_ERROR", 500, true),
            ("503_SERVICE_UNAVAILABLE", 503, true),
        ];
        for &(code, status, retryable) in table {
            let (error, has_envelope) = error_of(classify(200, None, envelope(true, code, PLATE), &plate()));
            assert!(has_envelope);
            assert_eq!(error.status(), Some(status), "{code}");
            assert_eq!(error.is_retryable(), retryable, "{code}");
            assert!(matches!(&error, ScwmError::Rejected { err_code, .. } if err_code == code));
        }
    }

    #[test]
    fn an_error_envelope_with_a_matching_http_status_is_classified_the_same() {
        for (status, code, retryable) in [
            (400, "400_BAD_REQUEST", false),
            (404, "404_NOT_FOUND", false),
            (429, "429_TOO_MANY_REQUESTS", true),
            (503, "503_SERVICE_UNAVAILABLE", true),
        ] {
            let ra = Some(Duration::from_secs(2));
            let (error, _) = error_of(classify(status, ra, envelope(true, code, PLATE), &plate()));
            assert_eq!(error.status(), Some(status));
            assert_eq!(error.is_retryable(), retryable);
            assert_eq!(error.retry_after(), ra);
        }
    }

    #[test]
    fn without_a_usable_err_code_the_http_status_decides() {
        let (e, _) = error_of(classify(503, None, envelope(true, "OOPS", PLATE), &plate()));
        assert_eq!(e.status(), Some(503));
        assert!(e.is_retryable());
        // isErr with a success code contradicts itself; the HTTP status is all we have.
        let (e, _) = error_of(classify(502, None, envelope(true, "200_OK", PLATE), &plate()));
        assert_eq!(e.status(), Some(502));
        let (e, _) = error_of(classify(200, None, envelope(true, "", PLATE), &plate()));
        assert_eq!(e.status(), Some(200));
        assert!(!e.is_retryable());
    }

    #[test]
    fn an_ok_envelope_with_an_error_status_is_not_a_success() {
        let (e, _) = error_of(classify(500, None, envelope(false, "200_OK", PLATE), &plate()));
        assert_eq!(e.status(), Some(500));
        assert!(e.is_retryable());
        let (e, _) = error_of(classify(404, None, envelope(false, "200_OK", PLATE), &plate()));
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_retryable());
    }

    #[test]
    fn non_envelope_bodies_are_invalid_responses() {
        for (status, body, retryable) in [
            (502, &b"<html>Bad Gateway</html>"[..], true),
            (500, b"", true),
            (503, b"{\"header\":{}}", true),
            (200, b"<html>login</html>", false),
            (200, b"{\"header\": {\"isErr\": false", false),
            (404, b"not found", false),
            (302, b"", false),
        ] {
            let (e, has_envelope) = error_of(classify(status, None, Bytes::from_static(body), &plate()));
            assert!(!has_envelope);
            assert_eq!(e.kind(), "invalid_response");
            assert_eq!(e.status(), Some(status));
            assert_eq!(e.is_retryable(), retryable, "{status} {body:?}");
        }
    }

    #[test]
    fn another_license_plate_is_a_permanent_mismatch() {
        for echoed in ["01JD1X4Y0ZKQ6N0M7W7E3H5T9C", ""] {
            let (e, has_envelope) =
                error_of(classify(200, None, envelope(false, "200_OK", echoed), &plate()));
            assert!(has_envelope);
            assert!(!e.is_retryable());
            assert_eq!(e, ScwmError::LicensePlateMismatch { expected: plate(), got: echoed.to_owned() });
        }
    }
}
