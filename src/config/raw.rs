//! The configuration file's shape, as serde reads it: each table is the shape its component
//! owns. Every table refuses unknown keys so a typo is an error rather than a silently ignored
//! setting. Nothing here is checked beyond syntax.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{
    ingest::{
        http::config::{RawAdmin, RawServer},
        nats::config::RawNats,
    },
    pipeline::config::{RawPipeline, RawReconcile},
    publish::config::RawResults,
    scwm::config::RawScwm,
    sim::config::RawSimulator,
};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub scwm: RawScwm,
    pub pipeline: RawPipeline,
    pub reconcile: RawReconcile,
    pub results: RawResults,
    pub simulator: RawSimulator,
    /// Absent: the bridge does not use NATS.
    pub nats: Option<RawNats>,
    pub sources: BTreeMap<String, crate::sources::RawSource>,
    pub store: crate::store::RawStore,
    /// Absent: no admin API.
    pub admin: Option<RawAdmin>,
}

/// Reads each table of the file on its own, and each source on its own, so that one run reports
/// every table whose shape is wrong (and every unknown top-level key), not only the first. A
/// table that does not read is left at its defaults; the problems say `(dotted key, message)`.
pub fn read(mut table: toml::Table) -> (RawConfig, Vec<(String, String)>) {
    let mut problems = Vec::new();
    let mut raw = RawConfig {
        server: part(&mut table, "server", &mut problems).unwrap_or_default(),
        scwm: part(&mut table, "scwm", &mut problems).unwrap_or_default(),
        pipeline: part(&mut table, "pipeline", &mut problems).unwrap_or_default(),
        reconcile: part(&mut table, "reconcile", &mut problems).unwrap_or_default(),
        results: part(&mut table, "results", &mut problems).unwrap_or_default(),
        simulator: part(&mut table, "simulator", &mut problems).unwrap_or_default(),
        nats: part(&mut table, "nats", &mut problems),
        sources: BTreeMap::new(),
        store: part(&mut table, "store", &mut problems).unwrap_or_default(),
        admin: part(&mut table, "admin", &mut problems),
    };
    match table.remove("sources") {
        None => {}
        Some(toml::Value::Table(sources)) => {
            for (name, source) in sources {
                if let Some(s) = every_problem(source, &format!("sources.{name}"), &mut problems) {
                    raw.sources.insert(name, s);
                }
            }
        }
        Some(other) => {
            problems.push(("sources".into(), format!("expected a table, found {}", other.type_str())))
        }
    }
    for key in table.keys() {
        problems.push((key.clone(), "unknown key".into()));
    }
    (raw, problems)
}

/// The table a problem's key is in (`server` for `server.listen`, `sources.am` for
/// `sources.am.auth[0]`), to leave out what checking a defaulted table would say.
pub fn table_of(key: &str) -> &str {
    let end = if key.starts_with("sources.") {
        key.match_indices(['.', '[']).nth(1).map_or(key.len(), |(i, _)| i)
    } else {
        key.find(['.', '[']).unwrap_or(key.len())
    };
    &key[..end]
}

fn part<T: serde::de::DeserializeOwned>(
    table: &mut toml::Table,
    name: &str,
    problems: &mut Vec<(String, String)>,
) -> Option<T> {
    let value = table.remove(name)?;
    every_problem(value, name, problems)
}

/// Deserialises `value`, and when it fails, takes the key that failed out and tries again, so
/// that every problem of the table is reported, not only its first. `None` once any failed.
fn every_problem<T: serde::de::DeserializeOwned>(
    mut value: toml::Value,
    name: &str,
    problems: &mut Vec<(String, String)>,
) -> Option<T> {
    let mut failed = false;
    // Bounded: each round takes one key out, and a table has few.
    for _ in 0..64 {
        match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(v) => return (!failed).then_some(v),
            Err(e) => {
                failed = true;
                let path = e.path().to_string();
                let message = e.into_inner().to_string();
                // serde names an unknown key in its message, at the path of its table.
                let unknown = message
                    .strip_prefix("unknown field `")
                    .and_then(|rest| rest.split('`').next())
                    .map(str::to_owned);
                // The path names the key that failed; for an unknown key, the key itself or
                // (depending on the deserializer) its table.
                let mut segments: Vec<String> =
                    if path == "." { vec![] } else { path.split('.').map(str::to_owned).collect() };
                if let Some(field) = &unknown
                    && segments.last() != Some(field)
                {
                    segments.push(field.clone());
                }
                let key = join(name, &segments.join("."));
                problems.push((key, message));
                if segments.is_empty() || !remove(&mut value, &segments) {
                    return None;
                }
            }
        }
    }
    None
}

/// Removes the key at `path` (`["routes", "[0]", "action"]`-like segments as serde prints
/// them, `routes[0]` included); false when there is nothing there to remove.
fn remove(value: &mut toml::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut current = value;
    for segment in parents {
        let (name, index) = split_index(segment);
        current = match current.get_mut(name) {
            Some(v) => v,
            None => return false,
        };
        if let Some(i) = index {
            current = match current.get_mut(i) {
                Some(v) => v,
                None => return false,
            };
        }
    }
    let (name, index) = split_index(last);
    match (current, index) {
        (toml::Value::Table(t), None) => t.remove(name).is_some(),
        (toml::Value::Table(t), Some(i)) => match t.get_mut(name) {
            Some(toml::Value::Array(items)) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// `routes[0]` → (`routes`, Some(0)); `listen` → (`listen`, None).
fn split_index(segment: &str) -> (&str, Option<usize>) {
    match segment.split_once('[') {
        Some((name, rest)) => (name, rest.trim_end_matches(']').parse().ok()),
        None => (segment, None),
    }
}

fn join(prefix: &str, path: &str) -> String {
    if path == "." || path.is_empty() { prefix.to_owned() } else { format!("{prefix}.{path}") }
}
