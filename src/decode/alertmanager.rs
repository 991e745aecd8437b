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

mod typed;

/// Decodes an Alertmanager webhook body.
pub fn decode(body: &[u8]) -> Result<Notification, DecodeError> {
    parse_webhook(NotificationKind::Alertmanager, body)
}

/// Reads the Alertmanager-shaped body both webhook kinds share: read straight into the model
/// when it can be ([`typed`]), through a `Value` tree otherwise, which names what is wrong.
pub(super) fn parse_webhook(kind: NotificationKind, body: &[u8]) -> Result<Notification, DecodeError> {
    typed::read(kind, body).map_or_else(|| parse_tree(kind, body), Ok)
}

/// The reference reading of a body, through a `Value` tree, with an error that names the field.
fn parse_tree(kind: NotificationKind, body: &[u8]) -> Result<Notification, DecodeError> {
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

    /// Every fixture, Alertmanager's and Grafana's.
    fn fixtures() -> Vec<(NotificationKind, Vec<u8>)> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut out = Vec::new();
        for (sub, kind) in
            [("alertmanager", NotificationKind::Alertmanager), ("grafana", NotificationKind::Grafana)]
        {
            for entry in std::fs::read_dir(dir.join(sub)).unwrap() {
                let path = entry.unwrap().path();
                if path.extension().is_some_and(|e| e == "json") && !path.ends_with("INDEX.json") {
                    out.push((kind, std::fs::read(path).unwrap()));
                }
            }
        }
        assert!(out.len() > 10, "the fixtures are there");
        out
    }

    /// The quick reader agrees with the tree-based one: the same notification whenever it
    /// answers, and an answer for whatever the tree-based reader accepts, unless it said why not.
    fn agree(kind: NotificationKind, body: &[u8]) -> Option<Notification> {
        let quick = typed::read(kind, body);
        let tree = parse_tree(kind, body);
        if let Some(quick) = &quick {
            assert_eq!(Ok(quick), tree.as_ref(), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(parse_webhook(kind, body), tree, "{}", String::from_utf8_lossy(body));
        quick
    }

    #[test]
    fn the_quick_reader_reads_every_fixture_as_the_tree_does() {
        for (kind, body) in fixtures() {
            assert!(agree(kind, &body).is_some(), "read quickly: {}", String::from_utf8_lossy(&body));
        }
    }

    #[test]
    fn the_quick_reader_agrees_on_the_unusual_and_leaves_the_wrong_to_the_tree() {
        let quick = [
            MINIMAL,
            r#"{"status":"firing","alerts":[],"groupLabels":{"alertname":"A","q":"x\"y"}}"#,
            r#"{"version":"5","status":"resolved","new":1,"alerts":[{"status":"resolved","labels":{},"x":true,"endsAt":"2026-01-01T00:00:00Z"}]}"#,
            r#"{"status":"firing","commonAnnotations":null,"receiver":null,"alerts":[{"status":"firing","labels":{"a":"b"},"annotations":null,"fingerprint":null}]}"#,
            // A field named twice counts as its last; so does a label.
            r#"{"status":"resolved","status":"firing","alerts":[{"status":"firing","labels":{"a":"1","a":"2"}}]}"#,
            r#"{"status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":"0001-01-01T00:00:00Z","endsAt":"","generatorURL":"","fingerprint":""}],"groupKey":"","truncatedAlerts":null}"#,
            r#"{"status":"firing","alerts":[{"labels":{"k":"v"},"status":"firing","nested":{"a":[1,{"b":null}]}}],"extra":[true]}"#,
            // An escaped name is the name it spells.
            r#"{"st\u0061tus":"resolved","status":"firing","alerts":[],"\u0078":1}"#,
        ];
        for body in quick {
            assert!(agree(NotificationKind::Alertmanager, body.as_bytes()).is_some(), "{body}");
        }
        let left = [
            "{",
            "[]",
            r#"{"alerts":[]}"#,
            r#"{"status":"firing"}"#,
            r#"{"status":"burning","alerts":[]}"#,
            r#"{"status":"firing","alerts":{}}"#,
            r#"{"status":"firing","alerts":[1]}"#,
            r#"{"status":"firing","alerts":[{"status":"firing"}]}"#,
            r#"{"status":"firing","alerts":[{"status":"firing","labels":null}]}"#,
            r#"{"status":"firing","alerts":[{"status":"firing","labels":{"n":1}}]}"#,
            r#"{"status":"firing","alerts":[{"status":"firing","labels":{},"startsAt":5}]}"#,
            r#"{"status":"firing","alerts":[],"truncatedAlerts":-1}"#,
            r#"{"status":"firing","alerts":[],"truncatedAlerts":1.0}"#,
            r#"{"status":"firing","alerts":[],"groupLabels":[]}"#,
            r#"{"status":null,"alerts":[]}"#,
            // The first of two is wrong, the last right: the tree takes the last.
            r#"{"status":"firing","alerts":5,"alerts":[]}"#,
        ];
        for body in left {
            agree(NotificationKind::Alertmanager, body.as_bytes());
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// A fixture with fields set to other values, removed or named twice: the two readers
        /// still agree.
        #[test]
        fn the_quick_reader_agrees_with_the_tree_on_changed_fixtures(
            which in 0usize..64,
            edits in proptest::collection::vec((0usize..64, 0usize..64, 0usize..8), 1..4),
        ) {
            let all = fixtures();
            let (kind, body) = &all[which % all.len()];
            let mut value: Value = serde_json::from_slice(body).unwrap();
            for (at, inner, to) in edits {
                edit(&mut value, at, inner, to);
            }
            let mut bytes = serde_json::to_vec(&value).unwrap();
            if which % 5 == 0 {
                // The same field again at the end: a second `status`.
                bytes.pop();
                bytes.extend_from_slice(br#","status":"resolved"}"#);
            }
            agree(*kind, &bytes);
        }
    }

    /// Sets one field of the body, or of one of its alerts, to one of a few values that matter.
    fn edit(body: &mut Value, at: usize, inner: usize, to: usize) {
        let replacement = [
            Value::Null,
            Value::from(1),
            Value::from(-1),
            Value::from("firing"),
            Value::from(""),
            serde_json::json!({"k": "v"}),
            serde_json::json!([]),
            Value::from("0001-01-01T00:00:00Z"),
        ][to]
            .clone();
        let Some(obj) = body.as_object_mut() else { return };
        let key = obj.keys().nth(at % obj.len().max(1)).cloned();
        match (key, obj.get_mut("alerts").and_then(Value::as_array_mut)) {
            (Some(key), Some(alerts)) if key == "alerts" && !alerts.is_empty() => {
                let n = alerts.len();
                if let Some(alert) = alerts[inner % n].as_object_mut() {
                    let keys: Vec<String> = alert.keys().cloned().collect();
                    if to == 6 && !keys.is_empty() {
                        alert.remove(&keys[inner % keys.len()]);
                    } else if let Some(k) = keys.get(inner % keys.len().max(1)) {
                        alert.insert(k.clone(), replacement);
                    }
                }
            }
            (Some(key), _) if to == 6 => {
                obj.remove(&key);
            }
            (Some(key), _) => {
                obj.insert(key, replacement);
            }
            (None, _) => {}
        }
    }
}
