//! Deserializers that accept a value either typed or as a string.
//!
//! Environment overrides arrive as strings (`INCIDENT_BRIDGE_PIPELINE__WORKERS=8`) while the TOML
//! file has typed values; the numeric and boolean fields use these helpers so both work without
//! guessing types from the text of every variable.

use std::{fmt::Display, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, de::Error};

#[derive(Deserialize)]
#[serde(untagged)]
enum OrString<T> {
    Typed(T),
    Text(String),
}

/// A number or boolean, typed or as text.
pub fn value<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + FromStr,
    T::Err: Display,
{
    match OrString::<T>::deserialize(d)? {
        OrString::Typed(v) => Ok(v),
        OrString::Text(s) => s.trim().parse().map_err(|e| D::Error::custom(format!("`{s}`: {e}"))),
    }
}

/// A human duration such as `"250ms"`, `"30s"` or `"5m"`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| D::Error::custom(format!("`{s}` is not a duration like \"30s\": {e}")))
}

/// A list, or a comma-separated string (how a list arrives from the environment).
pub fn list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        Text(String),
    }
    Ok(match ListOrString::deserialize(d)? {
        ListOrString::List(v) => v,
        ListOrString::Text(s) => {
            s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
        }
    })
}

/// The schema of a [`duration`] field: text such as `"30s"`, `"250ms"` or `"1h 30m"`.
pub struct DurationText;

impl schemars::JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": r"^\s*([0-9]+\s*(ns|us|µs|ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days|w|week|weeks|M|month|months|y|year|years)\s*)+$",
            "description": "A duration such as \"30s\", \"250ms\" or \"1h 30m\".",
        })
    }
}

/// The schema of a [`list`] field: a list of strings, or one comma-separated string.
pub struct ListOrText;

impl schemars::JsonSchema for ListOrText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ListOrText".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                {"type": "array", "items": {"type": "string"}},
                {"type": "string", "description": "Comma-separated values."}
            ]
        })
    }
}
