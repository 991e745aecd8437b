//! The HTTP front door: native commands (`POST /v1/incidents/{op}`), health endpoints, and the
//! shared plumbing (problem+json, body limits). [`router`] needs no socket, so tests can drive
//! it directly; [`serve`] runs it on a bound listener until shutdown.

pub mod body;
mod native;
pub mod problem;
mod webhook;

use std::{net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    extract::State,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use http::StatusCode;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use self::problem::Problem;
use crate::{health::Health, pipeline::Runner, sources::Sources};

/// What every handler needs.
#[derive(Clone)]
pub struct HttpState {
    pub runner: Runner,
    pub health: Health,
    pub sources: Sources,
    /// The largest body any endpoint takes; a source may set a smaller one.
    pub body_limit: usize,
    pub sync_timeout: Duration,
    /// How long a request body may take to arrive before the request is refused with 408.
    pub body_read_timeout: Duration,
}

/// The request's headers as they travel on with the event, minus credentials.
fn kept_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    crate::ingest::source::without_credentials(headers.iter().map(|(name, value)| {
        (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
    }))
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/incidents/{op}", post(native::command))
        .route("/webhooks/{source}", post(webhook::receive))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves until `shutdown` fires, then stops accepting and lets open requests finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "alive"}))
}

async fn readyz(State(state): State<HttpState>) -> Response {
    match state.health.readiness() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(not_ready) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .detail(not_ready.0.join("; "))
            .into_response(),
    }
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
}

async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
}
