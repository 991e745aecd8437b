//! `POST /webhooks/{source}`: alert notifications (Alertmanager, Grafana, CloudEvents) from
//! senders that authenticate with the source's schemes.
//!
//! Order matters: rate limit, size and media type first (cheap, no parsing), then the
//! signature or credentials over the raw bytes, then decoding. Every refusal is problem+json;
//! an authentication failure says only "unauthorized" to the sender, and the reason goes to the
//! log. The answer waits for the events' outcomes (up to `server.sync_timeout`) so a sender
//! that retries on 5xx, as Alertmanager does, retries exactly what did not finish. A 5xx answer
//! also releases the message from its source's replay cache, so that retry is not refused as a
//! replay.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode, header};

use super::{HttpState, body, inbound, problem::Problem, status};
use crate::{
    intake::{Described, Identity, Room, TimedOut, Unreadable},
    pipeline::{Delivery, Outcome},
    sources::SourceKind,
};

pub async fn receive(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let resp = match handle(&state, &name, &headers, body).await {
        Ok(resp) | Err(resp) => resp,
    };
    // A name that is no source is counted as `unknown`: the label stays bounded.
    let source = if state.intake.sources().get(&name).is_some() { name.as_str() } else { "unknown" };
    crate::observe::http_answer(source, resp.status().as_u16());
    resp
}

async fn handle(
    state: &HttpState,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Response> {
    let spec = match state.intake.sources().get(name) {
        Some(spec) if spec.kind != SourceKind::Native => Arc::clone(spec),
        _ => {
            return Err(Problem::new(StatusCode::NOT_FOUND, "unknown-source", "Unknown source")
                .detail(format!("no webhook source named `{name}`"))
                .into_response());
        }
    };
    if let Some(limiter) = &spec.rate_limit
        && let Err(wait) = limiter.check(Instant::now())
    {
        crate::observe::event_received(&spec.name, "http");
        tracing::warn!(source = %spec.name, "rate limit reached");
        return Err(Problem::new(StatusCode::TOO_MANY_REQUESTS, "rate-limited", "Too many requests")
            .retry_after(wait)
            .into_response());
    }
    let limit = spec.limits.max_body_bytes.min(state.body_limit);
    let bytes = body::read_json(headers, body, limit, state.body_read_timeout).await.map_err(|e| {
        crate::observe::event_received(&spec.name, "http");
        e.into_response()
    })?;
    // A sender's delivery id, when it has one, makes licensePlates stable across its retries.
    let identity = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .map(|id| Identity { time_ms: 0, seed: format!("webhook:{name}:{id}") });
    let inbound = inbound(&spec.name, format!("/webhooks/{name}"), headers, bytes, identity);
    let read = state.intake.read(&spec, inbound, headers, false, None).map_err(|e| match e {
        Unreadable::Unauthenticated(_) => unauthorized(),
        Unreadable::Decode(e) => Problem::new(status::of_decode(&e), "invalid-payload", "Invalid payload")
            .detail(e.to_string())
            .into_response(),
    })?;
    let claim = super::recall(&state.intake, &read)?;
    let tickets = state.intake.submit(read, Delivery::SENDER_RETRIES, Room::Refuse).await;
    let count = tickets.len();
    let described = tickets.described().to_vec();
    // A 5xx makes the sender (Alertmanager, say) send the message again: not a replay.
    let sent_again = |outcomes: &[Outcome]| outcomes.iter().any(|o| status::of(o) >= 500);
    Ok(match tickets.outcomes(Some(state.sync_timeout), sent_again).await {
        Ok(outcomes) => super::remember(answer(count, &described, outcomes), claim).await,
        Err(TimedOut::Waited) => {
            Problem::new(StatusCode::SERVICE_UNAVAILABLE, "timeout", "Not finished in time")
                .detail(
                    "the events continue in the background; a resend is recognised and does nothing twice",
                )
                .retry_after(Duration::from_secs(5))
                .into_response()
        }
        Err(TimedOut::ShuttingDown) => super::shutting_down(),
    })
}

/// The same answer for every authentication failure, so a prober learns nothing from it.
fn unauthorized() -> Response {
    Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").into_response()
}

/// 200 when every event finished; 503 with Retry-After when one should be sent again; else the
/// most severe refusal. The body lists each event's outcome.
fn answer(count: usize, described: &[Described], outcomes: Vec<Outcome>) -> Response {
    let retry_after = Outcome::longest_retry(&outcomes);
    let code = match retry_after {
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => outcomes
            .iter()
            .map(status::of)
            .max()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK),
    };
    #[derive(serde::Serialize)]
    struct Answer<'a> {
        events: usize,
        outcomes: Vec<status::Summary<'a>>,
    }
    let outcomes = outcomes
        .iter()
        .zip(described)
        .map(|(outcome, about)| {
            status::summary(outcome).of_event(about.key.as_str(), about.alertname.as_deref())
        })
        .collect();
    let body = serde_json::to_vec(&Answer { events: count, outcomes }).expect("an answer serialises");
    let mut resp = (code, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(after) = retry_after {
        // Whole seconds, rounded up: a sender that waits what it is told finds the wait over.
        let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
        resp.headers_mut().insert(header::RETRY_AFTER, http::HeaderValue::from(secs.max(1)));
    }
    resp
}
