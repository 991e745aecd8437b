//! The outbox: result events and dead letters bound for NATS are kept in the store until NATS
//! has them. Against a real nats-server that is killed and started again: the HTTP path keeps
//! working while NATS is away and its results reach the stream afterwards, under the ids they
//! were given; a full outbox makes the bridge unready and refuses work for later before SCWM
//! sees it; a dead letter too large for the server goes out cut to fit, is kept whole in the
//! store, and the caller (or the JetStream message) gets the real outcome.

use std::collections::BTreeSet;

use crate::kit::{TestApp, nats::NatsServer, within};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use incident_bridge::store::{EmbeddedStore, Outbox};
use serde_json::{Value, json};

/// A stream that captures every result event and dead letter, with a duplicate window.
async fn capture(js: &jetstream::Context, name: &str, subject: &str) -> stream::Stream {
    js.create_stream(stream::Config {
        name: name.into(),
        subjects: vec![subject.into()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("creating stream {name}: {e}"))
}

async fn count(stream: &stream::Stream) -> u64 {
    let mut stream = stream.clone();
    stream.info().await.expect("stream info").state.messages
}

async fn wait_count(stream: &stream::Stream, n: u64) {
    within(30, &format!("{n} messages in the stream"), async {
        while count(stream).await < n {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

fn header(m: &jetstream::message::StreamMessage, name: &str) -> String {
    m.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
}

async fn messages(stream: &stream::Stream) -> Vec<jetstream::message::StreamMessage> {
    let mut out = Vec::new();
    for seq in 1..=count(stream).await {
        out.push(stream.get_raw_message(seq).await.expect("a stored message"));
    }
    out
}

#[tokio::test]
async fn with_nats_away_http_work_goes_on_and_its_results_reach_the_stream_when_nats_returns() {
    let mut nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    let results = capture(&js, "RESULTS", "scwm.results.>").await;
    let sim = crate::kit::start_simulator().await;
    let app = TestApp::start_against(sim, &format!("[nats]\nurl = \"{}\"\n", nats.url()), &[]).await;
    app.wait_component("nats", "ready").await;

    nats.kill();
    app.wait_component("nats", "not ready (work goes on without it)").await;
    let mut plates = BTreeSet::new();
    for i in 0..3 {
        let resp = app.command("add", json!({"title": format!("disk full {i}")})).await;
        assert_eq!(resp.status(), 200, "SCWM can be called while NATS is away");
        plates.insert(resp.headers()["license-plate"].to_str().unwrap().to_owned());
    }
    let (status, outbox) = app.component("outbox").await;
    assert_eq!((status, outbox.as_str()), (200, "ready"), "the bridge stays ready: its results are kept");

    nats.start_again();
    wait_count(&results, 3).await;
    let published: BTreeSet<String> =
        messages(&results).await.iter().map(|m| header(m, "Nats-Msg-Id")).collect();
    assert_eq!(published, plates, "every result, under the licensePlate of its request");
    app.stop().await;
}

#[tokio::test]
async fn a_full_outbox_makes_the_bridge_unready_and_refuses_work_before_scwm_sees_it() {
    let mut nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    let results = capture(&js, "RESULTS", "scwm.results.>").await;
    let sim = crate::kit::start_simulator().await;
    let config = format!("[nats]\nurl = \"{}\"\n[nats.results]\noutbox_limit = 2\n", nats.url());
    let app = TestApp::start_against(sim, &config, &[]).await;
    app.wait_component("nats", "ready").await;
    nats.kill();
    app.wait_component("nats", "not ready (work goes on without it)").await;

    for title in ["a", "b"] {
        assert_eq!(app.command("add", json!({"title": title})).await.status(), 200);
    }
    let (status, outbox) = app.component("outbox").await;
    assert_eq!((status, outbox.as_str()), (503, "not ready"), "a full outbox cannot take work durably");
    let refused = app.command("add", json!({"title": "c"})).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"), "{:?}", refused.headers());
    assert!(refused.headers().contains_key("license-plate"));
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["detail"].as_str().unwrap_or_default().contains("outbox is full"), "{problem}");
    assert_eq!(app.sim.requests().len(), 2, "SCWM never saw the refused request");

    nats.start_again();
    wait_count(&results, 2).await;
    app.wait_component("outbox", "ready").await;
    assert_eq!(app.command("add", json!({"title": "c"})).await.status(), 200, "room again");
    wait_count(&results, 3).await;
    app.stop().await;
}

/// A nats-server whose messages are at most 4 KiB.
fn small_server() -> NatsServer {
    NatsServer::start_with_config("max_payload: 4096\n")
}

#[tokio::test]
async fn an_oversized_dead_letter_goes_out_cut_is_kept_whole_and_the_caller_gets_the_real_404() {
    let nats = small_server();
    let js = jetstream::new(nats.client().await);
    let letters = capture(&js, "DEAD_LETTERS", "scwm.dlq.>").await;
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("store.redb");
    let sim = crate::kit::start_simulator().await;
    let config = format!("[nats]\nurl = \"{}\"\n[store]\npath = \"{}\"\n", nats.url(), store_path.display());
    let app = TestApp::start_against(sim, &config, &[]).await;
    app.wait_component("nats", "ready").await;

    let body = json!({"id": "IT-999999", "description": "x".repeat(6_000)});
    let resp = app.command("edit", body.clone()).await;
    assert_eq!(resp.status(), 404, "SCWM's answer, not a 503 about NATS");
    assert!(resp.headers().get("retry-after").is_none());
    assert_eq!(app.sim.requests().len(), 1, "a permanent error is not retried");

    wait_count(&letters, 1).await;
    let letter = &messages(&letters).await[0];
    assert_eq!(header(letter, "Incident-Bridge-Error-Kind"), "scwm_rejected");
    let whole = body.to_string();
    assert_eq!(header(letter, "Incident-Bridge-Truncated"), whole.len().to_string());
    assert!(whole.as_bytes().starts_with(&letter.payload), "the cut body is the start of the original");
    let kept_as = header(letter, "Incident-Bridge-Kept");
    assert!(!kept_as.is_empty());
    app.stop().await;

    let store = EmbeddedStore::open(&store_path).expect("the store opens after the bridge stopped");
    let kept = store.kept(&kept_as).await.unwrap().expect("the whole dead letter is kept");
    let kept: Value = serde_json::from_slice(&kept).unwrap();
    let kept_body = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        kept["message"]["body"].as_str().unwrap(),
    )
    .unwrap();
    assert_eq!(kept_body, whole.as_bytes(), "the kept letter holds the original body whole");
    assert_eq!(store.len().await.unwrap(), 0, "nothing waits in the outbox");
}

#[tokio::test]
async fn a_jetstream_message_whose_dead_letter_is_too_large_is_still_terminated_after_one_call() {
    let nats = small_server();
    let js = jetstream::new(nats.client().await);
    let letters = capture(&js, "DEAD_LETTERS", "scwm.dlq.>").await;
    let sim = crate::kit::start_simulator().await;
    let config = format!(
        "[nats]\nurl = \"{}\"\n[[nats.consumers]]\nstream = \"INCIDENTS\"\ncreate = true\n\
         stream_subjects = [\"incidents.js.>\"]\nack_wait = \"2s\"\nmax_deliver = 5\n",
        nats.url()
    );
    let app = TestApp::start_against(sim, &config, &[]).await;
    app.wait_component("nats", "ready").await;
    within(20, "the bridge to create its stream", async {
        while js.get_stream("INCIDENTS").await.is_err() {
            tokio::task::yield_now().await;
        }
    })
    .await;

    // Within the server's limit itself, so only the dead letter's headers push it over.
    let body = json!({"id": "IT-999999", "description": "x".repeat(3_600)}).to_string();
    js.publish("incidents.js.commands.edit", Bytes::from(body.clone())).await.unwrap().await.unwrap();
    wait_count(&letters, 1).await;
    let letter = &messages(&letters).await[0];
    assert_eq!(header(letter, "Incident-Bridge-Truncated"), body.len().to_string());
    assert_eq!(header(letter, "Incident-Bridge-Attempts"), "1");
    assert_eq!(header(letter, "Incident-Bridge-Deliveries"), "1");

    let mut consumer: jetstream::consumer::PullConsumer =
        js.get_stream("INCIDENTS").await.unwrap().get_consumer("incident-bridge").await.unwrap();
    within(20, "the message to be settled", async {
        loop {
            let info = consumer.info().await.unwrap();
            if info.ack_floor.stream_sequence >= 1 && info.num_ack_pending == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(app.sim.requests().len(), 1, "SCWM was called once, not once per delivery");
    app.stop().await;
}

#[tokio::test]
async fn with_the_store_in_nats_an_oversized_dead_letter_is_kept_cut_and_the_caller_gets_the_real_404() {
    let nats = small_server();
    let js = jetstream::new(nats.client().await);
    let letters = capture(&js, "DEAD_LETTERS", "scwm.dlq.>").await;
    let sim = crate::kit::start_simulator().await;
    let config = format!(
        "[nats]\nurl = \"{}\"\n[store]\nbackend = \"jetstream-kv\"\nbucket = \"small\"\n",
        nats.url()
    );
    let app = TestApp::start_against(sim, &config, &[]).await;
    app.wait_component("nats", "ready").await;

    // Larger than a KV value may be: the outbox entry cannot hold it whole.
    let body = json!({"id": "IT-999999", "description": "x".repeat(6_000)}).to_string();
    let resp = app
        .http
        .post(app.url("/v1/incidents/edit"))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404, "SCWM's answer, not a store error");
    wait_count(&letters, 1).await;
    let letter = &messages(&letters).await[0];
    assert_eq!(header(letter, "Incident-Bridge-Error-Kind"), "scwm_rejected");
    assert_eq!(header(letter, "Incident-Bridge-Truncated"), body.len().to_string());
    assert!(body.as_bytes().starts_with(&letter.payload));
    app.wait_component("outbox", "ready").await;
    app.stop().await;
}
