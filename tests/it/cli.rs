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
