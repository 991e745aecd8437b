//! Native commands over HTTP, end to end: a real bridge and a real simulator on loopback.

use std::{collections::BTreeMap, time::Duration};

use crate::kit::{TestApp, within};
use incident_bridge::{
    publish::Published,
    sim::{Failure, Faults, Latency},
};
use serde_json::{Value, json};

async fn json_of(resp: reqwest::Response) -> Value {
    resp.json().await.expect("JSON body")
}

async fn add(app: &TestApp, title: &str) -> String {
    let resp = app.command("add", json!({"title": title})).await;
    assert_eq!(resp.status(), 200);
    json_of(resp).await["payload"]["id"].as_str().expect("new id").to_owned()
}

#[tokio::test]
async fn every_operation_round_trips_through_the_bridge_to_the_simulator() {
    let mut app = TestApp::start().await;

    let resp = app.command("add", json!({"title": "disk full", "severity": "high"})).await;
    assert_eq!(resp.status(), 200);
    let plate = resp.headers()["license-plate"].to_str().unwrap().to_owned();
    let body = json_of(resp).await;
    assert_eq!(body["header"]["isErr"], false);
    assert_eq!(body["header"]["errCode"], "200_OK");
    assert_eq!(body["header"]["licensePlate"], plate);
    assert_eq!(body["header"]["eventName"], "agile-process-teams:add-change-response:v3");
    let id = body["payload"]["id"].as_str().unwrap().to_owned();

    let Published::Result(result) = app.next_published().await else { panic!("expected a result") };
    assert_eq!(result.license_plate.as_str(), plate);
    assert_eq!(result.item_id.as_ref().map(|i| i.as_str()), Some(id.as_str()));
    assert_eq!(serde_json::from_str::<Value>(result.header.get()).unwrap(), body["header"]);

    let ok = |v: &Value| v["header"]["isErr"] == false;
    let edited = json_of(app.command("edit", json!({"id": id, "title": "disk very full"})).await).await;
    assert!(ok(&edited), "{edited}");
    let copied = json_of(app.command("copy", json!({"id": id})).await).await;
    let copy_id = copied["payload"]["id"].as_str().unwrap();
    assert_ne!(copy_id, id);
    let submitted =
        json_of(app.command("submit", json!({"id": id, "partnerId": "P-7", "note": "yours"})).await).await;
    assert!(ok(&submitted), "{submitted}");
    let closed = json_of(
        app.command("close", json!({"id": id, "resolution": "fixed", "closeNotes": "rm -rf /tmp"})).await,
    )
    .await;
    assert!(ok(&closed), "{closed}");
    let read = json_of(app.command("read", json!({"id": id})).await).await;
    assert_eq!(read["payload"]["status"], "closed");
    assert_eq!(read["payload"]["title"], "disk very full");
    assert_eq!(read["payload"]["partnerId"], "P-7");
    let reopened = json_of(app.command("reopen", json!({"id": id, "reason": "again"})).await).await;
    assert!(ok(&reopened), "{reopened}");

    let requests = app.sim.requests();
    let events: Vec<&str> =
        requests.iter().map(|r| r.body["header"]["eventName"].as_str().unwrap_or("")).collect();
    assert_eq!(
        events,
        [
            "agile-process-teams:add-incident:v3",
            "agile-process-teams:edit-incident:v3",
            "agile-process-teams:copy-incident:v3",
            "agile-process-teams:submit-incident-to-partner:v3",
            "agile-process-teams:close-incident:v3",
            "agile-process-teams:read-incident:v3",
            "agile-process-teams:reopen-incident:v3",
        ]
    );
    for r in &requests {
        assert_eq!(r.body["header"]["ownerId"], "TEST_OWNER");
        let auth =
            r.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("authorization")).map(|(_, v)| v.as_str());
        assert_eq!(auth, Some(format!("Basic {}", crate::kit::TOKEN).as_str()));
    }
    let plates: std::collections::HashSet<_> =
        requests.iter().map(|r| r.body["header"]["licensePlate"].as_str().unwrap().to_owned()).collect();
    assert_eq!(plates.len(), requests.len(), "every request has its own licensePlate");
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_scwm_error_answers_with_its_envelope_and_status_and_is_dead_lettered() {
    let mut app = TestApp::start().await;
    let resp = app.command("edit", json!({"id": "IT-999999", "title": "x"})).await;
    assert_eq!(resp.status(), 404);
    let body = json_of(resp).await;
    assert_eq!(body["header"]["isErr"], true);
    assert_eq!(body["header"]["errCode"], "404_NOT_FOUND");
    assert_eq!(app.sim.requests().len(), 1, "a permanent error is not retried");

    let Published::Result(result) = app.next_published().await else { panic!("expected a result first") };
    assert!(result.is_err);
    let Published::DeadLetter(letter) = app.next_published().await else { panic!("expected a dead letter") };
    assert_eq!(letter.reason_kind, "scwm_rejected");
    assert_eq!(letter.attempts, 1);
    assert_eq!(&letter.original.body[..], br#"{"id":"IT-999999","title":"x"}"#);
    app.stop().await;
}

#[tokio::test]
async fn closing_a_closed_incident_answers_409_from_scwm() {
    let app = TestApp::start().await;
    let id = add(&app, "t").await;
    assert_eq!(app.command("close", json!({"id": id})).await.status(), 200);
    let resp = app.command("close", json!({"id": id})).await;
    assert_eq!(resp.status(), 409);
    assert_eq!(json_of(resp).await["header"]["errCode"], "409_CONFLICT");
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_problem_json_and_never_reach_scwm() {
    let app = TestApp::start_with(&[("server.body_limit_bytes", "1024")]).await;
    let post = |path: &str, ct: Option<&str>, body: Vec<u8>| {
        let mut req = app.http.post(app.url(path)).body(body);
        if let Some(ct) = ct {
            req = req.header("content-type", ct);
        }
        req.send()
    };
    let json_ct = Some("application/json");
    let cases: Vec<(&str, u16, reqwest::Response)> = vec![
        ("not JSON", 400, post("/v1/incidents/add", json_ct, b"{title:".to_vec()).await.unwrap()),
        (
            "invalid UTF-8",
            400,
            post("/v1/incidents/add", json_ct, b"{\"title\":\"\xff\"}".to_vec()).await.unwrap(),
        ),
        ("empty body", 400, post("/v1/incidents/add", json_ct, Vec::new()).await.unwrap()),
        ("an array", 422, post("/v1/incidents/add", json_ct, b"[]".to_vec()).await.unwrap()),
        ("numeric id", 422, post("/v1/incidents/edit", json_ct, br#"{"id":5}"#.to_vec()).await.unwrap()),
        (
            "missing id",
            422,
            post("/v1/incidents/close", json_ct, br#"{"resolution":"x"}"#.to_vec()).await.unwrap(),
        ),
        (
            "submit without partner",
            422,
            post("/v1/incidents/submit", json_ct, br#"{"id":"IT-1"}"#.to_vec()).await.unwrap(),
        ),
        ("text/plain", 415, post("/v1/incidents/add", Some("text/plain"), b"{}".to_vec()).await.unwrap()),
        ("no content type", 415, post("/v1/incidents/add", None, b"{}".to_vec()).await.unwrap()),
        ("oversized", 413, post("/v1/incidents/add", json_ct, vec![b' '; 4096]).await.unwrap()),
        ("unknown operation", 404, post("/v1/incidents/delete", json_ct, b"{}".to_vec()).await.unwrap()),
        ("unknown path", 404, post("/v2/nothing", json_ct, b"{}".to_vec()).await.unwrap()),
        ("wrong method", 405, app.http.get(app.url("/v1/incidents/add")).send().await.unwrap()),
        (
            "bad idempotency key",
            400,
            app.http
                .post(app.url("/v1/incidents/add"))
                .header("idempotency-key", "")
                .json(&json!({}))
                .send()
                .await
                .unwrap(),
        ),
    ];
    for (what, status, resp) in cases {
        assert_eq!(resp.status().as_u16(), status, "{what}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json", "{what}");
        // A wrong method is refused by the router before any command exists.
        if resp.url().path().starts_with("/v1/incidents/") && what != "wrong method" {
            let plate = resp.headers().get("license-plate").map(|v| v.to_str().unwrap().to_owned());
            assert!(
                plate.as_deref().is_some_and(|p| incident_bridge::ids::LicensePlate::parse(p).is_ok()),
                "{what}: every /v1/incidents answer carries a License-Plate, refusals too ({plate:?})"
            );
        }
        let body = json_of(resp).await;
        assert_eq!(body["status"], status, "{what}: {body}");
        assert!(body["type"].as_str().unwrap().starts_with("urn:incident-bridge:problem:"), "{what}");
        assert!(body["title"].is_string(), "{what}");
    }
    // A body streamed without Content-Length is held to the same limit.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 512])));
    let resp = app
        .http
        .post(app.url("/v1/incidents/add"))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(app.sim.requests().is_empty(), "nothing reached SCWM: {:?}", app.sim.requests());
    app.stop().await;
}

#[tokio::test]
async fn prefer_respond_async_answers_202_and_the_work_completes() {
    let mut app = TestApp::start().await;
    let resp = app
        .http
        .post(app.url("/v1/incidents/add"))
        .header("prefer", "respond-async, wait=5")
        .json(&json!({"title": "later"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.headers()["preference-applied"], "respond-async");
    let body = json_of(resp).await;
    let plate = body["licensePlate"].as_str().unwrap().to_owned();
    let Published::Result(result) = app.next_published().await else { panic!("expected a result") };
    assert_eq!(result.license_plate.as_str(), plate);
    assert!(!result.is_err);
    assert_eq!(app.sim.incidents().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_reuses_the_license_plate_so_scwm_acts_once() {
    let app = TestApp::start().await;
    let send = || {
        app.http
            .post(app.url("/v1/incidents/add"))
            .header("idempotency-key", "order-42")
            .json(&json!({"title": "once"}))
            .send()
    };
    let first = send().await.unwrap();
    let second = send().await.unwrap();
    assert_eq!(first.headers()["license-plate"], second.headers()["license-plate"]);
    assert_eq!(second.headers()["idempotent-replayed"], "true");
    assert_eq!(json_of(first).await, json_of(second).await, "the repeat gets the original answer");
    assert_eq!(app.sim.incidents().len(), 1, "the repeat had no second effect");
    assert_eq!(app.sim.requests().len(), 1, "the bridge answered the repeat itself");
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_is_bound_to_its_request_and_its_sender() {
    let app = TestApp::start().await;
    let id = add(&app, "one").await;
    let other = add(&app, "two").await;
    let edit = |id: &str, token: Option<&str>| {
        let mut req = app
            .http
            .post(app.url("/v1/incidents/edit"))
            .header("idempotency-key", "edit-1")
            .json(&json!({"id": id, "priority": "P1"}));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        req.send()
    };
    assert_eq!(edit(&id, None).await.unwrap().status(), 200);
    // The same key for another incident: another request, refused rather than answered with
    // the first one's outcome (the IETF draft's 422).
    let reused = edit(&other, None).await.unwrap();
    assert_eq!(reused.status(), 422);
    assert_eq!(json_of(reused).await["type"], "urn:incident-bridge:problem:idempotency-key-reused");
    // Another sender (other credentials) has keys of its own: its `edit-1` is its own request.
    assert_eq!(edit(&other, Some("another-client")).await.unwrap().status(), 200);
    let edited: Vec<String> = app
        .sim
        .requests()
        .into_iter()
        .filter(|r| r.body["header"]["eventName"] == "agile-process-teams:edit-incident:v3")
        .map(|r| r.body["payload"]["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(edited, [id, other], "each incident edited once, the second by the other sender");
    app.stop().await;
}

#[tokio::test]
async fn a_repeat_while_the_first_is_in_flight_is_told_409() {
    let app = TestApp::start().await;
    app.sim.set_faults(Faults {
        latency: Some(incident_bridge::sim::Latency::Fixed { fixed_ms: 1_000 }),
        ..Faults::default()
    });
    let send = || {
        app.http
            .post(app.url("/v1/incidents/add"))
            .header("idempotency-key", "slow-1")
            .json(&json!({"title": "slow"}))
            .send()
    };
    let first = tokio::spawn(send());
    crate::kit::within(
        10,
        "the first request to reach SCWM",
        app.sim.wait_for_requests(1, std::time::Duration::from_secs(10)),
    )
    .await
    .unwrap();
    let second = send().await.unwrap();
    assert_eq!(second.status(), 409);
    assert_eq!(json_of(second).await["type"], "urn:incident-bridge:problem:idempotency-key-in-flight");
    assert_eq!(first.await.unwrap().unwrap().status(), 200);
    assert_eq!(app.sim.requests().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_transient_fault_is_retried_with_the_same_license_plate_and_then_succeeds() {
    let app = TestApp::start().await;
    app.sim.set_faults(Faults {
        fail_next: 2,
        fail_next_with: Failure::Status { status: 503 },
        ..Faults::default()
    });
    let resp = app.command("add", json!({"title": "flaky"})).await;
    assert_eq!(resp.status(), 200);
    let requests = app.sim.requests();
    assert_eq!(requests.len(), 3);
    let plates: Vec<_> = requests.iter().map(|r| r.body["header"]["licensePlate"].clone()).collect();
    assert!(plates.iter().all(|p| *p == plates[0]), "{plates:?}");
    assert_eq!(app.sim.incidents().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_open_circuit_answers_with_the_time_it_stays_open_in_whole_seconds() {
    let app = TestApp::start_with(&[
        ("scwm.retry.max_attempts", "1"),
        ("scwm.breaker.minimum_calls", "1"),
        ("scwm.breaker.open_for", "30s"),
    ])
    .await;
    app.sim.set_faults(Faults { error_rate: 1.0, error: Failure::SERVICE_UNAVAILABLE, ..Faults::default() });
    let first = app.command("add", json!({"title": "opens the circuit"})).await;
    assert_eq!(first.status(), 503);
    let resp = app.command("add", json!({"title": "meets the open circuit"})).await;
    assert_eq!(resp.status(), 503);
    let retry_after: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry_after), "the circuit's remaining time, rounded up: {retry_after}");
    let detail = json_of(resp).await["detail"].as_str().unwrap_or_default().to_owned();
    assert!(detail.contains("circuit is open; retry in 30s") || detail.contains("retry in 29s"), "{detail}");
    assert!(!detail.contains("ms") && !detail.contains("ns"), "whole seconds for people: {detail}");
    assert_eq!(app.sim.requests().len(), 1, "the open circuit sent nothing");
    app.stop().await;
}

#[tokio::test]
async fn scwm_down_answers_503_with_retry_after_once_attempts_are_spent() {
    let app =
        TestApp::start_with(&[("scwm.retry.max_attempts", "2"), ("scwm.retry.max_backoff", "20ms")]).await;
    app.sim.set_faults(Faults {
        fail_next: 100,
        fail_next_with: Failure::Status { status: 503 },
        ..Faults::default()
    });
    let resp = app.command("add", json!({"title": "nobody home"})).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(resp.headers()["content-type"], "application/problem+json");
    assert_eq!(app.sim.requests().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn commands_for_one_key_reach_scwm_in_submission_order() {
    let app = TestApp::start_with(&[("pipeline.workers", "8")]).await;
    let mut ids = Vec::new();
    for k in 0..10 {
        ids.push(add(&app, &format!("key {k}")).await);
    }
    let sender = |id: String| {
        let http = app.http.clone();
        let url = app.url("/v1/incidents/edit");
        async move {
            for seq in 0..100 {
                let resp = http
                    .post(&url)
                    .header("prefer", "respond-async")
                    .json(&json!({"id": id, "seq": seq}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(resp.status(), 202);
            }
        }
    };
    let senders: Vec<_> = ids.iter().cloned().map(|id| tokio::spawn(sender(id))).collect();
    for s in senders {
        within(30, "the senders", s).await.unwrap();
    }
    let requests =
        within(30, "1,010 SCWM requests", app.sim.wait_for_requests(1010, Duration::from_secs(30)))
            .await
            .expect("all requests arrive");
    let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in requests.iter().skip(10) {
        let p = &r.body["payload"];
        seen.entry(p["id"].as_str().unwrap().to_owned()).or_default().push(p["seq"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), 10);
    for (id, seqs) in seen {
        assert_eq!(seqs, (0..100).collect::<Vec<_>>(), "order for {id}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_recovers() {
    let mut app = TestApp::start_with(&[("pipeline.queue_capacity", "2"), ("pipeline.workers", "1")]).await;
    app.sim.set_faults(Faults { latency: Some(Latency::Fixed { fixed_ms: 1500 }), ..Faults::default() });
    let (http, url) = (app.http.clone(), app.url("/v1/incidents/add"));
    let send_async =
        |title: &str| http.post(&url).header("prefer", "respond-async").json(&json!({"title": title})).send();
    assert_eq!(send_async("one").await.unwrap().status(), 202);
    assert_eq!(send_async("two").await.unwrap().status(), 202);
    let refused = send_async("three").await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(json_of(refused).await["type"], "urn:incident-bridge:problem:queue-full");

    app.sim.set_faults(Faults::default());
    for _ in 0..2 {
        assert!(matches!(app.next_published().await, Published::Result(_)));
    }
    // Room is given back right after a job publishes its result; each attempt is a full
    // HTTP round trip, so this loop ends within a few iterations.
    within(10, "room in the queue", async { while send_async("four").await.unwrap().status() != 202 {} })
        .await;
    app.stop().await;
}

#[tokio::test]
async fn readiness_turns_503_on_shutdown_while_liveness_stays_200() {
    let app = TestApp::start_with(&[("server.shutdown_delay", "3s")]).await;
    let get = |path: &str| app.http.get(app.url(path)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    let ready = get("/readyz").await.unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(json_of(ready).await["status"], "ready");

    app.shutdown.cancel();
    // The run task flips readiness as soon as it sees the cancellation; each probe is a full
    // round trip, so this settles within a few iterations.
    let not_ready = within(5, "readiness to turn 503", async {
        loop {
            let resp = get("/readyz").await.unwrap();
            if resp.status() == 503 {
                break resp;
            }
        }
    })
    .await;
    assert_eq!(not_ready.headers()["content-type"], "application/problem+json");
    assert!(json_of(not_ready).await["detail"].as_str().unwrap().contains("shutting down"));
    assert_eq!(get("/healthz").await.unwrap().status(), 200, "still alive while draining");
    within(15, "the bridge to stop", app.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn shutdown_finishes_in_flight_work_before_returning() {
    let mut app = TestApp::start().await;
    app.sim.set_faults(Faults { latency: Some(Latency::Fixed { fixed_ms: 500 }), ..Faults::default() });
    for i in 0..5 {
        let resp = app
            .http
            .post(app.url("/v1/incidents/add"))
            .header("prefer", "respond-async")
            .json(&json!({"title": format!("in flight {i}"), "externalRef": format!("k{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    within(10, "the requests to reach SCWM", app.sim.wait_for_requests(5, Duration::from_secs(10)))
        .await
        .unwrap();
    app.shutdown.cancel();
    within(15, "shutdown", &mut app.task).await.unwrap().unwrap();
    assert_eq!(app.sim.incidents().len(), 5);
    let mut results = 0;
    while let Ok(item) = app.published.try_recv() {
        assert!(matches!(item, Published::Result(ref r) if !r.is_err));
        results += 1;
    }
    assert_eq!(results, 5);
}
