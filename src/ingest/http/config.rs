//! The `[server]` table: the HTTP listener, its limits and timeouts, and how shutdown goes.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use crate::{lenient, settings::Problems};

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
    /// How long a new connection may stay silent before it is closed.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub first_byte_timeout: Duration,
    /// How long a kept-alive connection may sit idle between requests; longer than the pools of
    /// common clients (Go's 90 s, which Alertmanager uses) so they never reuse a closed one.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub idle_timeout: Duration,
    /// Connections open at once; more are closed as soon as they are accepted.
    #[serde(deserialize_with = "lenient::value")]
    pub max_connections: usize,
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
            first_byte_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: 4096,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
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
    /// How long a request's headers, once begun, and its body may take to arrive. A sender
    /// that trickles them (or announces more than it sends) would otherwise hold a connection
    /// and a task forever.
    pub body_read_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

pub fn build(raw: RawServer, p: &mut Problems<'_>) -> Option<ServerSettings> {
    let listen = p.socket_addr("server.listen", &raw.listen);
    let body_limit_bytes = p.positive("server.body_limit_bytes", raw.body_limit_bytes);
    let sync_timeout = p.positive("server.sync_timeout", raw.sync_timeout);
    let body_read_timeout = p.positive("server.body_read_timeout", raw.body_read_timeout);
    let first_byte_timeout = p.positive("server.first_byte_timeout", raw.first_byte_timeout);
    let idle_timeout = p.positive("server.idle_timeout", raw.idle_timeout);
    let max_connections = p.positive("server.max_connections", raw.max_connections);
    Some(ServerSettings {
        listen: listen?,
        body_limit_bytes,
        shutdown_delay: raw.shutdown_delay,
        shutdown_grace: raw.shutdown_grace,
        sync_timeout,
        body_read_timeout,
        first_byte_timeout,
        idle_timeout,
        max_connections,
    })
}

/// The `[admin]` table: who may use the admin API (`/v1/explain/{source}`). Absent: the admin
/// API answers 404 to everyone.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// The same schemes as a source's `auth` (for people and scripts: `bearer` with
    /// `tokens`/`token_files`, or `basic`); every entry must pass.
    pub auth: Vec<crate::verify::RawAuth>,
    /// Serve the console, the admin API's pages for people, at `/ui` (behind the same `auth`).
    #[serde(default = "console_on", deserialize_with = "lenient::value")]
    #[schemars(default = "console_on")]
    pub console: bool,
    /// Decisions kept in memory for the console and `GET /v1/decisions`, newest first; each
    /// costs about 1 KiB (so the default about 1 MiB). 0 keeps none.
    #[serde(default = "recent_decisions", deserialize_with = "lenient::value")]
    #[schemars(default = "recent_decisions")]
    pub recent_decisions: usize,
    /// Where a trace id on the console links to, `{trace_id}` standing for the id (e.g.
    /// `"https://grafana.example/explore?traceId={trace_id}"`). Absent: ids are shown as text.
    pub trace_url: Option<String>,
}

fn console_on() -> bool {
    true
}

fn recent_decisions() -> usize {
    1000
}

/// Who may use the admin API, and what it serves.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    pub auth: std::sync::Arc<crate::verify::SourceAuth>,
    pub console: bool,
    pub recent_decisions: usize,
    pub trace_url: Option<String>,
}

pub fn build_admin(raw: Option<RawAdmin>, p: &mut Problems<'_>) -> Option<AdminSettings> {
    let raw = raw?;
    if let Some(url) = &raw.trace_url
        && (!url.contains("{trace_id}") || !(url.starts_with("https://") || url.starts_with("http://")))
    {
        p.error(
            "admin.trace_url",
            format!("`{url}`: expected an http(s) URL with `{{trace_id}}` where the id goes"),
        );
    }
    match crate::verify::build(&raw.auth, "admin.auth", p.read_file()) {
        Ok(auth) => Some(AdminSettings {
            auth: std::sync::Arc::new(auth),
            console: raw.console,
            recent_decisions: raw.recent_decisions,
            trace_url: raw.trace_url,
        }),
        Err(errors) => {
            p.extend(errors);
            None
        }
    }
}
