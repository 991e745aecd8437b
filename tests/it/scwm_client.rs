//! The SCWM client against the SCWM simulator over real HTTP on 127.0.0.1: every operation,
//! every transient fault class retried to success, permanent errors tried once, the licensePlate
//! contract, Retry-After, the circuit breaker and the concurrency limit.
//!
//! Delays between attempts go through a recording sleeper, so no test waits out a backoff.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use futures::{FutureExt, future::BoxFuture};
use incident_bridge::{
    ids::LicensePlate,
    scwm::{
        CircuitState, ClientSettings, Operation, Payload, RateLimit, ScwmClient, ScwmError, ScwmFailure,
        ScwmRequest, ScwmSuccess, Sleeper,
    },
    secret::Secret,
    sim::{Failure, Faults, Latency, RecordedRequest, SimConfig, SimHandle, SimState, Simulator},
};
use serde_json::{Value, json};

const TOKEN: &str = "c2N3bS1ib3Q6czNjcjN0";
const OWNER: &str = "OWNER-1";

/// Records every delay the client asks for and returns at once.
#[derive(Default)]
struct RecordingSleeper {
    delays: Mutex<Vec<Duration>>,
}

impl RecordingSleeper {
    fn delays(&self) -> Vec<Duration> {
        self.delays.lock().map(|d| d.clone()).unwrap_or_default()
    }
}

impl Sleeper for RecordingSleeper {
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        if let Ok(mut delays) = self.delays.lock() {
            delays.push(d);
        }
        futures::future::ready(()).boxed()
    }
}

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

async fn start_sim(config: SimConfig) -> SimHandle {
    Simulator::start(SimConfig { token: Some(Secret::new(TOKEN)), ..config }, any_port())
        .await
        .expect("the simulator starts")
}

fn settings_for(url: &str) -> ClientSettings {
    let mut settings =
        ClientSettings::single_url(url.parse().expect("a valid URL"), Secret::new(TOKEN), OWNER);
    settings.connect_timeout = Duration::from_secs(2);
    settings.request_timeout = Duration::from_secs(5);
    settings
}

fn client_with(settings: ClientSettings) -> (ScwmClient, Arc<RecordingSleeper>) {
    let sleeper = Arc::new(RecordingSleeper::default());
    let client = ScwmClient::new(settings).expect("valid settings").with_sleeper(sleeper.clone());
    (client, sleeper)
}

fn payload(value: Value) -> Payload {
    match value {
        Value::Object(map) => map,
        other => panic!("a payload is an object, not {other}"),
    }
}

fn request(op: Operation, body: Value) -> ScwmRequest {
    ScwmRequest::new(op, payload(body))
}

fn add_request() -> ScwmRequest {
    request(Operation::Add, json!({"title": "disk full", "severity": "high", "externalRef": "k-1"}))
}

async fn call_ok(client: &ScwmClient, req: &ScwmRequest) -> ScwmSuccess {
    match client.call(req).await {
        Ok(success) => success,
        Err(failure) => panic!("{} call failed: {failure}", req.op),
    }
}

async fn call_err(client: &ScwmClient, req: &ScwmRequest) -> ScwmFailure {
    match client.call(req).await {
        Ok(success) => panic!("{} call unexpectedly succeeded: {:?}", req.op, success.envelope),
        Err(failure) => failure,
    }
}

fn item_id(success: &ScwmSuccess) -> String {
    success.envelope.item_id().expect("the answer carries payload.id").to_string()
}

fn header_of<'a>(req: &'a RecordedRequest, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

fn plate_of(req: &RecordedRequest) -> &str {
    req.body["header"]["licensePlate"].as_str().unwrap_or_default()
}

fn fail_next(n: u32, failure: Failure) -> Faults {
    Faults { fail_next: n, fail_next_with: failure, ..Faults::default() }
}

#[tokio::test]
async fn every_operation_round_trips() {
    let sim = start_sim(SimConfig::default()).await;
    let (client, sleeper) = client_with(settings_for(&sim.url()));

    let added = call_ok(&client, &add_request()).await;
    assert_eq!(added.status, 200);
    assert_eq!(added.attempts, 1);
    let id = item_id(&added);

    let edited = call_ok(&client, &request(Operation::Edit, json!({"id": id, "severity": "low"}))).await;
    assert_eq!(item_id(&edited), id);

    let copied = call_ok(&client, &request(Operation::Copy, json!({"id": id, "title": "copy"}))).await;
    let copy_id = item_id(&copied);
    assert_ne!(copy_id, id);

    let closed = call_ok(
        &client,
        &request(Operation::Close, json!({"id": id, "resolution": "fixed", "closeNotes": "freed space"})),
    )
    .await;
    assert_eq!(item_id(&closed), id);

    let reopened =
        call_ok(&client, &request(Operation::Reopen, json!({"id": id, "reason": "full again"}))).await;
    assert_eq!(item_id(&reopened), id);

    let submitted = call_ok(
        &client,
        &request(Operation::Submit, json!({"id": id, "partnerId": "P-7", "note": "please look"})),
    )
    .await;
    assert_eq!(item_id(&submitted), id);

    let read = call_ok(&client, &request(Operation::Read, json!({"id": id}))).await;
    let fields = read.envelope.payload();
    assert_eq!(fields["id"], json!(id));
    assert_eq!(fields["status"], json!("open"));
    assert_eq!(fields["severity"], json!("low"));
    assert_eq!(fields["partnerId"], json!("P-7"));

    assert_eq!(sim.incidents().len(), 2);
    assert!(sleeper.delays().is_empty(), "nothing was retried");

    // What went over the wire: one POST per operation, with the contract's headers and names.
    let log = sim.requests();
    let ops = [
        Operation::Add,
        Operation::Edit,
        Operation::Copy,
        Operation::Close,
        Operation::Reopen,
        Operation::Submit,
        Operation::Read,
    ];
    assert_eq!(log.len(), ops.len());
    for (entry, op) in log.iter().zip(ops) {
        assert_eq!(entry.method, "POST");
        assert_eq!(entry.status, Some(200), "{op}");
        assert_eq!(header_of(entry, "authorization"), Some(format!("Basic {TOKEN}").as_str()));
        assert_eq!(header_of(entry, "content-type"), Some("application/json"));
        assert_eq!(header_of(entry, "accept"), Some("application/json"));
        assert!(header_of(entry, "user-agent").is_some_and(|ua| ua.starts_with("incident-bridge/")));
        let header = &entry.body["header"];
        assert_eq!(header["headerVersion"], json!(1));
        assert_eq!(header["eventName"], json!(op.default_event_name()));
        assert_eq!(header["ownerId"], json!(OWNER));
        assert!(LicensePlate::parse(plate_of(entry)).is_ok());
    }
}

#[tokio::test]
async fn extra_headers_and_an_owner_override_are_sent() {
    let sim = start_sim(SimConfig::default()).await;
    let (client, _) = client_with(settings_for(&sim.url()));
    let mut req = add_request();
    req.owner_id = Some("TENANT-B".into());
    req.headers
        .insert("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".parse().unwrap());
    req.headers.insert("authorization", "Bearer not-this".parse().unwrap());
    call_ok(&client, &req).await;

    let log = sim.requests();
    assert_eq!(log[0].body["header"]["ownerId"], json!("TENANT-B"));
    assert_eq!(
        header_of(&log[0], "traceparent"),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(header_of(&log[0], "authorization"), Some(format!("Basic {TOKEN}").as_str()));
}

#[tokio::test]
async fn each_transient_fault_class_is_retried_until_it_succeeds() {
    let cases = [
        (Failure::Status { status: 503 }, "rejected", Some(503)),
        (Failure::Status { status: 500 }, "rejected", Some(500)),
        (Failure::RateLimited { retry_after_secs: 1 }, "rejected", Some(429)),
        (Failure::StatusIn200 { status: 503 }, "rejected", Some(503)),
        (Failure::NotJson { status: 502 }, "invalid_response", Some(502)),
        (Failure::DropConnection, "transport", None),
    ];
    for (failure, kind, status) in cases {
        let sim = start_sim(SimConfig { faults: fail_next(2, failure), ..SimConfig::default() }).await;
        let mut settings = settings_for(&sim.url());
        // Two failures of one kind must not trip the breaker mid-test.
        settings.breaker.minimum_calls = 10;
        let (client, sleeper) = client_with(settings);

        let success = call_ok(&client, &add_request()).await;
        assert_eq!(success.attempts, 3, "{failure:?}");
        assert!(success.envelope.item_id().is_some());

        let log = sim.requests();
        assert_eq!(log.len(), 3, "{failure:?}");
        assert_eq!(log[0].fault.as_deref(), Some(failure.name()));
        assert_eq!(log[1].fault.as_deref(), Some(failure.name()));
        assert_eq!(log[2].fault, None);
        assert_eq!(sleeper.delays().len(), 2, "{failure:?}");
        assert_eq!(sim.incidents().len(), 1, "{failure:?}");

        // The same fault with no attempts left is reported as what it is.
        sim.set_faults(fail_next(1, failure));
        let mut settings = settings_for(&sim.url());
        settings.retry.max_attempts = 1;
        let (client, _) = client_with(settings);
        let failure_seen = call_err(&client, &add_request()).await;
        assert_eq!(failure_seen.error.kind(), kind, "{failure:?}");
        assert_eq!(failure_seen.error.status(), status, "{failure:?}");
        assert!(failure_seen.error.is_retryable(), "{failure:?}");
        assert_eq!(failure_seen.attempts, 1);
    }
}

#[tokio::test]
async fn a_refused_connection_is_retried_until_scwm_is_back() {
    let sim = start_sim(SimConfig::default()).await;
    let addr = sim.addr();
    let url = sim.url();
    let state = sim.state();
    sim.stop().await.expect("the simulator stops");

    /// Brings the simulator back at its old address the first time the client waits.
    struct RestartOnSleep {
        state: Arc<SimState>,
        addr: SocketAddr,
        restarted: Arc<tokio::sync::Mutex<Option<SimHandle>>>,
        delays: Mutex<Vec<Duration>>,
    }
    impl Sleeper for RestartOnSleep {
        fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
            if let Ok(mut delays) = self.delays.lock() {
                delays.push(d);
            }
            let (state, addr, slot) = (self.state.clone(), self.addr, self.restarted.clone());
            async move {
                let mut slot = slot.lock().await;
                if slot.is_none() {
                    *slot = Some(Simulator::start_with_state(state, addr).await.expect("restart"));
                }
            }
            .boxed()
        }
    }
    let sleeper = Arc::new(RestartOnSleep {
        state: state.clone(),
        addr,
        restarted: Arc::default(),
        delays: Mutex::default(),
    });
    let client = ScwmClient::new(settings_for(&url)).expect("valid settings").with_sleeper(sleeper.clone());

    let success = call_ok(&client, &add_request()).await;
    assert_eq!(success.attempts, 2);
    assert_eq!(sleeper.delays.lock().map(|d| d.len()).unwrap_or_default(), 1);
    // Only the second attempt reached SCWM.
    assert_eq!(state.requests().len(), 1);
    assert_eq!(state.incidents().len(), 1);
}

#[tokio::test]
async fn a_timeout_is_retried_and_reported_as_a_timeout() {
    let sim = start_sim(SimConfig {
        faults: Faults { latency: Some(Latency::Fixed { fixed_ms: 400 }), ..Faults::default() },
        ..SimConfig::default()
    })
    .await;
    let mut settings = settings_for(&sim.url());
    settings.request_timeout = Duration::from_millis(100);
    settings.retry.max_attempts = 2;
    let (client, sleeper) = client_with(settings);

    let failure = call_err(&client, &add_request()).await;
    assert_eq!(failure.error, ScwmError::Timeout);
    assert_eq!(failure.attempts, 2);
    assert_eq!(sleeper.delays().len(), 1);
    let log = sim.wait_for_requests(2, Duration::from_secs(5)).await.expect("both attempts arrive");
    assert_eq!(plate_of(&log[0]), plate_of(&log[1]));
}

/// Sets up a permanent error of each kind the simulator gives, in both wire styles the contract
/// allows, and checks it is tried exactly once.
#[tokio::test]
async fn permanent_errors_are_attempted_exactly_once() {
    for errors_in_http_200 in [false, true] {
        let sim = start_sim(SimConfig { errors_in_http_200, ..SimConfig::default() }).await;
        let (client, sleeper) = client_with(settings_for(&sim.url()));
        let id = item_id(&call_ok(&client, &add_request()).await);
        call_ok(&client, &request(Operation::Close, json!({"id": id, "resolution": "done"}))).await;

        let wrong_token = {
            let mut s = settings_for(&sim.url());
            s.basic_token = Secret::new("d3Jvbmc=");
            client_with(s).0
        };
        let cases: [(&ScwmClient, ScwmRequest, u16); 4] = [
            (&client, request(Operation::Edit, json!({"title": "no id"})), 400),
            (&client, request(Operation::Read, json!({"id": "IT-999999"})), 404),
            (&client, request(Operation::Close, json!({"id": id, "resolution": "again"})), 409),
            (&wrong_token, add_request(), 401),
        ];
        for (client, req, status) in cases {
            let before = sim.requests().len();
            let failure = call_err(client, &req).await;
            let label = format!("{status} (errors_in_http_200: {errors_in_http_200})");
            assert_eq!(failure.attempts, 1, "{label}");
            assert!(!failure.error.is_retryable(), "{label}");
            assert_eq!(failure.error.kind(), "rejected", "{label}");
            assert_eq!(failure.error.status(), Some(status), "{label}");
            let envelope = failure.envelope.as_ref().expect("SCWM's answer is kept");
            assert!(envelope.header().is_err);
            assert_eq!(envelope.header().license_plate, req.license_plate.as_str());

            let log = sim.requests();
            assert_eq!(log.len(), before + 1, "{label}: exactly one request reached SCWM");
            let wire = if errors_in_http_200 { 200 } else { status };
            assert_eq!(log[before].status, Some(wire), "{label}");
        }
        assert!(sleeper.delays().is_empty());
    }
}

#[tokio::test]
async fn the_license_plate_is_kept_across_retries_and_new_for_each_call() {
    let sim =
        start_sim(SimConfig { faults: fail_next(2, Failure::SERVICE_UNAVAILABLE), ..SimConfig::default() })
            .await;
    let (client, _) = client_with(settings_for(&sim.url()));

    let first = add_request();
    let success = call_ok(&client, &first).await;
    assert_eq!(success.attempts, 3);
    assert_eq!(success.envelope.header().license_plate, first.license_plate.as_str());

    sim.set_faults(fail_next(1, Failure::SERVICE_UNAVAILABLE));
    let second = add_request();
    call_ok(&client, &second).await;

    let plates: Vec<String> = sim.requests().iter().map(|r| plate_of(r).to_owned()).collect();
    assert_eq!(plates.len(), 5);
    assert!(plates[..3].iter().all(|p| p == first.license_plate.as_str()), "{plates:?}");
    assert!(plates[3..].iter().all(|p| p == second.license_plate.as_str()), "{plates:?}");
    assert_ne!(first.license_plate, second.license_plate);
}

#[tokio::test]
async fn retry_after_is_honoured_exactly_and_pauses_the_endpoint_capped() {
    let sim = start_sim(SimConfig {
        faults: fail_next(2, Failure::RateLimited { retry_after_secs: 1 }),
        ..SimConfig::default()
    })
    .await;
    let (client, sleeper) = client_with(settings_for(&sim.url()));

    let started = std::time::Instant::now();
    let success = call_ok(&client, &add_request()).await;
    assert_eq!(success.attempts, 3);
    assert_eq!(sleeper.delays(), vec![Duration::from_secs(1); 2]);
    // The retry waits through the sleeper (recorded, not waited here), but the endpoint itself
    // was paused for each Retry-After, which no sleeper stands in for.
    assert!(started.elapsed() >= Duration::from_millis(1_990), "{:?}", started.elapsed());

    // Beyond max_retry_after, the cap wins: the endpoint pauses 60 s, not an hour.
    sim.set_faults(fail_next(1, Failure::RateLimited { retry_after_secs: 3_600 }));
    let mut settings = settings_for(&sim.url());
    settings.retry.max_attempts = 1;
    let (capped, _) = client_with(settings);
    call_err(&capped, &add_request()).await;
    let paused = capped.paused_for(Operation::Add).expect("paused");
    assert!(paused > Duration::from_secs(59) && paused <= Duration::from_secs(60), "{paused:?}");
    assert!(
        capped.paused_for(Operation::Edit).is_some_and(|p| p > Duration::from_secs(59)),
        "one endpoint, one pause"
    );

    // Without Retry-After, the delay is the jittered backoff: within the first two ceilings.
    sim.set_faults(fail_next(2, Failure::SERVICE_UNAVAILABLE));
    call_ok(&client, &add_request()).await;
    let delays = sleeper.delays();
    assert!(delays[2] <= Duration::from_millis(200), "{delays:?}");
    assert!(delays[3] <= Duration::from_millis(400), "{delays:?}");
}

#[tokio::test]
async fn the_breaker_opens_on_the_failure_rate_and_its_trial_closes_it() {
    let sim = start_sim(SimConfig {
        faults: Faults { error_rate: 1.0, error: Failure::SERVICE_UNAVAILABLE, ..Faults::default() },
        ..SimConfig::default()
    })
    .await;
    let open_for = Duration::from_millis(500);
    let mut settings = settings_for(&sim.url());
    settings.breaker.minimum_calls = 3;
    settings.breaker.recovery_calls = 1;
    settings.breaker.open_for = open_for;
    settings.retry.max_attempts = 5;
    let (client, sleeper) = client_with(settings);

    // One call keeps retrying until the third failure in a row (all of the window) opens it.
    let failure = call_err(&client, &add_request()).await;
    assert_eq!(failure.attempts, 3);
    assert!(matches!(failure.error, ScwmError::CircuitOpen { retry_after } if retry_after <= open_for));
    assert!(failure.error.is_retryable());
    let last = failure.envelope.expect("the last 503 envelope is kept");
    assert_eq!(last.header().err_code, "503_SERVICE_UNAVAILABLE");
    assert_eq!(client.circuit_state(), CircuitState::Open);
    assert_eq!(sim.requests().len(), 3);
    // It stopped as soon as the circuit opened, without sleeping for a retry it could not make.
    assert_eq!(sleeper.delays().len(), 2);

    // While open, calls fail fast and nothing reaches SCWM.
    for _ in 0..5 {
        let failure = call_err(&client, &add_request()).await;
        assert_eq!(failure.attempts, 0);
        assert_eq!(failure.error.kind(), "circuit_open");
        assert!(failure.envelope.is_none());
    }
    assert_eq!(sim.requests().len(), 3, "no request reached SCWM while the circuit was open");

    // SCWM recovers; after open_for the trial's first success closes it (recovery_calls = 1).
    sim.set_faults(Faults::default());
    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    assert_eq!(client.circuit_state(), CircuitState::HalfOpen);
    let success = call_ok(&client, &add_request()).await;
    assert_eq!(success.attempts, 1);
    assert_eq!(client.circuit_state(), CircuitState::Closed);
    assert_eq!(sim.requests().len(), 4);
    call_ok(&client, &add_request()).await;
    assert_eq!(sim.incidents().len(), 2);
}

#[tokio::test]
async fn a_failed_probe_reopens_the_circuit() {
    let sim = start_sim(SimConfig {
        faults: Faults { error_rate: 1.0, error: Failure::Status { status: 500 }, ..Faults::default() },
        ..SimConfig::default()
    })
    .await;
    let open_for = Duration::from_millis(500);
    let mut settings = settings_for(&sim.url());
    settings.breaker.minimum_calls = 2;
    settings.breaker.probes = 1;
    settings.breaker.open_for = open_for;
    settings.retry.max_attempts = 1;
    let (client, _) = client_with(settings);

    for _ in 0..2 {
        assert_eq!(call_err(&client, &add_request()).await.error.status(), Some(500));
    }
    assert_eq!(client.circuit_state(), CircuitState::Open);
    tokio::time::sleep(open_for + Duration::from_millis(50)).await;
    let probe = call_err(&client, &add_request()).await;
    assert_eq!(probe.attempts, 1);
    assert_eq!(probe.error.status(), Some(500));
    assert_eq!(client.circuit_state(), CircuitState::Open);
    assert_eq!(call_err(&client, &add_request()).await.error.kind(), "circuit_open");
    assert_eq!(sim.requests().len(), 3);
}

#[tokio::test]
async fn permanent_errors_do_not_trip_the_breaker() {
    let sim = start_sim(SimConfig::default()).await;
    let mut settings = settings_for(&sim.url());
    settings.breaker.minimum_calls = 2;
    let (client, _) = client_with(settings);
    for _ in 0..4 {
        let failure = call_err(&client, &request(Operation::Read, json!({"id": "IT-404404"}))).await;
        assert_eq!(failure.error.status(), Some(404));
    }
    sim.set_faults(fail_next(3, Failure::RateLimited { retry_after_secs: 0 }));
    call_ok(&client, &add_request()).await;
    assert_eq!(client.circuit_state(), CircuitState::Closed);
}

/// With fixed SCWM latency L and N slots, a request can only start once an earlier one has
/// finished, so the (i+N)-th arrival is at least L after the i-th. More than N in flight at
/// once would break that.
#[tokio::test]
async fn max_concurrency_bounds_requests_in_flight() {
    const LIMIT: usize = 3;
    const CALLS: usize = 12;
    const LATENCY_MS: u64 = 150;
    let sim = start_sim(SimConfig {
        faults: Faults { latency: Some(Latency::Fixed { fixed_ms: LATENCY_MS }), ..Faults::default() },
        ..SimConfig::default()
    })
    .await;
    let mut settings = settings_for(&sim.url());
    settings.max_concurrency = LIMIT;
    let (client, _) = client_with(settings);

    let started = std::time::Instant::now();
    let calls = (0..CALLS).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.call(&add_request()).await.map(|s| s.attempts) })
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.expect("the task completes").expect("the call succeeds"), 1);
    }
    let elapsed = started.elapsed();

    let log = sim.requests();
    assert_eq!(log.len(), CALLS);
    let arrivals: Vec<SystemTime> = log
        .iter()
        .map(|r| humantime::parse_rfc3339(&r.received_at).expect("an RFC 3339 timestamp"))
        .collect();
    // The log has millisecond resolution; allow for its rounding.
    let min_gap = Duration::from_millis(LATENCY_MS - 2);
    for (i, pair) in arrivals.windows(LIMIT + 1).enumerate() {
        let gap = pair[LIMIT].duration_since(pair[0]).unwrap_or_default();
        assert!(gap >= min_gap, "requests {i}..={} arrived within {gap:?}", i + LIMIT);
    }
    // And the limit is not stricter than asked: N at a time, so about CALLS/N rounds.
    let rounds = (CALLS / LIMIT) as u32;
    assert!(elapsed >= Duration::from_millis(LATENCY_MS) * rounds);
    assert!(elapsed < Duration::from_millis(LATENCY_MS) * (rounds * 3), "{elapsed:?}");
}

fn arrivals(sim: &SimHandle) -> Vec<SystemTime> {
    sim.requests()
        .iter()
        .map(|r| humantime::parse_rfc3339(&r.received_at).expect("an RFC 3339 timestamp"))
        .collect()
}

/// A 429 with Retry-After stops every request to the endpoint for that long, not only the one
/// that heard it: the next call, made at once, reaches SCWM only after the pause.
#[tokio::test]
async fn a_429_with_retry_after_pauses_the_whole_endpoint() {
    let sim = start_sim(SimConfig {
        faults: fail_next(1, Failure::RateLimited { retry_after_secs: 1 }),
        ..SimConfig::default()
    })
    .await;
    let mut settings = settings_for(&sim.url());
    settings.retry.max_attempts = 1;
    let (client, _) = client_with(settings);
    let refused = call_err(&client, &add_request()).await;
    assert_eq!(refused.error.status(), Some(429));
    call_ok(&client, &add_request()).await;
    let at = arrivals(&sim);
    assert_eq!(at.len(), 2);
    let gap = at[1].duration_since(at[0]).unwrap_or_default();
    // The log has millisecond resolution.
    assert!(gap >= Duration::from_millis(995), "the second request came {gap:?} after the 429");
}

/// The token bucket: after the burst, requests reach SCWM no faster than the rate, however many
/// callers are waiting.
#[tokio::test]
async fn the_rate_limit_spaces_requests_out() {
    const RATE: f64 = 20.0;
    const CALLS: usize = 12;
    let sim = start_sim(SimConfig::default()).await;
    let mut settings = settings_for(&sim.url());
    settings.rate_limit = RateLimit { per_second: RATE, burst: 2 };
    let (client, _) = client_with(settings);
    let calls = (0..CALLS).map(|_| {
        let client = client.clone();
        tokio::spawn(async move { client.call(&add_request()).await.map(|s| s.attempts) })
    });
    for result in futures::future::join_all(calls).await {
        assert_eq!(result.expect("the task completes").expect("the call succeeds"), 1);
    }
    let at = arrivals(&sim);
    assert_eq!(at.len(), CALLS);
    // Beyond the burst of 2, the k-th further request waits k tokens: at 20/s, k * 50 ms.
    let spread = at[CALLS - 1].duration_since(at[0]).unwrap_or_default();
    let least = Duration::from_secs_f64((CALLS - 2) as f64 / RATE) - Duration::from_millis(5);
    assert!(spread >= least, "{CALLS} requests within {spread:?}, at least {least:?} expected");
}

/// A call that rides out an open circuit is held, not failed, and sent once the circuit's trial
/// lets it through; a plain call meets the open circuit at once.
#[tokio::test]
async fn a_call_riding_out_an_open_circuit_is_sent_when_it_half_opens() {
    let sim = start_sim(SimConfig {
        faults: Faults { error_rate: 1.0, error: Failure::SERVICE_UNAVAILABLE, ..Faults::default() },
        ..SimConfig::default()
    })
    .await;
    let mut settings = settings_for(&sim.url());
    settings.breaker.minimum_calls = 2;
    settings.breaker.open_for = Duration::from_millis(300);
    settings.retry.max_attempts = 1;
    let (client, _) = client_with(settings);
    for _ in 0..2 {
        call_err(&client, &add_request()).await;
    }
    assert_eq!(client.circuit_state(), CircuitState::Open);
    assert_eq!(call_err(&client, &add_request()).await.error.kind(), "circuit_open");
    sim.set_faults(Faults::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let success = tokio::time::timeout(Duration::from_secs(5), client.call_riding_out(&add_request(), &stop))
        .await
        .expect("the held call ends once the circuit half-opens")
        .expect("and succeeds");
    assert_eq!(success.attempts, 1);
    assert_eq!(sim.requests().len(), 3, "nothing was sent while the circuit was open");

    // A stop ends the wait: the call reports the open circuit.
    sim.set_faults(Faults { error_rate: 1.0, error: Failure::SERVICE_UNAVAILABLE, ..Faults::default() });
    while client.circuit_state() != CircuitState::Open {
        let _ = client.call(&add_request()).await;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let held = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move { client.call_riding_out(&add_request(), &stop).await })
    };
    stop.cancel();
    let failure =
        tokio::time::timeout(Duration::from_secs(5), held).await.expect("ends").expect("ran").unwrap_err();
    assert_eq!(failure.error.kind(), "circuit_open");
}
