//! Configuration: a TOML file, overridden by `INCIDENT_BRIDGE_*` environment variables, turned
//! into typed values by a pure validation step.
//!
//! [`load`] is a function of (file text, environment, secret-file reader) so tests drive it
//! without touching the process environment. It reports every problem it finds, each with the
//! dotted key that has it; nothing starts on a config with problems.

mod env;
mod raw;

use std::{
    collections::BTreeMap,
    fmt, io,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use base64::Engine;
use reqwest::Url;

pub use env::{Applied as Environment, PREFIX as ENV_PREFIX};
use raw::RawConfig;

use crate::{
    incident::Operation,
    publish::SubjectTemplate,
    secret::Secret,
    sources::{self, Sources},
    store::{BackendConfig, StoreConfig},
};

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub scwm: ScwmConfig,
    pub pipeline: PipelineConfig,
    pub results: ResultsConfig,
    /// When set, `serve` also runs the SCWM simulator in-process (local trials, quickstart).
    pub simulator: Option<SimulatorConfig>,
    /// When set, the bridge connects to NATS: sources, result events, dead letters.
    pub nats: Option<NatsConfig>,
    /// Every named input; `native` is always there.
    pub sources: Sources,
    /// Where alert keys map to SCWM items. Opened only when a source carries alerts.
    pub store: StoreConfig,
    /// Which environment variables set which keys, and which were ignored.
    pub environment: Environment,
}

#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub servers: Vec<String>,
    /// The connection name the server shows in its monitoring.
    pub name: String,
    pub auth: NatsAuth,
    pub connect_timeout: Duration,
    pub tls: NatsTls,
    pub subscriptions: Vec<SubscriptionConfig>,
    pub consumers: Vec<ConsumerConfig>,
    /// `None` when result events and dead letters are not published to NATS.
    pub results: Option<NatsResultsConfig>,
}

#[derive(Debug, Clone)]
pub enum NatsAuth {
    None,
    UserPassword {
        user: String,
        password: Secret,
    },
    Token(Secret),
    NkeySeed(Secret),
    /// The text of a `.creds` file (user JWT and nkey seed). It is read and parsed while the
    /// config loads, like other secret files, so a missing or mangled file is a config error
    /// naming the file rather than a failure deep inside the NATS client.
    Credentials(Secret),
}

#[derive(Debug, Clone, Default)]
pub struct NatsTls {
    pub required: bool,
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for servers that verify clients.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// A core NATS subscription: at-most-once, shared across replicas by the queue group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionConfig {
    pub subject: String,
    pub queue_group: String,
    /// Which source decodes the messages (`native` for incident commands).
    pub source: String,
}

/// A durable JetStream pull consumer: at-least-once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    pub stream: String,
    pub durable: String,
    pub create: bool,
    pub stream_subjects: Vec<String>,
    pub filter_subject: Option<String>,
    /// Deliveries before a message that keeps failing transiently is dead-lettered.
    pub max_deliver: i64,
    pub ack_wait: Duration,
    /// Messages delivered but not yet acknowledged, across all replicas.
    pub max_ack_pending: i64,
    pub source: String,
}

#[derive(Debug, Clone)]
pub struct NatsResultsConfig {
    pub subject: SubjectTemplate,
    pub dead_letter_subject: SubjectTemplate,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted on any endpoint.
    pub body_limit_bytes: usize,
    /// How long the bridge keeps serving with `/readyz` at 503 after a shutdown signal, so load
    /// balancers stop routing to it before it stops accepting.
    pub shutdown_delay: Duration,
    /// How long shutdown waits for in-flight work before giving up on it.
    pub shutdown_grace: Duration,
    /// How long a synchronous HTTP command waits for its SCWM answer before answering 503.
    pub sync_timeout: Duration,
    /// How long a request's body may take to arrive. A sender that trickles its body (or
    /// announces more than it sends) would otherwise hold a connection and a task forever.
    pub body_read_timeout: Duration,
}

/// Where and how one operation is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationEndpoint {
    pub url: Url,
    pub event_name: String,
}

#[derive(Debug, Clone)]
pub struct ScwmConfig {
    /// One entry per operation; all seven are always present.
    pub endpoints: BTreeMap<Operation, OperationEndpoint>,
    /// The value after `Authorization: Basic `.
    pub basic_token: Secret,
    pub owner_id: String,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_concurrency: usize,
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub max_retry_after: Duration,
    pub breaker_failure_threshold: u32,
    pub breaker_open_for: Duration,
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Events accepted but not yet finished, across all keys. When full, ingest pushes back.
    pub queue_capacity: usize,
    /// Keys processed at the same time.
    pub workers: usize,
}

#[derive(Debug, Clone)]
pub struct ResultsConfig {
    /// Write every result event and dead letter to the log as a JSON line.
    pub log: bool,
}

#[derive(Debug, Clone)]
pub struct SimulatorConfig {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    pub errors_in_http_200: bool,
}

/// One problem, with the dotted key (or environment variable) that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({} problem{}):",
            self.0.len(),
            if self.0.len() == 1 { "" } else { "s" }
        )?;
        for e in &self.0 {
            writeln!(f, "  {}: {}", e.key, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError { key: key.into(), message: message.into() }])
    }

    /// Whether some problem is reported for `key`.
    pub fn has_key(&self, key: &str) -> bool {
        self.0.iter().any(|e| e.key == key)
    }
}

/// Whether a URL carries a user name or password. Credentials in a URL would be shown wherever
/// the URL is (`Debug` of the config, client errors, logs), so the config refuses them.
fn has_userinfo(url: &Url) -> bool {
    !url.username().is_empty() || url.password().is_some()
}

/// `value` for an error message, with anything before an `@` in its authority left out.
fn without_userinfo(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else { return value.to_owned() };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://…{}", &rest[at..]),
        None => value.to_owned(),
    }
}

/// The JSON Schema (draft-07) of the configuration file, generated from the types that read it,
/// with every subschema inlined so that it can be embedded in another schema (the Helm chart's
/// `values.schema.json` carries it under `config`). Syntax only: what validation checks beyond
/// types and names (a URL that parses, a source named by a consumer) is not in it.
pub fn schema() -> serde_json::Value {
    let mut settings = schemars::generate::SchemaSettings::draft07();
    settings.inline_subschemas = true;
    let schema = settings.into_generator().into_root_schema_for::<RawConfig>();
    let mut value = schema.to_value();
    tidy_schema(&mut value);
    if let Some(object) = value.as_object_mut() {
        object.insert("title".into(), "incident-bridge configuration".into());
    }
    value
}

/// Writes defaults the way the file does (a `Duration` as `"30s"`, not `{secs, nanos}`) and
/// drops schemars' Rust-specific `format`s (`uint`, `double`, ...), which other validators do
/// not know.
fn tidy_schema(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if matches!(map.get("format"), Some(Value::String(f)) if f.starts_with("uint") || f.starts_with("int") || f == "double" || f == "float")
            {
                map.remove("format");
            }
            if let Some(Value::Object(d)) = map.get("default")
                && d.len() == 2
                && let (Some(secs), Some(nanos)) =
                    (d.get("secs").and_then(Value::as_u64), d.get("nanos").and_then(Value::as_u64))
            {
                let duration = Duration::new(secs, nanos as u32);
                map.insert("default".into(), humantime::format_duration(duration).to_string().into());
            }
            map.values_mut().for_each(tidy_schema);
        }
        Value::Array(items) => items.iter_mut().for_each(tidy_schema),
        _ => {}
    }
}

/// Reads a configuration file and the process environment.
pub fn load_from_path(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::one(path.display().to_string(), format!("cannot read: {e}")))?;
    let env: BTreeMap<String, String> = std::env::vars().collect();
    load(&text, &env, &|p: &Path| std::fs::read_to_string(p))
}

/// Parses, overrides and validates. `read_file` reads `*_file` secrets.
pub fn load(
    text: &str,
    env: &BTreeMap<String, String>,
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<Config, ConfigErrors> {
    let mut table: toml::Table = toml::from_str(text)
        .map_err(|e| ConfigErrors::one("(file)", format!("not valid TOML: {}", e.message())))?;
    let environment = env::apply(&mut table, env).map_err(|m| ConfigErrors::one("(environment)", m))?;
    let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        ConfigErrors::one(if key == "." { "(file)".into() } else { key }, e.into_inner().to_string())
    })?;
    Validator { read_file, errors: Vec::new() }.run(raw, environment)
}

struct Validator<'a> {
    read_file: &'a dyn Fn(&Path) -> io::Result<String>,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError { key: key.into(), message: message.into() });
    }

    fn run(mut self, raw: RawConfig, environment: Environment) -> Result<Config, ConfigErrors> {
        let server = self.server(raw.server);
        let simulator = self.simulator(raw.simulator);
        let scwm = self.scwm(raw.scwm);
        let pipeline = self.pipeline(raw.pipeline);
        let results = ResultsConfig { log: raw.results.log };
        let sources = match sources::build(raw.sources, self.read_file) {
            Ok(s) => s,
            Err(errors) => {
                for (key, message) in errors {
                    self.error(key, message);
                }
                Sources::default()
            }
        };
        let nats_configured = raw.nats.is_some();
        let nats = raw.nats.and_then(|n| self.nats(n, &sources));
        let store = match crate::store::build(raw.store, "store") {
            Ok(s) => Some(s),
            Err(errors) => {
                for (key, message) in errors {
                    self.error(key, message);
                }
                None
            }
        };
        if let Some(s) = &store
            && matches!(s.backend, BackendConfig::JetStreamKv { .. })
            && !nats_configured
        {
            self.error("store.backend", "jetstream-kv needs a [nats] connection");
        }
        match (server, scwm, pipeline, store) {
            (Some(server), Some(scwm), Some(pipeline), Some(store)) if self.errors.is_empty() => {
                Ok(Config { server, scwm, pipeline, results, simulator, nats, sources, store, environment })
            }
            _ => Err(ConfigErrors(self.errors)),
        }
    }

    fn socket_addr(&mut self, key: &str, value: &str) -> Option<SocketAddr> {
        match value.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.error(key, format!("`{value}` is not an address like 0.0.0.0:8080"));
                None
            }
        }
    }

    fn positive<T: PartialOrd + Default + Copy>(&mut self, key: &str, v: T) -> T {
        if v <= T::default() {
            self.error(key, "must be greater than zero");
        }
        v
    }

    /// A secret given inline or as a file path (a mounted Kubernetes Secret); not both.
    fn secret(&mut self, key: &str, inline: Option<String>, file: Option<PathBuf>) -> Option<Secret> {
        match (inline, file) {
            (Some(_), Some(_)) => {
                self.error(key, format!("set either `{key}` or `{key}_file`, not both"));
                None
            }
            (Some(v), None) => Some(Secret::new(v)),
            (None, Some(path)) => match (self.read_file)(&path) {
                // Secret files usually end with a newline the value does not include.
                Ok(v) => Some(Secret::new(v.trim_end_matches(['\r', '\n']))),
                Err(e) => {
                    self.error(format!("{key}_file"), format!("cannot read {}: {e}", path.display()));
                    None
                }
            },
            (None, None) => None,
        }
    }

    fn server(&mut self, raw: raw::RawServer) -> Option<ServerConfig> {
        let listen = self.socket_addr("server.listen", &raw.listen);
        let body_limit_bytes = self.positive("server.body_limit_bytes", raw.body_limit_bytes);
        let sync_timeout = self.positive("server.sync_timeout", raw.sync_timeout);
        let body_read_timeout = self.positive("server.body_read_timeout", raw.body_read_timeout);
        Some(ServerConfig {
            listen: listen?,
            body_limit_bytes,
            shutdown_delay: raw.shutdown_delay,
            shutdown_grace: raw.shutdown_grace,
            sync_timeout,
            body_read_timeout,
        })
    }

    fn simulator(&mut self, raw: raw::RawSimulator) -> Option<SimulatorConfig> {
        let token = self.secret("simulator.token", raw.token, raw.token_file);
        let listen = self.socket_addr("simulator.listen", &raw.listen);
        if !raw.enabled {
            return None;
        }
        Some(SimulatorConfig { listen: listen?, token, errors_in_http_200: raw.errors_in_http_200 })
    }

    fn url(&mut self, key: &str, value: &str) -> Option<Url> {
        let shown = without_userinfo(value);
        match Url::parse(value) {
            Ok(u) if has_userinfo(&u) => {
                self.error(
                    key,
                    "must not hold credentials (user:password@): give them as scwm.token, or \
                     scwm.username and scwm.password, which are kept secret",
                );
                None
            }
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
            Ok(_) => {
                self.error(key, format!("`{shown}` must be an http or https URL"));
                None
            }
            Err(e) => {
                self.error(key, format!("`{shown}` is not a URL: {e}"));
                None
            }
        }
    }

    fn scwm(&mut self, raw: raw::RawScwm) -> Option<ScwmConfig> {
        let default_url = match raw.url.as_deref() {
            Some(u) => self.url("scwm.url", u),
            None => None,
        };
        let mut endpoints = BTreeMap::new();
        let mut overrides = raw.operations;
        for (name, _) in overrides.iter() {
            if name.parse::<Operation>().is_err() {
                self.error(
                    format!("scwm.operations.{name}"),
                    "unknown operation (expected add, edit, copy, close, reopen, submit or read)",
                );
            }
        }
        for op in Operation::ALL {
            let over = overrides.remove(op.as_str()).unwrap_or_default();
            let key = format!("scwm.operations.{op}.url");
            let url = match over.url.as_deref() {
                Some(u) => self.url(&key, u),
                None if raw.url.is_none() => {
                    // One missing-url problem is enough when no default exists at all.
                    if op == Operation::Add {
                        self.error("scwm.url", "required (or give every scwm.operations.<op>.url)");
                    }
                    None
                }
                None => default_url.clone(),
            };
            let event_name = over.event_name.unwrap_or_else(|| op.default_event_name().to_owned());
            if event_name.trim().is_empty() {
                self.error(format!("scwm.operations.{op}.event_name"), "must not be empty");
            }
            if let Some(url) = url {
                endpoints.insert(op, OperationEndpoint { url, event_name });
            }
        }

        let password = self.secret("scwm.password", raw.password, raw.password_file);
        let token = self.secret("scwm.token", raw.token, raw.token_file);
        let basic_token = match (token, raw.username, password) {
            (Some(t), None, None) => Some(t),
            (None, Some(user), Some(pass)) => Some(Secret::new(
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", pass.expose())),
            )),
            (None, None, None) => {
                self.error("scwm.token", "required: SCWM needs Basic auth (token, or username and password)");
                None
            }
            (Some(_), _, _) => {
                self.error("scwm.token", "set either token or username/password, not both");
                None
            }
            (None, Some(_), None) => {
                self.error("scwm.password", "required with scwm.username");
                None
            }
            (None, None, Some(_)) => {
                self.error("scwm.username", "required with scwm.password");
                None
            }
        };
        let owner_id = match raw.owner_id {
            Some(o) if !o.trim().is_empty() => Some(o),
            _ => {
                self.error("scwm.owner_id", "required: every SCWM request names its owner");
                None
            }
        };
        let connect_timeout = self.positive("scwm.connect_timeout", raw.connect_timeout);
        let request_timeout = self.positive("scwm.request_timeout", raw.request_timeout);
        let max_concurrency = self.positive("scwm.max_concurrency", raw.max_concurrency);
        let max_attempts = self.positive("scwm.retry.max_attempts", raw.retry.max_attempts);
        let initial_backoff = raw.retry.initial_backoff;
        if raw.retry.max_backoff < initial_backoff {
            self.error("scwm.retry.max_backoff", "must not be less than scwm.retry.initial_backoff");
        }
        let breaker_failure_threshold =
            self.positive("scwm.breaker.failure_threshold", raw.breaker.failure_threshold);
        let breaker_open_for = self.positive("scwm.breaker.open_for", raw.breaker.open_for);

        if endpoints.len() != Operation::ALL.len() {
            return None;
        }
        Some(ScwmConfig {
            endpoints,
            basic_token: basic_token?,
            owner_id: owner_id?,
            connect_timeout,
            request_timeout,
            max_concurrency,
            max_attempts,
            initial_backoff,
            max_backoff: raw.retry.max_backoff,
            max_retry_after: raw.retry.max_retry_after,
            breaker_failure_threshold,
            breaker_open_for,
        })
    }

    fn nats(&mut self, raw: raw::RawNats, sources: &Sources) -> Option<NatsConfig> {
        if raw.url.is_empty() {
            self.error("nats.url", "at least one server URL is required");
        }
        for url in &raw.url {
            match Url::parse(url) {
                Ok(u) if has_userinfo(&u) => self.error(
                    "nats.url",
                    "must not hold credentials (user:password@ or token@): give them as nats.user and \
                     nats.password, or nats.token, which are kept secret",
                ),
                Ok(u) if matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") && u.has_host() => {}
                _ => self.error(
                    "nats.url",
                    format!("`{}` is not a URL like nats://host:4222", without_userinfo(url)),
                ),
            }
        }
        let password = self.secret("nats.password", raw.password, raw.password_file);
        let token = self.secret("nats.token", raw.token, raw.token_file);
        let seed = self.secret("nats.nkey_seed", raw.nkey_seed, raw.nkey_seed_file);
        let auth = match (raw.user, password, token, seed, raw.creds_file) {
            (None, None, None, None, None) => NatsAuth::None,
            (Some(user), Some(password), None, None, None) => NatsAuth::UserPassword { user, password },
            (None, None, Some(t), None, None) => NatsAuth::Token(t),
            (None, None, None, Some(s), None) => NatsAuth::NkeySeed(s),
            (None, None, None, None, Some(path)) => {
                self.nats_credentials(&path).map_or(NatsAuth::None, NatsAuth::Credentials)
            }
            (Some(_), None, None, None, None) => {
                self.error("nats.password", "required with nats.user");
                NatsAuth::None
            }
            (None, Some(_), None, None, None) => {
                self.error("nats.user", "required with nats.password");
                NatsAuth::None
            }
            _ => {
                self.error("nats", "choose one of user/password, token, nkey_seed or creds_file");
                NatsAuth::None
            }
        };
        let client_cert = match (raw.tls.cert_file, raw.tls.key_file) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                self.error("nats.tls", "cert_file and key_file go together");
                None
            }
        };
        let connect_timeout = self.positive("nats.connect_timeout", raw.connect_timeout);

        // Nothing is subscribed unless asked for: a command subject open by default would take
        // commands from anyone who may publish on the NATS account.
        let subscriptions = match raw.subscriptions {
            None => Vec::new(),
            Some(subs) => subs
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let key = format!("nats.subscriptions[{i}]");
                    self.subject(&format!("{key}.subject"), &s.subject, true);
                    self.source_name(&format!("{key}.source"), &s.source, sources);
                    SubscriptionConfig { subject: s.subject, queue_group: s.queue_group, source: s.source }
                })
                .collect(),
        };
        let consumers = raw
            .consumers
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let key = format!("nats.consumers[{i}]");
                if c.stream.is_empty() || c.stream.contains(['.', '*', '>', ' ']) {
                    self.error(format!("{key}.stream"), "must be a stream name without . * > or spaces");
                }
                if c.durable.is_empty() || c.durable.contains(['.', '*', '>', ' ']) {
                    self.error(format!("{key}.durable"), "must be a consumer name without . * > or spaces");
                }
                if c.create && c.stream_subjects.is_empty() {
                    self.error(format!("{key}.stream_subjects"), "required to create the stream");
                }
                for s in &c.stream_subjects {
                    self.subject(&format!("{key}.stream_subjects"), s, true);
                }
                if let Some(f) = &c.filter_subject {
                    self.subject(&format!("{key}.filter_subject"), f, true);
                }
                if c.max_deliver < 1 {
                    self.error(format!("{key}.max_deliver"), "must be at least 1");
                }
                self.positive(&format!("{key}.ack_wait"), c.ack_wait);
                self.positive(&format!("{key}.max_ack_pending"), c.max_ack_pending);
                self.source_name(&format!("{key}.source"), &c.source, sources);
                ConsumerConfig {
                    stream: c.stream,
                    durable: c.durable,
                    create: c.create,
                    stream_subjects: c.stream_subjects,
                    filter_subject: c.filter_subject,
                    max_deliver: c.max_deliver,
                    ack_wait: c.ack_wait,
                    max_ack_pending: c.max_ack_pending,
                    source: c.source,
                }
            })
            .collect();
        let results = if raw.results.enabled {
            let subject = self.template("nats.results.subject", &raw.results.subject);
            let dead_letter_subject =
                self.template("nats.results.dead_letter_subject", &raw.results.dead_letter_subject);
            Some(NatsResultsConfig { subject: subject?, dead_letter_subject: dead_letter_subject? })
        } else {
            None
        };
        Some(NatsConfig {
            servers: raw.url,
            name: raw.name,
            auth,
            connect_timeout,
            tls: NatsTls { required: raw.tls.required, ca_file: raw.tls.ca_file, client_cert },
            subscriptions,
            consumers,
            results,
        })
    }

    /// Reads a NATS `.creds` file and checks that it holds a user JWT and an nkey seed.
    fn nats_credentials(&mut self, path: &Path) -> Option<Secret> {
        const KEY: &str = "nats.creds_file";
        let text = match (self.read_file)(path) {
            Ok(text) => text,
            Err(e) => {
                self.error(KEY, format!("cannot read {}: {e}", path.display()));
                return None;
            }
        };
        match async_nats::ConnectOptions::with_credentials(&text) {
            Ok(_) => Some(Secret::new(text)),
            Err(e) => {
                self.error(KEY, format!("{} is not a NATS credentials file: {e}", path.display()));
                None
            }
        }
    }

    /// A NATS subject: dot-separated non-empty tokens, wildcards only where subscribing.
    fn subject(&mut self, key: &str, subject: &str, wildcards: bool) {
        let tokens: Vec<&str> = subject.split('.').collect();
        let bad_token = |(i, t): (usize, &&str)| {
            t.is_empty()
                || t.contains(char::is_whitespace)
                || (!wildcards && (*t == "*" || *t == ">"))
                || (*t == ">" && i + 1 != tokens.len())
                || (t.len() > 1 && t.contains(['*', '>']))
        };
        if tokens.iter().enumerate().any(bad_token) {
            self.error(key, format!("`{subject}` is not a valid NATS subject"));
        }
    }

    fn template(&mut self, key: &str, text: &str) -> Option<SubjectTemplate> {
        match SubjectTemplate::parse(text) {
            Ok(t) => Some(t),
            Err(e) => {
                self.error(key, e);
                None
            }
        }
    }

    fn source_name(&mut self, key: &str, name: &str, sources: &Sources) {
        if sources.get(name).is_none() {
            self.error(key, format!("unknown source `{name}` (known: {})", sources.names().join(", ")));
        }
    }

    fn pipeline(&mut self, raw: raw::RawPipeline) -> Option<PipelineConfig> {
        let queue_capacity = self.positive("pipeline.queue_capacity", raw.queue_capacity);
        let workers = self.positive("pipeline.workers", raw.workers);
        Some(PipelineConfig { queue_capacity, workers })
    }
}

#[cfg(test)]
mod tests;
