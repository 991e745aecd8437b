//! Alertmanager-shaped test input shared by the alert test files: a source that takes a bearer
//! token, and one-alert notifications with a fingerprint of their own per key, so a test can
//! drive many correlation keys and know each key's name.

use serde_json::json;

/// What the Alertmanager sources of these tests expect as `Authorization: Bearer <token>`.
pub const BEARER: &str = "am-to-bridge";

/// `[sources.<name>]` of kind alertmanager taking `Authorization: Bearer BEARER`; `settings` are
/// more lines for the table (plain keys first, then sub-tables such as routes or templates).
pub fn am_source(name: &str, settings: &str) -> String {
    format!(
        r#"
[sources.{name}]
kind = "alertmanager"
{settings}

[[sources.{name}.auth]]
scheme = "bearer"
tokens = ["{BEARER}"]
"#
    )
}

/// What one notification says about its alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Fire,
    Resolve,
}

/// The fingerprint of key `k`'s alert.
pub fn fingerprint(k: usize) -> String {
    format!("{:016x}", 0xa1e7_0000_u64 + k as u64)
}

/// The correlation key the bridge gives key `k`'s alert when it arrives through `source`.
pub fn correlation_key(source: &str, k: usize) -> String {
    format!("{source}:fp:{}", fingerprint(k))
}

/// A one-alert Alertmanager notification for key `k` with its own fingerprint. A firing one
/// is byte-identical each time (repeats), a resolved one differs only in status and endsAt.
pub fn keyed_notification(k: usize, step: Step) -> Vec<u8> {
    let (status, ends_at) = match step {
        Step::Fire => ("firing", "0001-01-01T00:00:00Z"),
        Step::Resolve => ("resolved", "2026-11-28T13:00:00Z"),
    };
    let labels = json!({"alertname": "QueueBacklog", "queue": format!("q{k:03}"), "severity": "warning"});
    json!({
        "receiver": "bridge",
        "status": status,
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": {"summary": format!("Queue q{k:03} is backing up")},
            "startsAt": "2026-11-28T12:00:00Z",
            "endsAt": ends_at,
            "generatorURL": "http://prometheus.example/graph",
            "fingerprint": fingerprint(k),
        }],
        "groupLabels": {"alertname": "QueueBacklog"},
        "commonLabels": labels,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "version": "4",
        "groupKey": format!("{{}}:{{queue=\"q{k:03}\"}}"),
        "truncatedAlerts": 0
    })
    .to_string()
    .into_bytes()
}

/// Key `k`'s notification `step` posted to `POST /webhooks/<source>` with the bearer token; the
/// status and the JSON answer.
pub async fn send(app: &super::TestApp, source: &str, k: usize, step: Step) -> (u16, serde_json::Value) {
    let resp = app
        .http
        .post(app.url(&format!("/webhooks/{source}")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {BEARER}"))
        .body(keyed_notification(k, step))
        .send()
        .await
        .expect("the bridge answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}
