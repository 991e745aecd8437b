//! NATS authentication and TLS against real nats-servers. Each test starts a server that
//! requires one way of authenticating (user and password, token, nkey, creds file, client
//! certificate), a simulator and a bridge configured to match, and proves the bridge is
//! connected and working: `/readyz` says NATS is ready and a request on `incidents.commands.add` gets
//! SCWM's envelope back. With wrong credentials the server refuses the bridge again and again,
//! and the bridge keeps running, saying in `/readyz` that NATS is not ready.

use std::path::{Path, PathBuf};

use crate::kit::{TestApp, nats::NatsServer, within};
use async_nats::ConnectOptions;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use nkeys::KeyPair;
use serde_json::{Value, json};

/// What nats-server logs when it refuses a client's credentials.
const AUTH_REFUSED: &str = "authentication error";
/// What nats-server logs when a TLS client does not complete the handshake it requires.
const TLS_REFUSED: &str = "TLS handshake error";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A string as a quoted TOML (and nats-server config) value.
fn quoted(s: impl AsRef<str>) -> String {
    format!("{:?}", s.as_ref())
}

fn path_value(path: &Path) -> String {
    quoted(path.display().to_string())
}

/// A bridge with its own simulator whose `[nats]` section is `url` plus `nats_extra`; `tail`
/// comes after it (e.g. a `[nats.tls]` table).
async fn bridge(url: &str, nats_extra: &str, tail: &str) -> TestApp {
    let sim = crate::kit::start_simulator().await;
    let section = format!(
        "[nats]\nurl = {}\n{nats_extra}\n[[nats.subscriptions]]\nsubject = \"incidents.commands.*\"\n{tail}\n",
        quoted(url)
    );
    TestApp::start_against(sim, &section, &[]).await
}

async fn readyz(app: &TestApp) -> (u16, Value) {
    let resp = app.http.get(app.url("/readyz")).send().await.expect("bridge answers /readyz");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// The bridge is ready (connected to NATS) and a request on the default subscription comes
/// back with SCWM's envelope, through a client that authenticates with `client_options`.
async fn assert_connected_and_working(app: &TestApp, url: &str, client_options: ConnectOptions) {
    app.wait_component("nats", "ready").await;
    let client = within(10, "the test client to connect", client_options.connect(url))
        .await
        .expect("the test client connects with the same credentials");
    let reply = within(20, "a reply from the bridge", async {
        loop {
            match client
                .request("incidents.commands.add", Bytes::from(json!({"title": "disk full"}).to_string()))
                .await
            {
                Ok(msg) => break msg,
                // Ready means connected; the subscription may be a moment behind.
                Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => {
                    tokio::task::yield_now().await
                }
                Err(e) => panic!("request failed: {e}"),
            }
        }
    })
    .await;
    let body: Value = serde_json::from_slice(&reply.payload).expect("the reply is JSON");
    assert_eq!(body["header"]["isErr"], false, "{body}");
    assert_eq!(body["payload"]["id"], "IT-000001", "{body}");
    assert_eq!(app.sim.incidents().len(), 1);
}

/// The server refused the bridge at least twice (so the bridge tried again instead of dying),
/// and meanwhile the bridge is alive and says NATS is not ready. It stays ready itself: its
/// store is a local file, so HTTP work goes on and results wait in the outbox.
async fn assert_refused_and_not_ready(app: &TestApp, server: &NatsServer, refusal: &str) {
    server.wait_for_log(refusal, 2, 20).await;
    let (status, body) = readyz(app).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["components"]["nats"], "not ready (work goes on without it)", "{body}");
    let health = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert!(!app.task.is_finished(), "the bridge keeps running");
}

/// Writes `contents` to `name` in `dir` and returns the path.
fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// User and password
// ---------------------------------------------------------------------------------------------

fn user_password_server() -> NatsServer {
    NatsServer::start_with_config(
        r#"authorization { users = [ { user: "bridge", password: "s3cret-pass" } ] }"#,
    )
}

#[tokio::test]
async fn a_user_and_password_connect_the_bridge_and_it_answers_requests() {
    let server = user_password_server();
    let app = bridge(&server.url(), "user = \"bridge\"\npassword = \"s3cret-pass\"", "").await;
    let client = ConnectOptions::with_user_and_password("bridge".into(), "s3cret-pass".into());
    assert_connected_and_working(&app, &server.url(), client).await;
    app.stop().await;
}

#[tokio::test]
async fn a_password_file_ending_in_a_newline_works_like_the_inline_password() {
    let server = user_password_server();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "nats-password", "s3cret-pass\n");
    let nats = format!("user = \"bridge\"\npassword_file = {}", path_value(&file));
    let app = bridge(&server.url(), &nats, "").await;
    let client = ConnectOptions::with_user_and_password("bridge".into(), "s3cret-pass".into());
    assert_connected_and_working(&app, &server.url(), client).await;
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_password_keeps_the_bridge_running_but_not_ready() {
    let server = user_password_server();
    let app = bridge(&server.url(), "user = \"bridge\"\npassword = \"wrong\"", "").await;
    assert_refused_and_not_ready(&app, &server, AUTH_REFUSED).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Token
// ---------------------------------------------------------------------------------------------

fn token_server() -> NatsServer {
    NatsServer::start_with_config(r#"authorization { token: "t0ken-for-the-bridge" }"#)
}

#[tokio::test]
async fn a_token_connects_the_bridge_and_it_answers_requests() {
    let server = token_server();
    let app = bridge(&server.url(), "token = \"t0ken-for-the-bridge\"", "").await;
    let client = ConnectOptions::with_token("t0ken-for-the-bridge".into());
    assert_connected_and_working(&app, &server.url(), client).await;
    app.stop().await;
}

#[tokio::test]
async fn a_token_file_ending_in_a_newline_works_like_the_inline_token() {
    let server = token_server();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "nats-token", "t0ken-for-the-bridge\n");
    let app = bridge(&server.url(), &format!("token_file = {}", path_value(&file)), "").await;
    let client = ConnectOptions::with_token("t0ken-for-the-bridge".into());
    assert_connected_and_working(&app, &server.url(), client).await;
    app.stop().await;
}

#[tokio::test]
async fn a_wrong_token_keeps_the_bridge_running_but_not_ready() {
    let server = token_server();
    let app = bridge(&server.url(), "token = \"not-the-token\"", "").await;
    assert_refused_and_not_ready(&app, &server, AUTH_REFUSED).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// NKey
// ---------------------------------------------------------------------------------------------

fn nkey_server(user: &KeyPair) -> NatsServer {
    NatsServer::start_with_config(&format!(
        "authorization {{ users = [ {{ nkey: {} }} ] }}",
        quoted(user.public_key())
    ))
}

#[tokio::test]
async fn an_nkey_seed_connects_the_bridge_and_it_answers_requests() {
    let user = KeyPair::new_user();
    let server = nkey_server(&user);
    let seed = user.seed().unwrap();
    let app = bridge(&server.url(), &format!("nkey_seed = {}", quoted(&seed)), "").await;
    assert_connected_and_working(&app, &server.url(), ConnectOptions::with_nkey(seed)).await;
    app.stop().await;
}

#[tokio::test]
async fn an_nkey_seed_file_works_like_the_inline_seed() {
    let user = KeyPair::new_user();
    let server = nkey_server(&user);
    let seed = user.seed().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "nats-seed", &format!("{seed}\n"));
    let app = bridge(&server.url(), &format!("nkey_seed_file = {}", path_value(&file)), "").await;
    assert_connected_and_working(&app, &server.url(), ConnectOptions::with_nkey(seed)).await;
    app.stop().await;
}

#[tokio::test]
async fn an_nkey_the_server_does_not_know_keeps_the_bridge_running_but_not_ready() {
    let server = nkey_server(&KeyPair::new_user());
    let stranger = KeyPair::new_user().seed().unwrap();
    let app = bridge(&server.url(), &format!("nkey_seed = {}", quoted(&stranger)), "").await;
    assert_refused_and_not_ready(&app, &server, AUTH_REFUSED).await;
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Creds file (decentralized JWT auth)
// ---------------------------------------------------------------------------------------------

/// A NATS JWT (v2): `claims` completed with issuer and issue time, signed by `issuer` with
/// ed25519 over `header.claims`, every part base64url without padding.
fn nats_jwt(mut claims: Value, issuer: &KeyPair) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    claims["iss"] = json!(issuer.public_key());
    claims["iat"] =
        json!(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    claims["jti"] = json!(ulid::Ulid::new().to_string());
    let signing_input = format!("{header}.{}", URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = issuer.sign(signing_input.as_bytes()).expect("signing the JWT");
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// An operator, the accounts it signed and the server config that trusts them, accounts
/// resolved from memory. JetStream needs a system account, so there is one beside the
/// bridge's.
struct Trust {
    operator: KeyPair,
    system: KeyPair,
    account: KeyPair,
}

impl Trust {
    fn new() -> Self {
        Self {
            operator: KeyPair::new_operator(),
            system: KeyPair::new_account(),
            account: KeyPair::new_account(),
        }
    }

    fn account_jwt(&self, account: &KeyPair, name: &str) -> String {
        let unlimited = json!({"subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
                               "wildcards": true, "conn": -1, "leaf": -1});
        nats_jwt(
            json!({"sub": account.public_key(), "name": name,
                   "nats": {"limits": unlimited, "type": "account", "version": 2}}),
            &self.operator,
        )
    }

    fn server_config(&self) -> String {
        let operator = nats_jwt(
            json!({"sub": self.operator.public_key(), "name": "test-operator",
                   "nats": {"system_account": self.system.public_key(), "type": "operator", "version": 2}}),
            &self.operator,
        );
        format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n  {}: {}\n  {}: {}\n}}\n",
            quoted(operator),
            self.system.public_key(),
            self.system.public_key(),
            quoted(self.account_jwt(&self.system, "SYS")),
            self.account.public_key(),
            quoted(self.account_jwt(&self.account, "bridge-account")),
        )
    }
}

/// A `.creds` file's text for a new user signed by `account`, in the layout `nsc` writes.
fn user_creds(account: &KeyPair) -> String {
    let user = KeyPair::new_user();
    let jwt = nats_jwt(
        json!({"sub": user.public_key(), "name": "incident-bridge",
               "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                        "type": "user", "version": 2}}),
        account,
    );
    format!(
        "-----BEGIN NATS USER JWT-----\n{jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n",
        user.seed().unwrap()
    )
}

#[tokio::test]
async fn a_creds_file_of_a_user_the_operator_trusts_connects_the_bridge_and_it_answers_requests() {
    let trust = Trust::new();
    let server = NatsServer::start_with_config(&trust.server_config());
    let dir = tempfile::tempdir().unwrap();
    let creds = user_creds(&trust.account);
    let file = write(dir.path(), "bridge.creds", &creds);
    let app = bridge(&server.url(), &format!("creds_file = {}", path_value(&file)), "").await;
    let client = ConnectOptions::with_credentials(&creds).unwrap();
    assert_connected_and_working(&app, &server.url(), client).await;
    app.stop().await;
}

#[tokio::test]
async fn a_creds_file_signed_by_an_unknown_account_keeps_the_bridge_running_but_not_ready() {
    let trust = Trust::new();
    let server = NatsServer::start_with_config(&trust.server_config());
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "stranger.creds", &user_creds(&KeyPair::new_account()));
    let app = bridge(&server.url(), &format!("creds_file = {}", path_value(&file)), "").await;
    assert_refused_and_not_ready(&app, &server, AUTH_REFUSED).await;
    app.stop().await;
}

/// The exit code of `serve` for a config that does not validate (sysexits' EX_CONFIG).
const EXIT_CONFIG: i32 = 78;

/// Runs `incident-bridge serve` on a config whose `[nats]` uses `creds_file = path` and
/// returns its exit code and everything it printed.
async fn serve_with_creds_file(dir: &Path, path: &Path) -> (Option<i32>, String) {
    let nats = format!("[nats]\nurl = \"nats://127.0.0.1:1\"\ncreds_file = {}\n", path_value(path));
    let config = write(dir, "bridge.toml", &crate::kit::config_text("http://127.0.0.1:1/scwm", &nats));
    let out = within(
        30,
        "the bridge to exit",
        tokio::process::Command::new(env!("CARGO_BIN_EXE_incident-bridge"))
            .args(["serve", "--config"])
            .arg(&config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code(), printed)
}

#[tokio::test]
async fn a_missing_creds_file_stops_start_up_with_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.creds");
    let (code, printed) = serve_with_creds_file(dir.path(), &missing).await;
    assert_eq!(code, Some(EXIT_CONFIG), "{printed}");
    assert!(printed.contains("nats.creds_file"), "{printed}");
    assert!(printed.contains(&missing.display().to_string()), "{printed}");
}

#[tokio::test]
async fn a_creds_file_that_is_not_one_stops_start_up_with_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage.creds", "this is not a credentials file\n");
    let (code, printed) = serve_with_creds_file(dir.path(), &garbage).await;
    assert_eq!(code, Some(EXIT_CONFIG), "{printed}");
    assert!(printed.contains("nats.creds_file"), "{printed}");
    assert!(printed.contains(&garbage.display().to_string()), "{printed}");
    assert!(printed.contains("not a NATS credentials file"), "{printed}");
}

// ---------------------------------------------------------------------------------------------
// TLS with client certificates
// ---------------------------------------------------------------------------------------------

/// A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files.
struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn generate() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
            KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.distinguished_name.push(DnType::CommonName, "incident-bridge test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |name: &str, san: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let mut params = CertificateParams::new(san).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![usage];
            params.use_authority_key_identifier_extension = true;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) =
            leaf("nats-server", vec!["127.0.0.1".into()], ExtendedKeyUsagePurpose::ServerAuth);
        let (client_cert, client_key) = leaf("incident-bridge", vec![], ExtendedKeyUsagePurpose::ClientAuth);

        Self {
            ca: write(dir.path(), "ca.pem", &ca_cert.pem()),
            server_cert: write(dir.path(), "server.pem", &server_cert),
            server_key: write(dir.path(), "server-key.pem", &server_key),
            client_cert: write(dir.path(), "client.pem", &client_cert),
            client_key: write(dir.path(), "client-key.pem", &client_key),
            _dir: dir,
        }
    }

    /// nats-server requiring TLS and a client certificate signed by the CA.
    fn server(&self) -> NatsServer {
        NatsServer::start_with_config(&format!(
            "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: true\n  timeout: 5\n}}\n",
            path_value(&self.server_cert),
            path_value(&self.server_key),
            path_value(&self.ca),
        ))
    }
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate_connects_the_bridge_and_it_answers_requests() {
    let pki = Pki::generate();
    let server = pki.server();
    let url = format!("tls://127.0.0.1:{}", server.port);
    let tls = format!(
        "[nats.tls]\nca_file = {}\ncert_file = {}\nkey_file = {}\n",
        path_value(&pki.ca),
        path_value(&pki.client_cert),
        path_value(&pki.client_key)
    );
    let app = bridge(&url, "", &tls).await;
    let client = ConnectOptions::new()
        .require_tls(true)
        .add_root_certificates(pki.ca.clone())
        .add_client_certificate(pki.client_cert.clone(), pki.client_key.clone());
    assert_connected_and_working(&app, &url, client).await;
    app.stop().await;
}

#[tokio::test]
async fn without_a_client_certificate_the_server_refuses_the_bridge_and_it_is_not_ready() {
    let pki = Pki::generate();
    let server = pki.server();
    let url = format!("tls://127.0.0.1:{}", server.port);
    let tls = format!("[nats.tls]\nca_file = {}\n", path_value(&pki.ca));
    let app = bridge(&url, "", &tls).await;
    assert_refused_and_not_ready(&app, &server, TLS_REFUSED).await;
    app.stop().await;
}
