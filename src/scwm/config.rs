//! The `[scwm]` table: its shape as written ([`RawScwm`]) and the check that turns it into the
//! client's own [`ClientSettings`], reporting every problem with its dotted key. No I/O beyond
//! reading secret files through the reader it is given.

use std::{collections::BTreeMap, collections::HashMap, path::PathBuf, time::Duration};

use base64::Engine;
use reqwest::Url;
use serde::Deserialize;

use super::{BreakerSettings, ClientSettings, Endpoint, RateLimit, RetryPolicy};
use crate::{
    incident::Operation,
    lenient,
    secret::Secret,
    settings::{Problems, has_userinfo, without_userinfo},
};

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
    pub rate_limit: RawRateLimit,
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
            rate_limit: RawRateLimit::default(),
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
        let d = RetryPolicy::default();
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
    /// The span of recent calls whose failure rate decides whether the circuit opens.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub window: Duration,
    /// Calls the window must hold before its failure rate can open the circuit.
    #[serde(deserialize_with = "lenient::value")]
    pub minimum_calls: u32,
    /// Share of failed calls (5xx, no answer) in the window that opens the circuit, in (0, 1].
    #[serde(deserialize_with = "lenient::value")]
    pub failure_rate: f64,
    /// Calls in a row without any answer (connection refused, timed out) that open it at once.
    #[serde(deserialize_with = "lenient::value")]
    pub consecutive_failures: u32,
    /// How long an open circuit refuses calls before its trial begins.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub open_for: Duration,
    /// Calls let through at once when the trial begins; their majority decides.
    #[serde(deserialize_with = "lenient::value")]
    pub probes: u32,
    /// Successes in the trial after which the circuit is closed (one more call in flight per success until then).
    #[serde(deserialize_with = "lenient::value")]
    pub recovery_calls: u32,
}

impl Default for RawBreaker {
    fn default() -> Self {
        let d = BreakerSettings::default();
        Self {
            window: d.window,
            minimum_calls: d.minimum_calls,
            failure_rate: d.failure_rate,
            consecutive_failures: d.consecutive_failures,
            open_for: d.open_for,
            probes: d.probes,
            recovery_calls: d.recovery_calls,
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawRateLimit {
    /// The tenant's sustained request rate per endpoint URL; 0 (the default): no limit known,
    /// only SCWM's own Retry-After pauses requests.
    #[serde(deserialize_with = "lenient::value")]
    pub per_second: f64,
    /// Requests that may go at once after a quiet spell (the bucket's size).
    #[serde(deserialize_with = "lenient::value")]
    pub burst: u32,
}

impl Default for RawRateLimit {
    fn default() -> Self {
        let d = RateLimit::default();
        Self { per_second: d.per_second, burst: d.burst }
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawOperation {
    pub url: Option<String>,
    pub event_name: Option<String>,
}

/// Checks `raw` into the client's settings; `None` when a problem was reported.
pub fn build(raw: RawScwm, p: &mut Problems<'_>) -> Option<ClientSettings> {
    let default_url = raw.url.as_deref().and_then(|u| url(p, "scwm.url", u));
    let endpoints = endpoints(&raw, default_url, p);
    let basic_token = basic_token(&raw, p);
    let owner_id = match raw.owner_id {
        Some(o) if !o.trim().is_empty() => Some(o),
        _ => {
            p.error("scwm.owner_id", "required: every SCWM request names its owner");
            None
        }
    };
    let connect_timeout = p.positive("scwm.connect_timeout", raw.connect_timeout);
    let request_timeout = p.positive("scwm.request_timeout", raw.request_timeout);
    let max_concurrency = p.positive("scwm.max_concurrency", raw.max_concurrency);
    let max_attempts = p.positive("scwm.retry.max_attempts", raw.retry.max_attempts);
    if raw.retry.max_backoff < raw.retry.initial_backoff {
        p.error("scwm.retry.max_backoff", "must not be less than scwm.retry.initial_backoff");
    }
    let breaker = breaker(&raw.breaker, p);
    let rate_limit = rate_limit(&raw.rate_limit, p);
    Some(ClientSettings {
        endpoints: endpoints?,
        basic_token: basic_token?,
        owner_id: owner_id?,
        connect_timeout,
        request_timeout,
        retry: RetryPolicy {
            max_attempts,
            initial_backoff: raw.retry.initial_backoff,
            max_backoff: raw.retry.max_backoff,
            max_retry_after: raw.retry.max_retry_after,
        },
        breaker,
        rate_limit,
        max_concurrency,
        user_agent: concat!("incident-bridge/", env!("CARGO_PKG_VERSION")).to_owned(),
    })
}

fn breaker(raw: &RawBreaker, p: &mut Problems<'_>) -> BreakerSettings {
    if !(raw.failure_rate > 0.0 && raw.failure_rate <= 1.0) {
        p.error("scwm.breaker.failure_rate", "must be a share of calls in (0, 1], e.g. 0.5");
    }
    BreakerSettings {
        window: p.positive("scwm.breaker.window", raw.window),
        minimum_calls: p.positive("scwm.breaker.minimum_calls", raw.minimum_calls),
        failure_rate: raw.failure_rate,
        consecutive_failures: p.positive("scwm.breaker.consecutive_failures", raw.consecutive_failures),
        open_for: p.positive("scwm.breaker.open_for", raw.open_for),
        probes: p.positive("scwm.breaker.probes", raw.probes),
        recovery_calls: p.positive("scwm.breaker.recovery_calls", raw.recovery_calls),
    }
}

fn rate_limit(raw: &RawRateLimit, p: &mut Problems<'_>) -> RateLimit {
    if !(raw.per_second.is_finite() && raw.per_second >= 0.0) {
        p.error("scwm.rate_limit.per_second", "must be 0 (no limit known) or a positive number of requests");
    }
    RateLimit { per_second: raw.per_second, burst: p.positive("scwm.rate_limit.burst", raw.burst) }
}

/// One endpoint per operation: its own URL and event name, else `scwm.url` and the contract's.
fn endpoints(
    raw: &RawScwm,
    default_url: Option<Url>,
    p: &mut Problems<'_>,
) -> Option<HashMap<Operation, Endpoint>> {
    for name in raw.operations.keys() {
        if name.parse::<Operation>().is_err() {
            p.error(
                format!("scwm.operations.{name}"),
                "unknown operation (expected add, edit, copy, close, reopen, submit or read)",
            );
        }
    }
    let mut endpoints = HashMap::new();
    for op in Operation::ALL {
        let over = raw.operations.get(op.as_str());
        let key = format!("scwm.operations.{op}.url");
        let url = match over.and_then(|o| o.url.as_deref()) {
            Some(u) => url(p, &key, u),
            None if raw.url.is_none() => {
                // One missing-url problem is enough when no default exists at all.
                if op == Operation::Add {
                    p.error("scwm.url", "required (or give every scwm.operations.<op>.url)");
                }
                None
            }
            None => default_url.clone(),
        };
        let event_name =
            over.and_then(|o| o.event_name.clone()).unwrap_or_else(|| op.default_event_name().to_owned());
        if event_name.trim().is_empty() {
            p.error(format!("scwm.operations.{op}.event_name"), "must not be empty");
        }
        if let Some(url) = url {
            endpoints.insert(op, Endpoint { url, event_name });
        }
    }
    (endpoints.len() == Operation::ALL.len()).then_some(endpoints)
}

/// The Basic token: given as such, or made of username and password.
fn basic_token(raw: &RawScwm, p: &mut Problems<'_>) -> Option<Secret> {
    let password = p.secret("scwm.password", raw.password.clone(), raw.password_file.as_deref());
    let token = p.secret("scwm.token", raw.token.clone(), raw.token_file.as_deref());
    match (token, raw.username.as_deref(), password) {
        (Some(t), None, None) => Some(t),
        (None, Some(user), Some(pass)) => Some(Secret::new(
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", pass.expose())),
        )),
        (None, None, None) => {
            p.error("scwm.token", "required: SCWM needs Basic auth (token, or username and password)");
            None
        }
        (Some(_), _, _) => {
            p.error("scwm.token", "set either token or username/password, not both");
            None
        }
        (None, Some(_), None) => {
            p.error("scwm.password", "required with scwm.username");
            None
        }
        (None, None, Some(_)) => {
            p.error("scwm.username", "required with scwm.password");
            None
        }
    }
}

fn url(p: &mut Problems<'_>, key: &str, value: &str) -> Option<Url> {
    let shown = without_userinfo(value);
    match Url::parse(value) {
        Ok(u) if has_userinfo(&u) => {
            p.error(
                key,
                "must not hold credentials (user:password@): give them as scwm.token, or \
                 scwm.username and scwm.password, which are kept secret",
            );
            None
        }
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => Some(u),
        Ok(_) => {
            p.error(key, format!("`{shown}` must be an http or https URL"));
            None
        }
        Err(e) => {
            p.error(key, format!("`{shown}` is not a URL: {e}"));
            None
        }
    }
}
