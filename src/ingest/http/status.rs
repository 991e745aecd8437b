//! The pipeline's outcomes and the decoders' refusals in HTTP's words. The one place that
//! chooses status codes; NATS replies borrow them for their `Incident-Bridge-Status` header, so
//! a requester reads the same numbers over either transport.

use http::StatusCode;

use crate::{
    decode::DecodeError,
    pipeline::{Outcome, RejectError, Rejection},
};

/// The status that reports `outcome`.
pub fn of(outcome: &Outcome) -> u16 {
    match outcome {
        Outcome::Done(_) | Outcome::Duplicate { .. } => 200,
        Outcome::Retry { .. } => 503,
        Outcome::Reject(r) => of_rejection(r),
    }
}

/// SCWM's own status for a permanent 4xx; 502 for an answer that cannot be used; 503 when SCWM
/// could not be reached in time; 422 for an event no template can render; 500 for what is wrong
/// inside the bridge (its store, its configuration).
pub fn of_rejection(r: &Rejection) -> u16 {
    match &r.error {
        RejectError::Scwm(e) => match e.status() {
            Some(s) if (400..500).contains(&s) && r.envelope.is_some() => s,
            _ if e.is_retryable() => 503,
            _ => 502,
        },
        RejectError::Exhausted { .. } | RejectError::DeliveriesExhausted { .. } => 503,
        RejectError::Render(_) => 422,
        RejectError::Lifecycle(_) | RejectError::Store(_) | RejectError::Misconfigured(_) => 500,
    }
}

/// 400 for a body that is not JSON at all, 415 for a format not read at all, 422 for JSON of
/// the wrong shape.
pub fn of_decode(e: &DecodeError) -> StatusCode {
    match e {
        DecodeError::NotJson(_) => StatusCode::BAD_REQUEST,
        DecodeError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    }
}

/// A short JSON account of an outcome, for answers that cover several events.
pub fn summary(outcome: &Outcome) -> serde_json::Value {
    let detail = match outcome {
        Outcome::Done(d) => d.results.last().map(|r| r.license_plate.to_string()),
        Outcome::Duplicate { reason } => Some(reason.clone()),
        Outcome::Retry { cause, .. } => Some(cause.to_string()),
        Outcome::Reject(r) => Some(r.error.to_string()),
    };
    let mut summary =
        serde_json::json!({"outcome": outcome.label(), "status": of(outcome), "detail": detail});
    // What SCWM did for it: each operation and the incident it was done to.
    if let Outcome::Done(d) = outcome {
        summary["ops"] = d.results.iter().map(|r| r.op.as_str()).collect();
        if let Some(id) = d.results.iter().rev().find_map(|r| r.item_id.as_ref()) {
            summary["itemId"] = id.as_str().into();
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{alertmanager, cloudevents, native};
    use crate::incident::Operation;

    #[test]
    fn decode_refusals_map_to_400_415_and_422() {
        assert_eq!(of_decode(&native::decode(Operation::Add, b"").unwrap_err()), StatusCode::BAD_REQUEST);
        assert_eq!(
            of_decode(&native::decode(Operation::Add, b"[]").unwrap_err()),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(
            of_decode(&alertmanager::decode(br#"{"alerts":1}"#).unwrap_err()),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let batch = cloudevents::decode(
            &[("content-type", "application/cloudevents-batch+json")][..],
            bytes::Bytes::from_static(b"[]"),
        );
        assert_eq!(of_decode(&batch.unwrap_err()), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
}
