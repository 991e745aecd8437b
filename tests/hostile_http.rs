//! The HTTP front door under attack: every webhook scheme against a real bridge and a real SCWM
//! simulator, rotation, replays (and retries that are not replays), a corpus of hostile requests
//! written to the socket byte for byte, stalled bodies, rate limiting, secrets kept out of logs,
//! `Debug` and dead letters, and signed NATS and JetStream messages.
//!
//! The rule every test checks: only an authenticated, well-formed request reaches SCWM. So each
//! test ends by reading the simulator's request log and comparing it with exactly what was
//! accepted.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use bytes::Bytes;
use common::{TestApp, nats::NatsServer, within};
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use incident_bridge::{
    config,
    secret::Secret,
    sim::{Faults, SimConfig, SimHandle, Simulator},
};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

// ---------------------------------------------------------------------------------------------
// Signing, the way each kind of sender does it.
// ---------------------------------------------------------------------------------------------

/// The quickstart's Standard Webhooks secret and a second one, as during a rotation.
const SW_SECRETS: [&str; 2] =
    ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_c2Vjb25kLXN0YW5kYXJkLXdlYmhvb2tzLWtleQ=="];
const GITHUB_SECRETS: [&str; 2] = ["gh-secret-one-7f3a", "gh-secret-two-91bc"];
const GRAFANA_SECRETS: [&str; 2] = ["grafana-secret-one-2d4e", "grafana-secret-two-8a1f"];
const STRIPE_SECRETS: [&str; 2] = ["whsec_stripe-secret-one-55aa", "whsec_stripe-secret-two-66bb"];
const HMAC_SECRETS: [&str; 2] = ["hmac-secret-one-0c0c", "hmac-secret-two-1d1d"];
const BEARER_TOKENS: [&str; 2] = ["bearer-token-one-a9e2", "bearer-token-two-b8f3"];
const BASIC_PASSWORDS: [&str; 2] = ["basic-pass-one-3c7d", "basic-pass-two-4d8e"];
const BASIC_USER: &str = "alertmanager";

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A fresh `webhook-id` for every Standard Webhooks message, so only a deliberate replay repeats.
fn message_id() -> String {
    format!("msg_{}", ulid::Ulid::new())
}

/// Standard Webhooks headers for `body`, as the `standardwebhooks` libraries compute them.
fn standard_webhooks_headers(secret: &str, id: &str, ts: i64, body: &[u8]) -> Headers {
    let key = B64.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).unwrap();
    let sig = B64.encode(hmac_sha256(&key, &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body]));
    vec![
        h("webhook-id", id),
        h("webhook-timestamp", &ts.to_string()),
        h("webhook-signature", &format!("v1,{sig}")),
    ]
}

type Headers = Vec<(String, Vec<u8>)>;

fn h(name: &str, value: &str) -> (String, Vec<u8>) {
    (name.to_owned(), value.as_bytes().to_vec())
}

/// One source per scheme, each configured with two secrets (rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    StandardWebhooks,
    Github,
    Grafana,
    GrafanaTimestamp,
    Stripe,
    Hmac,
    HmacTimestamp,
    Bearer,
    Basic,
}

const SCHEMES: [Scheme; 9] = [
    Scheme::StandardWebhooks,
    Scheme::Github,
    Scheme::Grafana,
    Scheme::GrafanaTimestamp,
    Scheme::Stripe,
    Scheme::Hmac,
    Scheme::HmacTimestamp,
    Scheme::Bearer,
    Scheme::Basic,
];

impl Scheme {
    fn source(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "sw",
            Scheme::Github => "github",
            Scheme::Grafana => "grafana",
            Scheme::GrafanaTimestamp => "grafana-ts",
            Scheme::Stripe => "stripe",
            Scheme::Hmac => "hmac",
            Scheme::HmacTimestamp => "hmac-ts",
            Scheme::Bearer => "bearer",
            Scheme::Basic => "basic",
        }
    }

    fn secrets(self) -> [&'static str; 2] {
        match self {
            Scheme::StandardWebhooks => SW_SECRETS,
            Scheme::Github => GITHUB_SECRETS,
            Scheme::Grafana | Scheme::GrafanaTimestamp => GRAFANA_SECRETS,
            Scheme::Stripe => STRIPE_SECRETS,
            Scheme::Hmac | Scheme::HmacTimestamp => HMAC_SECRETS,
            Scheme::Bearer => BEARER_TOKENS,
            Scheme::Basic => BASIC_PASSWORDS,
        }
    }

    /// A secret of the right form that is not configured.
    fn wrong_secret(self) -> &'static str {
        match self {
            Scheme::StandardWebhooks => "whsec_d3Jvbmctc2VjcmV0LWZvci10aGUtdGVzdA==",
            Scheme::Stripe => "whsec_stripe-wrong",
            _ => "wrong-secret",
        }
    }

    /// Whether the scheme signs a timestamp (and so refuses stale messages and replays).
    fn signs_body(self) -> bool {
        !matches!(self, Scheme::Bearer | Scheme::Basic)
    }

    fn timestamped(self) -> bool {
        matches!(
            self,
            Scheme::StandardWebhooks | Scheme::GrafanaTimestamp | Scheme::Stripe | Scheme::HmacTimestamp
        )
    }

    /// The source's tables, with `extra` lines (such as `verify_nats = true`) in its main one.
    fn config_with(self, extra: &str) -> String {
        let name = self.source();
        let [a, b] = self.secrets();
        let auth = match self {
            Scheme::StandardWebhooks => {
                format!("scheme = \"standard-webhooks\"\nsecrets = [\"{a}\", \"{b}\"]")
            }
            Scheme::Github => format!("scheme = \"github\"\nsecrets = [\"{a}\", \"{b}\"]"),
            Scheme::Grafana => format!("scheme = \"grafana\"\nsecrets = [\"{a}\", \"{b}\"]"),
            Scheme::GrafanaTimestamp => format!(
                "scheme = \"grafana\"\nsecrets = [\"{a}\", \"{b}\"]\ntimestamp_header = \"X-Grafana-Alerting-Timestamp\""
            ),
            Scheme::Stripe => format!("scheme = \"stripe\"\nsecrets = [\"{a}\", \"{b}\"]"),
            Scheme::Hmac => format!(
                "scheme = \"hmac\"\nsecrets = [\"{a}\", \"{b}\"]\nheader = \"X-Signature\"\nprefix = \"sha256=\""
            ),
            Scheme::HmacTimestamp => format!(
                "scheme = \"hmac\"\nsecrets = [\"{a}\", \"{b}\"]\nheader = \"X-Signature\"\nencoding = \"base64\"\n\
                 timestamp_header = \"X-Timestamp\"\nseparator = \":\"\ntolerance = \"2m\""
            ),
            Scheme::Bearer => format!("scheme = \"bearer\"\ntokens = [\"{a}\", \"{b}\"]"),
            Scheme::Basic => {
                format!("scheme = \"basic\"\nusername = \"{BASIC_USER}\"\npasswords = [\"{a}\", \"{b}\"]")
            }
        };
        format!("\n[sources.{name}]\nkind = \"alertmanager\"\n{extra}\n[[sources.{name}.auth]]\n{auth}\n")
    }

    fn config(self) -> String {
        self.config_with("")
    }

    /// The headers a sender holding `secret` sends with `body` at time `ts`.
    fn sign(self, secret: &str, body: &[u8], ts: i64) -> Headers {
        let ts_text = ts.to_string();
        match self {
            Scheme::StandardWebhooks => standard_webhooks_headers(secret, &message_id(), ts, body),
            Scheme::Github => {
                vec![h(
                    "X-Hub-Signature-256",
                    &format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), &[body]))),
                )]
            }
            Scheme::Grafana => {
                vec![h("X-Grafana-Alerting-Signature", &hex(&hmac_sha256(secret.as_bytes(), &[body])))]
            }
            Scheme::GrafanaTimestamp => vec![
                h(
                    "X-Grafana-Alerting-Signature",
                    &hex(&hmac_sha256(secret.as_bytes(), &[ts_text.as_bytes(), b":", body])),
                ),
                h("X-Grafana-Alerting-Timestamp", &ts_text),
            ],
            Scheme::Stripe => {
                let sig = hex(&hmac_sha256(secret.as_bytes(), &[ts_text.as_bytes(), b".", body]));
                vec![h("Stripe-Signature", &format!("t={ts},v1={sig}"))]
            }
            Scheme::Hmac => {
                vec![h("X-Signature", &format!("sha256={}", hex(&hmac_sha256(secret.as_bytes(), &[body]))))]
            }
            Scheme::HmacTimestamp => vec![
                h(
                    "X-Signature",
                    &B64.encode(hmac_sha256(secret.as_bytes(), &[ts_text.as_bytes(), b":", body])),
                ),
                h("X-Timestamp", &ts_text),
            ],
            Scheme::Bearer => vec![h("Authorization", &format!("Bearer {secret}"))],
            Scheme::Basic => {
                vec![h("Authorization", &format!("Basic {}", B64.encode(format!("{BASIC_USER}:{secret}"))))]
            }
        }
    }
}

/// Broken versions of one header value: empty, garbage, cut in half, one character changed,
/// doubled with a comma (as a proxy folding two copies would), and not ASCII.
fn malformed_values(value: &[u8]) -> Vec<Vec<u8>> {
    let mut changed = value.to_vec();
    if let Some(last) = changed.last_mut() {
        *last = if *last == b'A' { b'B' } else { b'A' };
    }
    let mut doubled = value.to_vec();
    doubled.push(b',');
    doubled.extend_from_slice(value);
    vec![
        Vec::new(),
        b"%%% not a signature %%%".to_vec(),
        value[..value.len() / 2].to_vec(),
        changed,
        doubled,
        "s\u{e9}cr\u{e8}t \u{2713}".as_bytes().to_vec(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Fixtures and the bridge under test.
// ---------------------------------------------------------------------------------------------

const FIXTURE_FINGERPRINT: &str = "fd70cbc6aad0d083";

fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The captured Alertmanager notification, with its alert's fingerprint replaced by `fp` (16 hex
/// digits) so that each accepted message opens an incident of its own.
fn alertmanager_body(fp: &str) -> Vec<u8> {
    let text = String::from_utf8(fixture("alertmanager/firing-single.json")).unwrap();
    assert!(text.contains(FIXTURE_FINGERPRINT));
    text.replace(FIXTURE_FINGERPRINT, fp).into_bytes()
}

/// A bridge with `sources` (config text) and an embedded store in its own temporary directory.
struct Bridge {
    app: TestApp,
    _dir: tempfile::TempDir,
}

impl Bridge {
    async fn start(sources: &str) -> Self {
        Self::start_with(sources, &[]).await
    }

    /// With `overrides` applied the way environment variables are.
    async fn start_with(sources: &str, overrides: &[(&str, &str)]) -> Self {
        let sim = common::start_simulator().await;
        let dir = tempfile::tempdir().unwrap();
        let store = format!(
            "\n[store]\nbackend = \"embedded\"\npath = \"{}\"\n",
            dir.path().join("store.redb").display()
        );
        let app = TestApp::start_against(sim, &format!("{store}{sources}"), overrides).await;
        Self { app, _dir: dir }
    }

    async fn post(&self, path: &str, headers: &Headers, body: impl Into<reqwest::Body>) -> reqwest::Response {
        let mut req = self.app.http.post(self.app.url(path)).header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(name.as_str(), reqwest::header::HeaderValue::from_bytes(value).unwrap());
        }
        req.body(body).send().await.expect("the bridge answers")
    }

    /// The `externalRef` of every add request SCWM received, in order.
    fn scwm_adds(&self) -> Vec<String> {
        self.app
            .sim
            .requests()
            .iter()
            .map(|r| r.body["payload"]["externalRef"].as_str().unwrap_or("<no externalRef>").to_owned())
            .collect()
    }

    async fn assert_alive(&self) {
        let resp = self.app.http.get(self.app.url("/healthz")).send().await.expect("healthz answers");
        assert_eq!(resp.status(), 200);
    }

    async fn stop(self) {
        self.app.stop().await;
    }
}

/// The one answer every authentication failure gets: no reason, no hint, the same bytes.
const UNAUTHORIZED: &str =
    r#"{"status":401,"title":"Unauthorized","type":"urn:incident-bridge:problem:unauthorized"}"#;

async fn assert_unauthorized(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 401, "{what}");
    assert_eq!(resp.headers()["content-type"], "application/problem+json", "{what}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::from_str::<Value>(UNAUTHORIZED).unwrap(),
        "{what}: the body names no reason"
    );
}

async fn assert_accepted(resp: reqwest::Response, what: &str) -> Value {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{what}: {body}");
    assert_eq!(body["outcomes"][0]["outcome"], "done", "{what}: {body}");
    body
}

fn all_sources() -> String {
    SCHEMES.iter().map(|s| s.config()).collect()
}

// ---------------------------------------------------------------------------------------------
// Every scheme: the genuine article gets in, nothing else does.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn every_scheme_accepts_its_signature_and_refuses_every_forgery_without_calling_scwm() {
    let bridge = Bridge::start(&all_sources()).await;
    let mut expected = Vec::new();
    for (n, scheme) in SCHEMES.into_iter().enumerate() {
        let path = format!("/webhooks/{}", scheme.source());
        let secret = scheme.secrets()[0];
        let fp = format!("{:016x}", 0xa000 + n);
        let body = alertmanager_body(&fp);

        // Every refusal first, so the genuine message below is the first this source accepts.
        let mut refused: Vec<(String, Headers, Vec<u8>)> = Vec::new();
        refused.push((
            "wrong secret".into(),
            scheme.sign(scheme.wrong_secret(), &body, now_unix()),
            body.clone(),
        ));
        // A flipped byte at the edges and spread through the body; tests/verify_properties.rs
        // flips arbitrary bytes at the verifier itself. Bearer and Basic sign no body.
        let last = body.len() - 1;
        let tamper_at: &[usize] = if scheme.signs_body() {
            &[0, 1, last / 7, last / 3, last / 2, 2 * last / 3, last - 1, last]
        } else {
            &[]
        };
        for &at in tamper_at {
            let mut tampered = body.clone();
            tampered[at] ^= 0x01;
            refused.push((format!("byte {at} flipped"), scheme.sign(secret, &body, now_unix()), tampered));
        }
        let good = scheme.sign(secret, &body, now_unix());
        for (i, (name, value)) in good.iter().enumerate() {
            let mut without = good.clone();
            without.remove(i);
            refused.push((format!("{name} missing"), without, body.clone()));
            for bad in malformed_values(value) {
                let mut broken = good.clone();
                broken[i].1 = bad.clone();
                refused.push((format!("{name}: {:?}", String::from_utf8_lossy(&bad)), broken, body.clone()));
            }
            let mut twice = good.clone();
            twice.push((name.clone(), value.clone()));
            refused.push((format!("{name} sent twice"), twice, body.clone()));
        }
        if scheme.timestamped() {
            for (what, offset) in [("an hour old", -3600), ("an hour ahead", 3600)] {
                refused.push((what.into(), scheme.sign(secret, &body, now_unix() + offset), body.clone()));
            }
        }
        refused.push(("no credentials at all".into(), Vec::new(), body.clone()));

        for (what, headers, sent) in refused {
            let resp = bridge.post(&path, &headers, sent).await;
            assert_unauthorized(resp, &format!("{scheme:?}: {what}")).await;
        }
        assert_eq!(bridge.scwm_adds(), expected, "{scheme:?}: a refused request reached SCWM");

        // The genuine message: accepted, and its incident opened.
        let resp = bridge.post(&path, &scheme.sign(secret, &body, now_unix()), body.clone()).await;
        assert_accepted(resp, &format!("{scheme:?}: correctly signed")).await;
        expected.push(format!("{}:fp:{fp}", scheme.source()));
        assert_eq!(bridge.scwm_adds(), expected, "{scheme:?}");
    }
    assert_eq!(bridge.app.sim.incidents().len(), SCHEMES.len());
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn during_a_rotation_either_secret_is_accepted_over_http() {
    let bridge = Bridge::start(&all_sources()).await;
    let mut expected = Vec::new();
    for (n, scheme) in SCHEMES.into_iter().enumerate() {
        for (i, secret) in scheme.secrets().into_iter().enumerate() {
            let fp = format!("{:016x}", 0xb000 + 2 * n + i);
            let body = alertmanager_body(&fp);
            let resp = bridge
                .post(
                    &format!("/webhooks/{}", scheme.source()),
                    &scheme.sign(secret, &body, now_unix()),
                    body,
                )
                .await;
            assert_accepted(resp, &format!("{scheme:?} with secret {i}")).await;
            expected.push(format!("{}:fp:{fp}", scheme.source()));
        }
    }
    assert_eq!(bridge.scwm_adds(), expected);
    bridge.stop().await;
}

#[tokio::test]
async fn a_replayed_standard_webhooks_request_is_refused_even_when_sent_concurrently() {
    let bridge = Bridge::start(&Scheme::StandardWebhooks.config()).await;
    let body = alertmanager_body("00000000000c0001");
    let headers = standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), &body);

    let first = bridge.post("/webhooks/sw", &headers, body.clone()).await;
    assert_accepted(first, "the first delivery").await;
    assert_eq!(bridge.scwm_adds(), ["sw:fp:00000000000c0001"]);

    let again = bridge.post("/webhooks/sw", &headers, body.clone()).await;
    assert_unauthorized(again, "the same request again").await;
    // A sender's retry reuses the message id with a fresh timestamp and signature: still the
    // same message, still refused.
    let id = String::from_utf8(headers[0].1.clone()).unwrap();
    let resigned = standard_webhooks_headers(SW_SECRETS[1], &id, now_unix() + 1, &body);
    assert_unauthorized(bridge.post("/webhooks/sw", &resigned, body).await, "the same id re-signed").await;
    assert_eq!(bridge.scwm_adds(), ["sw:fp:00000000000c0001"], "a replay reached SCWM");

    // Ten copies of one new message at once: exactly one gets in.
    let body = alertmanager_body("00000000000c0003");
    let headers = standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), &body);
    let copies = (0..10).map(|_| bridge.post("/webhooks/sw", &headers, body.clone()));
    let mut statuses: Vec<u16> =
        futures::future::join_all(copies).await.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 401, 401, 401, 401, 401, 401, 401, 401, 401]);
    assert_eq!(bridge.scwm_adds(), ["sw:fp:00000000000c0001", "sw:fp:00000000000c0003"]);
    bridge.stop().await;
}

#[tokio::test]
async fn a_standard_webhooks_retry_after_a_5xx_is_accepted_not_taken_for_a_replay() {
    // One SCWM attempt per request and no circuit breaker in the way: one injected failure
    // makes the bridge answer 503, and the next request goes through.
    let overrides = [("scwm.retry.max_attempts", "1"), ("scwm.breaker.failure_threshold", "100")];
    let bridge = Bridge::start_with(&Scheme::StandardWebhooks.config(), &overrides).await;
    bridge.app.sim.set_faults(Faults { fail_next: 1, ..Faults::default() });
    let body = alertmanager_body("00000000000c0002");
    let id = message_id();

    let first = bridge
        .post("/webhooks/sw", &standard_webhooks_headers(SW_SECRETS[0], &id, now_unix(), &body), body.clone())
        .await;
    assert_eq!(first.status(), 503, "SCWM failed, so the sender is told to retry");
    assert!(first.headers().contains_key("retry-after"));
    assert!(bridge.app.sim.incidents().is_empty());

    // The sender's retry: the same message id, a new timestamp and signature.
    let retry = standard_webhooks_headers(SW_SECRETS[0], &id, now_unix() + 1, &body);
    assert_accepted(bridge.post("/webhooks/sw", &retry, body.clone()).await, "the retry").await;
    assert_eq!(bridge.app.sim.incidents().len(), 1, "the alert was not lost");

    // Once processed, the message is remembered again: the same request once more is a replay.
    assert_unauthorized(bridge.post("/webhooks/sw", &retry, body).await, "a replay of the retry").await;
    assert_eq!(bridge.app.sim.incidents().len(), 1);
    bridge.stop().await;
}

// ---------------------------------------------------------------------------------------------
// A corpus of hostile requests.
// ---------------------------------------------------------------------------------------------

/// An answer read off the wire, whatever shape the request had.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn is_problem(&self) -> bool {
        self.header("content-type") == Some("application/problem+json")
            && serde_json::from_slice::<Value>(&self.body).is_ok_and(|v| v["status"] == self.status)
    }
}

/// How a raw request's body goes on the wire.
enum Framing {
    /// `Content-Length` with the body's true length.
    Length,
    /// `Content-Length` claiming this many bytes, followed by the body as given.
    Claimed(u64),
    /// `Transfer-Encoding: chunked`, in chunks of this size.
    Chunked(usize),
}

/// Sends one HTTP/1.1 request byte for byte as given (header values may be any bytes) and reads
/// the answer. The body is written by a task of its own while the answer is read, so a server
/// that answers before reading everything (a body over the limit) is heard, not mistaken for
/// a broken connection.
async fn raw_post(
    addr: SocketAddr,
    path: &str,
    headers: &Headers,
    body: Vec<u8>,
    framing: Framing,
) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n").into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length => head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes()),
        Framing::Claimed(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        Framing::Chunked(_) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    let writer = tokio::spawn(async move {
        // The server may close the connection before the body is through; that is its right.
        if write.write_all(&head).await.is_err() {
            return;
        }
        match framing {
            Framing::Chunked(size) => {
                for chunk in body.chunks(size.max(1)) {
                    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                    framed.extend_from_slice(chunk);
                    framed.extend_from_slice(b"\r\n");
                    if write.write_all(&framed).await.is_err() {
                        return;
                    }
                }
                let _ = write.write_all(b"0\r\n\r\n").await;
            }
            _ => {
                for chunk in body.chunks(64 * 1024) {
                    if write.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = write.flush().await;
        // Hold the write side open until the answer is read: hyper takes a half-closed
        // connection for a client that left and drops the request.
        std::future::pending::<()>().await;
    });
    let answer = within(30, "the bridge's answer", read_answer(&mut read, path)).await;
    writer.abort();
    answer
}

async fn read_answer(read: &mut tokio::net::tcp::OwnedReadHalf, path: &str) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = read.read(&mut chunk).await.expect("reading the answer");
        assert!(
            n > 0,
            "{path}: the connection closed without an answer; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end + 4..].to_vec();
    let length =
        headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
    match length {
        Some(len) => {
            while rest.len() < len {
                let n = read.read(&mut chunk).await.expect("reading the answer's body");
                assert!(n > 0, "the answer's body was cut short");
                rest.extend_from_slice(&chunk[..n]);
            }
            rest.truncate(len);
        }
        None => {
            // `connection: close`: the body runs to the end of the connection.
            let _ = read.read_to_end(&mut rest).await;
        }
    }
    Answer { status, headers, body: rest }
}

const CORPUS_LIMIT: usize = 256 * 1024;
const MAX_STRING: usize = 64;
const MAX_ALERTS: usize = 3;
const NATIVE_TOKEN: &str = "native-token-e5e5";

fn corpus_sources() -> String {
    format!(
        r#"
[sources.sw]
kind = "alertmanager"
[[sources.sw.auth]]
scheme = "standard-webhooks"
secrets = ["{sw}"]
[sources.sw.limits]
max_body_bytes = {CORPUS_LIMIT}
max_alerts = {MAX_ALERTS}
max_string_chars = {MAX_STRING}

[sources.native]
kind = "native"
[[sources.native.auth]]
scheme = "bearer"
tokens = ["{NATIVE_TOKEN}"]
[sources.native.limits]
max_body_bytes = {CORPUS_LIMIT}
max_string_chars = {MAX_STRING}
"#,
        sw = SW_SECRETS[0]
    )
}

/// A request of the corpus and what it must get.
struct Case {
    name: String,
    path: &'static str,
    headers: Headers,
    body: Vec<u8>,
    framing: Framing,
    /// The statuses allowed; every one is a refusal unless the case says otherwise.
    expect: &'static [u16],
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// Standard Webhooks headers plus a JSON content type: a request that passes authentication.
fn signed(body: &[u8]) -> Headers {
    let mut headers = standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), body);
    headers.push(h(JSON.0, JSON.1));
    headers
}

fn native_auth() -> Headers {
    vec![h(JSON.0, JSON.1), h("authorization", &format!("Bearer {NATIVE_TOKEN}"))]
}

/// An Alertmanager notification with `n` alerts, each with its own fingerprint.
fn notification_with_alerts(n: usize) -> Vec<u8> {
    let alert = |i: usize| {
        json!({"status": "firing", "labels": {"alertname": "Many", "i": i.to_string()}, "annotations": {},
               "startsAt": "2026-11-28T12:41:48.668Z", "endsAt": "0001-01-01T00:00:00Z",
               "fingerprint": format!("{:016x}", 0xd000 + i)})
    };
    json!({"receiver": "r", "status": "firing", "alerts": (0..n).map(alert).collect::<Vec<_>>(),
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
           "version": "4", "groupKey": "{}:{alertname=\"Many\"}", "truncatedAlerts": 0})
    .to_string()
    .into_bytes()
}

fn hostile_corpus() -> Vec<Case> {
    let fixture = alertmanager_body("00000000000e0001");
    let over = vec![b' '; CORPUS_LIMIT + 1];
    let huge = {
        let mut v = b"{\"pad\":\"".to_vec();
        v.resize(8 * 1024 * 1024, b'x');
        v
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_object = format!("{{\"alerts\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_open = "{\"a\":".repeat(50_000).into_bytes();
    let mut invalid_utf8 = br#"{"receiver":"caf"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xc3, 0x28, 0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#"","status":"firing","alerts":[]}"#);
    let truncated = fixture[..fixture.len() / 2].to_vec();
    let long_value = "v".repeat(60 * 1024);

    let mut cases = Vec::new();
    let mut case = |name: &str,
                    path: &'static str,
                    headers: Headers,
                    body: Vec<u8>,
                    framing: Framing,
                    expect: &'static [u16]| {
        cases.push(Case { name: name.to_owned(), path, headers, body, framing, expect })
    };
    for (path, auth) in [("/webhooks/sw", signed(&over)), ("/v1/incidents/add", native_auth())] {
        case(
            "over the limit, with Content-Length",
            path,
            auth.clone(),
            over.clone(),
            Framing::Length,
            &[413],
        );
        case("over the limit, chunked", path, auth.clone(), over.clone(), Framing::Chunked(8 * 1024), &[413]);
        case("8 MiB, chunked", path, auth.clone(), huge.clone(), Framing::Chunked(64 * 1024), &[413]);
        case("8 MiB, with Content-Length", path, auth.clone(), huge.clone(), Framing::Length, &[413]);
        case(
            "claims 1 GiB, sends nothing",
            path,
            auth.clone(),
            Vec::new(),
            Framing::Claimed(1 << 30),
            &[413],
        );
    }
    for (what, body) in [
        ("100k levels", &deep),
        ("100k levels in an object", &deep_object),
        ("50k unclosed objects", &deep_open),
    ] {
        case(
            &format!("signed, nested {what}"),
            "/webhooks/sw",
            signed(body),
            body.clone(),
            Framing::Length,
            &[400, 422],
        );
        case(
            &format!("nested {what}"),
            "/v1/incidents/add",
            native_auth(),
            body.clone(),
            Framing::Length,
            &[400, 422],
        );
        case(
            &format!("unsigned, nested {what}"),
            "/webhooks/sw",
            vec![h(JSON.0, JSON.1)],
            body.clone(),
            Framing::Length,
            &[401],
        );
    }
    case(
        "signed, invalid UTF-8",
        "/webhooks/sw",
        signed(&invalid_utf8),
        invalid_utf8.clone(),
        Framing::Length,
        &[400, 422],
    );
    case(
        "invalid UTF-8",
        "/v1/incidents/add",
        native_auth(),
        invalid_utf8.clone(),
        Framing::Length,
        &[400, 422],
    );
    let mut text_plain = signed(&fixture);
    text_plain.retain(|(n, _)| n != "content-type");
    let no_type = text_plain.clone();
    text_plain.push(h("content-type", "text/plain"));
    case("signed, text/plain", "/webhooks/sw", text_plain, fixture.clone(), Framing::Length, &[415]);
    case("signed, no content type", "/webhooks/sw", no_type, fixture.clone(), Framing::Length, &[415]);
    let form = vec![
        h("content-type", "application/x-www-form-urlencoded"),
        h("authorization", &format!("Bearer {NATIVE_TOKEN}")),
    ];
    case("form-encoded", "/v1/incidents/add", form, b"title=x".to_vec(), Framing::Length, &[415]);
    case(
        "signed, truncated JSON",
        "/webhooks/sw",
        signed(&truncated),
        truncated.clone(),
        Framing::Length,
        &[400, 422],
    );
    case(
        "truncated JSON",
        "/v1/incidents/add",
        native_auth(),
        br#"{"title": "cut he"#.to_vec(),
        Framing::Length,
        &[400, 422],
    );
    for shape in [
        "[]",
        "null",
        "\"a string\"",
        "42",
        r#"{"alerts": "not a list"}"#,
        r#"{"status": "firing", "alerts": [{"labels": 5}]}"#,
        r#"{"status": "firing", "alerts": [null]}"#,
        r#"{"status": "exploded", "alerts": []}"#,
        r#"{"status":"firing","alerts":[{"status":"firing","labels":{"a":"\ud800"}}]}"#,
        r#"{"status":"firing","alerts":[],"truncatedAlerts":1e999999}"#,
    ] {
        let body = shape.as_bytes().to_vec();
        case(
            &format!("signed, wrong shape {shape}"),
            "/webhooks/sw",
            signed(&body),
            body.clone(),
            Framing::Length,
            &[400, 422],
        );
    }
    for shape in
        ["[]", "null", "\"a string\"", r#"{"title": "t", "externalRef": ["not", "text"]}"#, r#"{"id": 5}"#]
    {
        let body = shape.as_bytes().to_vec();
        case(
            &format!("wrong shape {shape}"),
            "/v1/incidents/add",
            native_auth(),
            body,
            Framing::Length,
            &[400, 422],
        );
    }
    let mut twice = signed(&fixture);
    let sig = twice.iter().find(|(n, _)| n == "webhook-signature").unwrap().clone();
    twice.push(sig);
    case("signature header sent twice", "/webhooks/sw", twice, fixture.clone(), Framing::Length, &[401]);
    let mut two_ids = signed(&fixture);
    two_ids.push(h("Webhook-Id", "msg_other"));
    case("webhook-id sent twice", "/webhooks/sw", two_ids, fixture.clone(), Framing::Length, &[401]);
    let mut two_auth = native_auth();
    two_auth.push(h("authorization", &format!("Bearer {NATIVE_TOKEN}")));
    case(
        "Authorization sent twice",
        "/v1/incidents/add",
        two_auth,
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[401],
    );
    let mut auth_wrong_first = vec![h(JSON.0, JSON.1), h("authorization", "Bearer wrong")];
    auth_wrong_first.push(h("authorization", &format!("Bearer {NATIVE_TOKEN}")));
    case(
        "a wrong Authorization, then the right one",
        "/v1/incidents/add",
        auth_wrong_first,
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[401],
    );
    case("signed, empty body", "/webhooks/sw", signed(b""), Vec::new(), Framing::Length, &[400, 422]);
    case(
        "unsigned, empty body",
        "/webhooks/sw",
        vec![h(JSON.0, JSON.1)],
        Vec::new(),
        Framing::Length,
        &[401],
    );
    case("empty body", "/v1/incidents/add", native_auth(), Vec::new(), Framing::Length, &[400, 422]);
    case(
        "empty chunked body",
        "/v1/incidents/add",
        native_auth(),
        Vec::new(),
        Framing::Chunked(1),
        &[400, 422],
    );
    let mut long_sig = signed(&fixture);
    for (n, v) in &mut long_sig {
        if n == "webhook-signature" {
            *v = format!("v1,{long_value}").into_bytes();
        }
    }
    case("a 60 KiB signature header", "/webhooks/sw", long_sig, fixture.clone(), Framing::Length, &[401]);
    let mut long_id = signed(&fixture);
    long_id.push(h("x-padding", &long_value));
    // A long header that is not part of authentication does not change the verdict.
    case(
        "signed, with a 60 KiB unrelated header",
        "/webhooks/sw",
        long_id,
        fixture.clone(),
        Framing::Length,
        &[200],
    );
    let long_bearer = vec![h(JSON.0, JSON.1), h("authorization", &format!("Bearer {long_value}"))];
    case(
        "a 60 KiB bearer token",
        "/v1/incidents/add",
        long_bearer,
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[401],
    );
    let long_basic = vec![h(JSON.0, JSON.1), h("authorization", &format!("Basic {long_value}"))];
    case(
        "60 KiB of Basic credentials",
        "/v1/incidents/add",
        long_basic,
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[401],
    );
    let second = alertmanager_body("00000000000e0003");
    let mut binary_header = signed(&second);
    binary_header.push(("x-binary".into(), vec![0x80, 0xff, 0xfe, b'a']));
    case(
        "signed, a header value that is not UTF-8",
        "/webhooks/sw",
        binary_header,
        second,
        Framing::Length,
        &[200],
    );
    let mut binary_sig = signed(&fixture);
    for (n, v) in &mut binary_sig {
        if n == "webhook-signature" {
            *v = vec![b'v', b'1', b',', 0xff, 0xfe, 0x80];
        }
    }
    case(
        "a signature that is not UTF-8",
        "/webhooks/sw",
        binary_sig,
        fixture.clone(),
        Framing::Length,
        &[401],
    );
    let too_many = notification_with_alerts(MAX_ALERTS + 1);
    case(
        "signed, more alerts than max_alerts",
        "/webhooks/sw",
        signed(&too_many),
        too_many,
        Framing::Length,
        &[422],
    );
    case("unknown source", "/webhooks/nope", signed(&fixture), fixture.clone(), Framing::Length, &[404]);
    case(
        "the native source is not a webhook",
        "/webhooks/native",
        native_auth(),
        fixture.clone(),
        Framing::Length,
        &[404],
    );
    case(
        "unknown operation",
        "/v1/incidents/explode",
        native_auth(),
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[404],
    );
    cases
}

#[tokio::test]
async fn a_corpus_of_hostile_requests_gets_problem_answers_and_nothing_reaches_scwm() {
    let bridge = Bridge::start(&corpus_sources()).await;
    let mut accepted = 0;
    for case in hostile_corpus() {
        let answer = raw_post(bridge.app.addr, case.path, &case.headers, case.body, case.framing).await;
        let body = String::from_utf8_lossy(&answer.body);
        assert!(case.expect.contains(&answer.status), "{}: got {} {body}", case.name, answer.status);
        if answer.status == 200 {
            accepted += 1;
        } else {
            assert!(answer.is_problem(), "{}: not problem+json: {answer:?}", case.name);
        }
        if answer.status == 401 {
            assert_eq!(body, UNAUTHORIZED, "{}", case.name);
        }
        if case.name.contains("nested") && answer.status != 401 {
            // Refused by the depth scan over the raw bytes, before a parser could recurse.
            assert!(body.contains("nested deeper than"), "{}: {body}", case.name);
        }
        assert_eq!(bridge.app.sim.requests().len(), accepted, "{}: SCWM was called", case.name);
    }
    assert_eq!(bridge.scwm_adds(), ["sw:fp:00000000000e0001", "sw:fp:00000000000e0003"]);
    bridge.assert_alive().await;
    // And still working.
    let body = alertmanager_body("00000000000e0002");
    assert_accepted(bridge.post("/webhooks/sw", &signed(&body), body).await, "after the corpus").await;
    bridge.stop().await;
}

#[tokio::test]
async fn headers_too_large_for_the_http_layer_are_refused_before_the_bridge_sees_them() {
    let bridge = Bridge::start(&corpus_sources()).await;
    let fixture = alertmanager_body("00000000000f0001");
    // One header of 1 MiB, and a thousand small ones: beyond what hyper parses at all.
    let mut one_huge = signed(&fixture);
    one_huge.push(h("x-huge", &"h".repeat(1024 * 1024)));
    let mut very_many = signed(&fixture);
    very_many.extend((0..1000).map(|i| h(&format!("x-h{i}"), "v")));
    for (what, headers) in [("a 1 MiB header", one_huge), ("a thousand headers", very_many)] {
        let answer =
            raw_post(bridge.app.addr, "/webhooks/sw", &headers, fixture.clone(), Framing::Length).await;
        assert_eq!(answer.status, 431, "{what}: {answer:?}");
    }
    assert!(bridge.app.sim.requests().is_empty());
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_body_that_never_finishes_arriving_is_refused_with_408_when_server_body_read_timeout_passes() {
    let bridge = Bridge::start_with(&corpus_sources(), &[("server.body_read_timeout", "1s")]).await;
    for path in ["/webhooks/sw", "/v1/incidents/add"] {
        // Announces 1000 bytes, sends 10 and then nothing: the writer holds the connection open.
        let mut headers = native_auth();
        headers.extend(signed(b"{}"));
        let answer =
            raw_post(bridge.app.addr, path, &headers, b"{\"title\":".to_vec(), Framing::Claimed(1000)).await;
        assert_eq!(answer.status, 408, "{path}: {answer:?}");
        assert!(answer.is_problem(), "{path}: {answer:?}");
    }
    assert!(bridge.app.sim.requests().is_empty());
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn headers_that_never_finish_arriving_lose_their_connection_when_the_read_timeout_passes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bridge = Bridge::start_with(&corpus_sources(), &[("server.body_read_timeout", "1s")]).await;
    // A request line and one header, then nothing: the slowloris pattern.
    let mut stream = tokio::net::TcpStream::connect(bridge.app.addr).await.unwrap();
    stream.write_all(b"POST /webhooks/sw HTTP/1.1\r\nhost: bridge\r\n").await.unwrap();
    let mut rest = Vec::new();
    // The server ends the connection (perhaps after a 408); a read then reaches its end.
    let read =
        common::within(10, "the server to drop the stalled connection", stream.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "{read:?}");
    let answer = String::from_utf8_lossy(&rest);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(bridge.app.sim.requests().is_empty());
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn strings_over_max_string_chars_reach_scwm_cut_with_a_visible_marker() {
    let bridge = Bridge::start(&corpus_sources()).await;
    let long = "L".repeat(10_000);
    let mut n: Value = serde_json::from_slice(&alertmanager_body("00000000000a0001")).unwrap();
    n["alerts"][0]["annotations"]["summary"] = json!(long);
    n["alerts"][0]["annotations"]["description"] = json!(format!("ü{long}"));
    n["alerts"][0]["labels"]["service"] = json!(long);
    n["alerts"][0]["labels"][&long] = json!("a label whose name is long");
    let body = serde_json::to_vec(&n).unwrap();
    assert_accepted(bridge.post("/webhooks/sw", &signed(&body), body).await, "long strings").await;

    let native = json!({"title": long, "fields": {"deep": [format!("é{long}")]}});
    let resp = bridge.post("/v1/incidents/add", &native_auth(), native.to_string()).await;
    assert_eq!(resp.status(), 200);

    let requests = bridge.app.sim.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        let payload = &r.body["payload"];
        let mut strings = Vec::new();
        collect_strings(payload, &mut strings);
        for s in &strings {
            assert!(
                s.chars().count() <= MAX_STRING,
                "a string of {} characters reached SCWM: {s:.80}",
                s.chars().count()
            );
        }
        let cut: Vec<_> = strings.iter().filter(|s| s.ends_with("…[truncated]")).collect();
        assert!(!cut.is_empty(), "no visible truncation marker in {payload}");
    }
    assert_eq!(requests[1].body["payload"]["title"], format!("{}…[truncated]", "L".repeat(MAX_STRING - 12)));
    bridge.stop().await;
}

/// Every string in `v`: values and object keys alike.
fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Rate limiting.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_source_over_its_rate_answers_429_with_retry_after_and_accepts_again_after_it() {
    let sources = format!(
        r#"
[sources.limited]
kind = "alertmanager"
[[sources.limited.auth]]
scheme = "bearer"
tokens = ["{t}"]
[sources.limited.limits]
rate_per_second = 2
rate_burst = 2
"#,
        t = BEARER_TOKENS[0]
    );
    let bridge = Bridge::start(&sources).await;
    let auth = Scheme::Bearer.sign(BEARER_TOKENS[0], b"", 0);
    // Three at once, so that no token can refill between them however slow the machine.
    let bodies: Vec<_> = (0..3).map(|i| alertmanager_body(&format!("{:016x}", 0x1000 + i))).collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|b| bridge.post("/webhooks/limited", &auth, b.clone())))
            .await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429], "a burst of 2");
    let limited_at = answers.iter().position(|r| r.status() == 429).unwrap();
    let limited = answers.into_iter().nth(limited_at).unwrap();
    assert_eq!(limited.headers()["content-type"], "application/problem+json");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(bridge.app.sim.requests().len(), 2, "a rate-limited request reached SCWM");
    let body = bodies[limited_at].clone();

    // The wait the bridge advertised is the behaviour under test: honour it exactly.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_accepted(bridge.post("/webhooks/limited", &auth, body).await, "after Retry-After").await;
    assert_eq!(bridge.app.sim.requests().len(), 3);
    bridge.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Secrets stay secret.
// ---------------------------------------------------------------------------------------------

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
        common::loopback(),
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

// ---------------------------------------------------------------------------------------------
// NATS messages signed like webhooks.
// ---------------------------------------------------------------------------------------------

/// A request, retried while the bridge's subscription is not in place yet.
async fn nats_request(
    client: &async_nats::Client,
    subject: &str,
    headers: async_nats::HeaderMap,
    body: Bytes,
) -> async_nats::Message {
    within(20, "a reply", async {
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

fn reply_status(msg: &async_nats::Message) -> String {
    msg.headers
        .as_ref()
        .and_then(|h| h.get("Incident-Bridge-Status"))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn signed_nats_messages_are_processed_and_unsigned_ones_become_dead_letters() {
    let nats = NatsServer::start();
    let sources = format!(
        r#"
[nats]
url = "{url}"
[[nats.subscriptions]]
subject = "alerts.signed"
source = "signed"

[sources.signed]
kind = "alertmanager"
verify_nats = true
[[sources.signed.auth]]
scheme = "standard-webhooks"
secrets = ["{secret}"]
"#,
        url = nats.url(),
        secret = SW_SECRETS[0]
    );
    let bridge = Bridge::start(&sources).await;
    let client = nats.client().await;
    let mut dead = client.subscribe("scwm.dlq.>").await.unwrap();
    client.flush().await.unwrap();

    let body = alertmanager_body("0000000000aa0001");
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), &body) {
        headers.insert(name.as_str(), String::from_utf8(value).unwrap().as_str());
    }
    let reply = nats_request(&client, "alerts.signed", headers, Bytes::from(body.clone())).await;
    assert_eq!(reply_status(&reply), "200", "{}", String::from_utf8_lossy(&reply.payload));
    assert_eq!(bridge.scwm_adds(), ["signed:fp:0000000000aa0001"]);

    // The same body, unsigned; then signed with a wrong secret.
    let other = alertmanager_body("0000000000aa0002");
    let mut wrong = async_nats::HeaderMap::new();
    for (name, value) in standard_webhooks_headers(SW_SECRETS[1], &message_id(), now_unix(), &other) {
        wrong.insert(name.as_str(), String::from_utf8(value).unwrap().as_str());
    }
    for (what, headers) in [("unsigned", async_nats::HeaderMap::new()), ("wrong secret", wrong)] {
        let reply = nats_request(&client, "alerts.signed", headers, Bytes::from(other.clone())).await;
        assert_eq!(reply_status(&reply), "401", "{what}");
        let letter = within(10, "the dead letter", dead.next()).await.unwrap();
        assert!(letter.subject.starts_with("scwm.dlq."), "{}", letter.subject);
        let kind = letter
            .headers
            .as_ref()
            .and_then(|h| h.get("Incident-Bridge-Error-Kind"))
            .map(|v| v.as_str().to_owned());
        assert_eq!(kind.as_deref(), Some("unauthenticated"), "{what}");
        assert_eq!(&letter.payload[..], &other[..], "{what}: the dead letter keeps the original body");
    }
    assert_eq!(bridge.scwm_adds(), ["signed:fp:0000000000aa0001"], "an unsigned message reached SCWM");
    bridge.stop().await;
}

#[tokio::test]
async fn a_signed_jetstream_message_redelivered_after_a_failure_is_processed_not_refused_as_a_replay() {
    let nats = NatsServer::start();
    let sources = format!(
        r#"
[nats]
url = "{url}"
subscriptions = []
[[nats.consumers]]
stream = "ALERTS"
create = true
stream_subjects = ["alerts.js.>"]
source = "signed"
ack_wait = "5s"

[sources.signed]
kind = "alertmanager"
verify_nats = true
[[sources.signed.auth]]
scheme = "standard-webhooks"
secrets = ["{secret}"]
"#,
        url = nats.url(),
        secret = SW_SECRETS[0]
    );
    // One SCWM attempt per delivery, so the injected failure naks the message.
    let overrides = [("scwm.retry.max_attempts", "1"), ("scwm.breaker.failure_threshold", "100")];
    let bridge = Bridge::start_with(&sources, &overrides).await;
    bridge.app.sim.set_faults(Faults { fail_next: 1, ..Faults::default() });
    let client = nats.client().await;
    let mut dead = client.subscribe("scwm.dlq.>").await.unwrap();
    client.flush().await.unwrap();

    let body = alertmanager_body("0000000000bb0001");
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), &body) {
        headers.insert(name.as_str(), String::from_utf8(value).unwrap().as_str());
    }
    let js = async_nats::jetstream::new(client.clone());
    within(20, "the stream to exist", async {
        loop {
            if js.get_stream("ALERTS").await.is_ok() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    js.publish_with_headers("alerts.js.am", headers, Bytes::from(body)).await.unwrap().await.unwrap();

    // The first delivery fails at SCWM and is nakked; the redelivery, the same message byte for
    // byte, must open the incident.
    let requests = bridge.app.sim.wait_for_requests(2, Duration::from_secs(30)).await.expect("a redelivery");
    assert!(requests[0].fault.is_some(), "the first attempt failed: {requests:?}");
    within(10, "the incident", async {
        while bridge.app.sim.incidents().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let requests = bridge.app.sim.requests();
    assert_eq!(requests.len(), 2, "one failed attempt, one that opened the incident");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), dead.next()).await.is_err(),
        "the redelivery became a dead letter"
    );
    bridge.stop().await;
}

#[test]
fn the_test_configurations_are_valid() {
    // Guards the helpers above: a typo in a source table would fail every test confusingly.
    for sources in [all_sources(), corpus_sources()] {
        let text = common::config_text("http://127.0.0.1:1/incident", &sources);
        config::load(&text, &Default::default(), &|p| std::fs::read_to_string(p)).unwrap();
    }
}
