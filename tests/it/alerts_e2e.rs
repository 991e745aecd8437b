//! The alerts feature end to end: captured Alertmanager and Grafana payloads (bare, or inside a
//! CloudEvent) go through the real bridge (HTTP webhooks, a core NATS subscription, a JetStream
//! consumer) into the SCWM simulator, with the correlation store in a redb file or in a
//! JetStream KV bucket that two bridges share. Assertions are on what SCWM received (the
//! simulator's request log) and what it holds (its incidents).
//!
//! Each test has its own simulator, temp dir and, where NATS is involved, its own nats-server.
//! Nothing sleeps to synchronise: HTTP and NATS request/reply answer once the bridge finished,
//! a JetStream message is done when the consumer's ack floor passes it, and dead letters are
//! awaited on a subscription or on the bridge's channel sink.

use std::{
    collections::{BTreeMap, HashMap},
    process::Command,
    time::Duration,
};

use crate::kit::{
    TestApp,
    alerts::{BEARER, Step, am_source, correlation_key, keyed_notification},
    nats::NatsServer,
    within,
};
use crate::kit::{
    fixture,
    nats::{header, request as nats_request},
};
use async_nats::jetstream::{self, consumer::PullConsumer};
use bytes::Bytes;
use futures::StreamExt;
use incident_bridge::{
    config,
    publish::Published,
    scwm::Operation,
    sim::{Incident, IncidentStatus, SimHandle},
};
use serde_json::{Value, json};
use tempfile::TempDir;

const CORE_SUBJECT: &str = "alerts.core.in";
const JS_SUBJECT: &str = "alerts.js.in";
const STREAM: &str = "ALERTS";
/// The consumer name the bridge gives its durable consumer by default.
const DURABLE: &str = "incident-bridge";

fn am(name: &str) -> Vec<u8> {
    fixture(&format!("alertmanager/{name}.json"))
}

/// An Alertmanager fixture changed by `edit` (a new severity, summary, fingerprint, ...).
fn am_edited(name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&am(name)).unwrap();
    edit(&mut v);
    serde_json::to_vec(&v).unwrap()
}

/// The correlation store as a redb file in `dir`.
fn embedded_store(dir: &TempDir) -> String {
    format!("\n[store]\npath = \"{}\"\n", dir.path().join("correlation.redb").display())
}

/// NATS with a core subscription and a JetStream consumer, both read by `source`.
fn nats_for(url: &str, source: &str) -> String {
    format!(
        r#"
[nats]
url = "{url}"

[[nats.subscriptions]]
subject = "alerts.core.>"
source = "{source}"

[[nats.consumers]]
stream = "{STREAM}"
create = true
stream_subjects = ["alerts.js.>"]
source = "{source}"
ack_wait = "5s"
max_deliver = 50
"#
    )
}

/// How a test sends alerts to the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Http,
    CoreNats,
    JetStream,
}

/// A bridge with its simulator, store directory and, unless it takes only HTTP, its own
/// nats-server.
struct Rig {
    app: TestApp,
    via: Via,
    source: String,
    dir: TempDir,
    /// Kept so the server lives as long as the bridge.
    _nats: Option<NatsServer>,
    client: Option<async_nats::Client>,
}

impl Rig {
    /// A bridge with `sources` (whose source `source` the sends go to) receiving over `via`.
    async fn start(via: Via, source: &str, sources: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let nats = (via != Via::Http).then(NatsServer::start);
        let mut extra = sources.to_owned();
        if let Some(n) = &nats {
            extra.push_str(&nats_for(&n.url(), source));
        }
        extra.push_str(&embedded_store(&dir));
        let app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
        let client = match &nats {
            Some(n) => Some(n.client().await),
            None => None,
        };
        let rig = Self { app, via, source: source.to_owned(), dir, _nats: nats, client };
        if via == Via::JetStream {
            rig.wait_for_consumer().await;
        }
        rig
    }

    fn sim(&self) -> &SimHandle {
        &self.app.sim
    }

    fn client(&self) -> &async_nats::Client {
        self.client.as_ref().expect("a rig with NATS")
    }

    fn js(&self) -> jetstream::Context {
        jetstream::new(self.client().clone())
    }

    /// Sends one notification and returns once the bridge has finished with it: the HTTP
    /// answer or the NATS reply (which must say 200), or the JetStream ack.
    async fn send(&self, body: &[u8]) -> Value {
        match self.via {
            Via::Http => {
                let (status, answer) = post(&self.app, &self.source, body).await;
                assert_eq!(status, 200, "{answer}");
                answer
            }
            Via::CoreNats => {
                let reply =
                    nats_request(self.client(), CORE_SUBJECT, async_nats::HeaderMap::new(), body.to_vec())
                        .await;
                assert_eq!(header(&reply, "Incident-Bridge-Status"), Some("200"), "{:?}", reply.payload);
                serde_json::from_slice(&reply.payload).unwrap_or(Value::Null)
            }
            Via::JetStream => {
                let ack =
                    self.js().publish(JS_SUBJECT, Bytes::copy_from_slice(body)).await.unwrap().await.unwrap();
                wait_acked(&self.js(), ack.sequence).await;
                Value::Null
            }
        }
    }

    /// The stream and the consumer exist once the bridge has created them.
    async fn wait_for_consumer(&self) {
        let js = self.js();
        within(20, "the bridge's JetStream consumer", async {
            loop {
                if let Ok(stream) = js.get_stream(STREAM).await
                    && stream.get_consumer::<jetstream::consumer::pull::Config>(DURABLE).await.is_ok()
                {
                    break;
                }
                tokio::task::yield_now().await;
            }
        })
        .await;
    }

    /// Every item the bridge's channel sink has published so far.
    fn drain_published(&mut self) -> Vec<Published> {
        let mut out = Vec::new();
        while let Ok(p) = self.app.published.try_recv() {
            out.push(p);
        }
        out
    }

    async fn stop(self) {
        self.app.stop().await;
        drop(self.dir);
    }
}

/// `POST /webhooks/<source>` with the bearer token; the status and the JSON answer.
async fn post(app: &TestApp, source: &str, body: &[u8]) -> (u16, Value) {
    post_with(app, source, "application/json", &[], body).await
}

async fn post_with(
    app: &TestApp,
    source: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut req = app
        .http
        .post(app.url(&format!("/webhooks/{source}")))
        .header("content-type", content_type)
        .header("authorization", format!("Bearer {BEARER}"))
        .body(body.to_vec());
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = req.send().await.expect("the bridge answers");
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn consumer_info(js: &jetstream::Context) -> Option<jetstream::consumer::Info> {
    let mut consumer: PullConsumer = js.get_stream(STREAM).await.ok()?.get_consumer(DURABLE).await.ok()?;
    consumer.info().await.ok().cloned()
}

/// Waits until every message up to stream sequence `seq` is acknowledged (or terminated) and
/// nothing is pending acknowledgement.
async fn wait_acked(js: &jetstream::Context, seq: u64) {
    within(60, "the bridge to acknowledge the JetStream messages", async {
        loop {
            if let Some(info) = consumer_info(js).await
                && info.ack_floor.stream_sequence >= seq
                && info.num_ack_pending == 0
            {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// One SCWM call as the simulator logged it.
#[derive(Debug, Clone)]
struct Call {
    op: Operation,
    owner: String,
    plate: String,
    payload: Value,
    status: Option<u16>,
    /// SCWM answered it as a repeat of an earlier request with the same licensePlate.
    duplicate: bool,
}

fn op_named(event_name: &str) -> Operation {
    Operation::ALL
        .into_iter()
        .find(|op| op.default_event_name() == event_name)
        .unwrap_or_else(|| panic!("unknown eventName {event_name}"))
}

fn calls(sim: &SimHandle) -> Vec<Call> {
    sim.requests()
        .into_iter()
        .map(|r| Call {
            op: op_named(r.body["header"]["eventName"].as_str().unwrap()),
            owner: r.body["header"]["ownerId"].as_str().unwrap_or_default().to_owned(),
            plate: r.body["header"]["licensePlate"].as_str().unwrap_or_default().to_owned(),
            payload: r.body["payload"].clone(),
            status: r.status,
            duplicate: r.duplicate,
        })
        .collect()
}

fn ops(calls: &[Call]) -> Vec<Operation> {
    calls.iter().map(|c| c.op).collect()
}

/// The incidents whose `externalRef` is `key`, oldest first.
fn incidents_for(sim: &SimHandle, key: &str) -> Vec<Incident> {
    sim.incidents()
        .into_iter()
        .filter(|i| i.fields.get("externalRef").and_then(Value::as_str) == Some(key))
        .collect()
}

/// The one incident opened for `key`.
fn incident_for(sim: &SimHandle, key: &str) -> Incident {
    let mut found = incidents_for(sim, key);
    assert_eq!(found.len(), 1, "one incident for {key}: {found:?}");
    found.remove(0)
}

const DISK_KEY: &str = "am:fp:fd70cbc6aad0d083";
const CPU_11_KEY: &str = "am:fp:e817690ee90aaa6a";
const CPU_12_KEY: &str = "am:fp:81b3626193eb1f73";

/// Open, repeat, resolve and fire again one alert next to two others, over `via`.
async fn an_alert_lives_through_open_repeat_close_and_reopen(via: Via) {
    let rig = Rig::start(via, "am", &am_source("am", "reopen_window = \"1h\"")).await;
    // Two other incidents first, so that closing the right one means something.
    rig.send(&am("firing-two-alerts")).await;
    rig.send(&am("firing-single")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all), [Operation::Add; 3]);
    let add = all.iter().find(|c| c.payload["externalRef"] == DISK_KEY).expect("an add for the disk alert");
    assert_eq!(add.owner, "TEST_OWNER");
    assert_eq!(add.payload["title"], "DiskAlmostFull: Disk /var/lib/postgresql 95% full on 10.0.0.21:9100");
    assert_eq!(add.payload["severity"], "critical");
    assert_eq!(add.payload["service"], "postgres");
    assert_eq!(add.payload["source"], "incident-bridge/am");
    assert_eq!(add.payload["occurredAt"], "2026-11-28T12:41:48.668Z");
    assert_eq!(
        add.payload["labels"],
        json!({"alertname": "DiskAlmostFull", "instance": "10.0.0.21:9100", "service": "postgres", "severity": "critical"})
    );
    let disk = incident_for(rig.sim(), DISK_KEY);
    assert_eq!(disk.status, IncidentStatus::Open);

    let answer = rig.send(&am("repeat-single")).await;
    let answer2 = rig.send(&am("repeat-two-alerts")).await;
    assert_eq!(rig.sim().requests().len(), 3, "a repeat notification makes no SCWM call");
    if via == Via::Http {
        assert_eq!(answer["events"], 1);
        assert_eq!(answer["outcomes"][0]["outcome"], "duplicate", "{answer}");
        assert_eq!(answer2["events"], 2);
    }

    rig.send(&am("resolved-single")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all[3..]), [Operation::Close]);
    assert_eq!(all[3].payload["id"], disk.id.as_str(), "the close names the disk alert's incident");
    assert_eq!(all[3].payload["resolution"], "resolved");
    assert_eq!(incident_for(rig.sim(), DISK_KEY).status, IncidentStatus::Closed);
    for key in [CPU_11_KEY, CPU_12_KEY] {
        assert_eq!(incident_for(rig.sim(), key).status, IncidentStatus::Open, "{key} is untouched");
    }

    rig.send(&am("firing-single")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all[4..]), [Operation::Reopen], "same content: a reopen and no edit");
    assert_eq!(all[4].payload["id"], disk.id.as_str());
    let reopened = incident_for(rig.sim(), DISK_KEY);
    assert_eq!((reopened.id, reopened.status), (disk.id, IncidentStatus::Open));
    assert_eq!(rig.sim().incidents().len(), 3);
    rig.stop().await;
}

#[tokio::test]
async fn over_http_an_alert_lives_through_open_repeat_close_and_reopen() {
    an_alert_lives_through_open_repeat_close_and_reopen(Via::Http).await;
}

#[tokio::test]
async fn over_core_nats_an_alert_lives_through_open_repeat_close_and_reopen() {
    an_alert_lives_through_open_repeat_close_and_reopen(Via::CoreNats).await;
}

#[tokio::test]
async fn over_jetstream_an_alert_lives_through_open_repeat_close_and_reopen() {
    an_alert_lives_through_open_repeat_close_and_reopen(Via::JetStream).await;
}

/// Every captured fixture in capture order: each is accepted, nothing is dead-lettered, and as
/// every alert ends resolved, every incident ends closed.
async fn every_fixture_is_accepted_and_every_incident_ends_closed(via: Via) {
    let mut rig = Rig::start(via, "am", &am_source("am", "")).await;
    let index: Value = serde_json::from_slice(&fixture("alertmanager/INDEX.json")).unwrap();
    let mut entries: Vec<&Value> = index["fixtures"].as_array().unwrap().iter().collect();
    entries.sort_by_key(|e| e["capture_no"].as_u64().unwrap());
    assert_eq!(entries.len(), 15);
    for entry in entries {
        let file = entry["fixture"].as_str().unwrap();
        let answer = rig.send(&fixture(&format!("alertmanager/{file}"))).await;
        if via == Via::Http {
            assert_eq!(answer["events"], entry["alerts"].as_array().unwrap().len(), "{file}: {answer}");
        }
    }
    let letters: Vec<_> =
        rig.drain_published().into_iter().filter(|p| matches!(p, Published::DeadLetter(_))).collect();
    assert!(letters.is_empty(), "no dead letters: {letters:?}");
    let incidents = rig.sim().incidents();
    // DiskAlmostFull, two HighCPUUsage, CertificateExpiring, two QueueBacklog, FixtureFlapping,
    // FixtureAlwaysFiring.
    assert_eq!(incidents.len(), 8, "{incidents:?}");
    assert!(incidents.iter().all(|i| i.status == IncidentStatus::Closed), "{incidents:?}");
    assert!(calls(rig.sim()).iter().all(|c| c.status == Some(200)));
    rig.stop().await;
}

#[tokio::test]
async fn over_http_every_alertmanager_fixture_is_accepted_and_every_incident_ends_closed() {
    every_fixture_is_accepted_and_every_incident_ends_closed(Via::Http).await;
}

#[tokio::test]
async fn over_core_nats_every_alertmanager_fixture_is_accepted_and_every_incident_ends_closed() {
    every_fixture_is_accepted_and_every_incident_ends_closed(Via::CoreNats).await;
}

#[tokio::test]
async fn over_jetstream_every_alertmanager_fixture_is_accepted_and_every_incident_ends_closed() {
    every_fixture_is_accepted_and_every_incident_ends_closed(Via::JetStream).await;
}

#[tokio::test]
async fn a_webhook_without_the_source_s_bearer_token_is_refused_and_calls_nothing() {
    let rig = Rig::start(Via::Http, "am", &am_source("am", "")).await;
    let resp = rig
        .app
        .http
        .post(rig.app.url("/webhooks/am"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer wrong")
        .body(am("firing-single"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(rig.sim().requests().is_empty());
    rig.stop().await;
}

#[tokio::test]
async fn an_alert_firing_again_after_the_reopen_window_opens_a_new_incident_and_its_key_follows_it() {
    let window = Duration::from_millis(1);
    let rig = Rig::start(Via::Http, "am", &am_source("am", "reopen_window = \"1ms\"")).await;
    rig.send(&am("firing-single")).await;
    rig.send(&am("resolved-single")).await;
    // The bridge noted the close before it answered: once the window has passed since the
    // answer, it has passed since the close.
    tokio::time::sleep_until(tokio::time::Instant::now() + window * 2).await;
    rig.send(&am("firing-single")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all), [Operation::Add, Operation::Close, Operation::Add]);
    let both = incidents_for(rig.sim(), DISK_KEY);
    assert_eq!(both.len(), 2, "{both:?}");
    let (old, new) = (&both[0], &both[1]);
    assert_ne!(old.id, new.id);
    assert_eq!((old.status, new.status), (IncidentStatus::Closed, IncidentStatus::Open));

    // The key maps to the new incident now.
    rig.send(&am("resolved-single")).await;
    let all = calls(rig.sim());
    assert_eq!(all[3].op, Operation::Close);
    assert_eq!(all[3].payload["id"], new.id.as_str());
    assert_eq!(incidents_for(rig.sim(), DISK_KEY)[1].status, IncidentStatus::Closed);
    rig.stop().await;
}

#[tokio::test]
async fn with_per_alert_grouping_a_partly_resolved_group_closes_only_the_resolved_alert_s_incident() {
    let rig = Rig::start(Via::Http, "am", &am_source("am", "grouping = \"alert\"")).await;
    rig.send(&am("firing-two-alerts")).await;
    let (firing, resolving) = (incident_for(rig.sim(), CPU_11_KEY), incident_for(rig.sim(), CPU_12_KEY));
    let answer = rig.send(&am("partially-resolved")).await;
    assert_eq!(answer["events"], 2);
    let all = calls(rig.sim());
    assert_eq!(ops(&all[2..]), [Operation::Close], "the still-firing alert is unchanged: no call");
    assert_eq!(all[2].payload["id"], resolving.id.as_str());
    assert_eq!(incident_for(rig.sim(), CPU_12_KEY).status, IncidentStatus::Closed);
    assert_eq!(incident_for(rig.sim(), CPU_11_KEY).status, IncidentStatus::Open);

    rig.send(&am("resolved-two-alerts")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all[3..]), [Operation::Close], "the closed one is not closed twice");
    assert_eq!(all[3].payload["id"], firing.id.as_str());
    rig.stop().await;
}

#[tokio::test]
async fn with_group_grouping_a_partly_resolved_group_stays_open_and_is_edited() {
    let rig = Rig::start(Via::Http, "am", &am_source("am", "grouping = \"group\"")).await;
    let answer = rig.send(&am("firing-two-alerts")).await;
    assert_eq!(answer["events"], 1, "one event for the whole group");
    let all = calls(rig.sim());
    assert_eq!(ops(&all), [Operation::Add]);
    assert_eq!(all[0].payload["title"], "HighCPUUsage: 2 alerts");
    let key = all[0].payload["externalRef"].as_str().unwrap().to_owned();
    assert!(key.starts_with("am:group:"), "{key}");
    let group = incident_for(rig.sim(), &key);

    rig.send(&am("repeat-two-alerts")).await;
    assert_eq!(rig.sim().requests().len(), 1, "a repeat makes no call");

    rig.send(&am("partially-resolved")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all[1..]), [Operation::Edit], "the group still fires; its content changed");
    assert_eq!(all[1].payload["id"], group.id.as_str());
    let description = all[1].payload["description"].as_str().unwrap();
    assert!(description.contains("- [resolved] CPU usage above 90% on 10.0.0.12:9100"), "{description}");
    assert!(description.contains("- [firing] CPU usage above 90% on 10.0.0.11:9100"), "{description}");
    let edited = incident_for(rig.sim(), &key);
    assert_eq!(edited.status, IncidentStatus::Open);
    assert_eq!(edited.fields["description"], all[1].payload["description"]);

    rig.send(&am("resolved-two-alerts")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all[2..]), [Operation::Close]);
    assert_eq!(all[2].payload["id"], group.id.as_str());
    rig.stop().await;
}

#[tokio::test]
async fn a_truncated_group_says_what_was_left_out_and_closes_when_resolved() {
    let rig = Rig::start(Via::Http, "am", &am_source("am", "grouping = \"group\"")).await;
    rig.send(&am("truncated-firing")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all), [Operation::Add]);
    let description = all[0].payload["description"].as_str().unwrap();
    assert!(description.contains("- [firing] Queue backlog high on worker 10.0.1.1"), "{description}");
    assert!(description.contains("- [firing] Queue backlog high on worker 10.0.1.2"), "{description}");
    assert!(description.contains("- and 3 more not included in the notification"), "{description}");
    rig.send(&am("truncated-resolved")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all), [Operation::Add, Operation::Close]);
    assert_eq!(rig.sim().incidents()[0].status, IncidentStatus::Closed);
    rig.stop().await;
}

#[tokio::test]
async fn grafana_alerts_open_incidents_when_firing_and_close_them_when_resolved() {
    let sources = r#"
[sources.grafana]
kind = "grafana"

[[sources.grafana.auth]]
scheme = "none"
"#;
    let rig = Rig::start(Via::Http, "grafana", sources).await;
    let answer = rig.send(&fixture("grafana/firing.json")).await;
    assert_eq!(answer["events"], 2);
    let adds = calls(rig.sim());
    assert_eq!(ops(&adds), [Operation::Add, Operation::Add]);
    let a = incident_for(rig.sim(), "grafana:fp:ca4945f09d68910f");
    let b = incident_for(rig.sim(), "grafana:fp:2297a33e65871be6");
    assert_eq!(a.fields["title"], "HighCPUUsage: CPU usage above 90% on 10.0.0.11:9100");
    assert_eq!(a.fields["category"], "Infrastructure", "the folder is the category");
    assert_eq!(b.fields["title"], "HighCPUUsage: CPU usage above 90% on 10.0.0.12:9100");

    rig.send(&fixture("grafana/firing.json")).await;
    assert_eq!(rig.sim().requests().len(), 2, "the same notification again makes no call");

    rig.send(&fixture("grafana/resolved.json")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all[2..]), [Operation::Close, Operation::Close]);
    let mut closed: Vec<&str> = all[2..].iter().map(|c| c.payload["id"].as_str().unwrap()).collect();
    closed.sort();
    let mut want = vec![a.id.as_str(), b.id.as_str()];
    want.sort();
    assert_eq!(closed, want);
    assert!(rig.sim().incidents().iter().all(|i| i.status == IncidentStatus::Closed));
    rig.stop().await;
}

/// A structured-mode CloudEvent (JSON event format) carrying `data` unchanged.
fn structured_event(id: &str, data: &[u8]) -> Vec<u8> {
    let data = std::str::from_utf8(data).unwrap().trim_end();
    format!(
        r#"{{"specversion":"1.0","id":"{id}","source":"/alertmanager/main","type":"io.prometheus.alertmanager.notification","datacontenttype":"application/json","data":{data}}}"#
    )
    .into_bytes()
}

#[tokio::test]
async fn cloudevents_carry_alertmanager_payloads_in_every_mode_over_http_and_nats() {
    let sources = format!(
        r#"
[sources.ce]
kind = "cloudevents"
payload = "alertmanager"
reopen_window = "1h"

[[sources.ce.auth]]
scheme = "bearer"
tokens = ["{BEARER}"]
"#
    );
    let rig = Rig::start(Via::CoreNats, "ce", &sources).await;
    let key = "ce:fp:fd70cbc6aad0d083";

    // HTTP, structured mode: opens.
    let (status, answer) = post_with(
        &rig.app,
        "ce",
        "application/cloudevents+json",
        &[],
        &structured_event("e1", &am("firing-single")),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let incident = incident_for(rig.sim(), key);
    assert_eq!(
        incident.fields["title"],
        "DiskAlmostFull: Disk /var/lib/postgresql 95% full on 10.0.0.21:9100"
    );

    // HTTP, binary mode: closes.
    let binary = [
        ("ce-specversion", "1.0"),
        ("ce-id", "e2"),
        ("ce-source", "/alertmanager/main"),
        ("ce-type", "io.prometheus.alertmanager.notification"),
    ];
    let (status, answer) =
        post_with(&rig.app, "ce", "application/json", &binary, &am("resolved-single")).await;
    assert_eq!(status, 200, "{answer}");

    // NATS, structured mode: reopens.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/cloudevents+json");
    let reply =
        nats_request(rig.client(), CORE_SUBJECT, headers, structured_event("e3", &am("firing-single"))).await;
    assert_eq!(header(&reply, "Incident-Bridge-Status"), Some("200"));

    // NATS, binary mode: closes again.
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "e4"),
        ("ce-source", "/alertmanager/main"),
        ("ce-type", "io.prometheus.alertmanager.notification"),
        ("ce-datacontenttype", "application/json"),
    ] {
        headers.insert(name, value);
    }
    let reply = nats_request(rig.client(), CORE_SUBJECT, headers, am("resolved-single")).await;
    assert_eq!(header(&reply, "Incident-Bridge-Status"), Some("200"));

    let all = calls(rig.sim());
    assert_eq!(ops(&all), [Operation::Add, Operation::Close, Operation::Reopen, Operation::Close]);
    assert!(all[1..].iter().all(|c| c.payload["id"] == incident.id.as_str()), "{all:?}");
    assert_eq!(incident_for(rig.sim(), key).status, IncidentStatus::Closed);
    rig.stop().await;
}

#[tokio::test]
async fn routes_drop_info_alerts_submit_to_partners_and_set_the_owner_scwm_sees() {
    let routes = r#"owner_id = "AM_OWNER"

[[sources.am.routes]]
matchers = ['severity="info"']
action = "drop"

[[sources.am.routes]]
matchers = ['service="postgres"']
partner = "DBA-TEAM"

[[sources.am.routes]]
matchers = ['service="checkout-api"']
owner_id = "CHECKOUT_OWNER"
"#;
    let rig = Rig::start(Via::Http, "am", &am_source("am", routes)).await;
    let info = am_edited("firing-single", |v| {
        v["alerts"][0]["labels"]["severity"] = json!("info");
        v["alerts"][0]["fingerprint"] = json!("00000000000000aa");
        v["commonLabels"]["severity"] = json!("info");
    });
    let answer = rig.send(&info).await;
    assert_eq!(answer["events"], 0, "a dropped alert is no event: {answer}");
    assert!(rig.sim().requests().is_empty(), "a drop route makes no SCWM call");

    rig.send(&am("firing-single")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all), [Operation::Add, Operation::Submit], "a partner route submits right after the add");
    let incident = incident_for(rig.sim(), DISK_KEY);
    assert_eq!(all[1].payload["id"], incident.id.as_str());
    assert_eq!(all[1].payload["partnerId"], "DBA-TEAM");
    assert_eq!(incident.partner_id, Some(json!("DBA-TEAM")));
    assert!(all.iter().all(|c| c.owner == "AM_OWNER"), "the source's owner: {all:?}");

    rig.send(&am("firing-two-alerts")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all[2..]), [Operation::Add, Operation::Add], "no partner, no submit");
    assert!(all[2..].iter().all(|c| c.owner == "CHECKOUT_OWNER"), "the route's owner: {all:?}");
    rig.stop().await;
}

#[tokio::test]
async fn a_template_that_fails_for_an_alert_gives_way_to_the_default_and_loses_nothing() {
    let templates = r#"
[sources.am.templates]
title = "{{ labels.team }} is paged"
"#;
    let mut rig = Rig::start(Via::CoreNats, "am", &am_source("am", templates)).await;
    let mut dlq = rig.client().subscribe("scwm.dlq.>").await.unwrap();
    rig.client().flush().await.unwrap();

    let (status, answer) = post(&rig.app, "am", &am("firing-single")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcomes"][0]["outcome"], "done");
    let incident = incident_for(rig.sim(), DISK_KEY);
    // The answer says, per alert, what it is, what was done and to which incident.
    let told = &answer["outcomes"][0];
    assert_eq!(told["alertname"], "DiskAlmostFull", "{answer}");
    assert_eq!(told["key"], DISK_KEY, "{answer}");
    assert_eq!(told["ops"], json!(["add"]), "{answer}");
    assert_eq!(told["itemId"], incident.id.as_str(), "{answer}");
    let title = incident.fields["title"].as_str().unwrap();
    assert!(!title.contains("is paged") && !title.is_empty(), "the built-in title stands in: {title}");
    let description = incident.fields["description"].as_str().unwrap();
    assert!(
        description.contains(
            "[incident-bridge] the template of `title` (sources.am.templates.title: undefined value"
        ),
        "the incident says which template failed and why: {description}"
    );

    // Over NATS the same alert again: the same content, a repeat, nothing to do.
    let reply =
        nats_request(rig.client(), CORE_SUBJECT, async_nats::HeaderMap::new(), am("firing-single")).await;
    assert_eq!(header(&reply, "Incident-Bridge-Status"), Some("200"));
    assert_eq!(rig.sim().requests().len(), 1, "one add, and the repeat changed nothing");
    let dead: Vec<_> =
        rig.drain_published().into_iter().filter(|p| matches!(p, Published::DeadLetter(_))).collect();
    assert!(dead.is_empty(), "{dead:?}");
    rig.client().flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::from_millis(1), dlq.next()).await.is_err(),
        "no dead letter on NATS"
    );
    rig.stop().await;
}

#[test]
fn a_template_that_does_not_compile_is_a_config_error_naming_its_key() {
    let sources = am_source(
        "am",
        r#"
[sources.am.templates]
title = "{{ labels.alertname "

[[sources.am.routes]]
matchers = ['severity="critical"']
[sources.am.routes.templates.payload]
add = "{% if %}"
"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let text =
        crate::kit::config_text("http://127.0.0.1:1/incident", &format!("{sources}{}", embedded_store(&dir)));
    let keys = ["sources.am.templates.title", "sources.am.routes[0].templates.payload.add"];

    let errors = config::load(&text, &BTreeMap::new(), &|p| std::fs::read_to_string(p)).unwrap_err();
    for key in keys {
        assert!(errors.has_key(key), "{key} missing from {errors}");
    }

    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_incident-bridge"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in keys {
        assert!(stderr.contains(key), "{key} missing from: {stderr}");
    }
}

#[tokio::test]
async fn when_scwm_no_longer_knows_the_mapped_item_the_mapping_is_dropped_and_a_new_incident_opens() {
    let rig = Rig::start(Via::Http, "am", &am_source("am", "")).await;
    // An unrelated incident first, so the alert's incident is not the first id the simulator
    // hands out (and gives out again after its reset).
    let resp = rig.app.command("add", json!({"title": "unrelated"})).await;
    assert_eq!(resp.status(), 200);
    rig.send(&am("firing-single")).await;
    let old = incident_for(rig.sim(), DISK_KEY);
    assert_eq!(old.id.as_str(), "IT-000002");

    let reset = rig.app.http.post(format!("{}/_sim/reset", rig.sim().base_url())).send().await.unwrap();
    assert!(reset.status().is_success());
    assert!(rig.sim().incidents().is_empty());

    let changed = am_edited("firing-single", |v| {
        v["alerts"][0]["annotations"]["summary"] =
            json!("Disk /var/lib/postgresql 99% full on 10.0.0.21:9100");
    });
    let answer = rig.send(&changed).await;
    assert_eq!(answer["outcomes"][0]["outcome"], "done", "{answer}");
    let all = calls(rig.sim());
    assert_eq!(ops(&all), [Operation::Edit, Operation::Add], "an edit SCWM refuses, then a new add");
    assert_eq!((all[0].payload["id"].as_str(), all[0].status), (Some("IT-000002"), Some(404)));
    let new = incident_for(rig.sim(), DISK_KEY);
    assert_eq!(new.id.as_str(), "IT-000001");
    assert_eq!(new.fields["title"], "DiskAlmostFull: Disk /var/lib/postgresql 99% full on 10.0.0.21:9100");

    rig.send(&am("resolved-single")).await;
    let all = calls(rig.sim());
    assert_eq!(ops(&all[2..]), [Operation::Close]);
    assert_eq!(all[2].payload["id"], "IT-000001", "the key maps to the new incident");
    assert_eq!(incident_for(rig.sim(), DISK_KEY).status, IncidentStatus::Closed);
    rig.stop().await;
}

#[tokio::test]
async fn after_the_store_is_lost_a_repeat_of_the_same_notification_finds_the_incident_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{}{}", am_source("am", ""), embedded_store(&dir));
    let app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    assert_eq!(post(&app, "am", &am("firing-single")).await.0, 200);
    let sim = app.stop_keeping_simulator().await;
    let first = incident_for(&sim, DISK_KEY);

    // A rollout onto an empty volume: the same SCWM, no memory of the incident.
    std::fs::remove_file(dir.path().join("correlation.redb")).unwrap();
    let app = TestApp::start_against(sim, &extra, &[]).await;
    let (status, answer) = post(&app, "am", &am("firing-single")).await;
    assert_eq!(status, 200, "{answer}");
    let all = calls(&app.sim);
    assert_eq!(ops(&all), [Operation::Add, Operation::Add], "decided again as unknown: an add");
    assert_eq!(all[0].plate, all[1].plate, "with the plate of the add that opened the incident");
    assert!(all[1].duplicate, "which SCWM answers as a repeat");
    assert_eq!(incidents_for(&app.sim, DISK_KEY).len(), 1, "no second incident");

    // The key maps to the first incident again: the resolve closes it.
    assert_eq!(post(&app, "am", &am("resolved-single")).await.0, 200);
    let all = calls(&app.sim);
    assert_eq!(ops(&all[2..]), [Operation::Close]);
    assert_eq!(all[2].payload["id"].as_str(), Some(first.id.as_str()));
    assert_eq!(incident_for(&app.sim, DISK_KEY).status, IncidentStatus::Closed);
    app.stop().await;
}

/// A repeat whose inputs the store remembers is not rendered again; templates changed between
/// two runs are changed inputs, so the next repeat is rendered, and edits the incident.
#[tokio::test]
async fn a_repeat_after_the_templates_changed_across_a_restart_edits_the_incident() {
    let dir = tempfile::tempdir().unwrap();
    let before = format!("{}{}", am_source("am", ""), embedded_store(&dir));
    let app = TestApp::start_against(crate::kit::start_simulator().await, &before, &[]).await;
    for _ in 0..2 {
        assert_eq!(post(&app, "am", &am("firing-single")).await.0, 200);
    }
    assert_eq!(ops(&calls(&app.sim)), [Operation::Add], "the repeat calls nothing");
    let sim = app.stop_keeping_simulator().await;

    let templates = "\n[sources.am.templates]\ntitle = \"[{{ labels.severity }}] {{ labels.alertname }}\"\n";
    let after = format!("{}{}", am_source("am", templates), embedded_store(&dir));
    let app = TestApp::start_against(sim, &after, &[]).await;
    let (status, answer) = post(&app, "am", &am("firing-single")).await;
    assert_eq!(status, 200, "{answer}");
    let all = calls(&app.sim);
    assert_eq!(ops(&all), [Operation::Add, Operation::Edit], "the repeat under new templates edits");
    assert!(all[1].payload["title"].as_str().is_some_and(|t| t.starts_with('[')), "{}", all[1].payload);
    assert_eq!(post(&app, "am", &am("firing-single")).await.0, 200);
    assert_eq!(calls(&app.sim).len(), 2, "and the repeat after it calls nothing again");
    app.stop().await;
}

#[tokio::test]
async fn a_jetstream_message_retried_after_a_newer_one_for_its_key_does_not_undo_it() {
    let nats = NatsServer::start();
    let js = jetstream::new(nats.client().await);
    // Both messages are in the stream before the bridge pulls, so they arrive together and
    // queue one behind the other on the key.
    js.create_stream(jetstream::stream::Config {
        name: STREAM.into(),
        subjects: vec!["alerts.js.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    for name in ["firing-single", "resolved-single"] {
        js.publish(JS_SUBJECT, Bytes::from(am(name))).await.unwrap().await.unwrap();
    }
    let sim = crate::kit::start_simulator().await;
    // The firing message's add fails once; with one attempt per delivery it is put back, and
    // the resolved message, next in line, finishes that add and closes the incident.
    sim.set_faults(incident_bridge::sim::Faults {
        fail_next: 1,
        fail_next_with: incident_bridge::sim::Failure::SERVICE_UNAVAILABLE,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("{}{}{}", am_source("am", ""), nats_for(&nats.url(), "am"), embedded_store(&dir));
    let app = TestApp::start_against(sim, &extra, &[("scwm.retry.max_attempts", "1")]).await;
    wait_acked(&js, 2).await;

    let all = calls(&app.sim);
    assert_eq!(ops(&all), [Operation::Add, Operation::Add, Operation::Close], "{all:?}");
    assert_eq!((all[0].status, all[1].status), (Some(503), Some(200)));
    let incident = incident_for(&app.sim, DISK_KEY);
    assert_eq!(
        incident.status,
        IncidentStatus::Closed,
        "the redelivered firing message came too late to reopen it"
    );
    app.stop().await;
}

/// The events of key `k`: five shapes, with repeats, ending firing or resolved, and one that
/// never fires.
fn script(k: usize) -> Vec<Step> {
    use Step::{Fire as F, Resolve as R};
    match k % 5 {
        0 => vec![F, F, R],
        1 => vec![F, R, F, F],
        2 => vec![F, F, F],
        3 => vec![F, R, F, R, R],
        _ => vec![R, R],
    }
}

#[tokio::test]
async fn two_bridges_sharing_one_kv_store_and_one_consumer_open_exactly_one_incident_per_key_in_its_final_state()
 {
    const KEYS: usize = 200;
    let nats = NatsServer::start();
    let holder = crate::kit::start_simulator().await;
    let sim_url = holder.url();
    let extra = format!(
        r#"{sources}
[nats]
url = "{url}"
subscriptions = []

[[nats.consumers]]
stream = "{STREAM}"
create = true
stream_subjects = ["alerts.js.>"]
source = "am"
ack_wait = "5s"
# Each pull takes up to 256 messages and 1,000 may be unacknowledged (the default), so one
# key's events sit on both bridges at once: claims are contested and messages come out of order.
max_deliver = 100

[store]
backend = "jetstream-kv"
bucket = "alerts-shared"
claim_ttl = "2s"
"#,
        sources = am_source("am", "reopen_window = \"1h\""),
        url = nats.url(),
    );
    let a = TestApp::start_against(holder, &extra, &[]).await;
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    within(20, "the first bridge's consumer", async {
        while consumer_info(&js).await.is_none() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    // The second bridge talks to the first one's simulator.
    let b = TestApp::start_with_text(&crate::kit::config_text(&sim_url, &extra)).await;
    within(20, "both bridges to pull", async {
        while consumer_info(&js).await.is_none_or(|info| info.num_waiting < 2) {
            tokio::task::yield_now().await;
        }
    })
    .await;

    // Round r holds every key's r-th event, so one key's events are 40 to 200 messages apart
    // in the stream and land in different batches, on different bridges.
    let scripts: Vec<Vec<Step>> = (0..KEYS).map(script).collect();
    let rounds = scripts.iter().map(Vec::len).max().unwrap();
    let mut last_seq = 0;
    for r in 0..rounds {
        let mut acks = Vec::new();
        for (k, steps) in scripts.iter().enumerate() {
            if let Some(step) = steps.get(r) {
                acks.push(js.publish(JS_SUBJECT, Bytes::from(keyed_notification(k, *step))).await.unwrap());
            }
        }
        for ack in acks {
            last_seq = last_seq.max(ack.await.unwrap().sequence);
        }
    }
    wait_acked(&js, last_seq).await;

    let mut by_key: HashMap<String, Vec<Incident>> = HashMap::new();
    for i in a.sim.incidents() {
        let key = i.fields["externalRef"].as_str().unwrap().to_owned();
        by_key.entry(key).or_default().push(i);
    }
    let mut wrong = Vec::new();
    for (k, steps) in scripts.iter().enumerate() {
        let key = correlation_key("am", k);
        let found = by_key.remove(&key).unwrap_or_default();
        let ever_fired = steps.contains(&Step::Fire);
        let want = match steps.last() {
            Some(Step::Fire) => IncidentStatus::Open,
            _ => IncidentStatus::Closed,
        };
        match (ever_fired, found.as_slice()) {
            (false, []) => {}
            (true, [one]) if one.status == want => {}
            _ => wrong.push(format!(
                "{key} ({steps:?}): {:?}",
                found.iter().map(|i| (&i.id, i.status)).collect::<Vec<_>>()
            )),
        }
    }
    assert!(by_key.is_empty(), "incidents for unknown keys: {by_key:?}");
    assert!(wrong.is_empty(), "{} keys are wrong:\n{}", wrong.len(), wrong.join("\n"));

    let mut dead = Vec::new();
    let mut results = Vec::new();
    for mut app in [a, b] {
        let mut n = 0;
        while let Ok(p) = app.published.try_recv() {
            match p {
                Published::DeadLetter(d) => dead.push(d.reason),
                Published::Result(_) => n += 1,
                Published::Drift(d) => dead.push(format!("drift, with nobody acting in SCWM: {d:?}")),
                Published::Flap(f) => dead.push(format!("flapping, with no flap damping configured: {f:?}")),
            }
        }
        results.push(n);
        app.stop().await;
    }
    assert!(dead.is_empty(), "no dead letters: {dead:?}");
    assert!(results.iter().all(|&n| n > 0), "both bridges called SCWM: {results:?}");
}

#[test]
fn the_generated_notifications_decode_each_with_its_own_fingerprint() {
    use incident_bridge::decode::alertmanager;
    let a = alertmanager::decode(&keyed_notification(7, Step::Fire)).unwrap();
    let b = alertmanager::decode(&keyed_notification(8, Step::Resolve)).unwrap();
    assert_eq!(a.alerts[0].fingerprint, "00000000a1e70007");
    assert_eq!(b.alerts[0].fingerprint, "00000000a1e70008");
    assert_eq!(b.alerts[0].status.as_str(), "resolved");
}
