//! Environment overrides: `INCIDENT_BRIDGE_SCWM__TOKEN=x` sets `scwm.token`. The prefix is
//! stripped, `__` separates nesting levels and names are lower-cased to match the TOML keys.
//! Values are inserted as strings; typed fields parse them (see `lenient`).

use std::collections::BTreeMap;

use toml::{Table, Value};

pub const PREFIX: &str = "INCIDENT_BRIDGE_";

/// Variables with the prefix that are not config keys: `INCIDENT_BRIDGE_CONFIG` names the file.
const RESERVED: [&str; 1] = ["CONFIG"];

/// Applies every `INCIDENT_BRIDGE_*` variable of `env` to `table`, in name order so the result
/// does not depend on the environment's iteration order. Returns the dotted keys it set, or the
/// name of a variable whose path runs into a non-table value.
pub fn apply(table: &mut Table, env: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    let mut applied = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(PREFIX) else { continue };
        if RESERVED.contains(&rest) {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("{name}: empty key segment"));
        }
        set(table, &path, Value::String(value.clone())).map_err(|key| {
            format!("{name}: `{key}` is not a table, so it cannot hold `{}`", path.join("."))
        })?;
        applied.push(path.join("."));
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
mod tests {
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
        assert_eq!(applied, vec!["pipeline.workers", "scwm.token"]);
        assert_eq!(t["scwm"]["token"].as_str(), Some("env"));
        assert_eq!(t["pipeline"]["workers"].as_str(), Some("8"));
    }

    #[test]
    fn a_path_through_a_scalar_is_an_error_naming_the_variable() {
        let mut t: Table = toml::from_str("scwm = 1\n").unwrap();
        let err = apply(&mut t, &env(&[("INCIDENT_BRIDGE_SCWM__TOKEN", "x")])).unwrap_err();
        assert!(err.contains("INCIDENT_BRIDGE_SCWM__TOKEN"), "{err}");
    }
}
