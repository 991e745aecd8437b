//! Configuration: a TOML file, overridden by `INCIDENT_BRIDGE_*` environment variables, turned
//! into typed values by a pure validation step.
//!
//! [`load`] is a function of (file text, environment, secret-file reader) so tests drive it
//! without touching the process environment. It reports every problem it finds, each with the
//! dotted key that has it; nothing starts on a config with problems.

mod effective;
mod env;
mod raw;
mod reference;

use std::{collections::BTreeMap, fmt, io, path::Path, time::Duration};

pub use crate::ingest::nats::config::{ConsumerConfig, NatsAuth, NatsConfig, NatsTls, SubscriptionConfig};
pub use effective::{Effective, effective};
pub use env::{Applied as Environment, PREFIX as ENV_PREFIX};
use raw::RawConfig;
pub use reference::reference;

use crate::{
    ingest::http::config::{AdminSettings, ServerSettings},
    pipeline::config::{PipelineSettings, ReconcileSettings},
    publish::config::ResultsSettings,
    scwm::ClientSettings,
    settings::Problems,
    sim::config::SimulatorSettings,
    sources::{self, Sources},
    store::{BackendConfig, StoreConfig},
};

/// The validated configuration: each component's own settings, gathered.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerSettings,
    pub scwm: ClientSettings,
    pub pipeline: PipelineSettings,
    /// How the pipeline and the reconciler converge with SCWM.
    pub reconcile: ReconcileSettings,
    pub results: ResultsSettings,
    /// Who may use the admin API; `None`: nobody.
    pub admin: Option<AdminSettings>,
    /// When set, `serve` also runs the SCWM simulator in-process (local trials, quickstart).
    pub simulator: Option<SimulatorSettings>,
    /// When set, the bridge connects to NATS: sources, result events, dead letters.
    pub nats: Option<NatsConfig>,
    /// Every named input; `native` is always there.
    pub sources: Sources,
    /// Where alert keys map to SCWM items. Opened only when a source carries alerts.
    pub store: StoreConfig,
    /// Which environment variables set which keys, and which were ignored.
    pub environment: Environment,
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
    let (raw, structural) = raw::read(table);
    let failed: Vec<String> = structural.iter().map(|(key, _)| key.clone()).collect();
    let mut problems: Vec<ConfigError> =
        structural.into_iter().map(|(key, message)| ConfigError { key, message }).collect();
    match gather(raw, environment.clone(), read_file) {
        Ok(config) if problems.is_empty() => return Ok(config),
        Ok(_) => {}
        // What checking found beyond the shape, except where the shape was already wrong: a
        // table that did not read was checked with its defaults, which would only mislead.
        Err(ConfigErrors(more)) => problems
            .extend(more.into_iter().filter(|e| !failed.iter().any(|f| e.key.starts_with(raw::table_of(f))))),
    }
    // Say which problems come from an environment variable, and from which.
    for problem in &mut problems {
        if let Some((variable, _)) = environment.set.iter().find(|(_, key)| {
            problem.key == *key
                || problem.key.starts_with(&format!("{key}."))
                || problem.key.starts_with(&format!("{key}["))
        }) {
            problem.message.push_str(&format!(" (set by the environment variable {variable})"));
        }
    }
    Err(ConfigErrors(problems))
}

/// Hands each table to the component that owns it and gathers their settings, reporting every
/// problem any of them found.
fn gather(
    raw: RawConfig,
    environment: Environment,
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<Config, ConfigErrors> {
    let mut p = Problems::new(read_file);
    let server = crate::ingest::http::config::build(raw.server, &mut p);
    let simulator = crate::sim::config::build(raw.simulator, &mut p);
    let scwm = crate::scwm::config::build(raw.scwm, &mut p);
    let pipeline = crate::pipeline::config::build(raw.pipeline, &mut p);
    let reconcile = crate::pipeline::config::build_reconcile(raw.reconcile, &mut p);
    let results = crate::publish::config::build(raw.results);
    let admin = crate::ingest::http::config::build_admin(raw.admin, &mut p);
    let sources = match sources::build(raw.sources, read_file) {
        Ok(s) => s,
        Err(errors) => {
            p.extend(errors);
            Sources::default()
        }
    };
    let nats_configured = raw.nats.is_some();
    let nats = raw.nats.and_then(|n| crate::ingest::nats::config::build(n, &mut p, &sources));
    let store = match crate::store::build(raw.store, "store") {
        Ok(s) => Some(s),
        Err(errors) => {
            p.extend(errors);
            None
        }
    };
    if let Some(s) = &store
        && matches!(s.backend, BackendConfig::JetStreamKv { .. })
        && !nats_configured
    {
        p.error("store.backend", "jetstream-kv needs a [nats] connection");
    }
    match (server, scwm, store) {
        (Some(server), Some(scwm), Some(store)) if p.is_empty() => Ok(Config {
            server,
            scwm,
            pipeline,
            reconcile,
            results,
            admin,
            simulator,
            nats,
            sources,
            store,
            environment,
        }),
        _ => Err(ConfigErrors(
            p.into_vec().into_iter().map(|(key, message)| ConfigError { key, message }).collect(),
        )),
    }
}

#[cfg(test)]
mod tests;
