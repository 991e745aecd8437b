//! Environment overrides: `INCIDENT_BRIDGE_SCWM__TOKEN=x` sets `scwm.token`. The prefix is
//! stripped, `__` separates nesting levels and names are lower-cased to match the TOML keys.
//! Values are inserted as strings; typed fields parse them (see `lenient`).
//!
//! Only names of that shape are ours: `INCIDENT_BRIDGE_<SECTION>__<KEY>` (at least one `__`) and
//! `INCIDENT_BRIDGE_CONFIG`. Every other name with the prefix is left alone, because Kubernetes
//! injects service-link variables for every Service of the namespace: a Service called
//! `incident-bridge` gives each pod `INCIDENT_BRIDGE_PORT=tcp://...`,
//! `INCIDENT_BRIDGE_SERVICE_HOST`, `INCIDENT_BRIDGE_PORT_8080_TCP_ADDR`, ... Those never contain
//! `__`, since a Service name is a DNS label (`[a-z0-9-]`, no two dashes in a row in practice).

use std::collections::BTreeMap;

use toml::{Table, Value};

pub const PREFIX: &str = "INCIDENT_BRIDGE_";

/// Variables with the prefix that are not config keys: `INCIDENT_BRIDGE_CONFIG` names the file.
const RESERVED: [&str; 1] = ["CONFIG"];

/// What `apply` did with the environment.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `(variable, dotted key)` for every override applied, in name order.
    pub set: Vec<(String, String)>,
    /// Variables with the prefix that are not config keys (service links and the like).
    pub ignored: Vec<String>,
}

/// Applies every `INCIDENT_BRIDGE_<SECTION>__<KEY>` variable of `env` to `table`, in name order
/// so the result does not depend on the environment's iteration order. Returns what it set and
/// what it ignored, or the name of a variable whose path runs into a non-table value.
pub fn apply(table: &mut Table, env: &BTreeMap<String, String>) -> Result<Applied, String> {
    let mut applied = Applied::default();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        if RESERVED.contains(&rest) {
            continue;
        }
        if !rest.contains("__") {
            applied.ignored.push(name.clone());
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("{name}: empty key segment"));
        }
        set(table, &path, Value::String(value.clone())).map_err(|key| {
            format!("{name}: `{key}` is not a table, so it cannot hold `{}`", path.join("."))
        })?;
        applied.set.push((name.clone(), path.join(".")));
    }
    Ok(applied)
}

fn set(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().expect("path has at least one segment");
    let mut current = table;
    let mut walked = Vec::new();
    for segment in parents {
        walked.push(segment.as_str());
        let entry = current.entry(segment.clone()).or_insert_with(|| Value::Table(Table::new()));
        current = match entry {
            Value::Table(t) => t,
            _ => return Err(walked.join(".")),
        };
    }
    current.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn nested_keys_are_created_and_overwritten() {
        let mut t: Table = toml::from_str("[scwm]\ntoken = \"file\"\n").unwrap();
        let applied = apply(
            &mut t,
            &env(&[
                ("INCIDENT_BRIDGE_SCWM__TOKEN", "env"),
                ("INCIDENT_BRIDGE_PIPELINE__WORKERS", "8"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        let keys: Vec<&str> = applied.set.iter().map(|(_, k)| k.as_str()).collect();
        assert_eq!(keys, ["pipeline.workers", "scwm.token"]);
        assert_eq!(t["scwm"]["token"].as_str(), Some("env"));
        assert_eq!(t["pipeline"]["workers"].as_str(), Some("8"));
    }

    /// What the kubelet injects for a Service named `incident-bridge` with one port `http`
    /// (8080), and for one named `incident-bridge-headless`.
    pub(crate) fn service_links() -> Vec<(&'static str, &'static str)> {
        vec![
            ("INCIDENT_BRIDGE_SERVICE_HOST", "10.96.0.12"),
            ("INCIDENT_BRIDGE_SERVICE_PORT", "8080"),
            ("INCIDENT_BRIDGE_SERVICE_PORT_HTTP", "8080"),
            ("INCIDENT_BRIDGE_PORT", "tcp://10.96.0.12:8080"),
            ("INCIDENT_BRIDGE_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
            ("INCIDENT_BRIDGE_PORT_8080_TCP_PROTO", "tcp"),
            ("INCIDENT_BRIDGE_PORT_8080_TCP_PORT", "8080"),
            ("INCIDENT_BRIDGE_PORT_8080_TCP_ADDR", "10.96.0.12"),
            ("INCIDENT_BRIDGE_HEADLESS_SERVICE_HOST", "10.96.0.13"),
            ("INCIDENT_BRIDGE_HEADLESS_PORT", "tcp://10.96.0.13:8080"),
        ]
    }

    #[test]
    fn service_link_variables_are_ignored_and_reported() {
        let mut t: Table = toml::from_str("[scwm]\ntoken = \"file\"\n").unwrap();
        let mut pairs = service_links();
        pairs.push(("INCIDENT_BRIDGE_SCWM__TOKEN", "env"));
        pairs.push(("INCIDENT_BRIDGE_CONFIG", "/etc/incident-bridge/config.toml"));
        let before = t.clone();
        let applied = apply(&mut t, &env(&pairs)).unwrap();
        assert_eq!(applied.set, [("INCIDENT_BRIDGE_SCWM__TOKEN".to_owned(), "scwm.token".to_owned())]);
        assert_eq!(applied.ignored.len(), service_links().len());
        assert!(applied.ignored.iter().all(|n| !n.contains("__")));
        assert_eq!(t.len(), before.len(), "no new top-level key: {t:?}");
    }

    #[test]
    fn a_path_through_a_scalar_is_an_error_naming_the_variable() {
        let mut t: Table = toml::from_str("scwm = 1\n").unwrap();
        let err = apply(&mut t, &env(&[("INCIDENT_BRIDGE_SCWM__TOKEN", "x")])).unwrap_err();
        assert!(err.contains("INCIDENT_BRIDGE_SCWM__TOKEN"), "{err}");
    }
}
