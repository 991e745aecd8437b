//! The configuration file's shape, as serde reads it. Every table refuses unknown keys so a typo
//! is an error rather than a silently ignored setting. Nothing here is checked beyond syntax:
//! `validate` turns these shapes into typed values.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::Deserialize;

use super::lenient;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub scwm: RawScwm,
    pub pipeline: RawPipeline,
    pub results: RawResults,
    pub simulator: RawSimulator,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: String,
    #[serde(deserialize_with = "lenient::value")]
    pub body_limit_bytes: usize,
    #[serde(deserialize_with = "lenient::duration")]
    pub shutdown_delay: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    pub shutdown_grace: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    pub sync_timeout: Duration,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            body_limit_bytes: 1024 * 1024,
            shutdown_delay: Duration::ZERO,
            shutdown_grace: Duration::from_secs(20),
            sync_timeout: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, Deserialize)]
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
    pub connect_timeout: Duration,
    #[serde(deserialize_with = "lenient::duration")]
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    #[serde(deserialize_with = "lenient::value")]
    pub max_attempts: u32,
    #[serde(deserialize_with = "lenient::duration")]
    pub initial_backoff: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    pub max_backoff: Duration,
    #[serde(deserialize_with = "lenient::duration")]
    pub max_retry_after: Duration,
}

impl Default for RawRetry {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawBreaker {
    #[serde(deserialize_with = "lenient::value")]
    pub failure_threshold: u32,
    #[serde(deserialize_with = "lenient::duration")]
    pub open_for: Duration,
}

impl Default for RawBreaker {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(10) }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawOperation {
    pub url: Option<String>,
    pub event_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawPipeline {
    #[serde(deserialize_with = "lenient::value")]
    pub queue_capacity: usize,
    #[serde(deserialize_with = "lenient::value")]
    pub workers: usize,
}

impl Default for RawPipeline {
    fn default() -> Self {
        Self { queue_capacity: 10_000, workers: 64 }
    }
}

#[derive(Debug, Deserialize)]
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

#[derive(Debug, Deserialize)]
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
