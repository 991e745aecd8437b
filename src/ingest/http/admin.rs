//! The admin API, for people and scripts (`incident-bridge explain|store --url`): `POST
//! /v1/explain/{source}`, what a message would do and why; `GET /v1/store/keys`, `GET` and
//! `DELETE /v1/store/key?key=...`, what the correlation store holds. Refused with 404 unless
//! `[admin]` is configured, with 401 unless the request passes its `auth` entries. Explain never
//! acts: it is a dry run through the same intake and pipeline (no SCWM call, no store or
//! replay-cache write); forget is the one write, a compare-and-swap on the revision shown.
//!
//! The request names the message as the sender would send it: `{"headers": {"name": "value",
//! ...}, "body": "<the raw body>"}` (`body` may also be a JSON object, sent compact). The
//! message's own `Authorization` header thus stays apart from the admin's.

use std::{sync::Arc, time::SystemTime};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::{HttpState, body, inbound, problem::Problem, status};
use crate::{
    pipeline::inspect::{Filter, InspectError},
    sources::SourceKind,
};

/// What to explain: the message as its sender would send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: serde_json::Value,
}

impl ExplainRequest {
    /// The raw body: a string as it is, anything else as compact JSON.
    pub fn body_bytes(&self) -> Bytes {
        match &self.body {
            serde_json::Value::String(s) => Bytes::from(s.clone().into_bytes()),
            other => Bytes::from(other.to_string().into_bytes()),
        }
    }
}

/// The refusal, when the request may not use the admin API: 404 while it is off, 401 unless
/// the request passes `[admin] auth`.
fn refusal(state: &HttpState, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    let Some(admin) = &state.admin else {
        return Some(
            Problem::new(StatusCode::NOT_FOUND, "admin-not-configured", "Not found")
                .detail("the admin API is off: configure [admin] auth to use it")
                .into_response(),
        );
    };
    // Nothing is remembered against replays: the same query may come again.
    admin
        .verify_dry(headers, body.clone(), SystemTime::now())
        .is_err()
        .then(|| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").into_response())
}

fn json_answer(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_string_pretty(value).expect("an answer serialises");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn inspect_problem(e: InspectError) -> Response {
    let (status, kind) = match &e {
        InspectError::NoStore | InspectError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
        InspectError::Changed(_) => (StatusCode::CONFLICT, "changed"),
        InspectError::Store(s) if s.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
        InspectError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store-error"),
    };
    Problem::new(status, kind, "Store").detail(e.to_string()).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/store/keys?prefix=&state=open|closed|none|pending&after=&limit=100`.
pub async fn store_list(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<ListQuery>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers, &Bytes::new()) {
        return refused;
    }
    let filter = Filter {
        prefix: q.prefix,
        state: q.state,
        after: q.after,
        limit: q.limit.unwrap_or(100).min(10_000),
    };
    match state.intake.runner().pipeline().store_list(&filter).await {
        Ok(page) => json_answer(StatusCode::OK, &page),
        Err(e) => inspect_problem(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    key: String,
    revision: Option<u64>,
}

/// `GET /v1/store/key?key=...`: the record and its revision.
pub async fn store_get(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<KeyQuery>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers, &Bytes::new()) {
        return refused;
    }
    match state.intake.runner().pipeline().store_get(&q.key).await {
        Ok(record) => json_answer(StatusCode::OK, &record),
        Err(e) => inspect_problem(e),
    }
}

/// `DELETE /v1/store/key?key=...&revision=N`: forget the key if it still has that revision.
pub async fn store_forget(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Query(q): Query<KeyQuery>,
) -> Response {
    if let Some(refused) = refusal(&state, &headers, &Bytes::new()) {
        return refused;
    }
    let Some(revision) = q.revision else {
        return Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request", "Revision required")
            .detail("name the revision a get showed (`revision=N`), so nothing newer is forgotten")
            .into_response();
    };
    match state.intake.runner().pipeline().store_forget(&q.key, revision).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => inspect_problem(e),
    }
}

pub async fn explain(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Off: refused before the body is read.
    if state.admin.is_none()
        && let Some(refused) = refusal(&state, &headers, &Bytes::new())
    {
        return refused;
    }
    let bytes = match body::read_json(&headers, body, state.body_limit, state.body_read_timeout).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Some(refused) = refusal(&state, &headers, &bytes) {
        return refused;
    }
    let request: ExplainRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "Invalid explain request",
            )
            .detail(format!("expected {{\"headers\": {{...}}, \"body\": ...}}: {e}"))
            .into_response();
        }
    };
    let Some(spec) =
        state.intake.sources().get(&name).filter(|s| s.kind != SourceKind::Native).map(Arc::clone)
    else {
        return Problem::new(StatusCode::NOT_FOUND, "unknown-source", "Unknown source")
            .detail(format!("no webhook source named `{name}`"))
            .into_response();
    };
    let sent: HeaderMap = match request
        .headers
        .iter()
        .map(|(n, v)| Ok((n.parse::<header::HeaderName>()?, v.parse::<header::HeaderValue>()?)))
        .collect::<Result<HeaderMap, Box<dyn std::error::Error>>>()
    {
        Ok(h) => h,
        Err(e) => {
            return Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-request",
                "Invalid explain request",
            )
            .detail(format!("a header is not valid HTTP: {e}"))
            .into_response();
        }
    };
    let message = inbound(&spec.name, format!("/webhooks/{name}"), &sent, request.body_bytes(), None);
    match state.intake.explain(&spec, message, &sent).await {
        Ok(explained) => json_answer(StatusCode::OK, &explained),
        Err(e) => Problem::new(status::of_decode(&e), "invalid-payload", "The sender would be refused")
            .detail(e.to_string())
            .into_response(),
    }
}
