//! The SCWM simulator: a real HTTP server that speaks the SCWM Incident API as the project's
//! contract pins it down, for tests and for users who want to run the bridge without an SCWM
//! tenant.
//!
//! It keeps incidents in memory, answers every operation with a contract envelope, replays the
//! first answer to a repeated licensePlate, logs every operation request for inspection, and can
//! be told to be slow or to fail in the ways a real SCWM (or the network in front of it) fails.
//! `state` holds the rules, `faults` the fault plan, `throttle` the token bucket of the plan's
//! rate limit and `http` the wire; this module wires them to a socket, owns the shared state and
//! reads the clock for the bucket. It never calls out anywhere.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::net::SocketAddr;
//!
//! use incident_bridge::sim::{SimConfig, Simulator};
//!
//! let sim = Simulator::start(SimConfig::default(), SocketAddr::from(([127, 0, 0, 1], 0))).await?;
//! // point a client at sim.url(), then inspect sim.incidents() and sim.requests()
//! sim.stop().await
//! # }
//! ```

pub mod config;
mod faults;
mod http;
mod state;
mod throttle;

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime},
};

use axum::{Extension, http::HeaderMap};
use tokio::{net::TcpListener, sync::watch, task::JoinHandle, time::error::Elapsed};
use tokio_util::sync::CancellationToken;

use self::{
    faults::Draw,
    state::{Completion, Store, StoredAnswer, Ticket},
    throttle::TokenBucket,
};
pub use self::{
    faults::{Failure, Faults, InvalidFaults, Latency, RateLimit},
    http::router,
    state::{DEDUP_WINDOW, Incident, IncidentStatus, PersonAction, RecordedRequest},
};
use crate::{
    scwm::envelope::{DEFAULT_RESPONSE_EVENT_NAME, Operation},
    secret::Secret,
};

/// Why SCWM refused what a person tried ([`SimState::act`]): the status the API would answer
/// (404 unknown id, 409 already closed or open) and a sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct Refused {
    pub status: u16,
    pub detail: String,
}

/// The request log's length for a simulator left running (the CLI's and the quickstart's): the
/// newest are enough to look at, and a long run must not grow without bound.
pub const DEFAULT_REQUEST_LOG_LIMIT: usize = 100_000;

/// How the simulator behaves. The default matches the contract's documented SCWM.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The token expected as `Authorization: Basic <token>`; `None` accepts any request, for
    /// setups that test something other than credentials.
    pub token: Option<Secret>,
    /// The `eventName` of every answer. Configurable because tenants differ and clients must
    /// not depend on it.
    pub response_event_name: String,
    /// The request `eventName`s accepted and the operation each one means, so a test can play a
    /// tenant with its own names.
    pub event_names: Vec<(String, Operation)>,
    /// Report contract errors as HTTP 200 with an `isErr` envelope instead of the matching HTTP
    /// status; the contract allows both and clients must handle both.
    pub errors_in_http_200: bool,
    /// The fault plan in force when the simulator starts.
    pub faults: Faults,
    /// How many of the newest requests the request log keeps (`None`: every one), so a long
    /// run does not grow without bound; counts go on past it.
    pub request_log_limit: Option<usize>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            token: None,
            response_event_name: DEFAULT_RESPONSE_EVENT_NAME.to_owned(),
            event_names: Operation::ALL
                .into_iter()
                .map(|op| (op.default_event_name().to_owned(), op))
                .collect(),
            errors_in_http_200: false,
            faults: Faults::default(),
            request_log_limit: None,
        }
    }
}

/// Everything a simulator knows, shared by every connection and every `serve` call over it. It
/// outlives a server, which is how a test stops SCWM and brings the same SCWM back.
///
/// The mutexes are never held across an `.await`.
#[derive(Debug)]
pub struct SimState {
    config: SimConfig,
    /// `Basic <token>`, built once so each request is a single constant-time comparison.
    expected_authorization: Option<Secret>,
    store: Mutex<Store>,
    faults: Mutex<Plan>,
    /// How many requests the log holds, so waiters wake on arrival instead of polling.
    logged: watch::Sender<usize>,
}

/// The fault plan in force and the token bucket of its rate limit, under one lock so that a
/// request's draw sees both as one plan.
#[derive(Debug)]
struct Plan {
    faults: Faults,
    /// `Some` exactly when `faults.rate_limit` is; full whenever the plan is put in force.
    bucket: Option<TokenBucket>,
}

impl Plan {
    fn new(faults: Faults) -> Self {
        let bucket = faults.rate_limit.map(|limit| TokenBucket::full(limit, tokio::time::Instant::now()));
        Self { faults, bucket }
    }
}

/// A poisoned lock only means another request panicked mid-update; the simulator keeps serving
/// rather than turning one bug into a failure of every later request.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimState {
    fn new(config: SimConfig) -> Self {
        let expected_authorization =
            config.token.as_ref().map(|token| Secret::new(format!("Basic {}", token.expose())));
        Self {
            faults: Mutex::new(Plan::new(config.faults.clone())),
            store: Mutex::new(Store::with_log_limit(config.request_log_limit)),
            config,
            expected_authorization,
            logged: watch::Sender::new(0),
        }
    }

    /// The configuration the simulator was created with; `faults` there is the initial plan,
    /// see [`SimState::faults`] for the current one.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// All incidents in id order.
    pub fn incidents(&self) -> Vec<Incident> {
        lock(&self.store).incidents()
    }

    /// Every operation request received since the start or the last reset, in arrival order
    /// (the newest `request_log_limit` of them when that is set).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.store).requests()
    }

    /// How many operation requests arrived since the start or the last reset.
    pub fn request_count(&self) -> usize {
        lock(&self.store).request_count()
    }

    /// Makes room for `additional` more licensePlates to remember. The map of plates grows by
    /// doubling, and a grow moves every plate while the one lock is held: at a few million
    /// plates that stops every request for seconds. A run that knows how many requests it will
    /// send reserves them first, so what it measures is not the simulator growing.
    pub fn reserve_plates(&self, additional: usize) {
        lock(&self.store).reserve_plates(additional);
    }

    /// The fault plan in force, with `fail_next` counted down by the requests it has failed.
    pub fn faults(&self) -> Faults {
        lock(&self.faults).faults.clone()
    }

    /// Puts `faults` in force; its rate limit, if it has one, starts with a full bucket.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.faults) = Plan::new(faults);
    }

    /// What a person does to incident `id` in SCWM itself (no licensePlate, not logged as a
    /// request): the incident as it is now, `None` once deleted; or why SCWM refuses it (no such
    /// id, already closed, already open).
    pub fn act(&self, id: &str, action: &PersonAction) -> Result<Option<Incident>, Refused> {
        lock(&self.store)
            .act(id, action, SystemTime::now())
            .map_err(|refusal| Refused { status: refusal.status().as_u16(), detail: refusal.to_string() })
    }

    /// Forgets incidents, requests and remembered answers, restarts ids at `IT-000001` and
    /// removes every fault.
    pub fn reset(&self) {
        {
            let mut store = lock(&self.store);
            store.reset();
            self.logged.send_replace(store.request_count());
        }
        self.set_faults(Faults::default());
    }

    /// Waits until at least `n` requests have been logged and returns the whole log.
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, Elapsed> {
        let mut logged = self.logged.subscribe();
        // The sender lives as long as `self`, so the wait cannot end in a closed channel.
        let _ = tokio::time::timeout(timeout, logged.wait_for(|count| *count >= n)).await?;
        Ok(self.requests())
    }

    fn record(
        &self,
        now: SystemTime,
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: serde_json::Value,
    ) -> Ticket {
        let mut store = lock(&self.store);
        let ticket = store.record(now, method, path, headers, body);
        // Published under the lock so the count seen by waiters never goes backwards.
        self.logged.send_replace(store.request_count());
        ticket
    }

    fn complete(&self, ticket: Ticket, completion: Completion) {
        lock(&self.store).complete(ticket, completion);
    }

    /// The fate of one operation request: the rate limit's bucket first (the time is tokio's,
    /// so a test with paused time steers it), then the plan's draw.
    fn draw_faults(&self) -> Draw {
        let mut plan = lock(&self.faults);
        let Plan { faults, bucket } = &mut *plan;
        if let Some(bucket) = bucket
            && let Err(retry_after_secs) = bucket.take(tokio::time::Instant::now())
        {
            return faults.throttled(retry_after_secs, &mut rand::rng());
        }
        faults.draw(&mut rand::rng())
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(expected) = &self.expected_authorization else {
            return true;
        };
        let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
        match (values.next(), values.next()) {
            (Some(value), None) => expected.ct_eq(value.as_bytes()),
            _ => false,
        }
    }

    /// The remembered answer for `plate`, or the answer `operate` gives, remembered. One lock
    /// covers both so two concurrent requests with one licensePlate have one effect.
    fn answer_once(
        &self,
        plate: &str,
        now: SystemTime,
        operate: impl FnOnce(&mut Store, SystemTime) -> StoredAnswer,
    ) -> (StoredAnswer, bool) {
        let mut store = lock(&self.store);
        if let Some(answer) = store.remembered(plate, now) {
            return (answer, true);
        }
        let answer = operate(&mut store, now);
        store.remember(plate, answer.clone(), now);
        (answer, false)
    }
}

/// Runs simulators.
pub struct Simulator;

impl Simulator {
    pub fn new_state(config: SimConfig) -> Arc<SimState> {
        Arc::new(SimState::new(config))
    }

    /// Serves `state` on an already bound listener until `shutdown` is cancelled, then closes
    /// every connection. Serving the same state again on a new listener bound to the same
    /// address lets tests simulate SCWM refusing connections and then coming back.
    pub async fn serve(
        state: Arc<SimState>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let app = router(state).layer(Extension(http::ShutdownSignal(shutdown.clone())));
        axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await
    }

    /// Binds `addr` (port 0 picks a free port) and serves a new simulator in the background.
    pub async fn start(config: SimConfig, addr: SocketAddr) -> std::io::Result<SimHandle> {
        Self::start_with_state(Self::new_state(config), addr).await
    }

    /// Like [`Simulator::start`], over existing state: after [`SimHandle::stop`], this brings
    /// the same SCWM back, incidents and all, typically at the address it had.
    pub async fn start_with_state(state: Arc<SimState>, addr: SocketAddr) -> std::io::Result<SimHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(Self::serve(Arc::clone(&state), listener, shutdown.clone()));
        tracing::debug!(%addr, "SCWM simulator listening");
        Ok(SimHandle { addr, state, shutdown, task: Some(task) })
    }
}

/// A simulator running in the background. Dropping the handle shuts the server down without
/// waiting; [`SimHandle::stop`] waits until the port refuses connections.
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: CancellationToken,
    /// `None` only once `stop` has taken it.
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>/incident`, the URL to configure as SCWM's.
    pub fn url(&self) -> String {
        format!("http://{}/incident", self.addr)
    }

    /// `http://<addr>`, for the `/_sim/` endpoints and per-operation URLs.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn state(&self) -> Arc<SimState> {
        Arc::clone(&self.state)
    }

    pub fn incidents(&self) -> Vec<Incident> {
        self.state.incidents()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.requests()
    }

    pub fn request_count(&self) -> usize {
        self.state.request_count()
    }

    pub fn faults(&self) -> Faults {
        self.state.faults()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    pub fn reset(&self) {
        self.state.reset();
    }

    /// See [`SimState::act`].
    pub fn act(&self, id: &str, action: &PersonAction) -> Result<Option<Incident>, Refused> {
        self.state.act(id, action)
    }

    /// See [`SimState::wait_for_requests`].
    pub async fn wait_for_requests(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<RecordedRequest>, Elapsed> {
        self.state.wait_for_requests(n, timeout).await
    }

    /// Shuts the server down and waits until it has closed its listener and every connection.
    /// Requests sleeping out injected latency are cut off rather than waited for.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.map_err(std::io::Error::other)?,
            None => Ok(()),
        }
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[cfg(test)]
mod tests {
    use axum::{
        body::Body,
        http::{Request, StatusCode, header},
    };
    use serde_json::{Value, json};
    use tower::ServiceExt;

    use super::*;

    fn add_request(n: u32) -> Request<Body> {
        let body = json!({
            "header": {"headerVersion": 1, "eventName": "agile-process-teams:add-incident:v3",
                       "ownerId": "O", "licensePlate": format!("plate-{n}")},
            "payload": {"title": format!("t{n}")},
        });
        Request::post("/incident")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    /// The status, `Retry-After` and body of one operation request.
    async fn send(state: &Arc<SimState>, n: u32) -> (StatusCode, Option<String>, Value) {
        let resp = router(Arc::clone(state)).oneshot(add_request(n)).await.unwrap();
        let status = resp.status();
        let retry_after = resp.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap().to_owned());
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.unwrap();
        (status, retry_after, serde_json::from_slice(&bytes).unwrap())
    }

    fn limited(per_second: f64, burst: u32) -> Faults {
        Faults { rate_limit: Some(RateLimit { per_second, burst }), ..Faults::default() }
    }

    #[tokio::test(start_paused = true)]
    async fn requests_beyond_the_bucket_get_429_with_retry_after_and_are_logged_as_rate_limited() {
        let state = Simulator::new_state(SimConfig { faults: limited(2.0, 3), ..SimConfig::default() });
        for n in 0..3 {
            assert_eq!(send(&state, n).await.0, StatusCode::OK, "request {n} is within the burst");
        }
        let (status, retry_after, body) = send(&state, 3).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(retry_after.as_deref(), Some("1"), "half a second to the next token, rounded up");
        assert_eq!(body["header"]["isErr"], true);
        assert_eq!(body["header"]["errCode"], "429_TOO_MANY_REQUESTS");
        assert_eq!(body["header"]["licensePlate"], "plate-3");

        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(send(&state, 4).await.0, StatusCode::OK, "a token came back after 500 ms");
        assert_eq!(send(&state, 5).await.0, StatusCode::TOO_MANY_REQUESTS);

        let log = state.requests();
        let faults: Vec<_> = log.iter().map(|r| (r.status, r.fault.as_deref())).collect();
        assert_eq!(
            faults,
            [
                (Some(200), None),
                (Some(200), None),
                (Some(200), None),
                (Some(429), Some("rate_limited")),
                (Some(200), None),
                (Some(429), Some("rate_limited")),
            ]
        );
        assert_eq!(state.incidents().len(), 4, "a refused request changes nothing");
    }

    #[tokio::test(start_paused = true)]
    async fn a_throttled_request_leaves_fail_next_for_the_requests_that_get_through() {
        let faults = Faults { fail_next: 1, ..limited(1.0, 1) };
        let state = Simulator::new_state(SimConfig { faults, ..SimConfig::default() });
        assert_eq!(send(&state, 0).await.0, StatusCode::SERVICE_UNAVAILABLE, "the burst's token, failed");
        assert_eq!(send(&state, 1).await.0, StatusCode::TOO_MANY_REQUESTS);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(send(&state, 2).await.0, StatusCode::OK);
        assert_eq!(state.faults().fail_next, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_plan_starts_with_a_full_bucket_and_reset_removes_the_limit() {
        let state = Simulator::new_state(SimConfig::default());
        state.set_faults(limited(0.5, 2));
        assert_eq!(send(&state, 0).await.0, StatusCode::OK);
        assert_eq!(send(&state, 1).await.0, StatusCode::OK);
        let (status, retry_after, _) = send(&state, 2).await;
        assert_eq!((status, retry_after.as_deref()), (StatusCode::TOO_MANY_REQUESTS, Some("2")));
        state.set_faults(limited(0.5, 2));
        assert_eq!(send(&state, 3).await.0, StatusCode::OK, "the plan put in force again is full");
        state.reset();
        for n in 10..20 {
            assert_eq!(send(&state, n).await.0, StatusCode::OK, "no limit after a reset");
        }
    }
}
