//! The pipeline's outcomes and the decoders' refusals in HTTP's words. The one place that
//! chooses status codes; NATS replies borrow them for their `Incident-Bridge-Status` header, so
//! a requester reads the same numbers over either transport.

use http::StatusCode;
use serde::Serialize;

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

/// A short account of one event's outcome, for answers that cover several events. Its fields
/// are in the order of their names, as the answer has always shown them.
#[derive(Debug, Serialize)]
pub struct Summary<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alertname: Option<&'a str>,
    detail: Option<String>,
    /// The incident SCWM last acted on, when it did.
    #[serde(rename = "itemId", skip_serializing_if = "Option::is_none")]
    item_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    /// What SCWM did for it: each operation, when it did anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    ops: Option<Vec<&'static str>>,
    outcome: &'static str,
    status: u16,
}

/// The summary of `outcome`.
pub fn summary(outcome: &Outcome) -> Summary<'_> {
    let detail = match outcome {
        Outcome::Done(d) => d.results.last().map(|r| r.license_plate.to_string()),
        Outcome::Duplicate { reason } => Some(reason.clone()),
        Outcome::Retry { cause, .. } => Some(cause.to_string()),
        Outcome::Reject(r) => Some(r.error.to_string()),
    };
    let (ops, item_id) = match outcome {
        Outcome::Done(d) => (
            Some(d.results.iter().map(|r| r.op.as_str()).collect()),
            d.results.iter().rev().find_map(|r| r.item_id.as_ref()).map(|id| id.as_str()),
        ),
        _ => (None, None),
    };
    Summary {
        alertname: None,
        detail,
        item_id,
        key: None,
        ops,
        outcome: outcome.label(),
        status: of(outcome),
    }
}

impl<'a> Summary<'a> {
    /// The summary naming the event it is of: its correlation `key`, and `alertname` for an alert.
    pub fn of_event(self, key: &'a str, alertname: Option<&'a str>) -> Self {
        Summary { key: Some(key), alertname, ..self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{alertmanager, cloudevents, native};
    use crate::incident::Operation;

    #[test]
    fn a_summary_shows_its_fields_sorted_and_leaves_out_what_it_does_not_have() {
        let duplicate = Outcome::Duplicate { reason: "nothing changed".into() };
        assert_eq!(
            serde_json::to_string(&summary(&duplicate).of_event("am:fp:1", Some("DiskFull"))).unwrap(),
            r#"{"alertname":"DiskFull","detail":"nothing changed","key":"am:fp:1","outcome":"duplicate","status":200}"#
        );
        let retry = Outcome::Retry {
            after: std::time::Duration::from_secs(1),
            cause: crate::pipeline::RetryCause::Busy,
        };
        let told = serde_json::to_value(summary(&retry)).unwrap();
        assert_eq!(told["outcome"], "retry");
        assert_eq!(told["status"], 503);
        assert!(told["detail"].is_string(), "{told}");
        for absent in ["alertname", "key", "ops", "itemId"] {
            assert!(told.get(absent).is_none(), "{absent} in {told}");
        }
    }

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
