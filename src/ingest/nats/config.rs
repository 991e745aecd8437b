//! The `[nats]` table: the connection (servers, credentials, TLS), the core subscriptions and
//! the JetStream consumers, checked into the settings the transport runs with. Result subjects
//! (`[nats.results]`) belong to publishing and are checked there.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use reqwest::Url;
use serde::Deserialize;

use crate::{
    lenient,
    publish::config::{NatsResultsConfig, RawNatsResults},
    secret::Secret,
    settings::{Problems, has_userinfo, without_userinfo},
    sources::Sources,
};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawNats {
    /// One server URL, a list, or a comma-separated string.
    #[serde(deserialize_with = "lenient::list")]
    #[schemars(with = "lenient::ListOrText")]
    pub url: Vec<String>,
    pub name: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub nkey_seed: Option<String>,
    pub nkey_seed_file: Option<PathBuf>,
    pub creds_file: Option<PathBuf>,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub connect_timeout: Duration,
    /// How often the client pings the server; two unanswered pings and it reconnects. A frozen
    /// or partitioned server is noticed within about twice this.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub ping_interval: Duration,
    pub tls: RawNatsTls,
    /// Core subjects to take messages from; none unless configured.
    pub subscriptions: Option<Vec<RawSubscription>>,
    pub consumers: Vec<RawConsumer>,
    pub results: RawNatsResults,
}

impl Default for RawNats {
    fn default() -> Self {
        Self {
            url: vec!["nats://127.0.0.1:4222".into()],
            name: "incident-bridge".into(),
            user: None,
            password: None,
            password_file: None,
            token: None,
            token_file: None,
            nkey_seed: None,
            nkey_seed_file: None,
            creds_file: None,
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
            tls: RawNatsTls::default(),
            subscriptions: None,
            consumers: Vec::new(),
            results: RawNatsResults::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawNatsTls {
    #[serde(deserialize_with = "lenient::value")]
    pub required: bool,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSubscription {
    pub subject: String,
    #[serde(default = "default_queue_group")]
    pub queue_group: String,
    #[serde(default = "default_source")]
    pub source: String,
}

fn default_queue_group() -> String {
    "incident-bridge".into()
}

fn default_source() -> String {
    "native".into()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawConsumer {
    pub stream: String,
    #[serde(default = "default_queue_group")]
    pub durable: String,
    /// Create the stream and the consumer when they do not exist.
    #[serde(default, deserialize_with = "lenient::value")]
    pub create: bool,
    /// The stream's subjects, used only when creating it.
    #[serde(default, deserialize_with = "lenient::list")]
    #[schemars(with = "lenient::ListOrText")]
    pub stream_subjects: Vec<String>,
    pub filter_subject: Option<String>,
    #[serde(default = "default_max_deliver", deserialize_with = "lenient::value")]
    pub max_deliver: i64,
    #[serde(default = "default_ack_wait", deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub ack_wait: Duration,
    #[serde(default = "default_max_ack_pending", deserialize_with = "lenient::value")]
    pub max_ack_pending: i64,
    #[serde(default = "default_source")]
    pub source: String,
}

fn default_max_deliver() -> i64 {
    10
}

fn default_ack_wait() -> Duration {
    Duration::from_secs(30)
}

fn default_max_ack_pending() -> i64 {
    1000
}

#[derive(Debug, Clone)]
pub struct NatsConfig {
    pub servers: Vec<String>,
    /// The connection name the server shows in its monitoring.
    pub name: String,
    pub auth: NatsAuth,
    pub connect_timeout: Duration,
    pub ping_interval: Duration,
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

/// Checks `raw` into the connection, its subscriptions and consumers; `sources` are the names
/// they may refer to.
pub fn build(raw: RawNats, p: &mut Problems<'_>, sources: &Sources) -> Option<NatsConfig> {
    check_urls(&raw.url, p);
    let auth = auth(&raw, p);
    let client_cert = match (raw.tls.cert_file, raw.tls.key_file) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            p.error("nats.tls", "cert_file and key_file go together");
            None
        }
    };
    let connect_timeout = p.positive("nats.connect_timeout", raw.connect_timeout);
    let ping_interval = p.positive("nats.ping_interval", raw.ping_interval);

    let subscriptions = subscriptions(raw.subscriptions, p, sources);
    let consumers = consumers(raw.consumers, p, sources);
    let results = crate::publish::config::build_nats(raw.results, p);
    Some(NatsConfig {
        servers: raw.url,
        name: raw.name,
        auth,
        connect_timeout,
        ping_interval,
        tls: NatsTls { required: raw.tls.required, ca_file: raw.tls.ca_file, client_cert },
        subscriptions,
        consumers,
        results,
    })
}

fn check_urls(urls: &[String], p: &mut Problems<'_>) {
    if urls.is_empty() {
        p.error("nats.url", "at least one server URL is required");
    }
    for url in urls {
        match Url::parse(url) {
            Ok(u) if has_userinfo(&u) => p.error(
                "nats.url",
                "must not hold credentials (user:password@ or token@): give them as nats.user and \
                 nats.password, or nats.token, which are kept secret",
            ),
            Ok(u) if matches!(u.scheme(), "nats" | "tls" | "ws" | "wss") && u.has_host() => {}
            _ => {
                p.error("nats.url", format!("`{}` is not a URL like nats://host:4222", without_userinfo(url)))
            }
        }
    }
}

/// One way of authenticating to NATS, or none.
fn auth(raw: &RawNats, p: &mut Problems<'_>) -> NatsAuth {
    let password = p.secret("nats.password", raw.password.clone(), raw.password_file.as_deref());
    let token = p.secret("nats.token", raw.token.clone(), raw.token_file.as_deref());
    let seed = p.secret("nats.nkey_seed", raw.nkey_seed.clone(), raw.nkey_seed_file.as_deref());
    match (raw.user.clone(), password, token, seed, raw.creds_file.as_deref()) {
        (None, None, None, None, None) => NatsAuth::None,
        (Some(user), Some(password), None, None, None) => NatsAuth::UserPassword { user, password },
        (None, None, Some(t), None, None) => NatsAuth::Token(t),
        (None, None, None, Some(s), None) => NatsAuth::NkeySeed(s),
        (None, None, None, None, Some(path)) => {
            nats_credentials(p, path).map_or(NatsAuth::None, NatsAuth::Credentials)
        }
        (Some(_), None, None, None, None) => {
            p.error("nats.password", "required with nats.user");
            NatsAuth::None
        }
        (None, Some(_), None, None, None) => {
            p.error("nats.user", "required with nats.password");
            NatsAuth::None
        }
        _ => {
            p.error("nats", "choose one of user/password, token, nkey_seed or creds_file");
            NatsAuth::None
        }
    }
}

fn subscriptions(
    raw: Option<Vec<RawSubscription>>,
    p: &mut Problems<'_>,
    sources: &Sources,
) -> Vec<SubscriptionConfig> {
    // Nothing is subscribed unless asked for: a command subject open by default would take
    // commands from anyone who may publish on the NATS account.
    match raw {
        None => Vec::new(),
        Some(subs) => subs
            .into_iter()
            .enumerate()
            .map(|(i, s)| {
                let key = format!("nats.subscriptions[{i}]");
                subject(p, &format!("{key}.subject"), &s.subject, true);
                source_name(p, &format!("{key}.source"), &s.source, sources);
                SubscriptionConfig { subject: s.subject, queue_group: s.queue_group, source: s.source }
            })
            .collect(),
    }
}

fn consumers(raw: Vec<RawConsumer>, p: &mut Problems<'_>, sources: &Sources) -> Vec<ConsumerConfig> {
    raw.into_iter()
        .enumerate()
        .map(|(i, c)| {
            let key = format!("nats.consumers[{i}]");
            if c.stream.is_empty() || c.stream.contains(['.', '*', '>', ' ']) {
                p.error(format!("{key}.stream"), "must be a stream name without . * > or spaces");
            }
            if c.durable.is_empty() || c.durable.contains(['.', '*', '>', ' ']) {
                p.error(format!("{key}.durable"), "must be a consumer name without . * > or spaces");
            }
            if c.create && c.stream_subjects.is_empty() {
                p.error(format!("{key}.stream_subjects"), "required to create the stream");
            }
            for s in &c.stream_subjects {
                subject(p, &format!("{key}.stream_subjects"), s, true);
            }
            if let Some(f) = &c.filter_subject {
                subject(p, &format!("{key}.filter_subject"), f, true);
            }
            if c.max_deliver < 1 {
                p.error(format!("{key}.max_deliver"), "must be at least 1");
            }
            p.positive(&format!("{key}.ack_wait"), c.ack_wait);
            p.positive(&format!("{key}.max_ack_pending"), c.max_ack_pending);
            source_name(p, &format!("{key}.source"), &c.source, sources);
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
        .collect()
}

/// Reads a NATS `.creds` file and checks that it holds a user JWT and an nkey seed.
fn nats_credentials(p: &mut Problems<'_>, path: &Path) -> Option<Secret> {
    const KEY: &str = "nats.creds_file";
    let text = match (p.read_file())(path) {
        Ok(text) => text,
        Err(e) => {
            p.error(KEY, format!("cannot read {}: {e}", path.display()));
            return None;
        }
    };
    match async_nats::ConnectOptions::with_credentials(&text) {
        Ok(_) => Some(Secret::new(text)),
        Err(e) => {
            p.error(KEY, format!("{} is not a NATS credentials file: {e}", path.display()));
            None
        }
    }
}

/// A NATS subject: dot-separated non-empty tokens, wildcards only where subscribing.
fn subject(p: &mut Problems<'_>, key: &str, subject: &str, wildcards: bool) {
    let tokens: Vec<&str> = subject.split('.').collect();
    let bad_token = |(i, t): (usize, &&str)| {
        t.is_empty()
            || t.contains(char::is_whitespace)
            || (!wildcards && (*t == "*" || *t == ">"))
            || (*t == ">" && i + 1 != tokens.len())
            || (t.len() > 1 && t.contains(['*', '>']))
    };
    if tokens.iter().enumerate().any(bad_token) {
        p.error(key, format!("`{subject}` is not a valid NATS subject"));
    }
}

fn source_name(p: &mut Problems<'_>, key: &str, name: &str, sources: &Sources) {
    if sources.get(name).is_none() {
        p.error(key, format!("unknown source `{name}` (known: {})", sources.names().join(", ")));
    }
}
