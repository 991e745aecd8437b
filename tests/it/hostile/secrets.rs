//! Secrets stay secret: out of logs, `Debug` output and dead letters.

use super::*;

const SCWM_TOKEN: &str = "c2N3bS10b2tlbi1mb3ItdGhlLWxlYWstdGVzdA==";
const NATS_PASSWORD: &str = "nats-password-for-the-leak-test-6e6e";

/// Every secret of the leak test's configuration, in each form it could leak in: as written, as
/// the key bytes it stands for, and as a sender puts it on the wire.
fn secret_forms() -> Vec<String> {
    let mut forms = vec![SCWM_TOKEN.to_owned(), NATS_PASSWORD.to_owned()];
    for scheme in SCHEMES {
        for secret in scheme.secrets() {
            forms.push(secret.to_owned());
            if let Some(bare) = secret.strip_prefix("whsec_") {
                forms.push(bare.to_owned());
            }
        }
    }
    for p in BASIC_PASSWORDS {
        forms.push(B64.encode(format!("{BASIC_USER}:{p}")));
    }
    forms
}

fn leak_config(sim_url: &str, nats_url: &str, store: &std::path::Path) -> String {
    let sources: String = SCHEMES
        .iter()
        .map(|&s| s.config_with(if s == Scheme::Bearer { "verify_nats = true" } else { "" }))
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
sync_timeout = "10s"

[scwm]
url = "{sim_url}"
token = "{SCWM_TOKEN}"
owner_id = "LEAK_TEST"

[results]
log = true

[nats]
url = "{nats_url}"
user = "bridge"
password = "{NATS_PASSWORD}"
[[nats.subscriptions]]
subject = "alerts.bearer"
source = "bearer"

[store]
backend = "embedded"
path = "{store}"
{sources}
"#,
        store = store.display(),
    )
}

/// The bridge binary as a child with `RUST_LOG=debug`, every line of its stdout and stderr kept.
struct Child {
    child: tokio::process::Child,
    addr: String,
    output: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

async fn spawn_debug_bridge(config: &str, dir: &tempfile::TempDir) -> Child {
    let path = dir.path().join("bridge.toml");
    std::fs::write(&path, config).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_incident-bridge"))
        .args(["serve", "--config"])
        .arg(&path)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    let stdout = std::fs::File::from(child.stdout.take().unwrap().into_owned_fd().unwrap());
    let stderr = std::fs::File::from(child.stderr.take().unwrap().into_owned_fd().unwrap());
    let mut readers = Vec::new();
    for (file, ready) in [(stdout, tx.take()), (stderr, None)] {
        let output = Arc::clone(&output);
        readers.push(std::thread::spawn(move || {
            let mut ready = ready;
            for line in BufReader::new(file).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "incident-bridge ready"
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
                }
                output.lock().unwrap().push(line);
            }
        }));
    }
    let addr = within(60, "the bridge to be ready", rx).await.unwrap();
    Child { child, addr, output, readers }
}

impl Child {
    /// Stops the bridge the way an orchestrator does (SIGTERM) and returns all it wrote.
    async fn stop(mut self) -> Vec<String> {
        let pid = self.child.id().expect("still running");
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        assert!(status.success());
        within(30, "the bridge to exit", self.child.wait()).await.unwrap();
        for r in self.readers {
            r.join().unwrap();
        }
        Arc::try_unwrap(self.output).unwrap().into_inner().unwrap()
    }
}

async fn start_leak_simulator() -> SimHandle {
    Simulator::start(
        SimConfig { token: Some(Secret::new(SCWM_TOKEN)), ..SimConfig::default() },
        crate::kit::loopback(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn no_secret_appears_in_debug_logs_dead_letters_or_the_config_s_debug_output() {
    let nats = NatsServer::start_with_config(&format!(
        "authorization {{\n  user: bridge\n  password: \"{NATS_PASSWORD}\"\n}}\n"
    ));
    let sim = start_leak_simulator().await;
    let dir = tempfile::tempdir().unwrap();
    let config_text = leak_config(&sim.url(), &nats.url(), &dir.path().join("store.redb"));

    // Debug of the loaded configuration, both ways of printing it.
    let loaded = config::load(&config_text, &Default::default(), &|p| std::fs::read_to_string(p)).unwrap();
    for shown in [format!("{loaded:?}"), format!("{loaded:#?}")] {
        for secret in secret_forms() {
            assert!(!shown.contains(&secret), "Debug of Config shows `{secret}`");
        }
    }

    let bridge = spawn_debug_bridge(&config_text, &dir).await;
    let http = reqwest::Client::new();
    let url = |source: &str| format!("http://{}/webhooks/{source}", bridge.addr);
    for (n, scheme) in SCHEMES.into_iter().enumerate() {
        for (i, secret) in scheme.secrets().into_iter().chain([scheme.wrong_secret()]).enumerate() {
            let body = alertmanager_body(&format!("{:016x}", 0x5000 + 4 * n + i));
            let mut req = http.post(url(scheme.source())).header("content-type", "application/json");
            for (name, value) in scheme.sign(secret, &body, now_unix()) {
                req = req.header(name, value);
            }
            let status = req.body(body.clone()).send().await.unwrap().status();
            assert_eq!(status, if i < 2 { 200 } else { 401 }, "{scheme:?} with secret {i}");
        }
    }
    // A malformed Basic header that holds a real password, and a body that does not decode with
    // real credentials.
    let real_basic = format!("Basic {}", B64.encode(format!("{BASIC_USER}:{}", BASIC_PASSWORDS[0])));
    let resp = http
        .post(url("basic"))
        .header("content-type", "application/json")
        .header("authorization", format!("{real_basic}=="))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let resp = http
        .post(url("basic"))
        .header("content-type", "application/json")
        .header("authorization", &real_basic)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Over NATS: a message with the real token whose body does not decode, and one with a wrong
    // token. Both are dead letters; neither may carry the token on.
    let client = async_nats::ConnectOptions::with_user_and_password("bridge".into(), NATS_PASSWORD.into())
        .connect(nats.url())
        .await
        .unwrap();
    let mut dead = client.subscribe("scwm.dlq.>").await.unwrap();
    client.flush().await.unwrap();
    for token in [BEARER_TOKENS[0], "wrong-token"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Authorization", format!("Bearer {token}").as_str());
        let reply = nats_request(&client, "alerts.bearer", headers, Bytes::from_static(b"{not json")).await;
        assert_ne!(reply_status(&reply), "200");
    }
    for _ in 0..2 {
        let letter = within(10, "a dead letter", dead.next()).await.unwrap();
        let mut text = String::from_utf8_lossy(&letter.payload).into_owned();
        for (name, values) in letter.headers.iter().flat_map(|h| h.iter()) {
            for v in values {
                text.push_str(&format!("\n{name}: {}", v.as_str()));
            }
        }
        for secret in secret_forms() {
            assert!(!text.contains(&secret), "a dead letter carries `{secret}`:\n{text}");
        }
        assert!(!text.to_ascii_lowercase().contains("authorization"), "{text}");
    }

    let lines = bridge.stop().await;
    assert!(lines.iter().any(|l| l.contains("webhook refused")), "the run did log its refusals");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("source authenticates its senders") && l.contains("standard-webhooks")),
        "the start-up log names each source's schemes"
    );
    assert!(lines.iter().any(|l| l.contains("\"level\":\"DEBUG\"")), "the run logged at debug level");
    for line in &lines {
        for secret in secret_forms() {
            assert!(!line.contains(&secret), "the log shows `{secret}`:\n{line}");
        }
    }
    assert_eq!(sim.requests().len(), 2 * SCHEMES.len());
}
