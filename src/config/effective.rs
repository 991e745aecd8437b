//! `check-config --print`: the configuration in effect, key by key, and where each value came
//! from: the file, an environment variable (named), or the default. Secrets are shown as
//! `<redacted>`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{ConfigErrors, env};

/// One key in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub key: String,
    /// As TOML writes it.
    pub value: String,
    /// `file`, `env INCIDENT_BRIDGE_...` or `default`.
    pub origin: String,
}

/// Every key the file and environment set, and every defaulted key of the fixed tables, sorted.
pub fn effective(text: &str, environment: &BTreeMap<String, String>) -> Result<Vec<Effective>, ConfigErrors> {
    let mut table: toml::Table = toml::from_str(text)
        .map_err(|e| ConfigErrors::one("(file)", format!("not valid TOML: {}", e.message())))?;
    let applied = env::apply(&mut table, environment).map_err(|m| ConfigErrors::one("(environment)", m))?;
    let origin = |key: &str| {
        applied
            .set
            .iter()
            .find(|(_, k)| k == key)
            .map_or_else(|| "file".to_owned(), |(var, _)| format!("env {var}"))
    };
    let mut out = Vec::new();
    flatten(&toml::Value::Table(table.clone()), "", &mut |key, value| {
        out.push(Effective { key: key.to_owned(), value: shown(key, value), origin: origin(key) });
    });
    let schema = super::schema();
    defaults(&schema, "", &table, &mut out);
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn flatten(value: &toml::Value, path: &str, f: &mut dyn FnMut(&str, &toml::Value)) {
    let join = |k: &str| if path.is_empty() { k.to_owned() } else { format!("{path}.{k}") };
    match value {
        toml::Value::Table(t) => t.iter().for_each(|(k, v)| flatten(v, &join(k), f)),
        toml::Value::Array(items) if items.iter().all(toml::Value::is_table) && !items.is_empty() => {
            for (i, item) in items.iter().enumerate() {
                flatten(item, &format!("{path}[{i}]"), f);
            }
        }
        leaf => f(path, leaf),
    }
}

/// The defaults of keys under fixed tables that the file does not set.
fn defaults(node: &Value, path: &str, set: &toml::Table, out: &mut Vec<Effective>) {
    let Some(props) = node["properties"].as_object() else { return };
    for (key, child) in props {
        let here = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
        let child = match child["anyOf"].as_array() {
            Some(any) => any.iter().find(|v| v["type"] != "null").unwrap_or(child),
            None => child,
        };
        if child["properties"].is_object() {
            // An optional table the file leaves out is off, not defaulted: nothing to show.
            let declared = &props[key];
            let optional = declared["anyOf"].is_array()
                || declared["type"].as_array().is_some_and(|t| t.iter().any(|v| v == "null"));
            if !(optional && lookup(set, &here).is_none()) {
                defaults(child, &here, set, out);
            }
        } else if lookup(set, &here).is_none()
            && let Some(default) = child.get("default").filter(|d| !d.is_null())
        {
            out.push(Effective {
                key: here.clone(),
                value: shown(&here, &toml_of(default)),
                origin: "default".into(),
            });
        }
    }
}

fn lookup<'a>(table: &'a toml::Table, dotted: &str) -> Option<&'a toml::Value> {
    let mut parts = dotted.split('.');
    let mut current = table.get(parts.next()?)?;
    for part in parts {
        current = current.as_table()?.get(part)?;
    }
    Some(current)
}

fn toml_of(v: &Value) -> toml::Value {
    match v {
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => n
            .as_i64()
            .map(toml::Value::Integer)
            .or_else(|| n.as_f64().map(toml::Value::Float))
            .unwrap_or_else(|| toml::Value::String(n.to_string())),
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(a) => toml::Value::Array(a.iter().map(toml_of).collect()),
        other => toml::Value::String(other.to_string()),
    }
}

fn shown(key: &str, value: &toml::Value) -> String {
    let last = key.rsplit(['.', ']']).next().unwrap_or(key);
    let secret = ["token", "tokens", "password", "passwords", "secret", "secrets"].contains(&last);
    if secret { "\"<redacted>\"".into() } else { value.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_says_where_it_came_from_and_secrets_stay_hidden() {
        let text = "[scwm]\nurl = \"https://scwm/x\"\ntoken = \"s3cret\"\nowner_id = \"O\"\n";
        let env = BTreeMap::from([("INCIDENT_BRIDGE_PIPELINE__WORKERS".to_owned(), "8".to_owned())]);
        let lines = effective(text, &env).unwrap();
        let find = |k: &str| lines.iter().find(|l| l.key == k).unwrap_or_else(|| panic!("{k} in {lines:?}"));
        assert_eq!(
            (find("scwm.url").value.as_str(), find("scwm.url").origin.as_str()),
            ("\"https://scwm/x\"", "file")
        );
        assert_eq!(find("scwm.token").value, "\"<redacted>\"");
        assert_eq!(find("pipeline.workers").origin, "env INCIDENT_BRIDGE_PIPELINE__WORKERS");
        assert_eq!(
            (find("server.listen").value.as_str(), find("server.listen").origin.as_str()),
            ("\"0.0.0.0:8080\"", "default")
        );
        assert_eq!(find("reconcile.interval").value, "\"10m\"");
        assert!(!lines.iter().any(|l| l.key.starts_with("admin.")), "an absent optional table is off");
        assert!(!lines.iter().any(|l| l.key.starts_with("nats.")), "no [nats]: none of its defaults");
    }
}
