//! The SCWM client: sends one logical request (one licensePlate) to the operation's endpoint and
//! sees it through retries, `Retry-After`, the circuit breaker and the concurrency limit, ending
//! in a typed success or failure.
//!
//! It owns the HTTP conversation and nothing around it: it does not build payloads, does not
//! decide what an answer means for an incident, and does not log a final failure as an error
//! (the caller that handles it does). It never logs the token.

use std::{
    collections::HashMap,
    fmt,
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::{Bytes, BytesMut};
use http::{
    HeaderMap, HeaderValue,
    header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, TRANSFER_ENCODING},
};
use tokio::{sync::Semaphore, time::Instant};
use tracing::Instrument;

use super::{
    breaker::{BreakerSettings, CircuitBreaker, CircuitState},
    envelope::{HEADER_VERSION, Operation, Payload, RequestHeader, ResponseEnvelope},
    error::ScwmError,
    retry::{RetryPolicy, Sleeper, TokioSleeper, parse_retry_after},
};
use crate::{ids::LicensePlate, observe, secret::Secret};

/// A response body larger than this is not an SCWM envelope we want to hold in memory: incident
/// answers are a few kilobytes.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Where one operation is sent and what its request header calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: reqwest::Url,
    /// The request `header.eventName`; a tenant may use other names than the contract's.
    pub event_name: String,
}

impl Endpoint {
    /// `url` with the contract's event name for `op`.
    pub fn with_default_event_name(url: reqwest::Url, op: Operation) -> Self {
        Self { url, event_name: op.default_event_name().to_owned() }
    }
}

/// Everything the client needs; validated by [`ScwmClient::new`].
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// One entry per operation; all seven must be present.
    pub endpoints: HashMap<Operation, Endpoint>,
    /// Sent as `Authorization: Basic <token>`, exactly as the SCWM administrator issued it.
    pub basic_token: Secret,
    /// The request header's `ownerId` unless a request overrides it.
    pub owner_id: String,
    /// Bounds TCP + TLS set-up, so an unreachable SCWM fails fast and is retried.
    pub connect_timeout: Duration,
    /// Bounds one attempt from sending to the last body byte; retries get a fresh one each.
    pub request_timeout: Duration,
    pub retry: RetryPolicy,
    pub breaker: BreakerSettings,
    /// HTTP attempts in flight at once across all callers of this client, so a burst of events
    /// cannot flood SCWM. Callers sleeping between retries do not hold a slot.
    pub max_concurrency: usize,
    pub user_agent: String,
}

impl ClientSettings {
    /// One URL for every operation (the documented case), the contract's event names and
    /// default timeouts, retries, breaker and concurrency.
    pub fn single_url(url: reqwest::Url, basic_token: Secret, owner_id: impl Into<String>) -> Self {
        let endpoints = Operation::ALL
            .into_iter()
            .map(|op| (op, Endpoint::with_default_event_name(url.clone(), op)))
            .collect();
        Self {
            endpoints,
            basic_token,
            owner_id: owner_id.into(),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            breaker: BreakerSettings::default(),
            max_concurrency: 32,
            user_agent: concat!("incident-bridge/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Why [`ClientSettings`] cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    #[error("no SCWM endpoint configured for operation `{0}`")]
    MissingEndpoint(Operation),
    #[error("the SCWM endpoint for `{op}` must be http or https, not `{scheme}`")]
    UnsupportedScheme { op: Operation, scheme: String },
    #[error("the SCWM token is empty or cannot be sent in an HTTP header")]
    InvalidToken,
    #[error("the user agent cannot be sent in an HTTP header")]
    InvalidUserAgent,
    #[error("max_concurrency must be between 1 and {}", Semaphore::MAX_PERMITS)]
    InvalidConcurrency,
    #[error("retry.max_attempts must be at least 1")]
    ZeroAttempts,
    #[error("connect_timeout and request_timeout must be greater than zero")]
    ZeroTimeout,
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// One logical SCWM request. Every attempt sends the same licensePlate.
#[derive(Debug, Clone)]
pub struct ScwmRequest {
    pub op: Operation,
    pub license_plate: LicensePlate,
    /// Overrides [`ClientSettings::owner_id`] (per route or tenant).
    pub owner_id: Option<String>,
    /// Shared, not copied: the event that asked for the request keeps it too.
    pub payload: Arc<Payload>,
    /// Extra headers sent on every attempt, e.g. `traceparent`. They cannot replace the
    /// headers the protocol needs (authorization, content type, accept, framing).
    pub headers: HeaderMap,
}

impl ScwmRequest {
    /// A new logical request with a fresh licensePlate, the default owner and no extra headers.
    pub fn new(op: Operation, payload: Payload) -> Self {
        Self {
            op,
            license_plate: LicensePlate::generate(),
            owner_id: None,
            payload: Arc::new(payload),
            headers: HeaderMap::new(),
        }
    }
}

/// SCWM accepted the request.
#[derive(Debug, Clone)]
pub struct ScwmSuccess {
    pub envelope: ResponseEnvelope,
    /// The HTTP status of the successful answer.
    pub status: u16,
    /// Attempts made, the successful one included.
    pub attempts: u32,
    pub elapsed: Duration,
}

/// The call gave up: a permanent error, a transient one on the last attempt, or an open circuit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{error} (after {attempts} attempt(s))")]
pub struct ScwmFailure {
    /// What ended the call. Also in this type's message, so it is not a `source` as well.
    pub error: ScwmError,
    /// HTTP attempts made; 0 when the circuit was open from the start.
    pub attempts: u32,
    pub elapsed: Duration,
    /// The last envelope SCWM sent during this call, if any: synchronous HTTP callers answer
    /// with it.
    pub envelope: Option<ResponseEnvelope>,
}

/// The endpoints, resolved per operation so a lookup cannot miss.
#[derive(Debug)]
struct Endpoints {
    add: Endpoint,
    edit: Endpoint,
    copy: Endpoint,
    close: Endpoint,
    reopen: Endpoint,
    submit: Endpoint,
    read: Endpoint,
}

impl Endpoints {
    fn from_map(map: &HashMap<Operation, Endpoint>) -> Result<Self, ClientBuildError> {
        let take = |op: Operation| -> Result<Endpoint, ClientBuildError> {
            let endpoint = map.get(&op).ok_or(ClientBuildError::MissingEndpoint(op))?;
            match endpoint.url.scheme() {
                "http" | "https" => Ok(endpoint.clone()),
                scheme => Err(ClientBuildError::UnsupportedScheme { op, scheme: scheme.to_owned() }),
            }
        };
        Ok(Self {
            add: take(Operation::Add)?,
            edit: take(Operation::Edit)?,
            copy: take(Operation::Copy)?,
            close: take(Operation::Close)?,
            reopen: take(Operation::Reopen)?,
            submit: take(Operation::Submit)?,
            read: take(Operation::Read)?,
        })
    }

    fn get(&self, op: Operation) -> &Endpoint {
        match op {
            Operation::Add => &self.add,
            Operation::Edit => &self.edit,
            Operation::Copy => &self.copy,
            Operation::Close => &self.close,
            Operation::Reopen => &self.reopen,
            Operation::Submit => &self.submit,
            Operation::Read => &self.read,
        }
    }
}

struct Inner {
    http: reqwest::Client,
    endpoints: Endpoints,
    /// `Basic <token>`, marked sensitive so no header dump shows it.
    authorization: HeaderValue,
    owner_id: String,
    retry: RetryPolicy,
    breaker: CircuitBreaker,
    slots: Semaphore,
    max_concurrency: usize,
}

/// A client for one SCWM tenant. Cheap to clone; clones share the connection pool, the circuit
/// breaker and the concurrency limit.
#[derive(Clone)]
pub struct ScwmClient {
    inner: Arc<Inner>,
    sleeper: Arc<dyn Sleeper>,
}

impl fmt::Debug for ScwmClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScwmClient")
            .field("owner_id", &self.inner.owner_id)
            .field("circuit", &self.inner.breaker.state())
            .field("max_concurrency", &self.inner.max_concurrency)
            .finish_non_exhaustive()
    }
}

/// What one HTTP attempt came to.
enum Answer {
    Success { envelope: ResponseEnvelope, status: u16 },
    Failure { error: ScwmError, envelope: Option<ResponseEnvelope> },
}

struct Attempt {
    status: Option<u16>,
    /// The `Retry-After` of the answer, whatever kind of answer it was: a proxy's 503 page may
    /// carry one too.
    retry_after: Option<Duration>,
    answer: Answer,
}

impl ScwmClient {
    pub fn new(settings: ClientSettings) -> Result<Self, ClientBuildError> {
        let endpoints = Endpoints::from_map(&settings.endpoints)?;
        if settings.max_concurrency == 0 || settings.max_concurrency > Semaphore::MAX_PERMITS {
            return Err(ClientBuildError::InvalidConcurrency);
        }
        if settings.retry.max_attempts == 0 {
            return Err(ClientBuildError::ZeroAttempts);
        }
        if settings.connect_timeout.is_zero() || settings.request_timeout.is_zero() {
            return Err(ClientBuildError::ZeroTimeout);
        }
        let token = settings.basic_token.expose();
        if token.is_empty() {
            return Err(ClientBuildError::InvalidToken);
        }
        let mut authorization =
            HeaderValue::try_from(format!("Basic {token}")).map_err(|_| ClientBuildError::InvalidToken)?;
        authorization.set_sensitive(true);
        let user_agent = HeaderValue::try_from(settings.user_agent.as_str())
            .map_err(|_| ClientBuildError::InvalidUserAgent)?;

        let http = reqwest::Client::builder()
            .user_agent(user_agent)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            // A redirected POST would turn into a GET or carry the token to another host; an
            // SCWM endpoint that redirects is misconfigured and should say so.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(ClientBuildError::Http)?;

        Ok(Self {
            inner: Arc::new(Inner {
                http,
                endpoints,
                authorization,
                owner_id: settings.owner_id,
                retry: settings.retry,
                breaker: CircuitBreaker::new(settings.breaker),
                slots: Semaphore::new(settings.max_concurrency),
                max_concurrency: settings.max_concurrency,
            }),
            sleeper: Arc::new(TokioSleeper),
        })
    }

    /// Replaces how the client waits between attempts (tests record instead of waiting).
    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.inner.breaker.state()
    }

    /// HTTP attempts in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.max_concurrency - self.inner.slots.available_permits()
    }

    /// Sends `req` until SCWM accepts it, a permanent error occurs, the attempts run out or the
    /// circuit opens.
    pub async fn call(&self, req: &ScwmRequest) -> Result<ScwmSuccess, ScwmFailure> {
        let result = self.call_with_retries(req).await;
        match &result {
            Ok(success) => observe::scwm_call(req.op.as_str(), "ok", Some(success.status)),
            Err(failure) => {
                let outcome = if failure.error.is_retryable() { "failed" } else { "rejected" };
                observe::scwm_call(req.op.as_str(), outcome, failure.error.status());
            }
        }
        observe::circuit(self.circuit_state().level());
        result
    }

    async fn call_with_retries(&self, req: &ScwmRequest) -> Result<ScwmSuccess, ScwmFailure> {
        let started = Instant::now();
        let inner = &*self.inner;
        let endpoint = inner.endpoints.get(req.op);
        let op = req.op.as_str();
        let plate = req.license_plate.as_str();

        // Serialised from borrowed parts: the payload is not copied per request.
        #[derive(serde::Serialize)]
        struct Outgoing<'a> {
            header: RequestHeader,
            payload: &'a Payload,
        }
        let envelope = Outgoing {
            header: RequestHeader {
                header_version: HEADER_VERSION,
                event_name: endpoint.event_name.clone(),
                owner_id: req.owner_id.clone().unwrap_or_else(|| inner.owner_id.clone()),
                license_plate: req.license_plate.clone(),
            },
            payload: &req.payload,
        };
        let body = match serde_json::to_vec(&envelope) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                return Err(ScwmFailure {
                    error: ScwmError::Encode(e.to_string()),
                    attempts: 0,
                    elapsed: started.elapsed(),
                    envelope: None,
                });
            }
        };
        let headers = self.request_headers(&req.headers);

        let mut last_envelope: Option<ResponseEnvelope> = None;
        let mut attempts: u32 = 0;
        loop {
            let circuit_open = |retry_after, attempts, envelope| ScwmFailure {
                error: ScwmError::CircuitOpen { retry_after },
                attempts,
                elapsed: started.elapsed(),
                envelope,
            };
            // Fail fast before queueing for a slot; ask again once we hold one, since the
            // circuit may have opened while we waited.
            if let Err(retry_after) = inner.breaker.check() {
                tracing::debug!(op, license_plate = plate, attempts, "SCWM circuit is open; not sending");
                return Err(circuit_open(retry_after, attempts, last_envelope));
            }
            let Ok(slot) = inner.slots.acquire().await else {
                // The semaphore is never closed; should that change, fail like a dead transport.
                return Err(ScwmFailure {
                    error: ScwmError::Transport("concurrency limiter closed".to_owned()),
                    attempts,
                    elapsed: started.elapsed(),
                    envelope: last_envelope,
                });
            };
            let permit = match inner.breaker.admit() {
                Ok(permit) => permit,
                Err(retry_after) => {
                    tracing::debug!(op, license_plate = plate, attempts, "SCWM circuit is open; not sending");
                    return Err(circuit_open(retry_after, attempts, last_envelope));
                }
            };
            attempts += 1;
            let attempt_started = Instant::now();
            // One client span per attempt (OpenTelemetry HTTP client conventions), its context
            // sent on as `traceparent` so SCWM's side of the trace joins this one.
            let span = tracing::info_span!(
                "POST",
                otel.kind = "client",
                http.request.method = "POST",
                url.full = %endpoint.url,
                server.address = endpoint.url.host_str().unwrap_or_default(),
                server.port = endpoint.url.port_or_known_default().unwrap_or_default(),
                http.request.resend_count = attempts - 1,
                http.response.status_code = tracing::field::Empty,
                error.type = tracing::field::Empty,
                scwm.operation = op,
                scwm.license_plate = plate,
            );
            let mut attempt_headers = headers.clone();
            crate::trace_context::inject(&span, &mut attempt_headers);
            let Attempt { status, retry_after, answer } = self
                .attempt(endpoint, attempt_headers, body.clone(), &req.license_plate)
                .instrument(span.clone())
                .await;
            if let Some(status) = status {
                span.record("http.response.status_code", status);
            }
            if let Answer::Failure { error, .. } = &answer {
                span.record("error.type", error.kind());
            }
            observe::scwm_attempt(op, attempt_started.elapsed(), attempts > 1);
            permit.record(match &answer {
                Answer::Success { .. } => false,
                Answer::Failure { error, .. } => error.is_availability_failure(),
            });
            drop(slot);
            let attempt_ms = attempt_started.elapsed().as_millis() as u64;

            let (error, envelope) = match answer {
                Answer::Success { envelope, status } => {
                    tracing::debug!(
                        op,
                        license_plate = plate,
                        attempt = attempts,
                        status,
                        err_code = envelope.header().err_code.as_str(),
                        elapsed_ms = attempt_ms,
                        "SCWM accepted the request"
                    );
                    return Ok(ScwmSuccess { envelope, status, attempts, elapsed: started.elapsed() });
                }
                Answer::Failure { error, envelope } => (error, envelope),
            };
            let err_code = envelope.as_ref().map(|e| e.header().err_code.clone());
            if envelope.is_some() {
                last_envelope = envelope;
            }

            if !error.is_retryable() || attempts >= inner.retry.max_attempts {
                tracing::debug!(
                    op,
                    license_plate = plate,
                    attempt = attempts,
                    status,
                    err_code = err_code.as_deref(),
                    error_kind = error.kind(),
                    retryable = error.is_retryable(),
                    elapsed_ms = attempt_ms,
                    error = %error,
                    "SCWM call failed; giving up"
                );
                return Err(ScwmFailure {
                    error,
                    attempts,
                    elapsed: started.elapsed(),
                    envelope: last_envelope,
                });
            }

            // An open circuit refuses the next attempt anyway; say so now rather than after
            // sleeping for nothing.
            if let Err(retry_after) = inner.breaker.check() {
                tracing::warn!(
                    op,
                    license_plate = plate,
                    attempt = attempts,
                    status,
                    err_code = err_code.as_deref(),
                    error_kind = error.kind(),
                    error = %error,
                    "SCWM attempt failed and the circuit is now open; not retrying"
                );
                return Err(circuit_open(retry_after, attempts, last_envelope));
            }

            let hint = error.retry_after().or(retry_after);
            // The thread-local rng is not Send; it lives only for this statement.
            let delay = inner.retry.delay_for(attempts - 1, hint, &mut rand::rng());
            tracing::warn!(
                op,
                license_plate = plate,
                attempt = attempts,
                status,
                err_code = err_code.as_deref(),
                error_kind = error.kind(),
                delay_ms = delay.as_millis() as u64,
                elapsed_ms = attempt_ms,
                error = %error,
                "SCWM attempt failed; retrying"
            );
            self.sleeper.sleep(delay).await;
        }
    }

    /// The headers of every attempt: the caller's extras, then the protocol's own, which win.
    fn request_headers(&self, extra: &HeaderMap) -> HeaderMap {
        let mut headers = extra.clone();
        for name in [AUTHORIZATION, CONTENT_TYPE, ACCEPT, CONTENT_LENGTH, TRANSFER_ENCODING, HOST] {
            headers.remove(name);
        }
        let json = HeaderValue::from_static("application/json");
        headers.insert(AUTHORIZATION, self.inner.authorization.clone());
        headers.insert(CONTENT_TYPE, json.clone());
        headers.insert(ACCEPT, json);
        headers
    }

    /// One HTTP exchange, read to the end and classified.
    async fn attempt(
        &self,
        endpoint: &Endpoint,
        headers: HeaderMap,
        body: Bytes,
        plate: &LicensePlate,
    ) -> Attempt {
        let sent = self.inner.http.post(endpoint.url.clone()).headers(headers).body(body).send().await;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                return Attempt {
                    status: None,
                    retry_after: None,
                    answer: Answer::Failure { error: ScwmError::from_reqwest(e), envelope: None },
                };
            }
        };
        let status = response.status().as_u16();
        let retry_after =
            response.headers().get(RETRY_AFTER).and_then(|v| parse_retry_after(v, SystemTime::now()));
        let answer = match read_body(response, status).await {
            Ok(body) => classify(status, retry_after, body, plate),
            Err(error) => Answer::Failure { error, envelope: None },
        };
        Attempt { status: Some(status), retry_after, answer }
    }
}

/// Reads the whole body, refusing one larger than [`MAX_RESPONSE_BYTES`].
async fn read_body(mut response: reqwest::Response, status: u16) -> Result<Bytes, ScwmError> {
    let too_large = || ScwmError::InvalidResponse {
        status,
        reason: format!("body larger than {MAX_RESPONSE_BYTES} bytes"),
    };
    if response.content_length().is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(ScwmError::from_reqwest)? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Decides what a complete HTTP answer means, per the contract's "Response" section.
///
/// - Not an envelope: `InvalidResponse` with the HTTP status (transient only if that is).
/// - `isErr: true`: `Rejected`, with the errCode's number deciding when it has one that is not
///   itself a success code, else the HTTP status.
/// - `isErr: false` with a non-2xx HTTP status: `Rejected` with the HTTP status; an envelope
///   does not make an error status a success.
/// - `isErr: false`, 2xx, but another licensePlate (or none): `LicensePlateMismatch`. ULIDs and
///   UUIDs are case-insensitive, so the echo is compared ignoring ASCII case.
/// - Otherwise success.
fn classify(status: u16, retry_after: Option<Duration>, body: Bytes, expected: &LicensePlate) -> Answer {
    let envelope = match ResponseEnvelope::parse(body) {
        Ok(envelope) => envelope,
        Err(not_an_envelope) => {
            return Answer::Failure {
                error: ScwmError::InvalidResponse { status, reason: not_an_envelope.0 },
                envelope: None,
            };
        }
    };
    let is_success = |s: u16| (200..300).contains(&s);
    let header = envelope.header();
    let error = if header.is_err {
        let code = header.err_status().filter(|s| !is_success(*s));
        Some(ScwmError::Rejected {
            status: code.unwrap_or(status),
            err_code: header.err_code.clone(),
            retry_after,
        })
    } else if !is_success(status) {
        Some(ScwmError::Rejected { status, err_code: header.err_code.clone(), retry_after })
    } else if !header.license_plate.eq_ignore_ascii_case(expected.as_str()) {
        Some(ScwmError::LicensePlateMismatch {
            expected: expected.clone(),
            got: header.license_plate.clone(),
        })
    } else {
        None
    };
    match error {
        Some(error) => Answer::Failure { error, envelope: Some(envelope) },
        None => Answer::Success { envelope, status },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLATE: &str = "01JD1X4Y0ZKQ6N0M7W7E3H5T9B";

    fn plate() -> LicensePlate {
        LicensePlate::parse(PLATE).expect("a valid plate")
    }

    fn envelope(is_err: bool, err_code: &str, license_plate: &str) -> Bytes {
        Bytes::from(
            serde_json::json!({
                "header": {
                    "headerVersion": 1,
                    "eventName": "agile-process-teams:add-change-response:v3",
                    "ownerId": "OWNER",
                    "isErr": is_err,
                    "errCode": err_code,
                    "licensePlate": license_plate,
                },
                "payload": {"id": "IT-1"},
            })
            .to_string(),
        )
    }

    fn error_of(answer: Answer) -> (ScwmError, bool) {
        match answer {
            Answer::Success { .. } => panic!("expected a failure"),
            Answer::Failure { error, envelope } => (error, envelope.is_some()),
        }
    }

    #[test]
    fn a_matching_ok_envelope_is_a_success() {
        match classify(200, None, envelope(false, "200_OK", PLATE), &plate()) {
            Answer::Success { envelope: env, .. } => {
                assert_eq!(env.item_id().map(|i| i.to_string()), Some("IT-1".into()))
            }
            Answer::Failure { error, .. } => panic!("unexpected {error}"),
        }
        // 201 is a success status too, and the echo may differ in case.
        assert!(matches!(
            classify(201, None, envelope(false, "200_OK", &PLATE.to_lowercase()), &plate()),
            Answer::Success { status: 201, .. }
        ));
    }

    #[test]
    fn the_err_code_inside_a_200_decides() {
        let table: &[(&str, u16, bool)] = &[
            ("400_BAD_REQUEST", 400, false),
            ("401_UNAUTHORIZED", 401, false),
            ("404_NOT_FOUND", 404, false),
            ("408_REQUEST_TIMEOUT", 408, true),
            ("409_CONFLICT", 409, false),
            ("429_TOO_MANY_REQUESTS", 429, true),
            ("500_INTERNAL_SERVER_ERROR", 500, true),
            ("503_SERVICE_UNAVAILABLE", 503, true),
        ];
        for &(code, status, retryable) in table {
            let (error, has_envelope) = error_of(classify(200, None, envelope(true, code, PLATE), &plate()));
            assert!(has_envelope);
            assert_eq!(error.status(), Some(status), "{code}");
            assert_eq!(error.is_retryable(), retryable, "{code}");
            assert!(matches!(&error, ScwmError::Rejected { err_code, .. } if err_code == code));
        }
    }

    #[test]
    fn an_error_envelope_with_a_matching_http_status_is_classified_the_same() {
        for (status, code, retryable) in [
            (400, "400_BAD_REQUEST", false),
            (404, "404_NOT_FOUND", false),
            (429, "429_TOO_MANY_REQUESTS", true),
            (503, "503_SERVICE_UNAVAILABLE", true),
        ] {
            let ra = Some(Duration::from_secs(2));
            let (error, _) = error_of(classify(status, ra, envelope(true, code, PLATE), &plate()));
            assert_eq!(error.status(), Some(status));
            assert_eq!(error.is_retryable(), retryable);
            assert_eq!(error.retry_after(), ra);
        }
    }

    #[test]
    fn without_a_usable_err_code_the_http_status_decides() {
        let (e, _) = error_of(classify(503, None, envelope(true, "OOPS", PLATE), &plate()));
        assert_eq!(e.status(), Some(503));
        assert!(e.is_retryable());
        // isErr with a success code contradicts itself; the HTTP status is all we have.
        let (e, _) = error_of(classify(502, None, envelope(true, "200_OK", PLATE), &plate()));
        assert_eq!(e.status(), Some(502));
        let (e, _) = error_of(classify(200, None, envelope(true, "", PLATE), &plate()));
        assert_eq!(e.status(), Some(200));
        assert!(!e.is_retryable());
    }

    #[test]
    fn an_ok_envelope_with_an_error_status_is_not_a_success() {
        let (e, _) = error_of(classify(500, None, envelope(false, "200_OK", PLATE), &plate()));
        assert_eq!(e.status(), Some(500));
        assert!(e.is_retryable());
        let (e, _) = error_of(classify(404, None, envelope(false, "200_OK", PLATE), &plate()));
        assert_eq!(e.status(), Some(404));
        assert!(!e.is_retryable());
    }

    #[test]
    fn non_envelope_bodies_are_invalid_responses() {
        for (status, body, retryable) in [
            (502, &b"<html>Bad Gateway</html>"[..], true),
            (500, b"", true),
            (503, b"{\"header\":{}}", true),
            (200, b"<html>login</html>", false),
            (200, b"{\"header\": {\"isErr\": false", false),
            (404, b"not found", false),
            (302, b"", false),
        ] {
            let (e, has_envelope) = error_of(classify(status, None, Bytes::from_static(body), &plate()));
            assert!(!has_envelope);
            assert_eq!(e.kind(), "invalid_response");
            assert_eq!(e.status(), Some(status));
            assert_eq!(e.is_retryable(), retryable, "{status} {body:?}");
        }
    }

    #[test]
    fn another_license_plate_is_a_permanent_mismatch() {
        for echoed in ["01JD1X4Y0ZKQ6N0M7W7E3H5T9C", ""] {
            let (e, has_envelope) =
                error_of(classify(200, None, envelope(false, "200_OK", echoed), &plate()));
            assert!(has_envelope);
            assert!(!e.is_retryable());
            assert_eq!(e, ScwmError::LicensePlateMismatch { expected: plate(), got: echoed.to_owned() });
        }
    }

    fn settings() -> ClientSettings {
        ClientSettings::single_url(
            "http://127.0.0.1:9/scwm".parse().expect("url"),
            Secret::new("dG9rZW4="),
            "OWNER",
        )
    }

    #[test]
    fn settings_are_validated() {
        assert!(ScwmClient::new(settings()).is_ok());

        let mut s = settings();
        s.endpoints.remove(&Operation::Submit);
        assert!(matches!(ScwmClient::new(s), Err(ClientBuildError::MissingEndpoint(Operation::Submit))));

        let mut s = settings();
        s.endpoints.insert(
            Operation::Read,
            Endpoint::with_default_event_name("ftp://x/".parse().expect("url"), Operation::Read),
        );
        assert!(matches!(
            ScwmClient::new(s),
            Err(ClientBuildError::UnsupportedScheme { op: Operation::Read, .. })
        ));

        for token in ["", "line\nbreak"] {
            let mut s = settings();
            s.basic_token = Secret::new(token);
            assert!(matches!(ScwmClient::new(s), Err(ClientBuildError::InvalidToken)));
        }

        let mut s = settings();
        s.max_concurrency = 0;
        assert!(matches!(ScwmClient::new(s), Err(ClientBuildError::InvalidConcurrency)));

        let mut s = settings();
        s.retry.max_attempts = 0;
        assert!(matches!(ScwmClient::new(s), Err(ClientBuildError::ZeroAttempts)));

        let mut s = settings();
        s.request_timeout = Duration::ZERO;
        assert!(matches!(ScwmClient::new(s), Err(ClientBuildError::ZeroTimeout)));

        let mut s = settings();
        s.user_agent = "bad\u{7f}agent".into();
        assert!(matches!(ScwmClient::new(s), Err(ClientBuildError::InvalidUserAgent)));
    }

    #[test]
    fn protocol_headers_win_over_the_callers_and_the_token_stays_hidden() {
        let client = ScwmClient::new(settings()).expect("client");
        let mut extra = HeaderMap::new();
        extra.insert("traceparent", HeaderValue::from_static("00-abc-def-01"));
        extra.insert(AUTHORIZATION, HeaderValue::from_static("Bearer other"));
        extra.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let headers = client.request_headers(&extra);
        assert_eq!(headers["traceparent"], "00-abc-def-01");
        assert_eq!(headers[AUTHORIZATION], "Basic dG9rZW4=");
        assert!(headers[AUTHORIZATION].is_sensitive());
        assert_eq!(headers[CONTENT_TYPE], "application/json");
        assert_eq!(headers[ACCEPT], "application/json");
        assert!(!format!("{headers:?}").contains("dG9rZW4="));
        assert!(!format!("{client:?}").contains("dG9rZW4="));
        assert!(!format!("{:?}", settings()).contains("dG9rZW4="));
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried_then_reported_as_connect() {
        // A port that was just bound and released: nothing listens there.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let url = format!("http://127.0.0.1:{port}/").parse().expect("url");
        let mut s = ClientSettings::single_url(url, Secret::new("dG9rZW4="), "OWNER");
        s.retry.max_attempts = 3;
        s.retry.initial_backoff = Duration::from_millis(1);
        let client = ScwmClient::new(s).expect("client");
        let failure = client
            .call(&ScwmRequest::new(Operation::Add, Payload::new()))
            .await
            .expect_err("nothing listens");
        assert_eq!(failure.attempts, 3);
        assert_eq!(failure.error.kind(), "connect");
        assert!(failure.envelope.is_none());
    }
}
