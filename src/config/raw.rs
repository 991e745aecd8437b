//! The configuration file's shape, as serde reads it. Every table refuses unknown keys so a typo
//! is an error rather than a silently ignored setting. Nothing here is checked beyond syntax:
//! `validate` turns these shapes into typed values.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::lenient;

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub scwm: RawScwm,
    pub pipeline: RawPipeline,
    pub results: RawResults,
    pub simulator: RawSimulator,
    /// Absent: the bridge does not use NATS.
    pub nats: Option<RawNats>,
    pub sources: BTreeMap<String, crate::sources::RawSource>,
    pub store: crate::store::RawStore,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    #[serde(deserialize_with = "lenient::value")]
    pub body_limit_bytes: usize,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub shutdown_delay: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub shutdown_grace: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub sync_timeout: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub body_read_timeout: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            body_limit_bytes: 1024 * 1024,
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(20),
            sync_timeout: Duration::from_secs(30),
            body_read_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawScwm {
    pub url: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    pub owner_id: Option<String>,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub request_timeout: Duration,
    #[serde(deserialize_with = "lenient::value")]
    pub max_concurrency: usize,
    pub retry: RawRetry,
    pub breaker: RawBreaker,
    pub operations: BTreeMap<String, RawOperation>,
}

impl Default for RawScwm {
    fn default() -> Self {
        Self {
            url: None,
            token: None,
            token_file: None,
            username: None,
            password: None,
            password_file: None,
            owner_id: None,
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(10),
            max_concurrency: 32,
            retry: RawRetry::default(),
            breaker: RawBreaker::default(),
            operations: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    #[serde(deserialize_with = "lenient::value")]
    pub max_attempts: u32,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub initial_backoff: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub max_backoff: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub max_retry_after: Duration,
}

impl Default for RawRetry {
    fn default() -> Self {
        let d = crate::scwm::RetryPolicy::default();
        Self {
            max_attempts: d.max_attempts,
            initial_backoff: d.initial_backoff,
            max_backoff: d.max_backoff,
            max_retry_after: d.max_retry_after,
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    #[serde(deserialize_with = "lenient::value")]
    pub failure_threshold: u32,
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub open_for: Duration,
}

impl Default for RawBreaker {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(10) }
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawOperation {
    pub url: Option<String>,
    pub event_name: Option<String>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPipeline {
    #[serde(deserialize_with = "lenient::value")]
    pub queue_capacity: usize,
    #[serde(deserialize_with = "lenient::value")]
    pub workers: usize,
}

impl Default for RawPipeline {
    fn default() -> Self {
        Self { queue_capacity: 1_000, workers: 64 }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawResults {
    #[serde(deserialize_with = "lenient::value")]
    pub log: bool,
}

impl Default for RawResults {
    fn default() -> Self {
        Self { log: true }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawSimulator {
    #[serde(deserialize_with = "lenient::value")]
    pub enabled: bool,
    pub listen: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    #[serde(deserialize_with = "lenient::value")]
    pub errors_in_http_200: bool,
}

impl Default for RawSimulator {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:8090".into(),
            token: None,
            token_file: None,
            errors_in_http_200: false,
        }
    }
}

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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawNatsResults {
    #[serde(deserialize_with = "lenient::value")]
    pub enabled: bool,
    pub subject: String,
    pub dead_letter_subject: String,
}

impl Default for RawNatsResults {
    fn default() -> Self {
        Self {
            enabled: true,
            subject: "scwm.results.{op}".into(),
            dead_letter_subject: "scwm.dlq.{op}".into(),
        }
    }
}
