//! `POST /v1/incidents/{op}`: one native command. Synchronous by default (the answer is SCWM's
//! envelope); with `Prefer: respond-async` it answers 202 as soon as the command is queued.

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde_json::json;

use super::{HttpState, body, inbound, problem::Problem, status};
use crate::{
    ids::LicensePlate,
    incident::Operation,
    intake::{Identity, Room, TimedOut, Unreadable},
    pipeline::{Delivery, Outcome, queue::SubmitError},
};

pub async fn command(
    State(state): State<HttpState>,
    Path(op): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let resp = answer_command(state, op, headers, body).await;
    crate::observe::http_answer("native", resp.status().as_u16());
    resp
}

async fn answer_command(state: HttpState, op: String, headers: HeaderMap, body: Body) -> Response {
    // The request's licensePlate is known before anything is read, so that every answer, a
    // refusal included, carries it.
    let (identity, refused) = match idempotency(&op, &headers) {
        Ok(Some(identity)) => (identity, None),
        Ok(None) => (Identity::fresh("http"), None),
        Err(problem) => (Identity::fresh("http"), Some(problem)),
    };
    let plate = identity.license_plate("");
    let resp = match refused {
        Some(problem) => problem.into_response(),
        None => match accept(&state, &op, identity, &headers, body).await {
            Ok(resp) | Err(resp) => resp,
        },
    };
    with_plate(resp, &plate)
}

async fn accept(
    state: &HttpState,
    op: &str,
    identity: Identity,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let op: Operation = op.parse().map_err(|e: crate::incident::UnknownOperation| {
        Problem::new(StatusCode::NOT_FOUND, "unknown-operation", "Unknown operation")
            .detail(e.to_string())
            .into_response()
    })?;
    let spec = state.intake.sources().native();
    let limit = spec.limits.max_body_bytes.min(state.body_limit);
    let bytes = body::read_json(headers, body, limit, state.body_read_timeout)
        .await
        .map_err(IntoResponse::into_response)?;
    let inbound = inbound(&spec.name, format!("/v1/incidents/{op}"), headers, bytes, Some(identity));
    let key =
        headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(|k| crate::intake::DeliveryKey {
            namespace: "idempotency-key",
            source: spec.name.clone(),
            sender: super::sender_of(headers),
            id: k.to_owned(),
        });
    let read = state.intake.read(spec, inbound, headers, false, key).map_err(|e| match e {
        Unreadable::Unauthenticated(_) => {
            Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").into_response()
        }
        Unreadable::Decode(e) => Problem::new(status::of_decode(&e), "invalid-command", "Invalid command")
            .detail(e.to_string())
            .into_response(),
    })?;
    let Some(event) = read.events.first() else {
        return Err(Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-command", "Invalid command")
            .into_response());
    };
    let license_plate = event.license_plate.clone();

    let claim = super::recall(&state.intake, &read)?;
    if prefers_async(headers) {
        state.intake.submit_detached(read, Delivery::ONLY).map_err(queue_refused)?;
        let mut resp = (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"licensePlate": license_plate, "status": "accepted"}).to_string(),
        )
            .into_response();
        resp.headers_mut().insert("preference-applied", HeaderValue::from_static("respond-async"));
        return Ok(resp);
    }

    let tickets = state.intake.submit(read, Delivery::SENDER_RETRIES, Room::Refuse).await;
    if let Some(refusal) = tickets.refusal() {
        return Err(queue_refused(refusal));
    }
    // The caller is told to try again on a 5xx: its retry of this request is not a replay.
    let sent_again = |outcomes: &[Outcome]| outcomes.iter().any(|o| status::of(o) >= 500);
    let resp = match tickets.outcomes(Some(state.sync_timeout), sent_again).await {
        Ok(mut outcomes) => match outcomes.pop() {
            Some(outcome) => super::remember(outcome_response(outcome), claim).await,
            None => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error")
                .detail("the command ended without an outcome")
                .into_response(),
        },
        Err(TimedOut::ShuttingDown) => super::shutting_down(),
        Err(TimedOut::Waited) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "scwm-timeout", "SCWM did not answer in time")
            .detail("the command continues in the background; resend it with the same Idempotency-Key to get its answer without a second effect")
            .retry_after(std::time::Duration::from_secs(1))
            .into_response(),
    };
    Ok(resp)
}

/// A client makes a command idempotent with `Idempotency-Key`: the same key for the same
/// operation always yields the same licensePlate, so SCWM sees a repeat, not a new request.
fn idempotency(op: &str, headers: &HeaderMap) -> Result<Option<Identity>, Problem> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let key = v.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 255).ok_or_else(|| {
        Problem::new(StatusCode::BAD_REQUEST, "invalid-idempotency-key", "Invalid Idempotency-Key")
            .detail("Idempotency-Key must be 1 to 255 visible ASCII characters")
    })?;
    // Scoped to the sender (a digest of its credentials), so two clients' keys never meet.
    Ok(Some(Identity { time_ms: 0, seed: format!("http:{}:{op}:{key}", super::sender_of(headers)) }))
}

fn prefers_async(headers: &HeaderMap) -> bool {
    headers.get_all("prefer").iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(',').any(|pref| {
            pref.split(';').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("respond-async"))
        })
    })
}

fn queue_refused(e: SubmitError) -> Response {
    let (kind, title) = match e {
        SubmitError::Full => ("queue-full", "Too much work queued"),
        SubmitError::Closed => ("shutting-down", "Shutting down"),
    };
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, kind, title)
        .retry_after(std::time::Duration::from_secs(1))
        .into_response()
}

fn with_plate(mut resp: Response, plate: &LicensePlate) -> Response {
    if let Ok(v) = HeaderValue::from_str(plate.as_str()) {
        resp.headers_mut().insert("license-plate", v);
    }
    resp
}

fn envelope_response(status: StatusCode, body: bytes::Bytes) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn outcome_response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Done(done) => match &done.envelope {
            Some(envelope) => envelope_response(StatusCode::OK, envelope.body().clone()),
            None => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                json!({"status": "done"}).to_string(),
            )
                .into_response(),
        },
        Outcome::Duplicate { reason } => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            json!({"status": "duplicate", "reason": reason}).to_string(),
        )
            .into_response(),
        Outcome::Retry { after, cause } => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "scwm-unavailable", "SCWM is unavailable")
                .detail(cause.to_string())
                .retry_after(after)
                .into_response()
        }
        Outcome::Reject(rejection) => {
            let status =
                StatusCode::from_u16(status::of_rejection(&rejection)).unwrap_or(StatusCode::BAD_GATEWAY);
            // A permanent 4xx from SCWM: the caller gets SCWM's own answer and status.
            match &rejection.envelope {
                Some(envelope) if status.is_client_error() => {
                    envelope_response(status, envelope.body().clone())
                }
                _ if status == StatusCode::SERVICE_UNAVAILABLE => {
                    // The real wait when SCWM said one (or the circuit's remaining time).
                    let after = rejection.error.retry_after().unwrap_or(std::time::Duration::from_secs(1));
                    Problem::new(status, "scwm-unavailable", "SCWM is unavailable")
                        .detail(rejection.error.to_string())
                        .retry_after(after)
                        .into_response()
                }
                _ => Problem::new(status, "scwm-bad-answer", "SCWM gave an unusable answer")
                    .detail(rejection.error.to_string())
                    .into_response(),
            }
        }
    }
}
