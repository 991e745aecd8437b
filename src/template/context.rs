//! The variables templates see, built once per target straight from the notification: borrowed
//! parts serialised into minijinja's values, with no JSON tree between.
//!
//! Absent optional values (an alert's `endsAt` while it fires, a missing `generatorURL`) are left
//! out rather than set to null, so a template that uses one fails loudly under strict undefined
//! unless it says what to print instead with `default`. Every map's fields are declared in the
//! order of their names, so a template that prints one (`tojson`) sees them sorted, as it did
//! when the context was a JSON object.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Subject;
use crate::alert::{Alert, Grouping, Labels, Notification};

/// What the content fields need beyond the template context.
pub(super) struct Facts {
    pub labels: Labels,
    pub occurred_at: Option<String>,
}

#[derive(Serialize)]
struct Context<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<AlertValue<'a>>,
    alerts: Vec<AlertValue<'a>>,
    annotations: &'a Labels,
    group: Group<'a>,
    grouping: &'static str,
    key: &'a str,
    labels: &'a Labels,
    #[serde(skip_serializing_if = "Option::is_none")]
    partner: Option<&'a str>,
    source: SourceValue<'a>,
    status: &'static str,
}

#[derive(Serialize)]
struct AlertValue<'a> {
    annotations: &'a Labels,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    ends_at: Option<&'a str>,
    extra: &'a Map<String, Value>,
    fingerprint: &'a str,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
    labels: &'a Labels,
    #[serde(rename = "startsAt", skip_serializing_if = "Option::is_none")]
    starts_at: Option<&'a str>,
    status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Group<'a> {
    common_annotations: &'a Labels,
    common_labels: &'a Labels,
    #[serde(rename = "externalURL")]
    external_url: &'a str,
    extra: &'a Map<String, Value>,
    group_key: &'a str,
    group_labels: &'a Labels,
    receiver: &'a str,
    status: &'static str,
    truncated_alerts: u64,
    version: &'a str,
}

#[derive(Serialize)]
struct SourceValue<'a> {
    kind: &'static str,
    name: &'a str,
}

fn alert_value(a: &Alert) -> AlertValue<'_> {
    AlertValue {
        annotations: &a.annotations,
        ends_at: a.ends_at.as_deref(),
        extra: &a.extra,
        fingerprint: &a.fingerprint,
        generator_url: a.generator_url.as_deref(),
        labels: &a.labels,
        starts_at: a.starts_at.as_deref(),
        status: a.status.as_str(),
    }
}

/// The template context, the facts the fixed payload fields are made of, and a digest of the
/// context (its JSON: every map sorted, so equal contexts give equal bytes). The facts come from
/// what the context holds (`labels`, `alert.startsAt`), so the digest covers them too.
pub(super) fn build(
    source_name: &str,
    notification: &Notification,
    target: &Subject<'_>,
) -> (minijinja::Value, Facts, [u8; 32]) {
    let alerts: Vec<&Alert> = target.alerts(notification).collect();
    let first = alerts.first().copied();
    let (labels, annotations) = match (target.grouping, first) {
        (Grouping::Alert, Some(a)) => (a.labels.clone(), &a.annotations),
        _ => (notification.group_match_labels(), &notification.common_annotations),
    };
    let context = Context {
        alert: first.map(alert_value),
        alerts: alerts.iter().map(|a| alert_value(a)).collect(),
        annotations,
        group: Group {
            common_annotations: &notification.common_annotations,
            common_labels: &notification.common_labels,
            external_url: &notification.external_url,
            extra: &notification.extra,
            group_key: &notification.group_key,
            group_labels: &notification.group_labels,
            receiver: &notification.receiver,
            status: notification.status.as_str(),
            truncated_alerts: notification.truncated_alerts,
            version: &notification.version,
        },
        grouping: target.grouping.as_str(),
        key: target.key,
        labels: &labels,
        partner: target.partner,
        source: SourceValue { kind: notification.kind.as_str(), name: source_name },
        status: target.status.as_str(),
    };
    let mut digest = super::DigestWriter::default();
    serde_json::to_writer(&mut digest, &context).expect("the template context serialises");
    let value = minijinja::Value::from(minijinja::value::Serde(&context));
    let occurred_at = first.and_then(|a| a.starts_at.clone());
    (value, Facts { labels, occurred_at }, digest.finish())
}

/// `ctx` with `fields` (the content fields rendered so far) added, for payload templates.
pub(super) fn with_fields(ctx: &minijinja::Value, fields: &Map<String, Value>) -> minijinja::Value {
    minijinja::value::merge_maps([
        minijinja::context! { fields => minijinja::Value::from(minijinja::value::Serde(fields)) },
        ctx.clone(),
    ])
}
