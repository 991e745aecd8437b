//! Explain: what a message would do and why, asked of a running bridge's admin API or answered
//! offline from a configuration, and proven to have no side effects (no SCWM call, no store
//! write, nothing published). Assertions are on the report and on the simulator and store after.

use std::process::Command;

use serde_json::{Value, json};

use crate::kit::{
    TestApp,
    alerts::{BEARER, Step, am_source, correlation_key, keyed_notification},
};

const BIN: &str = env!("CARGO_BIN_EXE_incident-bridge");
const ADMIN: &str = "admin-token";

fn admin() -> String {
    format!("\n[admin]\n[[admin.auth]]\nscheme = \"bearer\"\ntokens = [\"{ADMIN}\"]\n")
}

async fn explain(app: &TestApp, token: Option<&str>, request: &Value) -> (u16, Value) {
    let mut req = app.http.post(app.url("/v1/explain/am")).json(request);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn message(k: usize, step: Step) -> Value {
    json!({
        "headers": {"authorization": format!("Bearer {BEARER}"), "content-type": "application/json"},
        "body": String::from_utf8(keyed_notification(k, step)).unwrap(),
    })
}

async fn webhook(app: &TestApp, k: usize, step: Step) -> Value {
    let resp = app
        .http
        .post(app.url("/webhooks/am"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {BEARER}"))
        .body(keyed_notification(k, step))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

#[tokio::test]
async fn explain_says_what_an_alert_would_do_and_does_none_of_it() {
    let extra = format!("{}{}", am_source("am", "reopen_window = \"1h\""), admin());
    let mut app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;

    let (status, report) = explain(&app, Some(ADMIN), &message(1, Step::Fire)).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["verification"], "passed");
    let event = &report["events"][0];
    assert_eq!(event["key"], correlation_key("am", 1));
    assert_eq!(event["alertname"], "QueueBacklog");
    assert_eq!(event["route"]["name"], "default", "{event}");
    assert_eq!(event["stored"], Value::Null, "the key is unknown");
    assert_eq!(event["decision"], "add");
    assert!(event["reason"].as_str().unwrap().contains("no incident is known"), "{event}");
    let request = &event["requests"][0];
    assert_eq!(request["op"], "add");
    assert_eq!(request["envelope"]["header"]["eventName"], "agile-process-teams:add-incident:v3");
    assert_eq!(request["envelope"]["header"]["ownerId"], "TEST_OWNER");
    assert_eq!(request["envelope"]["payload"]["title"], "QueueBacklog: Queue q001 is backing up");
    assert_eq!(request["envelope"]["payload"]["externalRef"], correlation_key("am", 1));
    let plate = request["envelope"]["header"]["licensePlate"].as_str().unwrap().to_owned();
    assert_eq!(request["result_id"], plate);

    // No side effects: SCWM heard nothing, nothing was published, and the real message does
    // exactly what the explanation said, with the same licensePlate.
    assert_eq!(app.sim.request_count(), 0);
    assert!(app.published.try_recv().is_err(), "nothing published");
    let answer = webhook(&app, 1, Step::Fire).await;
    assert_eq!(answer["outcomes"][0]["ops"], json!(["add"]), "{answer}");
    assert_eq!(app.sim.requests()[0].body["header"]["licensePlate"], plate);

    // Now the store knows the key: a resolve would close IT-000001.
    let (_, report) = explain(&app, Some(ADMIN), &message(1, Step::Resolve)).await;
    let event = &report["events"][0];
    assert_eq!(event["stored"]["stored"]["item_id"], "IT-000001", "{event}");
    assert_eq!(event["decision"], "close");
    assert_eq!(event["requests"][0]["envelope"]["payload"]["id"], "IT-000001");
    assert_eq!(app.sim.request_count(), 1, "still only the real add");
    app.stop().await;
}

#[tokio::test]
async fn explain_reports_a_message_that_would_be_refused_and_what_it_would_do_once_right() {
    let extra = format!("{}{}", am_source("am", ""), admin());
    let app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    let mut unsigned = message(2, Step::Fire);
    unsigned["headers"] = json!({"content-type": "application/json"});
    let (status, report) = explain(&app, Some(ADMIN), &unsigned).await;
    assert_eq!(status, 200, "{report}");
    let verification = report["verification"].as_str().unwrap();
    assert!(verification.starts_with("failed (missing_header)"), "{verification}");
    assert_eq!(report["events"][0]["decision"], "add");

    let (status, problem) = explain(&app, Some(ADMIN), &json!({"headers": {}, "body": "not json"})).await;
    assert_eq!(status, 400, "{problem}");
    app.stop().await;
}

#[tokio::test]
async fn the_admin_api_is_off_unless_configured_and_refuses_without_its_token() {
    let app = TestApp::start_against(crate::kit::start_simulator().await, &am_source("am", ""), &[]).await;
    let (status, problem) = explain(&app, Some(ADMIN), &message(1, Step::Fire)).await;
    assert_eq!(
        (status, problem["type"].as_str().unwrap_or_default().ends_with("admin-not-configured")),
        (404, true),
        "{problem}"
    );
    app.stop().await;

    let extra = format!("{}{}", am_source("am", ""), admin());
    let app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    assert_eq!(explain(&app, None, &message(1, Step::Fire)).await.0, 401);
    assert_eq!(explain(&app, Some("wrong"), &message(1, Step::Fire)).await.0, 401);
    // The sender's token is not the admin's.
    assert_eq!(explain(&app, Some(BEARER), &message(1, Step::Fire)).await.0, 401);
    app.stop().await;
}

#[tokio::test]
async fn the_cli_explains_offline_from_a_config_and_online_through_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let payload = dir.path().join("alert.json");
    std::fs::write(&payload, keyed_notification(3, Step::Fire)).unwrap();
    let extra = format!("{}{}", am_source("am", ""), admin());
    let config = dir.path().join("bridge.toml");
    std::fs::write(&config, crate::kit::config_text("http://127.0.0.1:9/incident", &extra)).unwrap();

    let out = Command::new(BIN)
        .args(["explain", "--source", "am", "--config"])
        .arg(&config)
        .arg(&payload)
        .args(["-H", &format!("Authorization: Bearer {BEARER}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verification"], "passed");
    assert_eq!(report["events"][0]["decision"], "add");
    assert_eq!(report["events"][0]["requests"][0]["url"], "http://127.0.0.1:9/incident");

    let app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).unwrap();
    let out = tokio::process::Command::new(BIN)
        .args(["explain", "--source", "am", "--url", &app.url(""), "--token-file"])
        .arg(&token_file)
        .arg(&payload)
        .args(["-H", &format!("Authorization: Bearer {BEARER}")])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"][0]["key"], correlation_key("am", 3));
    assert_eq!(app.sim.request_count(), 0, "explaining called nothing");
    app.stop().await;
}
