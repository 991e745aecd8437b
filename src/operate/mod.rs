//! What the operator commands of the binary do (`incident-bridge explain`, `store`, `dlq`,
//! `test`): ask a running bridge's admin API, or (explain, test) answer offline from a
//! configuration alone. Owns no rule: the intake and the pipeline explain; this only builds
//! what they need and carries the answer.

pub mod suite;

use std::{path::Path, sync::Arc};

use anyhow::{Context, bail};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use crate::{
    config::Config,
    intake::{Explained, Intake},
    pipeline::{Pipeline, Runner},
    scwm::ScwmClient,
};

/// A message as its sender would send it.
pub struct Message {
    pub source: String,
    pub body: Bytes,
    /// `(name, value)` pairs.
    pub headers: Vec<(String, String)>,
}

/// Parses `Name: value` as `curl -H` takes it.
pub fn header(text: &str) -> anyhow::Result<(String, String)> {
    let Some((name, value)) = text.split_once(':') else { bail!("`{text}`: expected `Name: value`") };
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// Explains messages offline: the configuration's intake and pipeline, with no store opened
/// (every key is unknown unless a case gives its state), no SCWM called, nothing published.
pub struct Explainer {
    intake: Intake,
    runner: Runner,
    sources: crate::sources::Sources,
}

impl Explainer {
    pub fn new(config: Config) -> anyhow::Result<Self> {
        let client = ScwmClient::new(config.scwm.clone()).context("building the SCWM client")?;
        let pipeline = Pipeline::new(client, crate::publish::Publisher::default(), config.scwm.retry.clone())
            .with_sources(config.sources.clone())
            .with_reconcile(config.reconcile.clone());
        let runner = Runner::new(Arc::new(pipeline), 1, 1);
        let intake = Intake::new(runner.clone(), config.sources.clone(), CancellationToken::new());
        Ok(Self { intake, runner, sources: config.sources })
    }

    pub async fn explain(
        &self,
        message: &Message,
        against: &crate::pipeline::explain::Against,
    ) -> anyhow::Result<Explained> {
        let Some(spec) = self.sources.get(&message.source).cloned() else {
            bail!("no source named `{}` in the configuration", message.source)
        };
        let headers =
            crate::headers::to_http_headers(message.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())))
                .map_err(|e| anyhow::anyhow!("a header is not valid HTTP: {e}"))?;
        let inbound = crate::ingest::http::explain_inbound(&spec.name, &headers, message.body.clone());
        self.intake
            .explain_against(&spec, inbound, &headers, against)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
    }

    pub fn close(&self) {
        self.runner.close();
    }
}

/// Explains `message` against `config` alone: no store is opened (every key is unknown unless
/// `against` gives a state), no SCWM is called, nothing is published.
pub async fn explain_offline(
    config: Config,
    message: &Message,
    against: &crate::pipeline::explain::Against,
) -> anyhow::Result<Explained> {
    let explainer = Explainer::new(config)?;
    let explained = explainer.explain(message, against).await;
    explainer.close();
    explained
}

/// Asks the bridge at `url` (its admin API) to explain `message`; its answer, as JSON text.
pub async fn explain_online(url: &str, token: Option<&str>, message: &Message) -> anyhow::Result<String> {
    let body = serde_json::json!({
        "headers": message.headers.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
        "body": String::from_utf8_lossy(&message.body),
    });
    call(reqwest::Method::POST, url, &format!("/v1/explain/{}", message.source), token, Some(&body)).await
}

/// A token as the CLI takes it: given, or read from a file without its trailing newline.
pub fn token(given: Option<String>, file: Option<&Path>) -> anyhow::Result<Option<String>> {
    match (given, file) {
        (Some(t), _) => Ok(Some(t)),
        (None, Some(path)) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            Ok(Some(text.trim_end_matches(['\r', '\n']).to_owned()))
        }
        (None, None) => Ok(None),
    }
}

/// An admin API call: `method` on `path_and_query` of the bridge at `url`; the answer's body
/// (empty for 204).
pub async fn admin(
    method: reqwest::Method,
    url: &str,
    path_and_query: &str,
    token: Option<&str>,
) -> anyhow::Result<String> {
    call(method, url, path_and_query, token, None).await
}

async fn call(
    method: reqwest::Method,
    url: &str,
    path_and_query: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<String> {
    let target = format!("{}{path_and_query}", url.trim_end_matches('/'));
    let mut request = reqwest::Client::new().request(method, &target);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let resp = request.send().await.with_context(|| format!("asking {url}"))?;
    let status = resp.status();
    let text = resp.text().await.context("reading the answer")?;
    if !status.is_success() {
        bail!("{url} answered {status}: {text}");
    }
    Ok(text)
}

/// `?name=value&...` of the pairs that have a value, percent-encoded.
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(name, value)| Some(format!("{name}={}", urlencoding(value.as_deref()?))))
        .collect();
    if parts.is_empty() { String::new() } else { format!("?{}", parts.join("&")) }
}

fn urlencoding(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
