//! Reading a request body safely: the content type must be JSON, the body no larger than the
//! configured limit, and it must arrive within a deadline. Each check answers with problem+json
//! before any byte is parsed.

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::problem::Problem;

/// `application/json` or any `application/*+json`, parameters allowed.
pub fn is_json(headers: &HeaderMap) -> bool {
    let Some(ct) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

pub async fn read_json(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Problem> {
    if !is_json(headers) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
        )
        .detail("the body must be JSON (Content-Type: application/json)"));
    }
    read_limited(headers, body, limit, timeout).await
}

/// The whole body, refused when larger than `limit` bytes or slower than `timeout` to arrive.
pub async fn read_limited(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, Problem> {
    let too_large = || {
        Problem::new(StatusCode::PAYLOAD_TOO_LARGE, "body-too-large", "Request body too large")
            .detail(format!("the limit is {limit} bytes"))
    };
    // Refuse early when the sender announces the size, without reading anything.
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let Ok(read) = tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await else {
        return Err(Problem::new(StatusCode::REQUEST_TIMEOUT, "body-timeout", "Request body too slow")
            .detail(format!("the body must arrive within {} s", timeout.as_secs_f64())));
    };
    match read {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(e) => Err(Problem::new(StatusCode::BAD_REQUEST, "body-unreadable", "Request body unreadable")
            .detail(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, v.parse().unwrap());
        h
    }

    #[test]
    fn json_content_types_are_recognised() {
        assert!(is_json(&ct("application/json")));
        assert!(is_json(&ct("application/json; charset=utf-8")));
        assert!(is_json(&ct("Application/JSON")));
        assert!(is_json(&ct("application/cloudevents+json")));
        assert!(!is_json(&ct("text/plain")));
        assert!(!is_json(&ct("application/jsonx")));
        assert!(!is_json(&HeaderMap::new()));
    }
}
