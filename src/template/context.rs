//! The variables templates see, built once per target as JSON.
//!
//! Absent optional values (an alert's `endsAt` while it fires, a missing `generatorURL`) are left
//! out rather than set to null, so a template that uses one fails loudly under strict undefined
//! unless it says what to print instead with `default`.

use serde_json::{Map, Value, json};

use super::Subject;
use crate::alert::{Alert, Grouping, Labels, Notification};

/// What the content fields need beyond the template context.
pub(super) struct Facts {
    pub labels: Labels,
    pub occurred_at: Option<String>,
}

/// The base context and the facts the fixed payload fields are made of.
pub(super) fn build(
    source_name: &str,
    notification: &Notification,
    target: &Subject<'_>,
) -> (Map<String, Value>, Facts) {
    let alerts: Vec<&Alert> = target.alerts(notification).collect();
    let first = alerts.first().copied();
    let (labels, annotations) = match (target.grouping, first) {
        (Grouping::Alert, Some(a)) => (a.labels.clone(), a.annotations.clone()),
        _ => (notification.group_match_labels(), notification.common_annotations.clone()),
    };
    let mut ctx = Map::new();
    if let Some(a) = first {
        ctx.insert("alert".into(), alert_value(a));
    }
    ctx.insert("alerts".into(), Value::Array(alerts.iter().map(|a| alert_value(a)).collect()));
    ctx.insert(
        "group".into(),
        json!({
            "receiver": notification.receiver,
            "status": notification.status.as_str(),
            "groupKey": notification.group_key,
            "groupLabels": notification.group_labels,
            "commonLabels": notification.common_labels,
            "commonAnnotations": notification.common_annotations,
            "externalURL": notification.external_url,
            "truncatedAlerts": notification.truncated_alerts,
            "version": notification.version,
            "extra": notification.extra,
        }),
    );
    ctx.insert("source".into(), json!({ "name": source_name, "kind": notification.kind.as_str() }));
    ctx.insert("key".into(), Value::String(target.key.to_owned()));
    ctx.insert("grouping".into(), Value::String(target.grouping.as_str().to_owned()));
    ctx.insert("status".into(), Value::String(target.status.as_str().to_owned()));
    ctx.insert("labels".into(), json!(labels));
    ctx.insert("annotations".into(), json!(annotations));
    if let Some(p) = target.partner {
        ctx.insert("partner".into(), Value::String(p.to_owned()));
    }
    let occurred_at = first.and_then(|a| a.starts_at.clone());
    (ctx, Facts { labels, occurred_at })
}

fn alert_value(a: &Alert) -> Value {
    let mut m = Map::new();
    m.insert("status".into(), Value::String(a.status.as_str().to_owned()));
    m.insert("labels".into(), json!(a.labels));
    m.insert("annotations".into(), json!(a.annotations));
    let optional = [("startsAt", &a.starts_at), ("endsAt", &a.ends_at), ("generatorURL", &a.generator_url)];
    for (k, v) in optional {
        if let Some(v) = v {
            m.insert(k.into(), Value::String(v.clone()));
        }
    }
    m.insert("fingerprint".into(), Value::String(a.fingerprint.clone()));
    m.insert("extra".into(), Value::Object(a.extra.clone()));
    Value::Object(m)
}
