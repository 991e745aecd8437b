//! The admin API: `POST /v1/explain/{source}`, what a message would do and why, for people and
//! scripts (`incident-bridge explain --url`). Refused with 404 unless `[admin]` is configured,
//! with 401 unless the request passes its `auth` entries. Never acts: the explanation is a dry
//! run through the same intake and pipeline (no SCWM call, no store or replay-cache write).
//!
//! The request names the message as the sender would send it: `{"headers": {"name": "value",
//! ...}, "body": "<the raw body>"}` (`body` may also be a JSON object, sent compact). The
//! message's own `Authorization` header thus stays apart from the admin's.

use std::{sync::Arc, time::SystemTime};

use axum::{
    body::Body,
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::{HttpState, body, inbound, problem::Problem, status};
use crate::sources::SourceKind;

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

pub async fn explain(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(admin) = &state.admin else {
        return Problem::new(StatusCode::NOT_FOUND, "admin-not-configured", "Not found")
            .detail("the admin API is off: configure [admin] auth to use it")
            .into_response();
    };
    let bytes = match body::read_json(&headers, body, state.body_limit, state.body_read_timeout).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if admin.verify_dry(&headers, bytes.clone(), SystemTime::now()).is_err() {
        return Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").into_response();
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
        Ok(explained) => {
            let body = serde_json::to_string_pretty(&explained).expect("an explanation serialises");
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => Problem::new(status::of_decode(&e), "invalid-payload", "The sender would be refused")
            .detail(e.to_string())
            .into_response(),
    }
}
