//! The binary as users run it: version, config checking, and shutdown on SIGTERM.

use std::{process::Command, time::Duration};

use crate::kit::within;
use incident_bridge::sim::{Faults, Latency};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_incident-bridge");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("incident-bridge {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_accepts_the_quickstart() {
    let out =
        Command::new(BIN).args(["check-config", "--config", "examples/quickstart.toml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_bad_config_exits_non_zero_naming_every_bad_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[scwm]\nurl = \"http://127.0.0.1:1/x\"\n[pipeline]\nworkers = 0\n");
    for sub in ["check-config", "serve"] {
        let out = Command::new(BIN).args([sub, "--config"]).arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{sub}");
        let err = String::from_utf8_lossy(&out.stderr);
        for key in ["scwm.token", "scwm.owner_id", "pipeline.workers"] {
            assert!(err.contains(key), "{sub}: {key} missing from: {err}");
        }
    }
}

#[test]
fn an_environment_override_can_fix_or_break_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[scwm]\nurl = \"http://127.0.0.1:1/x\"\nowner_id = \"O\"\n");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("INCIDENT_BRIDGE_SCWM__TOKEN", "t")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .env("INCIDENT_BRIDGE_SCWM__TOKEN", "t")
        .env("INCIDENT_BRIDGE_SCWM__MAX_CONCURRENCY", "lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("scwm.max_concurrency"));
}

/// What the kubelet injects into every pod of a namespace for a Service named
/// `incident-bridge` (the README's release name) and one named `incident-bridge-headless`.
const SERVICE_LINKS: [(&str, &str); 12] = [
    ("INCIDENT_BRIDGE_SERVICE_HOST", "10.96.0.12"),
    ("INCIDENT_BRIDGE_SERVICE_PORT", "8080"),
    ("INCIDENT_BRIDGE_SERVICE_PORT_HTTP", "8080"),
    ("INCIDENT_BRIDGE_PORT", "tcp://10.96.0.12:8080"),
    ("INCIDENT_BRIDGE_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
    ("INCIDENT_BRIDGE_PORT_8080_TCP_PROTO", "tcp"),
    ("INCIDENT_BRIDGE_PORT_8080_TCP_PORT", "8080"),
    ("INCIDENT_BRIDGE_PORT_8080_TCP_ADDR", "10.96.0.12"),
    ("INCIDENT_BRIDGE_HEADLESS_SERVICE_HOST", "None"),
    ("INCIDENT_BRIDGE_HEADLESS_SERVICE_PORT", "8080"),
    ("INCIDENT_BRIDGE_HEADLESS_PORT", "tcp://10.96.0.13:8080"),
    ("INCIDENT_BRIDGE_HEADLESS_PORT_8080_TCP", "tcp://10.96.0.13:8080"),
];

#[test]
fn kubernetes_service_link_variables_do_not_break_the_config() {
    let out = Command::new(BIN)
        .args(["check-config", "--config", "examples/quickstart.toml"])
        .envs(SERVICE_LINKS)
        .env("INCIDENT_BRIDGE_PIPELINE__WORKERS", "8")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn sigterm_during_in_flight_work_finishes_it_and_exits_zero() {
    let sim = crate::kit::start_simulator().await;
    sim.set_faults(Faults { latency: Some(Latency::Fixed { fixed_ms: 1000 }), ..Faults::default() });
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = crate::kit::spawn_bridge(&crate::kit::config_text(&sim.url(), ""), &dir).await;

    let http = reqwest::Client::new();
    for i in 0..5 {
        let resp = http
            .post(format!("http://{addr}/v1/incidents/add"))
            .header("prefer", "respond-async")
            .json(&json!({"title": format!("in flight {i}"), "externalRef": format!("k{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
    }
    within(10, "the requests to reach SCWM", sim.wait_for_requests(5, Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(sim.incidents().is_empty(), "the simulator is still holding every request");

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = within(15, "the bridge to exit", child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(sim.incidents().len(), 5, "every in-flight command finished before exit");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The quickstart with the bridge and its simulator on free ports; the answer to one firing
/// alert, and the incidents its simulator holds then.
async fn quickstart_fires_one_alert(dir: &tempfile::TempDir) -> (serde_json::Value, serde_json::Value) {
    let (bridge_port, sim_port) = (free_port(), free_port());
    let listen = format!("127.0.0.1:{bridge_port}");
    let sim_listen = format!("127.0.0.1:{sim_port}");
    let scwm_url = format!("http://127.0.0.1:{sim_port}/incident");
    let config = std::fs::read_to_string("examples/quickstart.toml").unwrap();
    let env = [
        ("INCIDENT_BRIDGE_SERVER__LISTEN", listen.as_str()),
        ("INCIDENT_BRIDGE_SIMULATOR__LISTEN", sim_listen.as_str()),
        ("INCIDENT_BRIDGE_SCWM__URL", scwm_url.as_str()),
    ];
    let (mut child, addr) = crate::kit::spawn_bridge_with_env(&config, dir, &env).await;
    let firing = std::fs::read("tests/fixtures/alertmanager/firing-single.json").unwrap();
    let http = reqwest::Client::new();
    let answer: serde_json::Value = http
        .post(format!("http://{addr}/webhooks/alertmanager"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer quickstart-token")
        .body(firing)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let incidents: serde_json::Value =
        http.get(format!("http://{sim_listen}/_sim/incidents")).send().await.unwrap().json().await.unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = within(15, "the quickstart to exit", child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
    (answer, incidents)
}

#[tokio::test]
async fn the_quickstart_run_twice_in_one_directory_opens_the_incident_in_each_run_s_simulator() {
    let dir = tempfile::tempdir().unwrap();
    for run in 1..=2 {
        let (answer, incidents) = quickstart_fires_one_alert(&dir).await;
        assert_eq!(answer["outcomes"][0]["outcome"], "done", "run {run}: {answer}");
        let incidents = incidents.as_array().expect("a list of incidents");
        assert_eq!(incidents.len(), 1, "run {run}: the alert's incident is in this run's simulator");
    }
}

/// SIGTERM to a child bridge.
fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
}

/// `n` synchronous native adds at once; each one's status, or the error that ended it.
fn adds_in_flight(addr: &str, n: usize) -> Vec<tokio::task::JoinHandle<Result<u16, String>>> {
    let http = reqwest::Client::new();
    (0..n)
        .map(|i| {
            let (http, url) = (http.clone(), format!("http://{addr}/v1/incidents/add"));
            tokio::spawn(async move {
                let resp = http
                    .post(url)
                    .json(&json!({"title": format!("in flight {i}"), "externalRef": format!("k{i}")}))
                    .send()
                    .await
                    .map_err(|e| format!("{e:?}"))?;
                let status = resp.status().as_u16();
                if status == 503 {
                    assert!(resp.headers().contains_key("retry-after"), "a 503 says when to come back");
                }
                Ok(status)
            })
        })
        .collect()
}

#[tokio::test]
async fn sigterm_under_load_answers_every_request_and_exits_zero_once_the_work_drains() {
    let sim = crate::kit::start_simulator().await;
    sim.set_faults(Faults { latency: Some(Latency::Fixed { fixed_ms: 1500 }), ..Faults::default() });
    let dir = tempfile::tempdir().unwrap();
    let config = crate::kit::config_text(&sim.url(), "")
        .replace("shutdown_grace = \"10s\"", "shutdown_grace = \"20s\"");
    let (mut child, addr) = crate::kit::spawn_bridge(&config, &dir).await;
    let requests = adds_in_flight(&addr, 100);
    within(10, "the requests to reach SCWM", sim.wait_for_requests(100, Duration::from_secs(10)))
        .await
        .unwrap();

    sigterm(&child);
    let status = within(30, "the bridge to exit", child.wait()).await.unwrap();
    let answers: Vec<Result<u16, String>> =
        futures::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    assert!(answers.iter().all(|a| a == &Ok(200)), "every request answered with its outcome: {answers:?}");
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(sim.incidents().len(), 100);
}

#[tokio::test]
async fn requests_still_waiting_when_the_grace_ends_are_answered_503_and_dead_lettered_and_none_is_cut_off() {
    let nats = crate::kit::nats::NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "DEAD_LETTERS".into(),
        subjects: vec!["scwm.dlq.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let sim = crate::kit::start_simulator().await;
    sim.set_faults(Faults { latency: Some(Latency::Fixed { fixed_ms: 10_000 }), ..Faults::default() });
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[nats]\nurl = \"{}\"\n", nats.url());
    let config = crate::kit::config_text(&sim.url(), &extra)
        .replace("shutdown_grace = \"10s\"", "shutdown_grace = \"2s\"")
        .replace("request_timeout = \"5s\"", "request_timeout = \"30s\"")
        .replace("sync_timeout = \"10s\"", "sync_timeout = \"60s\"");
    let (mut child, addr) = crate::kit::spawn_bridge(&config, &dir).await;
    // Fewer than scwm.max_concurrency (32), so every one is at SCWM when the signal comes.
    let requests = adds_in_flight(&addr, 30);
    within(10, "the requests to reach SCWM", sim.wait_for_requests(30, Duration::from_secs(10)))
        .await
        .unwrap();

    sigterm(&child);
    let status = within(20, "the bridge to exit", child.wait()).await.unwrap();
    let answers: Vec<Result<u16, String>> =
        futures::future::join_all(requests).await.into_iter().map(Result::unwrap).collect();
    assert!(answers.iter().all(|a| a == &Ok(503)), "every caller heard back, none was cut off: {answers:?}");
    assert!(!status.success(), "the work did not drain within the grace: {status:?}");

    // SCWM may have acted on each: every one is on the record, under the licensePlate SCWM saw.
    let mut letters = js.get_stream("DEAD_LETTERS").await.unwrap();
    let stored = letters.info().await.unwrap().state.messages;
    let mut plates = std::collections::BTreeSet::new();
    for seq in 1..=stored {
        let m = letters.get_raw_message(seq).await.unwrap();
        assert_eq!(m.headers.get("Incident-Bridge-Error-Kind").unwrap().as_str(), "interrupted");
        plates.insert(m.headers.get("Incident-Bridge-License-Plate").unwrap().as_str().to_owned());
    }
    let sent: std::collections::BTreeSet<String> = sim
        .requests()
        .iter()
        .map(|r| r.body["header"]["licensePlate"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(stored, 30);
    assert_eq!(plates, sent, "one dead letter per request SCWM had not answered");
}

#[tokio::test]
async fn with_nats_down_sigterm_drains_and_exits_zero_without_waiting_out_the_grace() {
    let mut nats = crate::kit::nats::NatsServer::start();
    let sim = crate::kit::start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("[nats]\nurl = \"{}\"\n", nats.url());
    let config = crate::kit::config_text(&sim.url(), &extra)
        .replace("shutdown_grace = \"10s\"", "shutdown_grace = \"30s\"");
    let (mut child, addr) = crate::kit::spawn_bridge(&config, &dir).await;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/incidents/add"))
        .json(&json!({"title": "before NATS went away"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    nats.kill();

    sigterm(&child);
    // Well within the 30 s grace: a bridge waiting for NATS to come back would not exit here.
    let status = within(20, "the bridge to exit before its grace is over", child.wait()).await.unwrap();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn the_configuration_reference_in_docs_is_what_the_code_reads() {
    let out = std::process::Command::new(BIN).arg("config-reference").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/CONFIG.md");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        generated == checked_in,
        "docs/CONFIG.md is stale: run `cargo run -- config-reference > docs/CONFIG.md`"
    );
    for key in ["`reconcile.interval`", "`server.listen`", "`sources.<name>.wont_fix_resolutions`"] {
        assert!(generated.contains(key), "{key} is in the reference");
    }
    assert!(generated.contains("`INCIDENT_BRIDGE_RECONCILE__READS_PER_SECOND`"));
}

#[tokio::test]
async fn json_logs_put_every_field_at_the_top_level_and_name_each_alert_decision() {
    use crate::kit::alerts::{BEARER, Step, am_source, correlation_key, keyed_notification};
    let sim = crate::kit::start_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config = crate::kit::config_text(&sim.url(), &am_source("am", ""));
    // The decision line is at debug: asked for, as an operator would.
    let env = [("LOG_FORMAT", "json"), ("RUST_LOG", "info,incident_bridge::pipeline::alert=debug")];
    let (mut child, mut lines) = crate::kit::spawn_bridge_with_lines(&config, &dir, &env);
    let addr = within(30, "the ready line", async {
        loop {
            let line = lines.recv().await.expect("the bridge writes");
            let v: serde_json::Value = serde_json::from_str(&line).expect("every line is JSON");
            if v["message"] == "incident-bridge ready" {
                break v["addr"].as_str().unwrap().to_owned();
            }
        }
    })
    .await;
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/webhooks/am"))
        .header("content-type", "application/json")
        .bearer_auth(BEARER)
        .body(keyed_notification(1, Step::Fire))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let decision = within(30, "the decision line", async {
        loop {
            let v: serde_json::Value = serde_json::from_str(&lines.recv().await.unwrap()).unwrap();
            if v["message"] == "lifecycle decision" {
                break v;
            }
        }
    })
    .await;
    assert_eq!(decision["alertname"], "QueueBacklog", "{decision}");
    assert_eq!(decision["decision"], "add");
    assert_eq!(decision["route"], "default");
    assert_eq!(decision["key"], correlation_key("am", 1), "the event span's fields, flat: {decision}");
    assert!(decision["license_plate"].as_str().is_some_and(|p| p.len() == 26), "{decision}");
    assert!(decision["trace_id"].as_str().is_some_and(|t| t.len() == 32), "{decision}");
    assert_eq!(decision["level"], "DEBUG");
    assert!(decision.get("spans").is_none() && decision.get("fields").is_none(), "{decision}");
    assert!(decision["attempt"].is_u64(), "integers stay integers: {decision}");
    child.start_kill().unwrap();

    // LOG_FORMAT=text: lines for people; results logged, as by default.
    let logged = config.replace("[results]\nlog = false", "[results]\nlog = true");
    assert_ne!(logged, config);
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut lines) =
        crate::kit::spawn_bridge_with_lines(&logged, &dir, &[("LOG_FORMAT", "text")]);
    let ready = within(30, "the ready line in text", async {
        loop {
            let line = lines.recv().await.expect("the bridge writes");
            if line.contains("incident-bridge ready") {
                assert!(serde_json::from_str::<serde_json::Value>(&line).is_err(), "{line}");
                break line;
            }
        }
    })
    .await;
    // At the default level an alert writes its result line and no decision line.
    // The text line is coloured: its escapes go before the address is read.
    let mut plain = String::new();
    let mut chars = ready.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&d| d == 'm');
        } else {
            plain.push(c);
        }
    }
    let addr = plain.split("addr=").nth(1).and_then(|a| a.split_whitespace().next());
    let addr = addr.unwrap_or_else(|| panic!("the address in {ready:?}"));
    let resp = reqwest::Client::new()
        .post(format!("http://{}/webhooks/am", addr.trim_matches('"')))
        .header("content-type", "application/json")
        .bearer_auth(BEARER)
        .body(keyed_notification(2, Step::Fire))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    within(30, "the result line", async {
        loop {
            let line = lines.recv().await.expect("the bridge writes");
            assert!(!line.contains("lifecycle decision"), "no decision line at info: {line}");
            if line.contains("SCWM result") {
                break;
            }
        }
    })
    .await;
    child.start_kill().unwrap();
}

#[test]
fn the_example_test_suite_passes_and_a_wrong_expectation_fails_with_a_junit_report() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out =
        Command::new(BIN).args(["test", &format!("{root}/examples/suite/suite.yaml")]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.trim_end().ends_with("7 passed, 0 failed"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let suite = dir.path().join("suite.yaml");
    std::fs::write(
        &suite,
        format!(
            "config: {root}/examples/suite/bridge.toml\ncases:\n  - name: expects a close that is not there\n    source: alertmanager\n    payload_file: {root}/tests/fixtures/alertmanager/firing-single.json\n    expect:\n      - {{ops: [close]}}\n"
        ),
    )
    .unwrap();
    let junit = dir.path().join("junit.xml");
    let out = Command::new(BIN).arg("test").arg(&suite).arg("--junit").arg(&junit).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL  expects a close that is not there"), "{text}");
    assert!(text.contains(r#"ops are ["add", "submit"], expected ["close"]"#), "{text}");
    assert!(text.trim_end().ends_with("0 passed, 1 failed"), "{text}");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains(r#"tests="1" failures="1""#) && xml.contains("<failure message="), "{xml}");
}

#[test]
fn serve_reports_a_bad_config_in_the_log_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(&dir, "[scwm]\nurl = \"http://127.0.0.1:1/x\"\n[pipeline]\nworkers = 0\n");
    let out =
        Command::new(BIN).args(["serve", "--config"]).arg(&path).env("LOG_FORMAT", "json").output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?} is not a JSON line: {e}")))
        .collect();
    let keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    for key in ["scwm.token", "scwm.owner_id", "pipeline.workers"] {
        assert!(keys.contains(&key), "{key} missing from {keys:?}");
    }
    assert!(lines.iter().all(|l| l["level"] == "ERROR" && l["message"] == "invalid configuration"));
    let out =
        Command::new(BIN).args(["serve", "--config"]).arg(&path).env("LOG_FORMAT", "text").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with(&format!("{}: invalid configuration", path.display()))
    );
}

#[test]
fn check_config_print_shows_each_value_and_where_it_came_from() {
    let out = Command::new(BIN)
        .args(["check-config", "--print", "--config", "examples/quickstart.toml"])
        .env("INCIDENT_BRIDGE_PIPELINE__WORKERS", "8")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = |key: &str| {
        text.lines().find(|l| l.starts_with(&format!("{key} = "))).unwrap_or_else(|| panic!("{key}: {text}"))
    };
    assert!(line("pipeline.workers").ends_with("# env INCIDENT_BRIDGE_PIPELINE__WORKERS"));
    assert!(line("scwm.owner_id").ends_with("# file"));
    assert!(line("reconcile.interval").ends_with("# default"));
    assert!(
        line("scwm.token").contains("<redacted>") && !text.contains("cXVpY2tzdGFydDpxdWlja3N0YXJ0"),
        "{text}"
    );
}
