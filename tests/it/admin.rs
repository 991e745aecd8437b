//! The admin API and the operator commands: explain (what a message would do and why, asked of
//! a running bridge or answered offline from a configuration, and proven to have no side
//! effects: no SCWM call, no store write, nothing published) and the store (list, get, forget).
//! Assertions are on the answers and on the simulator and store after.

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
    let (status, answer) = crate::kit::alerts::send(app, "am", k, step).await;
    assert_eq!(status, 200, "{answer}");
    answer
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
    // Against a given state: the key's incident is open with this very content, so a repeat.
    let out = Command::new(BIN)
        .args(["explain", "--source", "am", "--config"])
        .arg(&config)
        .arg(&payload)
        .args(["--given", r#"{"state": "closed", "closed_ago": "10m", "item_id": "IT-000077"}"#])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["events"][0]["decision"], "reopen", "{report}");
    assert_eq!(report["events"][0]["requests"][0]["envelope"]["payload"]["id"], "IT-000077");

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

#[tokio::test]
async fn the_store_can_be_listed_read_and_forgotten_through_the_admin_api_and_the_cli() {
    let extra = format!("{}{}", am_source("am", ""), admin());
    let app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    for k in 1..=3 {
        webhook(&app, k, Step::Fire).await;
    }
    webhook(&app, 2, Step::Resolve).await;
    let get = |path: String| {
        let req = app.http.get(app.url(&path)).bearer_auth(ADMIN);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, page) = get("/v1/store/keys".into()).await;
    assert_eq!(status, 200, "{page}");
    let listed: Vec<(String, String)> = page["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_owned(), k["state"].as_str().unwrap().to_owned()))
        .collect();
    let mut want: Vec<(String, String)> = [(1, "open"), (2, "closed"), (3, "open")]
        .iter()
        .map(|(k, s)| (correlation_key("am", *k), s.to_string()))
        .collect();
    want.sort();
    assert_eq!(listed, want, "every key, in key order, none of the bridge's own");
    let (_, closed) = get("/v1/store/keys?state=closed".into()).await;
    assert_eq!(closed["keys"][0]["key"], correlation_key("am", 2));
    assert_eq!(closed["keys"].as_array().unwrap().len(), 1);
    let (_, first) = get("/v1/store/keys?limit=2".into()).await;
    assert_eq!(first["keys"].as_array().unwrap().len(), 2);
    let (_, rest) = get(format!("/v1/store/keys?limit=2&after={}", first["next"].as_str().unwrap())).await;
    assert_eq!(rest["keys"].as_array().unwrap().len(), 1);
    assert!(rest.get("next").is_none(), "{rest}");

    let key = correlation_key("am", 1);
    let (status, record) = get(format!("/v1/store/key?key={key}")).await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["record"]["stored"]["item_id"], "IT-000001");
    let revision = record["revision"].as_u64().unwrap();
    let forget = |revision: u64| {
        let req = app
            .http
            .delete(app.url(&format!("/v1/store/key?key={key}&revision={revision}")))
            .bearer_auth(ADMIN);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(forget(revision + 1_000).await, 409, "a revision the key does not have forgets nothing");
    assert_eq!(forget(revision).await, 204);
    assert_eq!(get(format!("/v1/store/key?key={key}")).await.0, 404);
    // Forgotten: the alert firing again opens an incident of its own.
    let answer = webhook(&app, 1, Step::Fire).await;
    assert_eq!(answer["outcomes"][0]["ops"], json!(["add"]), "{answer}");

    // The same through the CLI.
    let cli = |args: Vec<String>| {
        let url = app.url("");
        async move {
            tokio::process::Command::new(BIN)
                .arg("store")
                .args(args)
                .args(["--url", &url, "--token", ADMIN])
                .output()
                .await
                .unwrap()
        }
    };
    let out = cli(vec!["list".into(), "--state".into(), "closed".into()]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let page: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(page["keys"][0]["key"], correlation_key("am", 2));
    let out = cli(vec!["forget".into(), correlation_key("am", 3)]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("forgot am:fp:"));
    let out = cli(vec!["get".into(), correlation_key("am", 3)]).await;
    assert!(!out.status.success(), "gone");
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    app.stop().await;
}

#[tokio::test]
async fn a_dead_letter_is_kept_listed_and_replayed_once_scwm_is_back_and_a_second_replay_changes_nothing() {
    use incident_bridge::sim::Faults;
    // The breaker stays closed through the outage, so the replay right after it is not refused
    // by an open circuit (which it would be, and rightly, with the defaults).
    let extra = format!("[scwm.breaker]\nminimum_calls = 1000\n{}", admin());
    let mut app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    // SCWM is down: an asynchronous command runs out of retries and is dead-lettered.
    let letter = crate::kit::dead_lettered_add(&mut app, "disk full on db-1").await;
    assert_eq!(letter.reason_kind, "retries_exhausted");
    let plate = letter.license_plate.clone().unwrap().to_string();

    let get = |path: &str| {
        let req = app.http.get(app.url(path)).bearer_auth(ADMIN);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let post = |path: &str| {
        let req = app.http.post(app.url(path)).bearer_auth(ADMIN);
        async move { req.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let listed = get("/v1/dlq?reason=retries_exhausted").await;
    assert_eq!(listed["total"], 1, "{listed}");
    let kept = &listed["letters"][0];
    assert_eq!((kept["op"].as_str(), kept["licensePlate"].as_str()), (Some("add"), Some(plate.as_str())));
    assert!(kept.get("body").is_none(), "a listing leaves the body out");
    let id = kept["id"].as_str().unwrap().to_owned();
    let shown = get(&format!("/v1/dlq/letter?id={id}")).await;
    assert_eq!(
        serde_json::from_str::<Value>(shown["body"].as_str().unwrap()).unwrap(),
        json!({"title": "disk full on db-1"})
    );

    // A dry run replays nothing.
    let dry = post(&format!("/v1/dlq/replay?id={id}&dry_run=true")).await;
    assert_eq!(dry["replayed"][0]["outcome"], "dry_run", "{dry}");
    let calls = app.sim.request_count();

    // SCWM is back: the replay opens the one incident, with the original licensePlate.
    app.sim.set_faults(Faults::default());
    let replay = post(&format!("/v1/dlq/replay?id={id}")).await;
    assert_eq!(replay["replayed"][0]["settled"], true, "{replay}");
    assert_eq!(app.sim.incidents().len(), 1);
    let sent = &app.sim.requests()[calls..];
    assert_eq!(sent.len(), 1, "one request");
    assert_eq!(sent[0].body["header"]["licensePlate"], plate.as_str());
    assert_eq!(get("/v1/dlq").await["total"], 0, "a settled letter leaves the store");
    // Again: nothing is left to replay, and SCWM sees nothing new.
    let again = post(&format!("/v1/dlq/replay?id={id}")).await;
    assert_eq!(again["replayed"], json!([]), "{again}");
    assert_eq!(app.sim.incidents().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn a_replay_that_fails_again_keeps_one_letter_counts_it_and_stops_at_max_replays() {
    // `extra` goes right after the kit's `[results]` line: this key is in that table.
    let extra = format!("max_replays = 1\n{}", admin());
    let mut app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    crate::kit::dead_lettered_add(&mut app, "x").await;
    let req = |m: reqwest::Method, path: &str| app.http.request(m, app.url(path)).bearer_auth(ADMIN);
    let replay = req(reqwest::Method::POST, "/v1/dlq/replay?op=add")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(replay["replayed"][0]["settled"], false, "still down: {replay}");
    let listed = req(reqwest::Method::GET, "/v1/dlq").send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(listed["total"], 1, "the same letter, not a second one: {listed}");
    assert_eq!(listed["letters"][0]["replays"], 1);
    let refused = req(reqwest::Method::POST, "/v1/dlq/replay?op=add")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert!(refused["skipped"][0]["why"].as_str().unwrap().contains("max_replays"), "{refused}");
    let purged =
        req(reqwest::Method::DELETE, "/v1/dlq?all=true").send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(purged["purged"], 1);
    app.stop().await;
}
