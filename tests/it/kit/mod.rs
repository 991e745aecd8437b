//! Test helpers: a bridge and an SCWM simulator, each on its own loopback port 0, wired the way
//! `serve` wires them, plus small utilities to await things with a timeout instead of sleeping.

#![allow(dead_code)]

pub mod alerts;
pub mod browser;
pub mod nats;
pub mod proxy;

use std::{collections::BTreeMap, future::Future, net::SocketAddr, time::Duration};

use incident_bridge::{
    app::{App, Extras},
    config,
    publish::{ChannelSink, Published},
    secret::Secret,
    sim::{SimConfig, SimHandle, Simulator},
};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

/// The Basic token the test simulator expects and the test bridge sends.
pub const TOKEN: &str = "dGVzdDp0ZXN0";

/// A file under `tests/fixtures/`, failing the test with its path when it cannot be read.
pub fn fixture(path: &str) -> Vec<u8> {
    let p = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Awaits `fut`, failing the test after `secs` seconds.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s waiting for {what}"))
}

/// Each SCWM operation the simulator received, in order, from the requests' eventNames.
pub fn operations(sim: &SimHandle) -> Vec<incident_bridge::scwm::Operation> {
    use incident_bridge::scwm::Operation;
    sim.requests()
        .iter()
        .map(|r| {
            let name = r.body["header"]["eventName"].as_str().unwrap_or_default();
            Operation::ALL.into_iter().find(|op| op.default_event_name() == name).expect("a known eventName")
        })
        .collect()
}

pub async fn start_simulator() -> SimHandle {
    Simulator::start(SimConfig { token: Some(Secret::new(TOKEN)), ..SimConfig::default() }, loopback())
        .await
        .expect("simulator starts")
}

pub fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// The config text of a bridge on port 0 talking to `scwm_url`. `extra` is appended verbatim;
/// unless it has a `[store]` of its own, the store (which the outbox needs when results go to
/// NATS) is a temporary one, so no test leaves a file behind or shares one with another.
pub fn config_text(scwm_url: &str, extra: &str) -> String {
    let store = if extra.contains("[store]") { "" } else { "\n[store]\ntemporary = true\n" };
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "10s"
sync_timeout = "10s"

[scwm]
url = "{scwm_url}"
token = "{TOKEN}"
owner_id = "TEST_OWNER"
request_timeout = "5s"
[scwm.retry]
initial_backoff = "10ms"
max_backoff = "50ms"

[results]
log = false
{extra}
{store}"#
    )
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub sim: SimHandle,
    pub published: mpsc::Receiver<Published>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<anyhow::Result<()>>,
    pub http: reqwest::Client,
}

impl TestApp {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A bridge talking to a fresh simulator, with `overrides` (dotted key, value) applied the
    /// way environment variables are.
    pub async fn start_with(overrides: &[(&str, &str)]) -> Self {
        let sim = start_simulator().await;
        Self::start_against(sim, "", overrides).await
    }

    /// A bridge talking to `sim`, with `extra` appended to the config text and `overrides`
    /// applied as environment variables.
    pub async fn start_against(sim: SimHandle, extra: &str, overrides: &[(&str, &str)]) -> Self {
        let text = config_text(&sim.url(), extra);
        Self::start_from(sim, &text, overrides).await
    }

    /// A bridge from complete config text, with a simulator of its own it does not talk to
    /// (for a second replica that shares another bridge's simulator through the text).
    pub async fn start_with_text(text: &str) -> Self {
        let sim = start_simulator().await;
        Self::start_from(sim, text, &[]).await
    }

    async fn start_from(sim: SimHandle, text: &str, overrides: &[(&str, &str)]) -> Self {
        let env: BTreeMap<String, String> = overrides
            .iter()
            .map(|(k, v)| {
                (
                    format!("{}{}", config::ENV_PREFIX, k.replace('.', "__").to_ascii_uppercase()),
                    v.to_string(),
                )
            })
            .collect();
        let config = config::load(text, &env, &|p| std::fs::read_to_string(p))
            .unwrap_or_else(|e| panic!("test config is invalid: {e}"));
        let (sink, published) = ChannelSink::new(100_000);
        let app = App::build_with(config, Extras { sinks: vec![std::sync::Arc::new(sink)] })
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app.run(shutdown.clone()));
        Self { addr, sim, published, shutdown, task, http: reqwest::Client::new() }
    }

    /// `/readyz`'s status and what it says of component `name` (`ready`, `not ready`, or
    /// `not ready (work goes on without it)`; empty when it lists no such component).
    pub async fn component(&self, name: &str) -> (u16, String) {
        let resp = self.http.get(self.url("/readyz")).send().await.expect("the bridge answers /readyz");
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        (status, body["components"][name].as_str().unwrap_or_default().to_owned())
    }

    /// Waits until `/readyz` says component `name` is in `state`.
    pub async fn wait_component(&self, name: &str, state: &str) {
        within(30, &format!("/readyz to say {name} is {state}"), async {
            while self.component(name).await.1 != state {
                tokio::task::yield_now().await;
            }
        })
        .await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn command(&self, op: &str, body: serde_json::Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/v1/incidents/{op}")))
            .json(&body)
            .send()
            .await
            .expect("bridge answers")
    }

    /// The next published item, failing after 10 s.
    pub async fn next_published(&mut self) -> Published {
        within(10, "a published result", self.published.recv()).await.expect("sink open")
    }

    pub async fn stop(self) {
        self.stop_keeping_simulator().await;
    }

    /// Stops the bridge and hands back its simulator, for a bridge started again against it.
    pub async fn stop_keeping_simulator(self) -> SimHandle {
        self.shutdown.cancel();
        within(15, "the bridge to stop", self.task).await.unwrap().unwrap();
        self.sim
    }
}

/// With SCWM down, an asynchronous add (nobody retries it) runs out of retries: its dead letter.
pub async fn dead_lettered_add(app: &mut TestApp, title: &str) -> incident_bridge::publish::DeadLetter {
    use incident_bridge::{
        publish::Published,
        sim::{Failure, Faults},
    };
    app.sim.set_faults(Faults {
        error_rate: 1.0,
        error: Failure::Status { status: 503 },
        ..Faults::default()
    });
    let accepted = app
        .http
        .post(app.url("/v1/incidents/add"))
        .header("prefer", "respond-async")
        .json(&serde_json::json!({"title": title}))
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 202);
    within(30, "the dead letter", async {
        loop {
            if let Some(Published::DeadLetter(d)) = app.published.recv().await {
                break d;
            }
        }
    })
    .await
}

/// The bridge binary as a child process with `config` as its config file; returns the child
/// and the address it reports once ready (its JSON log line).
pub async fn spawn_bridge(config: &str, dir: &tempfile::TempDir) -> (tokio::process::Child, String) {
    spawn_bridge_with_env(config, dir, &[]).await
}

/// [`spawn_bridge`] with extra environment variables.
pub async fn spawn_bridge_with_env(
    config: &str,
    dir: &tempfile::TempDir,
    env: &[(&str, &str)],
) -> (tokio::process::Child, String) {
    let (child, mut lines) = spawn_bridge_with_lines(config, dir, env);
    let addr = within(30, "the bridge to be ready", async {
        while let Some(line) = lines.recv().await {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "incident-bridge ready"
            {
                return v["addr"].as_str().unwrap_or_default().to_owned();
            }
        }
        panic!("the bridge exited before it was ready")
    })
    .await;
    // Keep reading, so the bridge never blocks on a full pipe; with `BRIDGE_LOGS=<dir>`, into a
    // file per bridge there, to read a failed run's story.
    let keep = std::env::var_os("BRIDGE_LOGS").map(|dir| {
        let path = std::path::Path::new(&dir).join(format!("bridge-{}.log", child.id().unwrap_or_default()));
        std::fs::OpenOptions::new().create(true).append(true).open(path).expect("the BRIDGE_LOGS file")
    });
    tokio::spawn(async move {
        let mut keep = keep;
        while let Some(line) = lines.recv().await {
            if let Some(f) = keep.as_mut() {
                use std::io::Write;
                let _ = writeln!(f, "{line}");
            }
        }
    });
    (child, addr)
}

/// The bridge binary as a child process with `config` and `env`, and every line it writes to
/// stdout, as it writes them.
pub fn spawn_bridge_with_lines(
    config: &str,
    dir: &tempfile::TempDir,
    env: &[(&str, &str)],
) -> (tokio::process::Child, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use std::io::{BufRead, BufReader};
    let path = dir.path().join(format!("bridge-{}.toml", incident_bridge::ids::LicensePlate::generate()));
    std::fs::write(&path, config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_incident-bridge"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = std::fs::File::from(child.stdout.take().unwrap().into_owned_fd().unwrap());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}
