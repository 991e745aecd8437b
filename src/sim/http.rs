//! The simulator's HTTP face: the axum router, the order in which an operation request is
//! checked (log, faults with the rate limit first, auth, envelope, licensePlate, operation), how
//! answers and injected failures look on the wire, and the `/_sim/` endpoints that tests use to
//! inspect and steer it.
//!
//! The rules themselves live in `state` and `faults`; this module only translates between them
//! and HTTP.

use std::{
    io,
    sync::Arc,
    time::{Duration, SystemTime},
};

use axum::{
    Extension, Json, Router,
    body::Body,
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use bytes::Bytes;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    SimConfig, SimState,
    faults::{Failure, Faults},
    state::{Completion, PersonAction, StoredAnswer},
};
use crate::scwm::envelope::{HEADER_VERSION, Operation, Payload, ResponseHeader, err_code_for};

/// Larger bodies are refused; no incident envelope comes near this.
const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The cancellation token of the `serve` call a request arrived through, so a request sleeping
/// out injected latency does not hold up shutdown.
#[derive(Clone)]
pub(crate) struct ShutdownSignal(pub CancellationToken);

/// The simulator's routes over `state`; usable without a socket (e.g. with `tower::ServiceExt`).
///
/// Operation requests are `POST` to any path, because deployments may give one URL per
/// operation; the envelope's `eventName`, not the path, picks the operation.
pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/_sim/incidents", get(list_incidents))
        .route("/_sim/incidents/{id}", post(person_acts))
        .route("/_sim/requests", get(list_requests))
        .route("/_sim/faults", get(get_faults).post(set_faults))
        .route("/_sim/reset", post(reset))
        .route("/", post(operation))
        .route("/{*path}", post(operation))
        .with_state(state)
}

async fn list_incidents(State(state): State<Arc<SimState>>) -> Response {
    Json(state.incidents()).into_response()
}

async fn list_requests(State(state): State<Arc<SimState>>) -> Response {
    Json(state.requests()).into_response()
}

async fn get_faults(State(state): State<Arc<SimState>>) -> Response {
    Json(state.faults()).into_response()
}

async fn set_faults(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Faults>(&body) {
        Ok(faults) => {
            state.set_faults(faults.clone());
            debug!(?faults, "simulator fault plan replaced");
            Json(faults).into_response()
        }
        Err(e) => problem(StatusCode::BAD_REQUEST, "invalid fault plan", &e.to_string()),
    }
}

/// A person acting on an incident in SCWM: `{"action": "close", "resolution": ...}`, `reopen`,
/// `delete`, `submit` (`partnerId`) or `renumber`. Answers the incident as it is now (204 once
/// deleted), or a problem: 404 for an unknown id, 409 for a close of a closed incident or a
/// reopen of an open one.
async fn person_acts(State(state): State<Arc<SimState>>, Path(id): Path<String>, body: Bytes) -> Response {
    let action = match serde_json::from_slice::<PersonAction>(&body) {
        Ok(action) => action,
        Err(e) => return problem(StatusCode::BAD_REQUEST, "invalid action", &e.to_string()),
    };
    match state.act(&id, &action) {
        Ok(Some(incident)) => Json(incident).into_response(),
        Ok(None) => StatusCode::NO_CONTENT.into_response(),
        Err(refused) => {
            let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::CONFLICT);
            problem(status, "refused", &refused.detail)
        }
    }
}

async fn reset(State(state): State<Arc<SimState>>) -> StatusCode {
    state.reset();
    debug!("simulator reset");
    StatusCode::NO_CONTENT
}

/// An RFC 9457 problem document, for the simulator's own endpoints.
fn problem(status: StatusCode, title: &str, detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": title,
        "status": status.as_u16(),
        "detail": detail,
    });
    (status, [(header::CONTENT_TYPE, "application/problem+json")], body.to_string()).into_response()
}

/// What the request body turned out to be.
enum Received {
    Json(Value),
    NotJson,
    Unreadable(String),
}

impl Received {
    fn json(&self) -> Option<&Value> {
        match self {
            Received::Json(v) => Some(v),
            Received::NotJson | Received::Unreadable(_) => None,
        }
    }
}

async fn operation(
    State(state): State<Arc<SimState>>,
    shutdown: Option<Extension<ShutdownSignal>>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let (received, log_body) = read_body(body).await;
    let (method, path, headers) = describe(&parts);
    let ticket = state.record(SystemTime::now(), method, path, headers, log_body);
    let shutdown = shutdown.map(|Extension(ShutdownSignal(token))| token);
    let outcome = answer(&state, &parts.headers, &received, shutdown).await;
    let completion = outcome.completion();
    debug!(
        seq = ticket.seq(),
        path = %parts.uri.path(),
        status = completion.status,
        fault = completion.fault,
        duplicate = completion.duplicate,
        "simulator answered an operation request"
    );
    state.complete(ticket, completion);
    outcome.reply.into_response()
}

/// The body as parsed, and as the request log shows it.
async fn read_body(body: Body) -> (Received, Value) {
    match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) => (Received::Json(v.clone()), v),
            Err(_) => (Received::NotJson, Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        },
        Err(e) => {
            let reason = format!("the body could not be read: {e}");
            (Received::Unreadable(reason.clone()), Value::String(reason))
        }
    }
}

/// The checks in the order the contract's simulator applies them: faults, auth, envelope,
/// licensePlate, operation. The request has already been logged.
async fn answer(
    state: &SimState,
    headers: &HeaderMap,
    received: &Received,
    shutdown: Option<CancellationToken>,
) -> Outcome {
    let echo = Echo::from_body(received.json());
    let draw = state.draw_faults();
    if !sleep_unless_shut_down(draw.latency, shutdown).await {
        return Outcome { reply: Reply::Broken, fault: Some("shutdown"), duplicate: false };
    }
    if let Some(failure) = draw.failure {
        return Outcome::injected(failure, &state.config, &echo);
    }
    if !state.authorized(headers) {
        let message = "missing or wrong Authorization";
        return refused(&state.config, &echo, StatusCode::UNAUTHORIZED, message.into());
    }
    let request = match parse_envelope(received, &state.config.event_names) {
        Ok(request) => request,
        Err(reason) => return refused(&state.config, &echo, StatusCode::BAD_REQUEST, reason),
    };
    let (answer, duplicate) = state.answer_once(&request.license_plate, SystemTime::now(), |store, now| {
        let result = store
            .apply(request.op, &request.payload, now)
            .map_err(|refusal| (refusal.status(), refusal.to_string()));
        render(&state.config, &echo, result)
    });
    Outcome::json(answer, duplicate)
}

/// An error answer that comes before the licensePlate is looked at, so it is not remembered.
fn refused(config: &SimConfig, echo: &Echo, status: StatusCode, message: String) -> Outcome {
    Outcome::json(render(config, echo, Err((status, message))), false)
}

/// Sleeps out injected latency; `false` if the server is shutting down meanwhile.
async fn sleep_unless_shut_down(latency: Duration, shutdown: Option<CancellationToken>) -> bool {
    if latency.is_zero() {
        return true;
    }
    match shutdown {
        Some(token) => tokio::select! {
            () = tokio::time::sleep(latency) => true,
            () = token.cancelled() => false,
        },
        None => {
            tokio::time::sleep(latency).await;
            true
        }
    }
}

/// The header fields an answer echoes. Taken from the body even when it is not a valid
/// envelope, because a client rejects an answer whose licensePlate does not match its request.
#[derive(Debug, Default)]
struct Echo {
    owner_id: String,
    license_plate: String,
}

impl Echo {
    fn from_body(body: Option<&Value>) -> Self {
        let header = body.and_then(|b| b.get("header"));
        let text = |key: &str| {
            header.and_then(|h| h.get(key)).and_then(Value::as_str).unwrap_or_default().to_owned()
        };
        Self { owner_id: text("ownerId"), license_plate: text("licensePlate") }
    }
}

/// A request envelope the simulator can act on.
#[derive(Debug)]
struct OperationRequest {
    op: Operation,
    license_plate: String,
    payload: Payload,
}

fn parse_envelope(
    received: &Received,
    event_names: &[(String, Operation)],
) -> Result<OperationRequest, String> {
    let body = match received {
        Received::Json(Value::Object(body)) => body,
        Received::Json(_) => return Err("the body is not a JSON object".into()),
        Received::NotJson => return Err("the body is not JSON".into()),
        Received::Unreadable(reason) => return Err(reason.clone()),
    };
    let header = object_member(body, "header")?;
    let payload = object_member(body, "payload")?;
    let event_name = header
        .get("eventName")
        .and_then(Value::as_str)
        .ok_or("header.eventName is missing or not a string")?;
    let op = event_names
        .iter()
        .find(|(name, _)| name == event_name)
        .map(|(_, op)| *op)
        .ok_or_else(|| format!("unknown eventName `{event_name}`"))?;
    let license_plate = header
        .get("licensePlate")
        .and_then(Value::as_str)
        .filter(|plate| !plate.is_empty())
        .ok_or("header.licensePlate is missing, empty or not a string")?;
    Ok(OperationRequest { op, license_plate: license_plate.to_owned(), payload: payload.clone() })
}

fn object_member<'a>(body: &'a Payload, key: &str) -> Result<&'a Payload, String> {
    match body.get(key) {
        Some(Value::Object(member)) => Ok(member),
        Some(_) => Err(format!("{key} must be a JSON object")),
        None => Err(format!("{key} is missing")),
    }
}

/// Renders a response envelope. `result` carries the contract status of an error; whether that
/// status also goes on the wire depends on `errors_in_http_200`.
fn render(config: &SimConfig, echo: &Echo, result: Result<Payload, (StatusCode, String)>) -> StoredAnswer {
    let (status, wire_status, payload) = match result {
        Ok(payload) => (StatusCode::OK, StatusCode::OK, payload),
        Err((status, message)) => {
            let wire = if config.errors_in_http_200 { StatusCode::OK } else { status };
            (status, wire, message_payload(message))
        }
    };
    StoredAnswer { status: wire_status, body: envelope(config, echo, status, payload) }
}

fn message_payload(message: String) -> Payload {
    let mut payload = Payload::new();
    payload.insert("message".into(), Value::String(message));
    payload
}

/// The envelope bytes for an answer whose contract status is `status`.
fn envelope(config: &SimConfig, echo: &Echo, status: StatusCode, payload: Payload) -> Bytes {
    let header = ResponseHeader {
        header_version: Some(HEADER_VERSION),
        event_name: config.response_event_name.clone(),
        owner_id: echo.owner_id.clone(),
        is_err: !status.is_success(),
        err_code: err_code_for(status),
        license_plate: echo.license_plate.clone(),
    };
    let body = json!({ "header": header, "payload": payload });
    Bytes::from(body.to_string())
}

/// What goes back on the wire.
enum Reply {
    Json {
        answer: StoredAnswer,
        retry_after_secs: Option<u64>,
    },
    Html {
        status: StatusCode,
        body: String,
    },
    /// A 200 whose body breaks off: the client sees the connection fail mid-response.
    Broken,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        match self {
            Reply::Json { answer, retry_after_secs } => {
                let mut response = (answer.status, [(header::CONTENT_TYPE, "application/json")], answer.body)
                    .into_response();
                if let Some(secs) = retry_after_secs {
                    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
                }
                response
            }
            Reply::Html { status, body } => {
                (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response()
            }
            Reply::Broken => broken_response(),
        }
    }
}

/// Starts an envelope, then fails the body stream, which makes hyper abort the connection. The
/// pause between the two lets hyper flush the status line first, so the client sees a response
/// whose body fails rather than no response at all.
fn broken_response() -> Response {
    let start =
        futures::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"{\"header\":{\"headerVersion\":1,"))]);
    let fail = futures::stream::once(async {
        tokio::task::yield_now().await;
        Err(io::Error::new(io::ErrorKind::ConnectionReset, "simulated connection drop"))
    });
    let body = Body::from_stream(futures::StreamExt::chain(start, fail));
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// An answer and how the request log describes it.
struct Outcome {
    reply: Reply,
    fault: Option<&'static str>,
    duplicate: bool,
}

impl Outcome {
    fn json(answer: StoredAnswer, duplicate: bool) -> Self {
        Self { reply: Reply::Json { answer, retry_after_secs: None }, fault: None, duplicate }
    }

    /// The wire form of an injected failure. Faults say exactly what goes on the wire, so
    /// `errors_in_http_200` does not apply to them; `status_in_200` is the fault for that.
    fn injected(failure: Failure, config: &SimConfig, echo: &Echo) -> Self {
        let message = format!("injected failure: {}", failure.name());
        let json = |contract: StatusCode, wire: StatusCode, retry_after_secs| Reply::Json {
            answer: StoredAnswer {
                status: wire,
                body: envelope(config, echo, contract, message_payload(message.clone())),
            },
            retry_after_secs,
        };
        let reply = match failure {
            Failure::Status { status } => {
                let status = status_or_500(status);
                json(status, status, None)
            }
            Failure::StatusIn200 { status } => json(status_or_500(status), StatusCode::OK, None),
            Failure::RateLimited { retry_after_secs } => {
                json(StatusCode::TOO_MANY_REQUESTS, StatusCode::TOO_MANY_REQUESTS, Some(retry_after_secs))
            }
            Failure::NotJson { status } => {
                let status = status_or_500(status);
                Reply::Html { status, body: html_page(status) }
            }
            Failure::DropConnection => Reply::Broken,
        };
        Self { reply, fault: Some(failure.name()), duplicate: false }
    }

    fn completion(&self) -> Completion {
        let status = match &self.reply {
            Reply::Json { answer, .. } => answer.status,
            Reply::Html { status, .. } => *status,
            Reply::Broken => StatusCode::OK,
        };
        Completion { status: status.as_u16(), fault: self.fault, duplicate: self.duplicate }
    }
}

/// A plan built in code is not validated; an impossible status must not take the server down.
fn status_or_500(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// The kind of page a proxy in front of SCWM answers with.
fn html_page(status: StatusCode) -> String {
    let title = format!("{} {}", status.as_u16(), status.canonical_reason().unwrap_or("Error"));
    format!(
        "<!DOCTYPE html>\n<html><head><title>{title}</title></head>\
         <body><h1>{title}</h1><hr><p>scwm-sim</p></body></html>\n"
    )
}

/// The request log's view of the request line and headers.
fn describe(parts: &Parts) -> (String, String, Vec<(String, String)>) {
    let path =
        parts.uri.path_and_query().map_or_else(|| parts.uri.path().to_owned(), |pq| pq.as_str().to_owned());
    let headers = parts
        .headers
        .iter()
        .map(|(name, value)| {
            (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned())
        })
        .collect();
    (parts.method.to_string(), path, headers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scwm::envelope::DEFAULT_RESPONSE_EVENT_NAME;

    fn events() -> Vec<(String, Operation)> {
        SimConfig::default().event_names
    }

    fn parse(v: Value) -> Result<OperationRequest, String> {
        parse_envelope(&Received::Json(v), &events())
    }

    #[test]
    fn a_complete_envelope_parses() {
        let request = parse(json!({
            "header": {"eventName": "agile-process-teams:close-incident:v3", "licensePlate": "P"},
            "payload": {"id": "IT-000001"}
        }))
        .unwrap();
        assert_eq!(request.op, Operation::Close);
        assert_eq!(request.license_plate, "P");
        assert_eq!(request.payload["id"], "IT-000001");
    }

    #[test]
    fn malformed_envelopes_say_what_is_wrong() {
        let cases = [
            (json!([]), "not a JSON object"),
            (json!({"payload": {}}), "header is missing"),
            (json!({"header": "x", "payload": {}}), "header must be"),
            (json!({"header": {}}), "payload is missing"),
            (json!({"header": {}, "payload": []}), "payload must be"),
            (json!({"header": {}, "payload": {}}), "eventName"),
            (
                json!({"header": {"eventName": "nope", "licensePlate": "P"}, "payload": {}}),
                "unknown eventName `nope`",
            ),
            (
                json!({"header": {"eventName": "agile-process-teams:add-incident:v3"}, "payload": {}}),
                "licensePlate",
            ),
            (
                json!({"header": {"eventName": "agile-process-teams:add-incident:v3", "licensePlate": ""}, "payload": {}}),
                "licensePlate",
            ),
        ];
        for (body, expected) in cases {
            let err = parse(body.clone()).unwrap_err();
            assert!(err.contains(expected), "{body}: {err}");
        }
        let err = parse_envelope(&Received::NotJson, &events()).unwrap_err();
        assert_eq!(err, "the body is not JSON");
    }

    #[test]
    fn errors_carry_the_contract_status_on_the_wire_unless_configured_otherwise() {
        let echo = Echo { owner_id: "O".into(), license_plate: "P".into() };
        let mut config = SimConfig::default();
        let err = || Err((StatusCode::CONFLICT, "no".to_owned()));
        assert_eq!(render(&config, &echo, err()).status, StatusCode::CONFLICT);
        config.errors_in_http_200 = true;
        let answer = render(&config, &echo, err());
        assert_eq!(answer.status, StatusCode::OK);
        let body: Value = serde_json::from_slice(&answer.body).unwrap();
        assert_eq!(
            body,
            json!({
                "header": {"headerVersion": 1, "eventName": DEFAULT_RESPONSE_EVENT_NAME,
                           "ownerId": "O", "isErr": true, "errCode": "409_CONFLICT",
                           "licensePlate": "P"},
                "payload": {"message": "no"}
            })
        );
    }

    #[test]
    fn the_echo_is_taken_from_whatever_header_the_body_has() {
        let echo = Echo::from_body(Some(&json!({"header": {"licensePlate": "P", "ownerId": 7}})));
        assert_eq!((echo.owner_id.as_str(), echo.license_plate.as_str()), ("", "P"));
        let echo = Echo::from_body(None);
        assert_eq!(echo.license_plate, "");
    }

    #[test]
    fn an_impossible_injected_status_becomes_500() {
        assert_eq!(status_or_500(1000), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(status_or_500(503), StatusCode::SERVICE_UNAVAILABLE);
    }
}
