//! The HTTP front door: native commands (`POST /v1/incidents/{op}`), health endpoints, and the
//! shared plumbing (problem+json, body limits). [`router`] needs no socket, so tests can drive
//! it directly; [`serve`] runs it on a bound listener until shutdown.

pub mod admin;
pub mod body;
pub mod config;
pub mod conn;
mod console;
mod native;
pub mod problem;
pub mod status;
mod webhook;

use std::time::Duration;

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

pub use self::console::Settings as ConsoleSettings;
use self::problem::Problem;
use crate::{health::Health, intake::Intake};

/// What every handler needs.
#[derive(Clone)]
pub struct HttpState {
    pub intake: Intake,
    pub health: Health,
    /// The largest body any endpoint takes; a source may set a smaller one.
    pub body_limit: usize,
    pub sync_timeout: Duration,
    /// How long a request body may take to arrive before the request is refused with 408.
    pub body_read_timeout: Duration,
    /// Who may use the admin API; `None`: it answers 404.
    pub admin: Option<std::sync::Arc<crate::verify::SourceAuth>>,
    /// How often one dead letter may be replayed.
    pub max_replays: u32,
    /// The console's settings, when it is served at `/ui` (with the admin API only).
    pub console: Option<ConsoleSettings>,
}

/// A request as a message for the source decoder: its body, its headers minus credentials,
/// and where it came from.
fn inbound(
    source: &str,
    path: String,
    headers: &http::HeaderMap,
    body: bytes::Bytes,
    identity: Option<crate::intake::Identity>,
) -> crate::intake::Inbound {
    crate::intake::Inbound {
        source: crate::event::Source {
            transport: crate::event::Transport::Http,
            name: source.to_owned(),
            subject: path,
            stream: None,
            stream_sequence: None,
            stream_published_ms: None,
        },
        original: crate::event::Original { body, headers: kept_headers(headers) },
        received_at: std::time::SystemTime::now(),
        identity,
    }
}

/// A message to explain as if it had come to `/webhooks/<source>` with `headers`.
pub fn explain_inbound(
    source: &str,
    headers: &http::HeaderMap,
    body: bytes::Bytes,
) -> crate::intake::Inbound {
    inbound(source, format!("/webhooks/{source}"), headers, body, None)
}

/// The request's headers as they travel on with the event, minus credentials.
fn kept_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    crate::headers::without_credentials(crate::headers::pairs_from_http(headers).into_iter())
}

pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/v1/incidents/{op}", post(native::command))
        .route("/webhooks/{source}", post(webhook::receive))
        .route("/v1/explain/{source}", post(admin::explain))
        .route("/v1/store/keys", get(admin::store_list))
        .route("/v1/store/key", get(admin::store_get).delete(admin::store_forget))
        .route("/v1/dlq", get(admin::dlq_list).delete(admin::dlq_purge))
        .route("/v1/dlq/letter", get(admin::dlq_show))
        .route("/v1/dlq/replay", post(admin::dlq_replay))
        .route("/v1/decisions", get(admin::decisions))
        .route_layer(axum::middleware::from_fn(trace_request))
        .nest("/ui", console::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves until `shutdown` fires, then stops accepting and lets open requests finish.
///
/// Every connection is held to [`conn::Limits`]: a first byte within `first_byte`, no more
/// than `idle` between requests, headers within `headers` once they have begun (so a client
/// that trickles them, slowloris, cannot hold a connection), and at most `max_connections`
/// open at once. A request's body has its own bound, enforced where it is read.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: conn::Limits,
    max_connections: usize,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::{conn::auto, graceful::GracefulShutdown},
        service::TowerToHyperService,
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let connections = conn::Connections::new(max_connections);
    loop {
        let (stream, _peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of descriptors, say: back off a moment instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = connections.admit() else {
            crate::observe::http_connection_refused();
            tracing::debug!(max_connections, "connection refused: as many open as allowed");
            continue;
        };
        let activity = conn::Activity::default();
        let service = {
            let (router, activity) = (router.clone(), activity.clone());
            tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                // The connection's idle and header timers rest while a request is handled.
                let handling = activity.begin();
                let mut router = router.clone();
                async move {
                    let resp = tower::Service::call(&mut router, req).await;
                    drop(handling);
                    resp
                }
            })
        };
        let io = conn::Guarded::new(stream, limits, activity, Some(slot));
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    // Idle connections close now; requests under way finish first.
    graceful.shutdown().await;
    Ok(())
}

/// A server span per request (OpenTelemetry HTTP server conventions), continuing the sender's
/// trace from `traceparent`. Health and metrics endpoints sit outside it: probes are noise.
async fn trace_request(
    matched: Option<axum::extract::MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = matched.as_ref().map_or("unmatched", |m| m.as_str()).to_owned();
    let method = req.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let trace_headers: Vec<(String, String)> = ["traceparent", "tracestate"]
        .iter()
        .filter_map(|n| {
            req.headers().get(*n).and_then(|v| v.to_str().ok()).map(|v| ((*n).to_owned(), v.to_owned()))
        })
        .collect();
    crate::trace_context::continue_trace(&span, &trace_headers);
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    // i64: the OpenTelemetry layer exports unsigned integers as text.
    span.record("http.response.status_code", i64::from(resp.status().as_u16()));
    resp
}

/// Prometheus text format. Gauges that describe "now" are sampled here, so they are exact at
/// every scrape.
async fn metrics(State(state): State<HttpState>) -> Response {
    let runner = state.intake.runner();
    let scwm = runner.pipeline().scwm();
    crate::observe::queue(runner.depth(), runner.capacity(), scwm.in_flight());
    crate::observe::circuit(scwm.circuit_state().level());
    let handle = crate::telemetry::metrics();
    handle.run_upkeep();
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render())
        .into_response()
}

async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "alive"}))
}

async fn readyz(State(state): State<HttpState>) -> Response {
    let components = state.health.components();
    match state.health.readiness() {
        Ok(()) => Json(json!({"status": "ready", "components": components})).into_response(),
        Err(not_ready) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, "not-ready", "Not ready")
            .detail(not_ready.0.join("; "))
            .with("components", json!(components))
            .into_response(),
    }
}

/// What the bridge remembers of a read request's delivery, in HTTP's words: `Ok` with the claim
/// to finish for a new one (or none when it names no delivery), else the answer to give now: a
/// repeat of a handled one gets its first answer again; one whose first delivery is still being
/// handled gets 409 for an `Idempotency-Key` (the draft's word) and 503 with `Retry-After` for a
/// sender's own id; a key used for another request gets 422.
#[allow(clippy::result_large_err)] // The error is the answer itself, given at once.
fn recall(
    intake: &crate::intake::Intake,
    read: &crate::intake::Read,
) -> Result<Option<crate::intake::Claim>, Response> {
    use crate::intake::Recall;
    match intake.recall(read, std::time::Instant::now()) {
        Recall::New(claim) => Ok(claim),
        Recall::Done(answer) => {
            let mut resp =
                (StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK), answer.body).into_response();
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(answer.content_type));
            resp.headers_mut().insert("idempotent-replayed", http::HeaderValue::from_static("true"));
            Err(resp)
        }
        Recall::InFlight { idempotency_key: true } => Err(Problem::new(
            StatusCode::CONFLICT,
            "idempotency-key-in-flight",
            "A request with this Idempotency-Key is being handled",
        )
        .detail("send it again once the first one is answered to get its answer")
        .into_response()),
        Recall::InFlight { idempotency_key: false } => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "delivery-in-flight",
            "This delivery is being handled",
        )
        .detail("the first copy of this message is still being handled; its answer will be given to a resend")
        .retry_after(Duration::from_secs(1))
        .into_response()),
        Recall::Mismatch => Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency-key-reused",
            "The key was used for another request",
        )
        .detail("this Idempotency-Key (or delivery id) was first sent with another request; use a new key for a new request")
        .into_response()),
    }
}

/// Keeps `resp` for the delivery's resends when it is an answer to give again (not a 5xx, which
/// tells the sender to try again and is not remembered), and returns it.
async fn remember(resp: Response, claim: Option<crate::intake::Claim>) -> Response {
    let Some(claim) = claim else { return resp };
    if resp.status().is_server_error() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    // Answers are small JSON documents the bridge made itself.
    let Ok(bytes) = axum::body::to_bytes(body, 4 * 1024 * 1024).await else {
        return Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "Internal error").into_response();
    };
    let content_type = match parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) {
        Some("application/problem+json") => "application/problem+json",
        _ => "application/json",
    };
    let answer = crate::intake::Answer { status: parts.status.as_u16(), content_type, body: bytes.clone() };
    claim.finish(answer, std::time::Instant::now());
    Response::from_parts(parts, axum::body::Body::from(bytes))
}

/// A digest of the request's credentials, which names its sender: two clients of one source
/// never share an `Idempotency-Key`. `anonymous` for a request without any.
fn sender_of(headers: &http::HeaderMap) -> String {
    use sha2::Digest;
    match headers.get(http::header::AUTHORIZATION) {
        Some(v) => {
            let digest = sha2::Sha256::digest(v.as_bytes());
            digest[..12].iter().map(|b| format!("{b:02x}")).collect()
        }
        None => "anonymous".to_owned(),
    }
}

/// The answer to a request still waiting when the shutdown grace is over: come back, to this
/// replica's successor. What was begun goes on until the process exits, and a resend is
/// recognised (its licensePlate) and does nothing twice.
fn shutting_down() -> Response {
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "shutting-down", "Shutting down")
        .detail("the bridge stopped before the outcome was known; send the request again")
        .retry_after(Duration::from_secs(1))
        .into_response()
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, "not-found", "Not found")
}

async fn method_not_allowed() -> Problem {
    Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", "Method not allowed")
}
