//! Prometheus Alertmanager's webhook body (version 4) to a [`Notification`].
//!
//! The shape is shared with Grafana's webhook, which adds fields; `parse_webhook` reads the
//! common part for both and keeps every field it does not model in `extra`, so a newer sender's
//! additions are accepted rather than refused. Required: `status`, `alerts`, and per alert
//! `status` and `labels`. Everything else has a documented default. This module never panics on
//! input and performs no I/O.

use serde_json::{Map, Value};

use super::DecodeError;
use crate::alert::{Alert, AlertStatus, Labels, Notification, NotificationKind, label_fingerprint};

/// Decodes an Alertmanager webhook body.
pub fn decode(body: &[u8]) -> Result<Notification, DecodeError> {
    parse_webhook(NotificationKind::Alertmanager, body)
}

/// Reads the Alertmanager-shaped body both webhook kinds share.
pub(super) fn parse_webhook(kind: NotificationKind, body: &[u8]) -> Result<Notification, DecodeError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let Value::Object(mut obj) = value else {
        return Err(DecodeError::NotAnObject);
    };
    let status = status(&mut obj, "status", "status")?;
    let alerts = match obj.remove("alerts") {
        None | Some(Value::Null) => return Err(DecodeError::MissingAt("alerts".into())),
        Some(Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| alert(item, &format!("alerts[{i}]")))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(wrong("alerts", "an array")),
    };
    let receiver = string(&mut obj, "receiver", "receiver")?.unwrap_or_default();
    let group_labels = labels(&mut obj, "groupLabels", "groupLabels")?;
    let common_labels = labels(&mut obj, "commonLabels", "commonLabels")?;
    let common_annotations = labels(&mut obj, "commonAnnotations", "commonAnnotations")?;
    let external_url = string(&mut obj, "externalURL", "externalURL")?.unwrap_or_default();
    let version = string(&mut obj, "version", "version")?.unwrap_or_default();
    let group_key = match string(&mut obj, "groupKey", "groupKey")? {
        Some(k) if !k.is_empty() => k,
        // A hand-made body may leave it out; this is the key Alertmanager's root route would
        // have produced, so grouping by group still works.
        _ => synthetic_group_key(&group_labels),
    };
    let truncated_alerts = match obj.remove("truncatedAlerts") {
        None | Some(Value::Null) => 0,
        Some(v) => v.as_u64().ok_or_else(|| wrong("truncatedAlerts", "a non-negative integer"))?,
    };
    Ok(Notification {
        kind,
        receiver,
        status,
        group_key,
        group_labels,
        common_labels,
        common_annotations,
        external_url,
        truncated_alerts,
        version,
        extra: obj,
        alerts,
    })
}

fn alert(value: Value, path: &str) -> Result<Alert, DecodeError> {
    let Value::Object(mut obj) = value else {
        return Err(wrong(path, "an object"));
    };
    let status = status(&mut obj, "status", &format!("{path}.status"))?;
    let labels = match obj.get("labels") {
        None | Some(Value::Null) => return Err(DecodeError::MissingAt(format!("{path}.labels"))),
        Some(_) => labels(&mut obj, "labels", &format!("{path}.labels"))?,
    };
    let annotations = labels_at(&mut obj, "annotations", path)?;
    let starts_at = non_zero_time(string(&mut obj, "startsAt", &format!("{path}.startsAt"))?);
    let ends_at = non_zero_time(string(&mut obj, "endsAt", &format!("{path}.endsAt"))?);
    let generator_url =
        string(&mut obj, "generatorURL", &format!("{path}.generatorURL"))?.filter(|s| !s.is_empty());
    let fingerprint = match string(&mut obj, "fingerprint", &format!("{path}.fingerprint"))? {
        Some(f) if !f.is_empty() => f,
        _ => label_fingerprint(&labels),
    };
    Ok(Alert { status, labels, annotations, starts_at, ends_at, generator_url, fingerprint, extra: obj })
}

fn labels_at(obj: &mut Map<String, Value>, key: &str, path: &str) -> Result<Labels, DecodeError> {
    labels(obj, key, &format!("{path}.{key}"))
}

/// Go's zero `time.Time` (what Alertmanager sends for "no end yet") and the empty string mean
/// "no time".
fn non_zero_time(t: Option<String>) -> Option<String> {
    t.filter(|t| !t.is_empty() && !t.starts_with("0001-01-01T00:00:00"))
}

fn status(obj: &mut Map<String, Value>, key: &str, path: &str) -> Result<AlertStatus, DecodeError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Err(DecodeError::MissingAt(path.into())),
        Some(Value::String(s)) => {
            AlertStatus::parse(&s).ok_or_else(|| wrong(path, "\"firing\" or \"resolved\""))
        }
        Some(_) => Err(wrong(path, "\"firing\" or \"resolved\"")),
    }
}

/// An optional string; `null` counts as absent.
fn string(obj: &mut Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, DecodeError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong(path, "a string")),
    }
}

/// An optional object of strings; `null` counts as empty (Go writes a nil map that way).
fn labels(obj: &mut Map<String, Value>, key: &str, path: &str) -> Result<Labels, DecodeError> {
    match obj.remove(key) {
        None | Some(Value::Null) => Ok(Labels::new()),
        Some(Value::Object(map)) => map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k, s)),
                _ => Err(wrong(&format!("{path}.{k}"), "a string")),
            })
            .collect(),
        Some(_) => Err(wrong(path, "an object of strings")),
    }
}

fn wrong(path: &str, expected: &'static str) -> DecodeError {
    DecodeError::WrongTypeAt { path: path.to_owned(), expected }
}

/// `{}:{a="1", b="2"}`: the groupKey Alertmanager's root route gives these group labels.
fn synthetic_group_key(group_labels: &Labels) -> String {
    let inner: Vec<String> = group_labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect();
    format!("{{}}:{{{}}}", inner.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"status":"firing","alerts":[{"status":"firing","labels":{"alertname":"A"}}]}"#;

    #[test]
    fn a_minimal_body_gets_defaults() {
        let n = decode(MINIMAL.as_bytes()).unwrap();
        assert_eq!(n.kind, NotificationKind::Alertmanager);
        assert_eq!(n.status, AlertStatus::Firing);
        assert_eq!(n.receiver, "");
        assert_eq!(n.version, "");
        assert_eq!(n.truncated_alerts, 0);
        assert_eq!(n.group_key, "{}:{}");
        let a = &n.alerts[0];
        assert_eq!(a.fingerprint, label_fingerprint(&a.labels));
        assert_eq!(
            (a.starts_at.as_deref(), a.ends_at.as_deref(), a.generator_url.as_deref()),
            (None, None, None)
        );
        assert!(a.annotations.is_empty() && a.extra.is_empty() && n.extra.is_empty());
    }

    #[test]
    fn a_missing_group_key_is_made_from_the_group_labels() {
        let body = r#"{"status":"firing","alerts":[],"groupLabels":{"alertname":"A","q":"x\"y"}}"#;
        assert_eq!(decode(body.as_bytes()).unwrap().group_key, r#"{}:{alertname="A", q="x\"y"}"#);
    }

    #[test]
    fn unknown_fields_are_kept_and_other_versions_accepted() {
        let body = r#"{"version":"5","status":"resolved","new":1,"alerts":[{"status":"resolved","labels":{},"x":true,"endsAt":"2026-01-01T00:00:00Z"}]}"#;
        let n = decode(body.as_bytes()).unwrap();
        assert_eq!(n.version, "5");
        assert_eq!(n.extra["new"], 1);
        assert_eq!(n.alerts[0].extra["x"], true);
        assert_eq!(n.alerts[0].ends_at.as_deref(), Some("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn nulls_count_as_absent() {
        let body = r#"{"status":"firing","commonAnnotations":null,"receiver":null,"alerts":[{"status":"firing","labels":{"a":"b"},"annotations":null,"fingerprint":null}]}"#;
        let n = decode(body.as_bytes()).unwrap();
        assert!(n.common_annotations.is_empty());
        assert_eq!(n.alerts[0].fingerprint, label_fingerprint(&n.alerts[0].labels));
    }

    #[test]
    fn wrong_shapes_name_the_field() {
        let cases: &[(&str, DecodeError)] = &[
            ("{", DecodeError::NotJson(String::new())),
            ("[]", DecodeError::NotAnObject),
            (r#"{"alerts":[]}"#, DecodeError::MissingAt("status".into())),
            (r#"{"status":"firing"}"#, DecodeError::MissingAt("alerts".into())),
            (r#"{"status":"burning","alerts":[]}"#, wrong("status", "\"firing\" or \"resolved\"")),
            (r#"{"status":"firing","alerts":{}}"#, wrong("alerts", "an array")),
            (r#"{"status":"firing","alerts":[1]}"#, wrong("alerts[0]", "an object")),
            (
                r#"{"status":"firing","alerts":[{"status":"firing"}]}"#,
                DecodeError::MissingAt("alerts[0].labels".into()),
            ),
            (
                r#"{"status":"firing","alerts":[{"status":"firing","labels":{"n":1}}]}"#,
                wrong("alerts[0].labels.n", "a string"),
            ),
            (
                r#"{"status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":5}]}"#,
                wrong("alerts[0].startsAt", "a string"),
            ),
            (
                r#"{"status":"firing","alerts":[],"truncatedAlerts":-1}"#,
                wrong("truncatedAlerts", "a non-negative integer"),
            ),
            (
                r#"{"status":"firing","alerts":[],"groupLabels":[]}"#,
                wrong("groupLabels", "an object of strings"),
            ),
        ];
        for (body, want) in cases {
            let got = decode(body.as_bytes()).unwrap_err();
            match want {
                DecodeError::NotJson(_) => assert!(matches!(got, DecodeError::NotJson(_)), "{body}: {got}"),
                _ => assert_eq!(&got, want, "{body}"),
            }
        }
    }

    #[test]
    fn errors_read_as_sentences() {
        let e =
            decode(br#"{"status":"firing","alerts":[{"status":"firing","labels":{"n":1}}]}"#).unwrap_err();
        assert_eq!(e.to_string(), "`alerts[0].labels.n` must be a string");
        assert_eq!(e.kind(), "wrong_type");
    }
}
