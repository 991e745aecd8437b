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

use bytes::Bytes;
use http::{
    HeaderMap, HeaderValue,
    header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST, RETRY_AFTER, TRANSFER_ENCODING},
};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{
    breaker::{BreakerSettings, CircuitBreaker, CircuitState, Refusal, Verdict},
    classify::{Answer, classify, read_body},
    envelope::{HEADER_VERSION, Operation, Payload, RequestEnvelope, RequestHeader, ResponseEnvelope},
    error::ScwmError,
    governor::{Governor, Lane, RateLimit},
    retry::{RetryPolicy, Sleeper, TokioSleeper, parse_retry_after},
};
use crate::{ids::LicensePlate, observe, secret::Secret};

pub use super::classify::MAX_RESPONSE_BYTES;
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
    /// The tenant's rate limit, applied to each distinct endpoint URL on its own.
    pub rate_limit: RateLimit,
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
            rate_limit: RateLimit::default(),
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

/// An operation's endpoint and the governor of its URL (shared by the operations sent there).
#[derive(Debug)]
struct Route {
    endpoint: Endpoint,
    governor: Arc<Governor>,
}

/// The endpoints, resolved per operation so a lookup cannot miss.
#[derive(Debug)]
struct Endpoints {
    add: Route,
    edit: Route,
    copy: Route,
    close: Route,
    reopen: Route,
    submit: Route,
    read: Route,
}

impl Endpoints {
    fn from_map(map: &HashMap<Operation, Endpoint>, limit: &RateLimit) -> Result<Self, ClientBuildError> {
        let mut governors: HashMap<String, Arc<Governor>> = HashMap::new();
        let mut take = |op: Operation| -> Result<Route, ClientBuildError> {
            let endpoint = map.get(&op).ok_or(ClientBuildError::MissingEndpoint(op))?;
            match endpoint.url.scheme() {
                "http" | "https" => {}
                scheme => return Err(ClientBuildError::UnsupportedScheme { op, scheme: scheme.to_owned() }),
            }
            let url = endpoint.url.to_string();
            let governor = Arc::clone(
                governors.entry(url.clone()).or_insert_with(|| Arc::new(Governor::new(url, limit.clone()))),
            );
            Ok(Route { endpoint: endpoint.clone(), governor })
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

    fn get(&self, op: Operation) -> &Route {
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

    /// Each distinct governor once (endpoints that share a URL share one), in operation order.
    fn governors(&self) -> Vec<&Governor> {
        let mut out: Vec<&Arc<Governor>> = Vec::new();
        for op in Operation::ALL {
            let g = &self.get(op).governor;
            if !out.iter().any(|o| Arc::ptr_eq(o, g)) {
                out.push(g);
            }
        }
        out.into_iter().map(|g| &**g).collect()
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
    recent: super::recent::Recent,
}

/// How SCWM looks from here now, for people (the console): the circuit, each endpoint's
/// governor, the recent attempts.
#[derive(Debug, Clone)]
pub struct ScwmHealth {
    pub circuit: CircuitState,
    /// How much longer an open circuit refuses calls.
    pub circuit_open_for: Option<Duration>,
    pub in_flight: usize,
    pub max_concurrency: usize,
    pub governors: Vec<super::governor::GovernorView>,
    pub calls: super::recent::CallStats,
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

/// A failed attempt, as the decision after it sees it.
struct Failed<'a> {
    req: &'a ScwmRequest,
    /// This attempt's number, from 1.
    attempt: u32,
    status: Option<u16>,
    err_code: Option<&'a str>,
    error: &'a ScwmError,
}

/// What follows a failed attempt.
enum Next {
    GiveUp,
    CircuitOpen(Duration),
    RetryAfter(Duration),
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
        let endpoints = Endpoints::from_map(&settings.endpoints, &settings.rate_limit)?;
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
                recent: super::recent::Recent::default(),
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

    /// How much longer the open circuit refuses calls; `None` when it lets them through.
    pub fn circuit_open_for(&self) -> Option<Duration> {
        self.inner.breaker.check().err()
    }

    /// How much longer SCWM asked for requests of `op`'s endpoint to wait, if it did.
    pub fn paused_for(&self, op: Operation) -> Option<Duration> {
        self.inner.endpoints.get(op).governor.paused_for()
    }

    /// How SCWM looks from here now.
    pub fn health(&self) -> ScwmHealth {
        ScwmHealth {
            circuit: self.circuit_state(),
            circuit_open_for: self.circuit_open_for(),
            in_flight: self.in_flight(),
            max_concurrency: self.inner.max_concurrency,
            governors: self.inner.endpoints.governors().into_iter().map(Governor::view).collect(),
            calls: self.inner.recent.stats(),
        }
    }

    /// HTTP attempts in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.max_concurrency - self.inner.slots.available_permits()
    }

    /// Sends `req` until SCWM accepts it, a permanent error occurs, the attempts run out or the
    /// circuit opens.
    /// The envelope `req` would be sent as, and where: for showing a request without sending
    /// it (explain). Exactly what [`ScwmClient::call`] puts on the wire.
    pub fn envelope(&self, req: &ScwmRequest) -> (String, RequestEnvelope) {
        let endpoint = &self.inner.endpoints.get(req.op).endpoint;
        let envelope = RequestEnvelope {
            header: RequestHeader {
                header_version: HEADER_VERSION,
                event_name: endpoint.event_name.clone(),
                owner_id: req.owner_id.clone().unwrap_or_else(|| self.inner.owner_id.clone()),
                license_plate: req.license_plate.clone(),
            },
            payload: (*req.payload).clone(),
        };
        (endpoint.url.to_string(), envelope)
    }

    pub async fn call(&self, req: &ScwmRequest) -> Result<ScwmSuccess, ScwmFailure> {
        let result = self.call_with_retries(req).await;
        self.observe(req, &result);
        result
    }

    /// Like [`ScwmClient::call`], but an open circuit does not end the call: it waits for the
    /// circuit's trial and sends then, until `stop` fires. For work nobody else will hold for
    /// the bridge during an outage (a JetStream message whose deliveries an outage must not spend,
    /// an accepted asynchronous request). The circuit's trial lets such waiters through a few at
    /// a time, so a recovering SCWM is not met by the whole backlog at once.
    pub async fn call_riding_out(
        &self,
        req: &ScwmRequest,
        stop: &CancellationToken,
    ) -> Result<ScwmSuccess, ScwmFailure> {
        let mut held = false;
        let result = loop {
            let result = self.call_with_retries(req).await;
            let wait = match &result {
                Err(ScwmFailure { error: ScwmError::CircuitOpen { retry_after }, .. })
                    if !stop.is_cancelled() =>
                {
                    *retry_after
                }
                _ => break result,
            };
            if !held {
                held = true;
                tracing::info!(
                    op = req.op.as_str(),
                    scwm.license_plate = req.license_plate.as_str(),
                    wait_ms = wait.as_millis() as u64,
                    "SCWM circuit is open; holding the request until it half-opens"
                );
            }
            tokio::select! {
                () = stop.cancelled() => break result,
                () = tokio::time::sleep(wait.max(Duration::from_millis(10))) => {}
            }
        };
        self.observe(req, &result);
        result
    }

    fn observe(&self, req: &ScwmRequest, result: &Result<ScwmSuccess, ScwmFailure>) {
        match result {
            Ok(success) => observe::scwm_call(req.op.as_str(), "ok", Some(success.status)),
            Err(failure) => {
                let outcome = if failure.error.is_retryable() { "failed" } else { "rejected" };
                observe::scwm_call(req.op.as_str(), outcome, failure.error.status());
            }
        }
        observe::circuit(self.circuit_state().level());
    }

    async fn call_with_retries(&self, req: &ScwmRequest) -> Result<ScwmSuccess, ScwmFailure> {
        let started = Instant::now();
        let fail =
            |error, attempts, envelope| ScwmFailure { error, attempts, elapsed: started.elapsed(), envelope };
        let route = self.inner.endpoints.get(req.op);
        let body = match self.encode(req, &route.endpoint) {
            Ok(body) => body,
            Err(error) => return Err(fail(error, 0, None)),
        };
        let headers = self.request_headers(&req.headers);
        let mut last_envelope: Option<ResponseEnvelope> = None;
        let mut attempts: u32 = 0;
        loop {
            let Attempt { status, retry_after, answer } =
                match self.attempt_once(req, route, &headers, &body, attempts).await {
                    Ok(attempt) => attempt,
                    Err(error) => return Err(fail(error, attempts, last_envelope)),
                };
            attempts += 1;
            let (error, envelope) = match answer {
                Answer::Success { envelope, status } => {
                    return Ok(ScwmSuccess { envelope, status, attempts, elapsed: started.elapsed() });
                }
                Answer::Failure { error, envelope } => (error, envelope),
            };
            let err_code = envelope.as_ref().map(|e| e.header().err_code.clone());
            if envelope.is_some() {
                last_envelope = envelope;
            }
            let failed =
                Failed { req, attempt: attempts, status, err_code: err_code.as_deref(), error: &error };
            match self.after_failure(&failed, retry_after) {
                Next::GiveUp => return Err(fail(error, attempts, last_envelope)),
                Next::CircuitOpen(retry_after) => {
                    return Err(fail(ScwmError::CircuitOpen { retry_after }, attempts, last_envelope));
                }
                Next::RetryAfter(delay) => self.sleeper.sleep(delay).await,
            }
        }
    }

    /// The request envelope's bytes, serialised from borrowed parts: the payload is not copied
    /// per request.
    fn encode(&self, req: &ScwmRequest, endpoint: &Endpoint) -> Result<Bytes, ScwmError> {
        #[derive(serde::Serialize)]
        struct Outgoing<'a> {
            header: RequestHeader,
            payload: &'a Payload,
        }
        let envelope = Outgoing {
            header: RequestHeader {
                header_version: HEADER_VERSION,
                event_name: endpoint.event_name.clone(),
                owner_id: req.owner_id.clone().unwrap_or_else(|| self.inner.owner_id.clone()),
                license_plate: req.license_plate.clone(),
            },
            payload: &req.payload,
        };
        serde_json::to_vec(&envelope).map(Bytes::from).map_err(|e| ScwmError::Encode(e.to_string()))
    }

    /// One attempt through the breaker and the concurrency limit, in a client span of its own.
    /// `Err` when it could not be sent: the circuit is open (checked before queueing for a
    /// slot, and again once holding one, since it may have opened meanwhile).
    async fn attempt_once(
        &self,
        req: &ScwmRequest,
        route: &Route,
        headers: &HeaderMap,
        body: &Bytes,
        before: u32,
    ) -> Result<Attempt, ScwmError> {
        let inner = &*self.inner;
        let endpoint = &route.endpoint;
        let (op, plate) = (req.op.as_str(), req.license_plate.as_str());
        if let Err(retry_after) = inner.breaker.check() {
            tracing::debug!(
                op,
                scwm.license_plate = plate,
                attempts = before,
                "SCWM circuit is open; not sending"
            );
            return Err(ScwmError::CircuitOpen { retry_after });
        }
        // The tenant's rate and SCWM's own pauses come first: a request waiting for its turn
        // holds no connection slot.
        route.governor.acquire(Lane::of(req.op)).await;
        // The semaphore is never closed; should that change, fail like a dead transport.
        let slot = inner
            .slots
            .acquire()
            .await
            .map_err(|_| ScwmError::Transport("concurrency limiter closed".to_owned()))?;
        let permit = loop {
            let changed = inner.breaker.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match inner.breaker.admit() {
                Ok(permit) => break permit,
                Err(Refusal::Open { remaining }) => {
                    tracing::debug!(
                        op,
                        scwm.license_plate = plate,
                        attempts = before,
                        "SCWM circuit is open; not sending"
                    );
                    return Err(ScwmError::CircuitOpen { retry_after: remaining });
                }
                // The circuit's trial has as many calls out as it allows: one of them ends soon.
                Err(Refusal::Full) => changed.await,
            }
        };
        let started = Instant::now();
        // One client span per attempt (OpenTelemetry HTTP client conventions), its context
        // sent on as `traceparent` so SCWM's side of the trace joins this one.
        let span = tracing::info_span!(
            "POST",
            otel.kind = "client",
            http.request.method = "POST",
            url.full = %endpoint.url,
            server.address = endpoint.url.host_str().unwrap_or_default(),
            // Integers as i64: the OpenTelemetry layer exports unsigned values as text.
            server.port = i64::from(endpoint.url.port_or_known_default().unwrap_or_default()),
            http.request.resend_count = i64::from(before),
            http.response.status_code = tracing::field::Empty,
            error.type = tracing::field::Empty,
            scwm.operation = op,
            scwm.license_plate = plate,
        );
        let mut attempt_headers = headers.clone();
        crate::trace_context::inject(&span, &mut attempt_headers);
        let attempt = self
            .attempt(endpoint, attempt_headers, body.clone(), &req.license_plate)
            .instrument(span.clone())
            .await;
        if let Some(status) = attempt.status {
            span.record("http.response.status_code", i64::from(status));
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &attempt.answer {
            Answer::Failure { error, .. } => {
                span.record("error.type", error.kind());
                permit.record(error.verdict());
                inner.recent.record(started.elapsed(), error.verdict());
                // SCWM named how long it needs: every request to this endpoint waits that long,
                // not only this one.
                if let (Some(429 | 503), Some(wait)) =
                    (error.status(), error.retry_after().or(attempt.retry_after))
                {
                    route.governor.pause(wait.min(inner.retry.max_retry_after));
                }
            }
            Answer::Success { envelope, status } => {
                permit.record(Verdict::Up);
                inner.recent.record(started.elapsed(), Verdict::Up);
                tracing::debug!(
                    op,
                    scwm.license_plate = plate,
                    attempt = before + 1,
                    status,
                    err_code = envelope.header().err_code.as_str(),
                    elapsed_ms,
                    "SCWM accepted the request"
                );
            }
        }
        observe::scwm_attempt(op, started.elapsed(), before > 0);
        drop(slot);
        Ok(attempt)
    }

    /// After a failed attempt: give up (a permanent error, or no attempts left), stop because
    /// the circuit opened (the next attempt would be refused anyway: say so now rather than
    /// after sleeping for nothing), or wait and retry.
    fn after_failure(&self, f: &Failed<'_>, retry_after: Option<Duration>) -> Next {
        let (op, plate, error) = (f.req.op.as_str(), f.req.license_plate.as_str(), f.error);
        if !error.is_retryable() || f.attempt >= self.inner.retry.max_attempts {
            tracing::debug!(
                op,
                scwm.license_plate = plate,
                attempt = f.attempt,
                status = f.status,
                err_code = f.err_code,
                error_kind = error.kind(),
                retryable = error.is_retryable(),
                error = %error,
                "SCWM call failed; giving up"
            );
            return Next::GiveUp;
        }
        if let Err(retry_after) = self.inner.breaker.check() {
            tracing::warn!(
                op,
                scwm.license_plate = plate,
                attempt = f.attempt,
                status = f.status,
                err_code = f.err_code,
                error_kind = error.kind(),
                error = %error,
                "SCWM attempt failed and the circuit is now open; not retrying"
            );
            return Next::CircuitOpen(retry_after);
        }
        let hint = error.retry_after().or(retry_after);
        // The thread-local rng is not Send; it lives only for this statement.
        let delay = self.inner.retry.delay_for(f.attempt - 1, hint, &mut rand::rng());
        tracing::warn!(
            op,
            scwm.license_plate = plate,
            attempt = f.attempt,
            status = f.status,
            err_code = f.err_code,
            error_kind = error.kind(),
            delay_ms = delay.as_millis() as u64,
            error = %error,
            "SCWM attempt failed; retrying"
        );
        Next::RetryAfter(delay)
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

#[cfg(test)]
mod tests {
    use super::*;

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
