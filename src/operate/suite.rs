//! `incident-bridge test SUITE.yaml`: cases of (source, payload, optional given state and time)
//! with what each alert must do, run offline through the same explain as the admin API, in the
//! style of `promtool test rules`. A line per case, a closing `N passed, M failed`, and on
//! request a JUnit XML report for CI.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    lifecycle::IncidentState,
    pipeline::explain::{Against, Explanation, Given},
};

/// A suite file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// The bridge configuration, relative to the suite file; `--config` overrides it.
    #[serde(default)]
    pub config: Option<PathBuf>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub source: String,
    /// The body, from a file relative to the suite...
    #[serde(default)]
    pub payload_file: Option<PathBuf>,
    /// ...or written in the suite (sent as compact JSON).
    #[serde(default)]
    pub payload: Option<Value>,
    /// Headers the sender sends. A case need not sign its payload: verification is reported,
    /// not required, unless `expect_verified` is set.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub expect_verified: bool,
    /// What the store holds for every key of the case; absent: nothing (the key is unknown).
    #[serde(default)]
    pub given: Option<GivenState>,
    /// The clock, RFC 3339; absent: now.
    #[serde(default)]
    pub at: Option<String>,
    /// One entry per alert (event) the payload carries, in order.
    pub expect: Vec<Expect>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GivenState {
    #[serde(default = "given_item")]
    pub item_id: String,
    /// `open` or `closed`.
    pub state: String,
    /// For `closed`: how long ago, e.g. `"30m"`.
    #[serde(default)]
    pub closed_ago: Option<String>,
    /// SCWM last received this very content (`true`, a repeat) or something else.
    #[serde(default = "yes")]
    pub same_content: bool,
}

impl GivenState {
    /// The state explain runs against.
    pub fn to_given(&self) -> anyhow::Result<Given> {
        Ok(Given {
            item_id: self.item_id.clone(),
            state: match self.state.as_str() {
                "open" => IncidentState::Open,
                "closed" => IncidentState::Closed,
                other => bail!("given.state `{other}`: expected open or closed"),
            },
            closed_ago: self
                .closed_ago
                .as_deref()
                .map(humantime::parse_duration)
                .transpose()
                .context("given.closed_ago")?
                .or(Some(Duration::ZERO)),
            same_content: self.same_content,
        })
    }
}

fn given_item() -> String {
    "IT-000001".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub alertname: Option<String>,
    #[serde(default)]
    pub route: Option<String>,
    #[serde(default)]
    pub decision: Option<String>,
    /// The SCWM operations, in order (`[]`: nothing is sent).
    #[serde(default)]
    pub ops: Option<Vec<String>>,
    /// Fields of the first request's payload, each as rendered.
    #[serde(default)]
    pub fields: BTreeMap<String, Value>,
}

/// How one case went.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub failures: Vec<String>,
}

/// Reads the suite at `path`.
pub fn read(path: &Path) -> anyhow::Result<Suite> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not a test suite", path.display()))
}

/// Runs every case of `suite` (whose file is at `path`) against `config`.
pub async fn run(
    suite: &Suite,
    path: &Path,
    config: crate::config::Config,
) -> anyhow::Result<Vec<CaseResult>> {
    let base = path.parent().unwrap_or(Path::new("."));
    let explainer = super::Explainer::new(config)?;
    let mut results = Vec::new();
    for case in &suite.cases {
        let failures = match run_case(case, base, &explainer).await {
            Ok(failures) => failures,
            Err(e) => vec![format!("{e:#}")],
        };
        results.push(CaseResult { name: case.name.clone(), failures });
    }
    explainer.close();
    Ok(results)
}

async fn run_case(case: &Case, base: &Path, explainer: &super::Explainer) -> anyhow::Result<Vec<String>> {
    let body = match (&case.payload_file, &case.payload) {
        (Some(file), None) => {
            let file = base.join(file);
            std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?
        }
        (None, Some(v)) => serde_json::to_vec(v)?,
        _ => bail!("give payload_file or payload, one of them"),
    };
    let given = case.given.as_ref().map(GivenState::to_given).transpose()?;
    let now = case.at.as_deref().map(humantime::parse_rfc3339_weak).transpose().context("at")?;
    let against = Against { given: Some(given), now };
    let message = super::Message {
        source: case.source.clone(),
        body: body.into(),
        headers: case.headers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    let explained = explainer.explain(&message, &against).await?;
    let mut failures = Vec::new();
    if case.expect_verified && explained.verification != "passed" {
        failures.push(format!("verification: {}", explained.verification));
    }
    if explained.events.len() != case.expect.len() {
        failures.push(format!(
            "{} alert(s) expected, the payload makes {}: {:?}",
            case.expect.len(),
            explained.events.len(),
            explained.events.iter().map(|e| &e.key).collect::<Vec<_>>()
        ));
        return Ok(failures);
    }
    for (i, (want, got)) in case.expect.iter().zip(&explained.events).enumerate() {
        check(i, want, got, &mut failures);
    }
    Ok(failures)
}

fn check(i: usize, want: &Expect, got: &Explanation, failures: &mut Vec<String>) {
    let mut differs = |what: &str, want: &str, got: &str| {
        if want != got {
            failures.push(format!("alert {i}: {what} is {got:?}, expected {want:?}"));
        }
    };
    if let Some(key) = &want.key {
        differs("key", key, &got.key);
    }
    if let Some(name) = &want.alertname {
        differs("alertname", name, got.alertname.as_deref().unwrap_or_default());
    }
    if let Some(route) = &want.route {
        differs("route", route, got.route.as_ref().map_or("", |r| r.name.as_str()));
    }
    if let Some(decision) = &want.decision {
        differs("decision", decision, &got.decision);
    }
    if let Some(ops) = &want.ops {
        let sent: Vec<&str> = got.requests.iter().map(|r| r.op.as_str()).collect();
        if sent != *ops {
            failures.push(format!("alert {i}: ops are {sent:?}, expected {ops:?} ({})", got.reason));
        }
    }
    for (field, value) in &want.fields {
        let found = got.requests.first().and_then(|r| r.envelope.payload.get(field));
        if found != Some(value) {
            failures.push(format!("alert {i}: field `{field}` is {found:?}, expected {value}"));
        }
    }
}

/// A JUnit XML report of `results`, named `suite`.
pub fn junit(suite: &str, results: &[CaseResult]) -> String {
    let esc =
        |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
    let failed = results.iter().filter(|r| !r.failures.is_empty()).count();
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuite name=\"{}\" tests=\"{}\" failures=\"{failed}\">\n",
        esc(suite),
        results.len()
    );
    for r in results {
        if r.failures.is_empty() {
            out.push_str(&format!("  <testcase name=\"{}\"/>\n", esc(&r.name)));
        } else {
            out.push_str(&format!(
                "  <testcase name=\"{}\">\n    <failure message=\"{}\">{}</failure>\n  </testcase>\n",
                esc(&r.name),
                esc(&r.failures[0]),
                esc(&r.failures.join("\n"))
            ));
        }
    }
    out.push_str("</testsuite>\n");
    out
}
