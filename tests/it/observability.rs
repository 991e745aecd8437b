//! Observability end to end, against the real binary (telemetry is process-wide): spans reach
//! an OTLP/HTTP receiver with one parent chain from the sender's `traceparent` through the SCWM
//! call, the result event continues the same trace, and `/metrics` moves by exactly what
//! happened.

use std::collections::HashMap;

use crate::kit::{nats::NatsServer, within};
use axum::{Router, body::Bytes, extract::State, routing::post};
use futures::StreamExt;
use incident_bridge::sim::{Failure, Faults};
use opentelemetry_proto::tonic::{collector::trace::v1::ExportTraceServiceRequest, trace::v1::Span};
use prost::Message;
use serde_json::json;
use tokio::sync::mpsc;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An OTLP/HTTP receiver on port 0 that forwards every exported span.
async fn otlp_receiver() -> (String, mpsc::UnboundedReceiver<Span>) {
    let (tx, rx) = mpsc::unbounded_channel();
    async fn export(State(tx): State<mpsc::UnboundedSender<Span>>, body: Bytes) -> &'static str {
        let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf export");
        for rs in request.resource_spans {
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let _ = tx.send(span);
                }
            }
        }
        ""
    }
    let app = Router::new().route("/v1/traces", post(export)).with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), rx)
}

async fn spawn_with_env(
    config: &str,
    dir: &tempfile::TempDir,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    crate::kit::spawn_bridge_with_env(config, dir, env).await
}

#[tokio::test]
async fn one_trace_runs_from_the_sender_through_scwm_to_the_result_event() {
    let (endpoint, mut spans) = otlp_receiver().await;
    let nats = NatsServer::start();
    let sim = crate::kit::start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::kit::config_text(&sim.url(), &format!("[nats]\nurl = \"{}\"\n", nats.url()));
    let (mut child, addr) = spawn_with_env(
        &config,
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "bridge-under-test"),
        ],
    )
    .await;
    let client = nats.client().await;
    let mut results = client.subscribe("scwm.results.>").await.unwrap();
    client.flush().await.unwrap();

    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/incidents/add"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .json(&json!({"title": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // The result event carries the same trace.
    let result = within(10, "the result event", results.next()).await.unwrap();
    let tp = result.headers.as_ref().and_then(|h| h.get("traceparent")).unwrap().as_str().to_owned();
    assert!(tp.starts_with(&format!("00-{TRACE_ID}-")), "{tp}");

    // SCWM received the same trace too.
    let scwm_tp = sim.requests()[0]
        .headers
        .iter()
        .find(|(n, _)| n == "traceparent")
        .map(|(_, v)| v.clone())
        .expect("traceparent sent to SCWM");
    assert!(scwm_tp.starts_with(&format!("00-{TRACE_ID}-")), "{scwm_tp}");

    // Collect spans until the chain server → event → SCWM attempt, and both publish spans (the
    // one the kept result names, made with it, and the outbox's send of it) are there.
    let mut by_name: HashMap<String, Span> = HashMap::new();
    let mut sends: Vec<Span> = Vec::new();
    within(20, "the exported spans", async {
        while !["POST /v1/incidents/{op}", "process event", "POST"].iter().all(|n| by_name.contains_key(*n))
            || sends.len() < 2
        {
            let span = spans.recv().await.unwrap();
            if span.name == "send scwm.results.add" {
                sends.push(span);
            } else {
                by_name.insert(span.name.clone(), span);
            }
        }
    })
    .await;
    let server = &by_name["POST /v1/incidents/{op}"];
    let event = &by_name["process event"];
    let attempt = &by_name["POST"];
    let publish =
        sends.iter().find(|s| s.parent_span_id == event.span_id).expect("a publish span under processing");
    let relay = sends.iter().find(|s| s.span_id != publish.span_id).unwrap();
    for s in [server, event, attempt, publish, relay] {
        assert_eq!(hex(&s.trace_id), TRACE_ID, "{} is in the sender's trace", s.name);
    }
    assert_eq!(
        relay.parent_span_id, publish.span_id,
        "the outbox's send continues the trace the result names"
    );
    assert_eq!(hex(&server.parent_span_id), PARENT_ID, "the server span's parent is the sender's span");
    assert_eq!(event.parent_span_id, server.span_id, "processing hangs off the request");
    assert_eq!(attempt.parent_span_id, event.span_id, "the SCWM attempt hangs off processing");
    assert_eq!(publish.parent_span_id, event.span_id, "the publish hangs off processing");
    assert_eq!(scwm_tp, format!("00-{TRACE_ID}-{}-01", hex(&attempt.span_id)), "SCWM sees the attempt span");
    assert_eq!(tp, format!("00-{TRACE_ID}-{}-01", hex(&publish.span_id)), "readers see the publish span");
    // Integer attributes are exported as integers, as the semantic conventions type them.
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    let attribute = |span: &Span, name: &str| {
        span.attributes
            .iter()
            .find(|a| a.key == name)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.clone())
            .unwrap_or_else(|| panic!("{} has no attribute {name}", span.name))
    };
    assert_eq!(attribute(server, "http.response.status_code"), Any::IntValue(200));
    assert_eq!(attribute(attempt, "http.response.status_code"), Any::IntValue(200));
    assert_eq!(attribute(attempt, "http.request.resend_count"), Any::IntValue(0));
    assert!(matches!(attribute(attempt, "server.port"), Any::IntValue(p) if p > 0));
    assert_eq!(attribute(event, "attempt"), Any::IntValue(1));
    child.start_kill().unwrap();
}

/// Reads one sample from Prometheus text: `name{labels}` with labels in any order.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let rest = rest.trim_end_matches('}');
            let all = labels.iter().all(|(k, v)| rest.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

#[tokio::test]
async fn metrics_move_by_exactly_what_happened() {
    let sim = crate::kit::start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let dropping = crate::kit::alerts::am_source(
        "am",
        "[[sources.am.routes]]\nmatchers = ['severity=\"warning\"']\naction = \"drop\"",
    );
    let (mut child, addr) = spawn_with_env(&crate::kit::config_text(&sim.url(), &dropping), &dir, &[]).await;
    let http = reqwest::Client::new();
    let scrape =
        || async { http.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap() };
    let webhook = |source: &'static str| {
        let http = http.clone();
        let url = format!("http://{addr}/webhooks/{source}");
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .bearer_auth(crate::kit::alerts::BEARER)
                .body(crate::kit::alerts::keyed_notification(1, crate::kit::alerts::Step::Fire))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let command = |op: &'static str, body: serde_json::Value| {
        let http = http.clone();
        let url = format!("http://{addr}/v1/incidents/{op}");
        async move { http.post(url).json(&body).send().await.unwrap().status().as_u16() }
    };
    let before = scrape().await;
    // Present from the start, at zero: a rate or an alert over them needs no first event.
    for (name, labels) in [
        ("incident_bridge_dead_letters_total", [("source", "native"), ("reason", "decode")]),
        ("incident_bridge_events_processed_total", [("source", "am"), ("outcome", "reject")]),
        ("incident_bridge_auth_failures_total", [("source", "am"), ("reason", "bad_credentials")]),
    ] {
        let present = before.lines().any(|l| {
            l.starts_with(&format!("{name}{{"))
                && labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        });
        assert!(present, "{name} {labels:?} is registered at start");
    }
    assert_eq!(webhook("am").await, 200);
    assert_eq!(webhook("nosuchsource").await, 404);

    assert_eq!(command("add", json!({"title": "ok"})).await, 200);
    sim.set_faults(Faults {
        fail_next: 2,
        fail_next_with: Failure::Status { status: 503 },
        ..Faults::default()
    });
    assert_eq!(command("add", json!({"title": "after two retries"})).await, 200);
    assert_eq!(command("edit", json!({"id": "IT-999999"})).await, 404);
    assert_eq!(command("add", json!(["not", "an", "object"])).await, 422);

    let after = scrape().await;
    let delta =
        |name: &str, labels: &[(&str, &str)]| sample(&after, name, labels) - sample(&before, name, labels);
    assert_eq!(delta("incident_bridge_events_received_total", &[("source", "native")]), 4.0);
    assert_eq!(delta("incident_bridge_events_processed_total", &[("outcome", "done")]), 2.0);
    assert_eq!(delta("incident_bridge_events_processed_total", &[("outcome", "reject")]), 1.0);
    assert_eq!(delta("incident_bridge_scwm_calls_total", &[("op", "add"), ("outcome", "ok")]), 2.0);
    assert_eq!(
        delta(
            "incident_bridge_scwm_calls_total",
            &[("op", "edit"), ("outcome", "rejected"), ("err_code", "404_NOT_FOUND")]
        ),
        1.0
    );
    assert_eq!(delta("incident_bridge_scwm_retries_total", &[("op", "add")]), 2.0);
    assert_eq!(delta("incident_bridge_scwm_request_duration_seconds_count", &[("op", "add")]), 4.0);
    assert_eq!(delta("incident_bridge_dead_letters_total", &[("reason", "scwm_rejected")]), 1.0);
    assert_eq!(delta("incident_bridge_results_published_total", &[("op", "add")]), 2.0);
    assert_eq!(delta("incident_bridge_results_published_total", &[("op", "edit")]), 1.0);
    assert_eq!(delta("incident_bridge_alerts_received_total", &[("source", "am")]), 1.0);
    assert_eq!(
        delta("incident_bridge_lifecycle_decisions_total", &[("source", "am"), ("decision", "drop")]),
        1.0
    );
    assert_eq!(delta("incident_bridge_http_answers_total", &[("source", "am"), ("status", "200")]), 1.0);
    assert_eq!(delta("incident_bridge_http_answers_total", &[("source", "unknown"), ("status", "404")]), 1.0);
    assert_eq!(delta("incident_bridge_http_answers_total", &[("source", "native"), ("status", "200")]), 2.0);
    assert_eq!(delta("incident_bridge_http_answers_total", &[("source", "native"), ("status", "422")]), 1.0);
    assert_eq!(sample(&after, "incident_bridge_circuit_state", &[]), 0.0);
    assert_eq!(sample(&after, "incident_bridge_queue_depth", &[]), 0.0);
    assert!(sample(&after, "incident_bridge_queue_capacity", &[]) > 0.0);
    assert_eq!(sample(&after, "incident_bridge_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), 1.0);
    assert!(
        after.contains("# TYPE incident_bridge_scwm_request_duration_seconds histogram"),
        "buckets, not a summary"
    );
    child.start_kill().unwrap();
}
