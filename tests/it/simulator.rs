//! The SCWM simulator over real sockets: every operation, every contract error, licensePlate
//! replay, each fault kind, the inspection endpoints, and stopping and restarting the server.

use std::{net::SocketAddr, time::Duration};

use incident_bridge::{
    ids::LicensePlate,
    scwm::{
        Operation, RequestEnvelope, RequestHeader, ResponseEnvelope, envelope::DEFAULT_RESPONSE_EVENT_NAME,
    },
    secret::Secret,
    sim::{
        Failure, Faults, Incident, IncidentStatus, Latency, RecordedRequest, SimConfig, SimHandle, Simulator,
        router,
    },
};
use reqwest::{Client, StatusCode, header};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Upper bound for anything a test awaits; nothing should come near it.
const WAIT: Duration = Duration::from_secs(10);

const OWNER: &str = "OWNER_ID";

async fn start(config: SimConfig) -> SimHandle {
    Simulator::start(config, local_any_port()).await.expect("simulator starts")
}

fn local_any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn client() -> Client {
    Client::builder().timeout(WAIT).build().expect("client")
}

fn envelope(op: Operation, payload: Value) -> RequestEnvelope {
    let Value::Object(payload) = payload else {
        panic!("payload must be an object");
    };
    RequestEnvelope {
        header: RequestHeader {
            header_version: 1,
            event_name: op.default_event_name().to_owned(),
            owner_id: OWNER.to_owned(),
            license_plate: LicensePlate::generate(),
        },
        payload,
    }
}

/// A decoded answer: HTTP status, the envelope, and the raw bytes.
struct Answer {
    status: StatusCode,
    headers: header::HeaderMap,
    envelope: ResponseEnvelope,
}

impl Answer {
    fn id(&self) -> String {
        self.envelope.item_id().expect("payload.id").to_string()
    }

    fn err_code(&self) -> &str {
        &self.envelope.header().err_code
    }

    fn message(&self) -> &str {
        self.envelope.payload()["message"].as_str().unwrap_or("")
    }
}

async fn post_raw(url: &str, body: &RequestEnvelope) -> reqwest::Response {
    client().post(url).json(body).send().await.expect("the simulator answers")
}

async fn decode(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("body");
    let envelope = ResponseEnvelope::parse(body).expect("an envelope");
    Answer { status, headers, envelope }
}

async fn call(sim: &SimHandle, body: &RequestEnvelope) -> Answer {
    decode(post_raw(&sim.url(), body).await).await
}

async fn op(sim: &SimHandle, op: Operation, payload: Value) -> Answer {
    call(sim, &envelope(op, payload)).await
}

async fn add(sim: &SimHandle, fields: Value) -> String {
    let answer = op(sim, Operation::Add, fields).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.message());
    answer.id()
}

fn incident(sim: &SimHandle, id: &str) -> Incident {
    sim.incidents().into_iter().find(|i| i.id.as_str() == id).expect("incident exists")
}

async fn get_json<T: serde::de::DeserializeOwned>(sim: &SimHandle, path: &str) -> T {
    client()
        .get(format!("{}{path}", sim.base_url()))
        .send()
        .await
        .expect("answer")
        .error_for_status()
        .expect("success")
        .json()
        .await
        .expect("json")
}

#[tokio::test]
async fn every_operation_round_trips_with_a_contract_envelope() {
    let sim = start(SimConfig::default()).await;

    let add_request = envelope(Operation::Add, json!({"title": "disk full", "severity": "minor"}));
    let added = call(&sim, &add_request).await;
    assert_eq!(added.status, StatusCode::OK);
    assert_eq!(added.headers[header::CONTENT_TYPE], "application/json", "answers are JSON");
    let header = added.envelope.header();
    assert_eq!(header.header_version, Some(1));
    assert_eq!(header.event_name, DEFAULT_RESPONSE_EVENT_NAME);
    assert_eq!(header.owner_id, OWNER);
    assert!(!header.is_err);
    assert_eq!(header.err_code, "200_OK");
    assert_eq!(header.license_plate, add_request.header.license_plate.as_str());
    let id = added.id();
    assert_eq!(id, "IT-000001");

    let edited = op(&sim, Operation::Edit, json!({"id": id, "severity": "major"})).await;
    assert_eq!(edited.envelope.payload(), &json!({"id": id}));

    let copied = op(&sim, Operation::Copy, json!({"id": id, "title": "copy"})).await;
    assert_eq!(copied.id(), "IT-000002");

    let submitted =
        op(&sim, Operation::Submit, json!({"id": id, "partnerId": "P-1", "note": "over to you"})).await;
    assert_eq!(submitted.envelope.payload(), &json!({"id": id}));

    let closed =
        op(&sim, Operation::Close, json!({"id": id, "resolution": "fixed", "closeNotes": "freed space"}))
            .await;
    assert_eq!(closed.envelope.payload(), &json!({"id": id}));

    let read = op(&sim, Operation::Read, json!({"id": id})).await;
    let mut payload = read.envelope.payload().clone();
    let closed_at = payload.as_object_mut().and_then(|p| p.remove("closedAt"));
    assert!(
        closed_at.as_ref().and_then(Value::as_str).is_some_and(|at| at.ends_with('Z')),
        "a closed incident says when it was closed: {closed_at:?}"
    );
    assert_eq!(
        payload,
        json!({"id": id, "title": "disk full", "severity": "major", "status": "closed",
               "partnerId": "P-1", "resolution": "fixed", "closeNotes": "freed space"})
    );

    let reopened = op(&sim, Operation::Reopen, json!({"id": id, "reason": "came back"})).await;
    assert_eq!(reopened.envelope.payload(), &json!({"id": id}));
    let read = op(&sim, Operation::Read, json!({"id": id})).await;
    assert_eq!(read.envelope.payload()["status"], "open");

    let original = incident(&sim, &id);
    assert_eq!(original.status, IncidentStatus::Open);
    assert_eq!(original.partner_id, Some(json!("P-1")));
    assert_eq!(original.note, Some(json!("over to you")));
    assert_eq!(original.reopen_reason, Some(json!("came back")));
    let copy = incident(&sim, "IT-000002");
    assert_eq!(copy.copied_from.map(|c| c.to_string()), Some(id));
    assert_eq!(Value::Object(copy.fields), json!({"title": "copy", "severity": "major"}));
}

#[tokio::test]
async fn close_records_resolution_notes_and_time() {
    let sim = start(SimConfig::default()).await;
    let id = add(&sim, json!({})).await;
    op(&sim, Operation::Close, json!({"id": id, "resolution": "fixed", "closeNotes": "n"})).await;
    let closed = incident(&sim, &id);
    assert_eq!(closed.status, IncidentStatus::Closed);
    assert_eq!(closed.resolution, Some(json!("fixed")));
    assert_eq!(closed.close_notes, Some(json!("n")));
    let closed_at = closed.closed_at.expect("closedAt");
    assert!(humantime::parse_rfc3339(&closed_at).is_ok(), "{closed_at}");
}

#[tokio::test]
async fn the_operation_is_chosen_by_event_name_not_by_path() {
    let sim = start(SimConfig::default()).await;
    let request = envelope(Operation::Add, json!({"title": "t"}));
    for path in ["/", "/close-incident", "/deep/per/operation/url?tenant=a"] {
        let answer = decode(post_raw(&format!("{}{path}", sim.base_url()), &request).await).await;
        assert_eq!(answer.status, StatusCode::OK, "{path}");
    }
    assert_eq!(sim.incidents().len(), 1, "one licensePlate, one incident");
    let paths: Vec<_> = sim.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/", "/close-incident", "/deep/per/operation/url?tenant=a"]);
}

#[tokio::test]
async fn requests_without_the_configured_basic_token_are_unauthorized() {
    let sim = start(SimConfig { token: Some(Secret::new("s3cret")), ..SimConfig::default() }).await;
    let request = envelope(Operation::Add, json!({}));
    for authorization in
        [None, Some("Basic wrong"), Some("Bearer s3cret"), Some("Basic s3cre"), Some("s3cret")]
    {
        let mut builder = client().post(sim.url()).json(&request);
        if let Some(value) = authorization {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        let answer = decode(builder.send().await.expect("answer")).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert!(answer.envelope.header().is_err);
        assert_eq!(answer.err_code(), "401_UNAUTHORIZED");
        assert_eq!(
            answer.envelope.header().license_plate,
            request.header.license_plate.as_str(),
            "even a refusal echoes the licensePlate"
        );
    }
    assert!(sim.incidents().is_empty());

    let answer = decode(
        client()
            .post(sim.url())
            .header(header::AUTHORIZATION, "Basic s3cret")
            .json(&request)
            .send()
            .await
            .expect("answer"),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(sim.incidents().len(), 1, "a refused request is not remembered");
}

#[tokio::test]
async fn malformed_envelopes_are_bad_requests() {
    let sim = start(SimConfig::default()).await;
    let bodies = [
        "not json at all".to_owned(),
        "[]".to_owned(),
        json!({"payload": {}}).to_string(),
        json!({"header": "agile-process-teams:add-incident:v3", "payload": {}}).to_string(),
        json!({"header": {"eventName": "agile-process-teams:add-incident:v3", "licensePlate": "P"}})
            .to_string(),
        json!({"header": {"licensePlate": "P"}, "payload": {}}).to_string(),
        json!({"header": {"eventName": "agile-process-teams:add-incident:v3"}, "payload": {}}).to_string(),
    ];
    for body in bodies {
        let response = client()
            .post(sim.url())
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("answer");
        let answer = decode(response).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(answer.err_code(), "400_BAD_REQUEST", "{body}");
        assert!(!answer.message().is_empty(), "{body}");
    }
    assert!(sim.incidents().is_empty());
}

#[tokio::test]
async fn an_unknown_event_name_is_a_bad_request() {
    let sim = start(SimConfig::default()).await;
    let mut request = envelope(Operation::Add, json!({}));
    request.header.event_name = "agile-process-teams:delete-incident:v3".into();
    let answer = call(&sim, &request).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.message().contains("delete-incident"), "{}", answer.message());
}

#[tokio::test]
async fn operations_on_an_item_without_an_id_are_bad_requests() {
    let sim = start(SimConfig::default()).await;
    for operation in [
        Operation::Edit,
        Operation::Copy,
        Operation::Close,
        Operation::Reopen,
        Operation::Submit,
        Operation::Read,
    ] {
        let answer = op(&sim, operation, json!({"partnerId": "P"})).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{operation}");
        assert!(answer.message().contains("payload.id"), "{}", answer.message());
    }
}

#[tokio::test]
async fn submit_without_a_partner_is_a_bad_request() {
    let sim = start(SimConfig::default()).await;
    let id = add(&sim, json!({})).await;
    let answer = op(&sim, Operation::Submit, json!({"id": id, "note": "n"})).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert!(answer.message().contains("partnerId"));
}

#[tokio::test]
async fn an_unknown_id_is_not_found() {
    let sim = start(SimConfig::default()).await;
    let answer = op(&sim, Operation::Edit, json!({"id": "IT-424242", "title": "x"})).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
    assert_eq!(answer.err_code(), "404_NOT_FOUND");
    assert!(answer.message().contains("IT-424242"));
}

#[tokio::test]
async fn closing_a_closed_incident_and_reopening_an_open_one_conflict() {
    let sim = start(SimConfig::default()).await;
    let id = add(&sim, json!({})).await;

    let reopen = op(&sim, Operation::Reopen, json!({"id": id, "reason": "r"})).await;
    assert_eq!(reopen.status, StatusCode::CONFLICT);
    assert_eq!(reopen.err_code(), "409_CONFLICT");

    assert_eq!(op(&sim, Operation::Close, json!({"id": id})).await.status, StatusCode::OK);
    let close = op(&sim, Operation::Close, json!({"id": id})).await;
    assert_eq!(close.status, StatusCode::CONFLICT);
    assert_eq!(close.err_code(), "409_CONFLICT");
}

#[tokio::test]
async fn errors_in_http_200_mode_reports_errors_in_a_200_envelope() {
    let sim =
        start(SimConfig { errors_in_http_200: true, token: Some(Secret::new("t")), ..SimConfig::default() })
            .await;
    let unauthorized = op(&sim, Operation::Add, json!({})).await;
    assert_eq!(unauthorized.status, StatusCode::OK);
    assert!(unauthorized.envelope.header().is_err);
    assert_eq!(unauthorized.err_code(), "401_UNAUTHORIZED");

    let response = client()
        .post(sim.url())
        .header(header::AUTHORIZATION, "Basic t")
        .json(&envelope(Operation::Read, json!({"id": "IT-000009"})))
        .send()
        .await
        .expect("answer");
    let not_found = decode(response).await;
    assert_eq!(not_found.status, StatusCode::OK);
    assert!(not_found.envelope.header().is_err);
    assert_eq!(not_found.envelope.header().err_status(), Some(404));
}

#[tokio::test]
async fn a_repeated_license_plate_gets_the_identical_answer_and_has_one_effect() {
    let sim = start(SimConfig::default()).await;
    let request = envelope(Operation::Add, json!({"title": "once"}));
    let first = post_raw(&sim.url(), &request).await;
    let (first_status, first_body) = (first.status(), first.bytes().await.expect("body"));

    // Even a retry with a different payload is the same logical request.
    let mut retry = request.clone();
    retry.header.owner_id = "SOMEONE_ELSE".into();
    retry.payload.insert("title".into(), json!("twice"));
    let second = post_raw(&sim.url(), &retry).await;
    assert_eq!(second.status(), first_status);
    assert_eq!(second.bytes().await.expect("body"), first_body);

    assert_eq!(sim.incidents().len(), 1);
    assert_eq!(incident(&sim, "IT-000001").fields["title"], "once");
    let log = sim.requests();
    assert_eq!(log.iter().map(|r| r.duplicate).collect::<Vec<_>>(), [false, true]);
}

#[tokio::test]
async fn concurrent_requests_with_one_license_plate_add_one_incident() {
    let sim = start(SimConfig::default()).await;
    let request = envelope(Operation::Add, json!({"title": "raced"}));
    let url = sim.url();
    let bodies = futures::future::join_all((0..8).map(|_| async {
        let response = post_raw(&url, &request).await;
        response.bytes().await.expect("body")
    }))
    .await;
    assert!(bodies.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(sim.incidents().len(), 1);
    let originals = sim.requests().iter().filter(|r| !r.duplicate).count();
    assert_eq!(originals, 1);
}

#[tokio::test]
async fn a_repeated_license_plate_replays_an_error_answer_too() {
    let sim = start(SimConfig::default()).await;
    let id = add(&sim, json!({})).await;
    let close = envelope(Operation::Close, json!({"id": id}));
    assert_eq!(call(&sim, &close).await.status, StatusCode::OK);
    let reopen = envelope(Operation::Reopen, json!({"id": id}));
    assert_eq!(call(&sim, &reopen).await.status, StatusCode::OK);
    // A retry of the close must not close the reopened incident again.
    let again = call(&sim, &close).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(incident(&sim, &id).status, IncidentStatus::Open);
}

async fn answer_under(failure: Failure) -> (SimHandle, reqwest::Response, RequestEnvelope) {
    let sim = start(SimConfig {
        faults: Faults { fail_next: 1, fail_next_with: failure, ..Faults::default() },
        ..SimConfig::default()
    })
    .await;
    let request = envelope(Operation::Add, json!({}));
    let response = post_raw(&sim.url(), &request).await;
    (sim, response, request)
}

#[tokio::test]
async fn a_status_fault_answers_that_status_with_an_error_envelope() {
    let (sim, response, request) = answer_under(Failure::Status { status: 503 }).await;
    let answer = decode(response).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.envelope.header().is_err);
    assert_eq!(answer.err_code(), "503_SERVICE_UNAVAILABLE");
    assert_eq!(answer.envelope.header().license_plate, request.header.license_plate.as_str());
    assert!(sim.incidents().is_empty(), "an injected failure has no effect");
    assert_eq!(sim.requests()[0].fault.as_deref(), Some("status"));
}

#[tokio::test]
async fn a_status_in_200_fault_answers_200_with_an_error_envelope() {
    let (sim, response, _) = answer_under(Failure::StatusIn200 { status: 500 }).await;
    let answer = decode(response).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.envelope.header().is_err);
    assert_eq!(answer.err_code(), "500_INTERNAL_SERVER_ERROR");
    assert_eq!(sim.requests()[0].fault.as_deref(), Some("status_in_200"));
}

#[tokio::test]
async fn a_rate_limited_fault_answers_429_with_retry_after() {
    let (_sim, response, _) = answer_under(Failure::RateLimited { retry_after_secs: 7 }).await;
    let answer = decode(response).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.headers[header::RETRY_AFTER], "7");
    assert_eq!(answer.err_code(), "429_TOO_MANY_REQUESTS");
}

#[tokio::test]
async fn a_not_json_fault_answers_an_html_page() {
    let (_sim, response, _) = answer_under(Failure::NotJson { status: 502 }).await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    assert!(response.headers()[header::CONTENT_TYPE].to_str().expect("ascii").starts_with("text/html"));
    let body = response.bytes().await.expect("body");
    assert!(serde_json::from_slice::<Value>(&body).is_err());
    assert!(ResponseEnvelope::parse(body).is_err());
}

#[tokio::test]
async fn a_drop_connection_fault_makes_the_response_body_fail() {
    let (sim, response, _) = answer_under(Failure::DropConnection).await;
    assert!(response.bytes().await.is_err(), "the body must break off, not complete");
    assert_eq!(sim.requests()[0].fault.as_deref(), Some("drop_connection"));
    assert!(sim.incidents().is_empty());
}

#[tokio::test]
async fn fail_next_fails_that_many_requests_then_succeeds_once() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Faults { fail_next: 2, ..Faults::default() });
    // A client retrying with one licensePlate: failures are not remembered for replay.
    let request = envelope(Operation::Add, json!({"title": "t"}));
    let statuses = [
        call(&sim, &request).await.status,
        call(&sim, &request).await.status,
        call(&sim, &request).await.status,
        call(&sim, &request).await.status,
    ];
    assert_eq!(
        statuses,
        [StatusCode::SERVICE_UNAVAILABLE, StatusCode::SERVICE_UNAVAILABLE, StatusCode::OK, StatusCode::OK]
    );
    assert_eq!(sim.incidents().len(), 1);
    assert_eq!(sim.faults().fail_next, 0);
    let log = sim.requests();
    let faults: Vec<_> = log.iter().map(|r| r.fault.as_deref()).collect();
    assert_eq!(faults, [Some("status"), Some("status"), None, None]);
    let duplicates: Vec<_> = log.iter().map(|r| r.duplicate).collect();
    assert_eq!(duplicates, [false, false, false, true]);
}

#[tokio::test]
async fn an_error_rate_of_one_fails_every_request() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Faults { error_rate: 1.0, error: Failure::Status { status: 500 }, ..Faults::default() });
    for _ in 0..5 {
        let answer = op(&sim, Operation::Add, json!({})).await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert!(sim.incidents().is_empty());
}

#[tokio::test]
async fn latency_holds_the_answer_past_a_client_timeout() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Faults { latency: Some(Latency::Fixed { fixed_ms: 5_000 }), ..Faults::default() });
    let impatient = Client::builder().timeout(Duration::from_millis(100)).build().expect("client");
    let err = impatient
        .post(sim.url())
        .json(&envelope(Operation::Add, json!({})))
        .send()
        .await
        .expect_err("the answer takes longer than the client waits");
    assert!(err.is_timeout(), "{err}");
    let log = sim.wait_for_requests(1, WAIT).await.expect("logged");
    assert_eq!(log.len(), 1, "the request was logged on arrival");
}

#[tokio::test]
async fn faults_can_be_read_and_replaced_over_http() {
    let sim = start(SimConfig::default()).await;
    let faults_url = format!("{}/_sim/faults", sim.base_url());
    let current: Faults = get_json(&sim, "/_sim/faults").await;
    assert_eq!(current, Faults::default());

    let plan = json!({"fail_next": 1, "fail_next_with": {"kind": "rate_limited", "retry_after_secs": 2}});
    let response = client().post(&faults_url).json(&plan).send().await.expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    let installed = sim.faults();
    assert_eq!(installed.fail_next, 1);

    let answer = op(&sim, Operation::Add, json!({})).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(op(&sim, Operation::Add, json!({})).await.status, StatusCode::OK);

    let bad = client().post(&faults_url).json(&json!({"error_rate": 3})).send().await.expect("answer");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    assert_eq!(bad.headers()[header::CONTENT_TYPE], "application/problem+json");
    let problem: Value = bad.json().await.expect("problem json");
    assert_eq!(problem["status"], 400);
    assert!(problem["detail"].as_str().unwrap_or("").contains("error_rate"));
    assert_eq!(sim.faults(), Faults { fail_next: 0, ..installed }, "a bad plan changes nothing");
}

#[tokio::test]
async fn reset_over_http_clears_incidents_requests_faults_and_ids() {
    let sim = start(SimConfig::default()).await;
    let request = envelope(Operation::Add, json!({}));
    call(&sim, &request).await;
    sim.set_faults(Faults { fail_next: 5, ..Faults::default() });

    let response = client().post(format!("{}/_sim/reset", sim.base_url())).send().await.expect("answer");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(sim.incidents().is_empty());
    assert!(sim.requests().is_empty());
    assert_eq!(sim.faults(), Faults::default());

    // The old licensePlate is forgotten too, so it adds again, under the first id.
    let again = call(&sim, &request).await;
    assert_eq!(again.id(), "IT-000001");
    assert!(!sim.requests()[0].duplicate);
    assert_eq!(sim.requests()[0].seq, 1);
}

#[tokio::test]
async fn the_request_log_records_order_headers_bodies_and_answers() {
    let sim = start(SimConfig::default()).await;
    let request = envelope(Operation::Add, json!({"title": "first"}));
    client()
        .post(sim.url())
        .header("x-trace", "abc")
        .header(header::AUTHORIZATION, "Basic anything")
        .json(&request)
        .send()
        .await
        .expect("answer");
    client().post(format!("{}/other", sim.base_url())).body("plain text").send().await.expect("answer");

    let log: Vec<RecordedRequest> = get_json(&sim, "/_sim/requests").await;
    assert_eq!(log, sim.requests());
    assert_eq!(log.len(), 2);

    let first = &log[0];
    assert_eq!((first.seq, first.method.as_str(), first.path.as_str()), (1, "POST", "/incident"));
    assert!(humantime::parse_rfc3339(&first.received_at).is_ok());
    let header = |name: &str| first.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
    assert_eq!(header("x-trace"), Some("abc"));
    assert_eq!(header("authorization"), Some("Basic anything"));
    assert_eq!(header("content-type"), Some("application/json"));
    assert_eq!(first.body, serde_json::to_value(&request).expect("json"));
    assert_eq!(first.status, Some(200));
    assert_eq!((first.fault.as_deref(), first.duplicate), (None, false));

    let second = &log[1];
    assert_eq!((second.seq, second.path.as_str()), (2, "/other"));
    assert_eq!(second.body, json!("plain text"));
    assert_eq!(second.status, Some(400));
}

#[tokio::test]
async fn the_inspection_endpoint_lists_incidents_in_id_order() {
    let sim = start(SimConfig::default()).await;
    for title in ["a", "b", "c"] {
        add(&sim, json!({"title": title})).await;
    }
    let listed: Vec<Incident> = get_json(&sim, "/_sim/incidents").await;
    let ids: Vec<_> = listed.iter().map(|i| i.id.to_string()).collect();
    assert_eq!(ids, ["IT-000001", "IT-000002", "IT-000003"]);
    assert_eq!(listed, sim.incidents());
}

#[tokio::test]
async fn wait_for_requests_wakes_when_requests_arrive_and_times_out_otherwise() {
    let sim = start(SimConfig::default()).await;
    let waiting = tokio::spawn({
        let state = sim.state();
        async move { state.wait_for_requests(2, WAIT).await }
    });
    op(&sim, Operation::Add, json!({})).await;
    op(&sim, Operation::Add, json!({})).await;
    let log = waiting.await.expect("task").expect("two requests arrive");
    assert_eq!(log.len(), 2);

    assert!(sim.wait_for_requests(3, Duration::from_millis(50)).await.is_err());
}

#[tokio::test]
async fn configured_event_names_and_response_event_name_are_used() {
    let sim = start(SimConfig {
        response_event_name: "tenant:response:v1".into(),
        event_names: vec![("tenant:create:v1".into(), Operation::Add)],
        ..SimConfig::default()
    })
    .await;
    let mut request = envelope(Operation::Add, json!({}));
    request.header.event_name = "tenant:create:v1".into();
    let answer = call(&sim, &request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.envelope.header().event_name, "tenant:response:v1");

    let default_name = op(&sim, Operation::Add, json!({})).await;
    assert_eq!(default_name.status, StatusCode::BAD_REQUEST);
}

async fn connection_refused(addr: SocketAddr) -> bool {
    matches!(
        tokio::net::TcpStream::connect(addr).await,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
    )
}

#[tokio::test]
async fn stop_refuses_connections_and_serving_the_same_state_again_brings_it_back() {
    let sim = start(SimConfig::default()).await;
    let id = add(&sim, json!({"title": "survives"})).await;
    let (state, addr) = (sim.state(), sim.addr());

    tokio::time::timeout(WAIT, sim.stop()).await.expect("stops promptly").expect("served cleanly");
    assert!(connection_refused(addr).await);

    let listener = tokio::net::TcpListener::bind(addr).await.expect("the address is free again");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(Simulator::serve(state.clone(), listener, shutdown.clone()));
    let listed: Vec<Incident> = client()
        .get(format!("http://{addr}/_sim/incidents"))
        .send()
        .await
        .expect("back up")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id.to_string(), id);
    assert_eq!(listed[0].fields["title"], "survives");

    shutdown.cancel();
    tokio::time::timeout(WAIT, server).await.expect("stops promptly").expect("task").expect("served cleanly");
    assert!(connection_refused(addr).await);

    let again = Simulator::start_with_state(state, addr).await.expect("restart");
    let read = op(&again, Operation::Read, json!({"id": id})).await;
    assert_eq!(read.envelope.payload()["title"], "survives");
}

#[tokio::test]
async fn stop_does_not_wait_for_a_request_held_by_latency() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(Faults { latency: Some(Latency::Fixed { fixed_ms: 60_000 }), ..Faults::default() });
    let pending = tokio::spawn(client().post(sim.url()).json(&envelope(Operation::Add, json!({}))).send());
    sim.wait_for_requests(1, WAIT).await.expect("arrived");
    tokio::time::timeout(WAIT, sim.stop())
        .await
        .expect("stop does not wait out the latency")
        .expect("served cleanly");
    let outcome = tokio::time::timeout(WAIT, pending).await.expect("the client hears back").expect("task");
    match outcome {
        Err(_) => {}
        Ok(response) => assert!(response.bytes().await.is_err()),
    }
}

#[tokio::test]
async fn the_router_answers_without_a_socket() {
    use tower::ServiceExt;

    let state = Simulator::new_state(SimConfig::default());
    let request = envelope(Operation::Add, json!({"title": "in memory"}));
    let http_request = axum::http::Request::post("/incident")
        .header(header::CONTENT_TYPE, "application/json")
        .body(axum::body::Body::from(serde_json::to_vec(&request).expect("json")))
        .expect("request");
    let response = router(state.clone()).oneshot(http_request).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
    let answer = ResponseEnvelope::parse(body).expect("envelope");
    assert_eq!(answer.item_id().map(|id| id.to_string()).as_deref(), Some("IT-000001"));
    assert_eq!(state.incidents()[0].fields["title"], "in memory");
}

#[tokio::test]
async fn a_person_acts_on_incidents_over_http_and_the_bridge_s_log_stays_untouched() {
    let sim = start(SimConfig::default()).await;
    let id = call(&sim, &envelope(Operation::Add, json!({"title": "t"}))).await.id().to_owned();
    let act = |id: String, body: Value| {
        let url = format!("{}/_sim/incidents/{id}", sim.base_url());
        async move { client().post(url).json(&body).send().await.expect("answer") }
    };

    let closed = act(id.clone(), json!({"action": "close", "resolution": "won't fix"})).await;
    assert_eq!(closed.status(), StatusCode::OK);
    let closed: Incident = closed.json().await.unwrap();
    assert_eq!(closed.status, IncidentStatus::Closed);
    assert_eq!(closed.resolution, Some(json!("won't fix")));
    let again = act(id.clone(), json!({"action": "close"})).await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(again.headers()[header::CONTENT_TYPE], "application/problem+json");

    let moved: Incident = act(id.clone(), json!({"action": "renumber"})).await.json().await.unwrap();
    assert_ne!(moved.id.as_str(), id);
    let read = call(&sim, &envelope(Operation::Read, json!({"id": id}))).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND, "the old id is gone");

    assert_eq!(act(moved.id.to_string(), json!({"action": "delete"})).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(act(moved.id.to_string(), json!({"action": "reopen"})).await.status(), StatusCode::NOT_FOUND);
    assert_eq!(act(id, json!({"action": "fly"})).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.request_count(), 2, "only the bridge's add and read are in the log");
}
