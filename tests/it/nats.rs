//! NATS end to end: each test starts its own nats-server (random port, own store) and its own
//! simulator, and drives the bridge through core subjects and JetStream.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use crate::kit::{
    TestApp,
    nats::{NatsServer, header},
    within,
};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt;
use incident_bridge::{
    publish::Published,
    scwm::ResponseEnvelope,
    sim::{Failure, Faults},
};
use serde_json::{Value, json};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// A `[nats]` table on `url` that takes native commands on `incidents.commands.*`, then `extra`.
fn nats_section(url: &str, extra: &str) -> String {
    format!("[nats]\nurl = \"{url}\"\n{COMMANDS}{extra}\n")
}

/// Native commands on core NATS, which are off unless configured.
const COMMANDS: &str = "[[nats.subscriptions]]\nsubject = \"incidents.commands.*\"\n";

const JS_CONSUMER: &str = r#"
[[nats.consumers]]
stream = "INCIDENTS"
create = true
stream_subjects = ["incidents.js.>"]
ack_wait = "2s"
max_deliver = 20
"#;

async fn app_with_nats(nats: &NatsServer, extra: &str) -> TestApp {
    let sim = crate::kit::start_simulator().await;
    TestApp::start_against(sim, &nats_section(&nats.url(), extra), &[]).await
}

/// Waits until the bridge is connected to NATS, so its core subscription is registered on the
/// server and a publish right after is not lost (core NATS delivers only to current
/// subscribers).
async fn wait_ready(app: &TestApp) {
    app.wait_component("nats", "ready").await;
}

/// Sends a request and waits for its reply; retried while the bridge's subscription is not
/// yet in place (no responders).
async fn request(client: &async_nats::Client, subject: &str, body: Value) -> async_nats::Message {
    crate::kit::nats::request(client, subject, async_nats::HeaderMap::new(), body.to_string()).await
}

async fn publish_js(js: &jetstream::Context, subject: &str, bodies: impl IntoIterator<Item = Value>) {
    let bodies: Vec<Value> = bodies.into_iter().collect();
    for chunk in bodies.chunks(1000) {
        let mut acks = Vec::new();
        for body in chunk {
            acks.push(js.publish(subject.to_owned(), Bytes::from(body.to_string())).await.unwrap());
        }
        for ack in futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await
        {
            ack.unwrap();
        }
    }
}

#[tokio::test]
async fn a_core_command_yields_scwm_s_header_as_a_result_event_with_every_header() {
    let nats = NatsServer::start();
    let app = app_with_nats(&nats, "").await;
    let client = nats.client().await;
    let mut results = client.subscribe("scwm.results.>").await.unwrap();
    client.flush().await.unwrap();

    // Request/reply makes sure the bridge's subscription is live before we look at results.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", TRACEPARENT);
    let reply = within(20, "a reply", async {
        loop {
            match client
                .request_with_headers(
                    "incidents.commands.add",
                    headers.clone(),
                    Bytes::from(json!({"title": "disk full"}).to_string()),
                )
                .await
            {
                Ok(msg) => break msg,
                Err(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    let envelope = ResponseEnvelope::parse(reply.payload.clone()).unwrap();
    let plate = envelope.header().license_plate.clone();

    let result = within(10, "the result event", results.next()).await.unwrap();
    assert_eq!(result.subject.as_str(), "scwm.results.add");

    // The simulator answers a repeated licensePlate with its first answer byte for byte: ask it
    // again directly and compare the header bytes with the result event's body.
    let direct = app
        .http
        .post(app.sim.url())
        .header("authorization", format!("Basic {}", crate::kit::TOKEN))
        .json(&json!({"header": {"headerVersion": 1, "eventName": "agile-process-teams:add-incident:v3",
                                 "ownerId": "TEST_OWNER", "licensePlate": plate}, "payload": {"title": "disk full"}}))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let direct = ResponseEnvelope::parse(direct).unwrap();
    assert_eq!(&result.payload[..], direct.raw_header().get().as_bytes());
    assert_eq!(app.sim.incidents().len(), 1);

    let h = |name| header(&result, name).unwrap_or_else(|| panic!("missing header {name}"));
    assert_eq!(h("Nats-Msg-Id"), plate);
    assert_eq!(h("Incident-Bridge-License-Plate"), plate);
    assert_eq!(h("Incident-Bridge-Op"), "add");
    assert_eq!(h("Incident-Bridge-Item-Id"), "IT-000001");
    assert_eq!(h("Incident-Bridge-Key"), format!("plate:{plate}"));
    assert_eq!(h("Incident-Bridge-Source"), "native");
    assert_eq!(h("Incident-Bridge-Source-Transport"), "nats");
    assert_eq!(h("Incident-Bridge-Source-Subject"), "incidents.commands.add");
    assert_eq!(h("Incident-Bridge-Attempts"), "1");
    assert!(h("traceparent").starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "same trace");
    assert_ne!(h("traceparent"), TRACEPARENT, "a new span id");
    assert_eq!(h("ce-specversion"), "1.0");
    assert_eq!(h("ce-id"), plate);
    assert_eq!(h("ce-source"), "/incident-bridge/sources/native");
    assert_eq!(h("ce-type"), "io.incident-bridge.scwm.add.result");
    assert_eq!(h("ce-datacontenttype"), "application/json");
    assert_eq!(h("ce-subject"), "IT-000001");
    assert!(humantime::parse_rfc3339(h("ce-time")).is_ok(), "{}", h("ce-time"));
    app.stop().await;
}

#[tokio::test]
async fn request_reply_answers_with_scwm_s_envelope_and_its_status() {
    let nats = NatsServer::start();
    let app = app_with_nats(&nats, "").await;
    let client = nats.client().await;

    let ok = request(&client, "incidents.commands.add", json!({"title": "t"})).await;
    assert_eq!(header(&ok, "Incident-Bridge-Status"), Some("200"));
    let body: Value = serde_json::from_slice(&ok.payload).unwrap();
    assert_eq!(body["header"]["isErr"], false);
    assert_eq!(body["payload"]["id"], "IT-000001");

    let missing = request(&client, "incidents.commands.edit", json!({"id": "IT-424242"})).await;
    assert_eq!(header(&missing, "Incident-Bridge-Status"), Some("404"));
    let body: Value = serde_json::from_slice(&missing.payload).unwrap();
    assert_eq!(body["header"]["errCode"], "404_NOT_FOUND");

    let invalid = request(&client, "incidents.commands.edit", json!({"title": "no id"})).await;
    assert_eq!(header(&invalid, "Incident-Bridge-Status"), Some("422"));
    app.stop().await;
}

#[tokio::test]
async fn two_bridges_in_one_queue_group_share_the_work_without_duplicates() {
    let nats = NatsServer::start();
    let sim = crate::kit::start_simulator().await;
    let section = nats_section(&nats.url(), "");
    let mut a = TestApp::start_against(sim, &section, &[]).await;
    // The second bridge shares the first one's simulator through its URL.
    let sim_b = crate::kit::start_simulator().await;
    let text_b = crate::kit::config_text(&a.sim.url(), &section);
    drop(sim_b);
    let mut b = TestApp::start_with_text(&text_b).await;
    wait_ready(&a).await;
    wait_ready(&b).await;
    let client = nats.client().await;
    // Both subscriptions must be registered before publishing: each answers one request.
    for _ in 0..20 {
        request(&client, "incidents.commands.read", json!({"id": "IT-000000"})).await;
    }
    let before = a.sim.requests().len();
    for i in 0..1000 {
        client
            .publish(
                "incidents.commands.add",
                Bytes::from(json!({"title": format!("m{i}"), "externalRef": format!("r{i}")}).to_string()),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let requests =
        within(60, "1,000 SCWM calls", a.sim.wait_for_requests(before + 1000, Duration::from_secs(60)))
            .await
            .unwrap();
    let titles: Vec<&str> =
        requests[before..].iter().map(|r| r.body["payload"]["title"].as_str().unwrap()).collect();
    let distinct: HashSet<&str> = titles.iter().copied().collect();
    assert_eq!(titles.len(), 1000);
    assert_eq!(distinct.len(), 1000, "no message was processed twice");
    let count = |app: &mut TestApp| {
        let mut n = 0;
        while let Ok(p) = app.published.try_recv() {
            if matches!(p, Published::Result(ref r) if r.op.as_str() == "add") {
                n += 1;
            }
        }
        n
    };
    // Results are published right after SCWM answers; collect them from both replicas.
    let (mut na, mut nb) = (0, 0);
    within(30, "1,000 result events", async {
        while na + nb < 1000 {
            tokio::select! {
                p = a.published.recv() => if matches!(p, Some(Published::Result(ref r)) if r.op.as_str() == "add") { na += 1 },
                p = b.published.recv() => if matches!(p, Some(Published::Result(ref r)) if r.op.as_str() == "add") { nb += 1 },
            }
        }
    })
    .await;
    assert_eq!(count(&mut a) + count(&mut b), 0, "no more results than messages");
    assert!(na > 0 && nb > 0, "both replicas took work: {na} and {nb}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn a_malformed_core_message_becomes_a_dead_letter_with_its_reason() {
    let nats = NatsServer::start();
    let app = app_with_nats(&nats, "").await;
    let client = nats.client().await;
    let mut dlq = client.subscribe("scwm.dlq.>").await.unwrap();
    client.flush().await.unwrap();
    // A reply subject makes the publish wait for the bridge's subscription.
    let reply = request(&client, "incidents.commands.add", json!(["not", "an", "object"])).await;
    assert_eq!(header(&reply, "Incident-Bridge-Status"), Some("422"));
    let letter = within(10, "the dead letter", dlq.next()).await.unwrap();
    assert_eq!(letter.subject.as_str(), "scwm.dlq.add");
    assert_eq!(&letter.payload[..], br#"["not","an","object"]"#);
    assert_eq!(header(&letter, "Incident-Bridge-Error-Kind"), Some("decode"));
    assert_eq!(header(&letter, "Incident-Bridge-Error"), Some("body must be a JSON object"));
    assert!(app.sim.requests().is_empty());
    app.stop().await;
}

async fn consumer_info(js: &jetstream::Context) -> jetstream::consumer::Info {
    let mut consumer: jetstream::consumer::PullConsumer =
        js.get_stream("INCIDENTS").await.unwrap().get_consumer("incident-bridge").await.unwrap();
    consumer.info().await.unwrap().clone()
}

#[tokio::test]
async fn jetstream_permanent_errors_and_malformed_messages_are_dead_lettered_once_and_not_redelivered() {
    let nats = NatsServer::start();
    let app = app_with_nats(&nats, JS_CONSUMER).await;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    let mut dlq = client.subscribe("scwm.dlq.>").await.unwrap();
    client.flush().await.unwrap();
    wait_ready(&app).await;
    // The stream is created by the bridge; wait for it before publishing.
    within(20, "the stream", async {
        while js.get_stream("INCIDENTS").await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    publish_js(&js, "incidents.js.commands.edit", [json!({"id": "IT-404404", "title": "x"})]).await;
    js.publish("incidents.js.commands.add", Bytes::from_static(b"{broken")).await.unwrap().await.unwrap();

    let mut letters = HashMap::new();
    for _ in 0..2 {
        let m = within(20, "a dead letter", dlq.next()).await.unwrap();
        letters.insert(m.subject.to_string(), m);
    }
    let rejected = &letters["scwm.dlq.edit"];
    assert_eq!(header(rejected, "Incident-Bridge-Error-Kind"), Some("scwm_rejected"));
    assert_eq!(header(rejected, "Incident-Bridge-Source-Stream"), Some("INCIDENTS"));
    assert_eq!(header(rejected, "Incident-Bridge-Source-Sequence"), Some("1"));
    assert_eq!(header(rejected, "Incident-Bridge-Attempts"), Some("1"));
    let malformed = &letters["scwm.dlq.add"];
    assert_eq!(header(malformed, "Incident-Bridge-Error-Kind"), Some("decode"));
    assert!(header(malformed, "Incident-Bridge-Error").unwrap().contains("not valid JSON"));
    assert_eq!(&malformed.payload[..], b"{broken");

    // Terminated: nothing pending, nothing redelivered, and SCWM was asked exactly once.
    let info = within(20, "the consumer to settle", async {
        loop {
            let info = consumer_info(&js).await;
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                break info;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(app.sim.requests().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn jetstream_events_wait_out_an_scwm_outage_and_complete_after() {
    let nats = NatsServer::start();
    let sim = crate::kit::start_simulator().await;
    sim.set_faults(Faults { error_rate: 1.0, error: Failure::Status { status: 503 }, ..Faults::default() });
    let consumer = JS_CONSUMER.replace("max_deliver = 20", "max_deliver = 100");
    let app = TestApp::start_against(
        sim,
        &nats_section(&nats.url(), &consumer),
        &[
            ("scwm.retry.max_attempts", "2"),
            ("scwm.retry.max_backoff", "1s"),
            ("scwm.breaker.open_for", "200ms"),
        ],
    )
    .await;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    let mut dlq = client.subscribe("scwm.dlq.>").await.unwrap();
    within(20, "the stream", async {
        while js.get_stream("INCIDENTS").await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    publish_js(
        &js,
        "incidents.js.commands.add",
        (0..20).map(|i| json!({"title": format!("t{i}"), "externalRef": format!("k{i}")})),
    )
    .await;
    // The breaker opens on the failure rate; then only its probes reach SCWM, and the messages
    // wait in the bridge's hands, kept in progress, instead of spending their deliveries.
    within(30, "SCWM to be tried during the outage", app.sim.wait_for_requests(10, Duration::from_secs(30)))
        .await
        .unwrap();
    assert!(app.sim.incidents().is_empty());
    within(30, "the circuit to open", async {
        loop {
            let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
            if metrics.lines().any(|l| l == "incident_bridge_circuit_state 2") {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    let info = consumer_info(&js).await;
    assert_eq!(info.num_ack_pending + info.num_pending as usize, 20, "every message still to do: {info:?}");

    app.sim.set_faults(Faults::default());
    within(60, "every event to complete", async {
        while app.sim.incidents().len() < 20 {
            let n = app.sim.requests().len();
            app.sim.wait_for_requests(n + 1, Duration::from_secs(60)).await.unwrap();
        }
    })
    .await;
    assert_eq!(app.sim.incidents().len(), 20, "exactly one incident per event");
    client.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(200), dlq.next()).await.is_err(),
        "no dead letter while deliveries remained"
    );
    app.stop().await;
}

/// Collects distinct licensePlates of result events until `n` have arrived.
async fn collect_results(results: &mut async_nats::Subscriber, n: usize, secs: u64) -> HashSet<String> {
    let mut plates = HashSet::new();
    within(secs, "every result event", async {
        while plates.len() < n {
            let msg = results.next().await.unwrap();
            plates.insert(header(&msg, "Nats-Msg-Id").unwrap().to_owned());
        }
    })
    .await;
    plates
}

/// Every plate reached SCWM and took effect exactly once (repeats are answered from the
/// simulator's dedup record, without effect).
fn assert_one_effect_per_plate(app: &TestApp, n: usize) {
    let mut effects: HashMap<String, usize> = HashMap::new();
    for r in app.sim.requests() {
        if r.status == Some(200) && !r.duplicate {
            *effects.entry(r.body["header"]["licensePlate"].as_str().unwrap().to_owned()).or_default() += 1;
        }
    }
    assert_eq!(effects.len(), n, "distinct licensePlates that took effect");
    assert!(effects.values().all(|&c| c == 1), "a licensePlate took effect twice");
    assert_eq!(app.sim.incidents().len(), n);
}

#[tokio::test]
async fn a_bridge_killed_mid_stream_and_restarted_loses_nothing_and_duplicates_nothing() {
    const N: usize = 5000;
    let nats = NatsServer::start();
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "RESULTS".into(),
        subjects: vec!["scwm.results.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut results = client.subscribe("scwm.results.>").await.unwrap();
    client.flush().await.unwrap();
    let holder = TestApp::start_with(&[]).await; // only for its simulator and HTTP client
    let dir = tempfile::tempdir().unwrap();
    // A store that outlives the killed bridge: its outbox holds the results not yet published.
    let store = format!("[store]\npath = \"{}\"\n", dir.path().join("store.redb").display());
    let extra = format!("{store}{}", nats_section(&nats.url(), JS_CONSUMER));
    let config = crate::kit::config_text(&holder.sim.url(), &extra);

    let (mut bridge, _) = crate::kit::spawn_bridge(&config, &dir).await;
    within(20, "the stream", async {
        while js.get_stream("INCIDENTS").await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    publish_js(
        &js,
        "incidents.js.commands.add",
        (0..N).map(|i| json!({"title": format!("e{i}"), "externalRef": format!("k{i}")})),
    )
    .await;

    within(60, "work to be under way", holder.sim.wait_for_requests(N / 3, Duration::from_secs(60)))
        .await
        .unwrap();
    bridge.start_kill().unwrap();
    bridge.wait().await.unwrap();
    let done_before_restart = holder.sim.incidents().len();
    assert!(done_before_restart < N, "the kill happened mid-stream");

    let (mut bridge, _) = crate::kit::spawn_bridge(&config, &dir).await;
    let plates = collect_results(&mut results, N, 180).await;
    assert_eq!(plates.len(), N);
    assert_one_effect_per_plate(&holder, N);
    let stored = js.get_stream("RESULTS").await.unwrap().info().await.unwrap().state.messages;
    assert_eq!(stored, N as u64, "the results stream holds one result per licensePlate");
    bridge.start_kill().unwrap();
}

#[tokio::test]
async fn a_nats_server_restart_mid_stream_loses_nothing() {
    const N: usize = 1500;
    let mut nats = NatsServer::start();
    let app = app_with_nats(&nats, JS_CONSUMER).await;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    within(20, "the stream", async {
        while js.get_stream("INCIDENTS").await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    publish_js(
        &js,
        "incidents.js.commands.add",
        (0..N).map(|i| json!({"title": format!("e{i}"), "externalRef": format!("k{i}")})),
    )
    .await;
    within(60, "work to be under way", app.sim.wait_for_requests(N / 4, Duration::from_secs(60)))
        .await
        .unwrap();

    nats.kill();
    // The store is a local file, so the bridge stays ready (HTTP work goes on) and says NATS is
    // away.
    app.wait_component("nats", "not ready (work goes on without it)").await;
    assert_eq!(app.component("nats").await.0, 200);
    nats.start_again();

    within(120, "every event to complete after the restart", async {
        while app.sim.incidents().len() < N {
            let n = app.sim.requests().len();
            app.sim.wait_for_requests(n + 1, Duration::from_secs(120)).await.unwrap();
        }
    })
    .await;
    assert_one_effect_per_plate(&app, N);
    wait_ready(&app).await;
    app.stop().await;
}

async fn wait_for_stream(js: &jetstream::Context) {
    within(20, "the stream", async {
        while js.get_stream("INCIDENTS").await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

#[tokio::test]
async fn jetstream_messages_for_one_key_reach_scwm_in_stream_order() {
    let nats = NatsServer::start();
    let app = app_with_nats(&nats, JS_CONSUMER).await;
    let mut ids = Vec::new();
    for k in 0..10 {
        let resp = app.command("add", json!({"title": format!("key {k}")})).await;
        let body: Value = resp.json().await.unwrap();
        ids.push(body["payload"]["id"].as_str().unwrap().to_owned());
    }
    let js = jetstream::new(nats.client().await);
    wait_for_stream(&js).await;
    // Interleaved: key 0 seq 0, key 1 seq 0, ..., key 0 seq 1, ...
    let bodies = (0..50).flat_map(|seq| ids.iter().map(move |id| json!({"id": id, "seq": seq})));
    publish_js(&js, "incidents.js.commands.edit", bodies).await;
    let requests =
        within(60, "500 edits", app.sim.wait_for_requests(10 + 500, Duration::from_secs(60))).await.unwrap();
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for r in requests.iter().skip(10).filter(|r| !r.duplicate) {
        let p = &r.body["payload"];
        seen.entry(p["id"].as_str().unwrap().to_owned()).or_default().push(p["seq"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), 10);
    for (id, seqs) in seen {
        assert_eq!(seqs, (0..50).collect::<Vec<_>>(), "order for {id}");
    }
    app.stop().await;
}

#[tokio::test]
async fn a_slow_scwm_call_keeps_its_message_in_progress_instead_of_redelivered() {
    let nats = NatsServer::start();
    let sim = crate::kit::start_simulator().await;
    // Each call takes twice the consumer's ack_wait.
    sim.set_faults(Faults {
        latency: Some(incident_bridge::sim::Latency::Fixed { fixed_ms: 4000 }),
        ..Faults::default()
    });
    let mut app = TestApp::start_against(
        sim,
        &nats_section(&nats.url(), JS_CONSUMER),
        &[("scwm.request_timeout", "10s")],
    )
    .await;
    let js = jetstream::new(nats.client().await);
    wait_for_stream(&js).await;
    publish_js(
        &js,
        "incidents.js.commands.add",
        (0..3).map(|i| json!({"title": format!("slow {i}"), "externalRef": format!("s{i}")})),
    )
    .await;
    for _ in 0..3 {
        assert!(matches!(app.next_published().await, Published::Result(ref r) if !r.is_err));
    }
    let info = within(20, "the consumer to settle", async {
        loop {
            let info = consumer_info(&js).await;
            if info.num_ack_pending == 0 {
                break info;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(info.num_redelivered, 0, "in-progress acks held the messages");
    assert_eq!(app.sim.requests().len(), 3, "one SCWM call per message");
    app.stop().await;
}

#[tokio::test]
async fn a_stream_on_the_results_keeps_a_transient_failure_and_the_final_success_of_one_request() {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    js.create_stream(jetstream::stream::Config {
        name: "RESULTS".into(),
        subjects: vec!["scwm.results.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap();
    let sim = crate::kit::start_simulator().await;
    let app =
        TestApp::start_against(sim, &nats_section(&nats.url(), ""), &[("scwm.retry.max_attempts", "1")])
            .await;
    wait_ready(&app).await;
    app.sim.set_faults(Faults {
        fail_next: 1,
        fail_next_with: Failure::SERVICE_UNAVAILABLE,
        ..Faults::default()
    });
    let send = || async {
        app.http
            .post(app.url("/v1/incidents/add"))
            .header("idempotency-key", "one-request")
            .json(&json!({"title": "disk full"}))
            .send()
            .await
            .unwrap()
    };
    let first = send().await;
    assert_eq!(first.status(), 503, "SCWM's first answer is a 503");
    let second = send().await;
    assert_eq!(second.status(), 200);
    let plate = second.headers()["license-plate"].to_str().unwrap().to_owned();
    assert_eq!(first.headers()["license-plate"], plate.as_str(), "one request, one licensePlate");

    let stream = js.get_stream("RESULTS").await.unwrap();
    // Results go out from the outbox after the answer, so the stream is awaited.
    let count = |stream: &jetstream::stream::Stream| {
        let mut stream = stream.clone();
        async move { stream.info().await.unwrap().state.messages }
    };
    within(20, "both results to reach the stream", async {
        while count(&stream).await < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(count(&stream).await, 2, "both outcomes are kept: neither hides the other");
    let at = |seq| {
        let stream = stream.clone();
        async move { stream.get_raw_message(seq).await.unwrap() }
    };
    let (failure, success) = (at(1).await, at(2).await);
    let h = |m: &jetstream::message::StreamMessage, name: &str| {
        m.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
    };
    assert_eq!(h(&failure, "Incident-Bridge-Final"), "false");
    assert!(h(&failure, "Nats-Msg-Id").starts_with(&format!("{plate}.t")), "{}", h(&failure, "Nats-Msg-Id"));
    assert_eq!(h(&failure, "Incident-Bridge-Err-Code"), "503_SERVICE_UNAVAILABLE");
    assert_eq!(h(&success, "Incident-Bridge-Final"), "true");
    assert_eq!(h(&success, "Nats-Msg-Id"), plate, "the final answer's id is the licensePlate");
    assert_eq!(h(&success, "ce-id"), plate);
    assert_eq!(h(&success, "Incident-Bridge-Item-Id"), "IT-000001");

    // The same request sent again gets the same answer and adds nothing to the stream. Another
    // request after it is the marker: the outbox publishes in order, so once its result is in
    // the stream, anything the repeat published would be too.
    assert_eq!(send().await.status(), 200);
    let other =
        app.http.post(app.url("/v1/incidents/add")).json(&json!({"title": "cpu hot"})).send().await.unwrap();
    assert_eq!(other.status(), 200);
    within(20, "the marker's result to reach the stream", async {
        while count(&stream).await < 3 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(count(&stream).await, 3, "a repeat of the final answer is dropped");
    assert_eq!(h(&at(3).await, "Incident-Bridge-Item-Id"), "IT-000002");
    app.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_and_a_nats_msg_id_with_the_same_text_are_two_deliveries_and_repeats_get_the_first_reply()
 {
    let nats = NatsServer::start();
    let app = app_with_nats(&nats, "").await;
    wait_ready(&app).await;
    let client = nats.client().await;
    let send = |header: &'static str, title: &'static str| {
        let client = client.clone();
        async move {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(header, "same-text");
            crate::kit::nats::request(
                &client,
                "incidents.commands.add",
                headers,
                json!({"title": title}).to_string(),
            )
            .await
        }
    };
    let by_msg_id = send("Nats-Msg-Id", "first").await;
    assert_eq!(header(&by_msg_id, "Incident-Bridge-Status"), Some("200"));
    let by_key = send("Idempotency-Key", "second").await;
    assert_eq!(header(&by_key, "Incident-Bridge-Status"), Some("200"));
    assert_eq!(app.sim.incidents().len(), 2, "two deliveries, two incidents");

    let again = send("Nats-Msg-Id", "first").await;
    assert_eq!(again.payload, by_msg_id.payload, "a repeat gets the first reply");
    let reused = send("Idempotency-Key", "another body").await;
    assert_eq!(header(&reused, "Incident-Bridge-Status"), Some("422"), "a key used for another request");
    assert_eq!(app.sim.requests().len(), 2, "no repeat reached SCWM");
    app.stop().await;
}
