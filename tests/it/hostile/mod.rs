//! The front door under attack, one subject per module: every webhook scheme against a real
//! bridge and a real SCWM simulator, rotation, replays (and retries that are not replays)
//! ([`schemes`]); a corpus of hostile requests written to the socket byte for byte, stalled
//! bodies ([`corpus`]); rate limiting ([`rate_limit`]); secrets kept out of logs, `Debug` and
//! dead letters ([`secrets`]); signed NATS and JetStream messages ([`nats`]). This file holds
//! what they share: how each kind of sender signs, the fixtures and the bridge under test.
//!
//! The rule every test checks: only an authenticated, well-formed request reaches SCWM. So each
//! test ends by reading the simulator's request log and comparing it with exactly what was
//! accepted.

mod corpus;
mod nats;
mod rate_limit;
mod schemes;
mod secrets;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::kit::{TestApp, nats::NatsServer, within};
use crate::kit::{fixture, nats::request as nats_request};
use base64::Engine;
use bytes::Bytes;
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
        let sim = crate::kit::start_simulator().await;
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

fn reply_status(msg: &async_nats::Message) -> String {
    msg.headers
        .as_ref()
        .and_then(|h| h.get("Incident-Bridge-Status"))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_default()
}

/// The corpus sources' limits, small so the corpus can cross each of them.
const CORPUS_LIMIT: usize = 256 * 1024;
const MAX_STRING: usize = 64;
const MAX_ALERTS: usize = 3;
const NATIVE_TOKEN: &str = "native-token-e5e5";
