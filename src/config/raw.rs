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
                match serde_path_to_error::deserialize(source) {
                    Ok(s) => {
                        raw.sources.insert(name, s);
                    }
                    Err(e) => problems.push((
                        join(&format!("sources.{name}"), &e.path().to_string()),
                        e.into_inner().to_string(),
                    )),
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
    match serde_path_to_error::deserialize(value) {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push((join(name, &e.path().to_string()), e.into_inner().to_string()));
            None
        }
    }
}

fn join(prefix: &str, path: &str) -> String {
    if path == "." || path.is_empty() { prefix.to_owned() } else { format!("{prefix}.{path}") }
}
