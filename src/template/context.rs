//! The variables templates see, built once per target straight from the notification: borrowed
//! parts serialised into minijinja's values, with no JSON tree between.
//!
//! Absent optional values (an alert's `endsAt` while it fires, a missing `generatorURL`) are left
//! out rather than set to null, so a template that uses one fails loudly under strict undefined
//! unless it says what to print instead with `default`. Every map's fields are declared in the
//! order of their names, so a template that prints one (`tojson`) sees them sorted, as it did
//! when the context was a JSON object.
//!
//! The digest of a context and its template value are made apart: the digest is needed for
//! every event (a repeat is recognised by it), the value only when something is rendered.

use serde::Serialize;
use serde_json::{Map, Value};

use super::Subject;
use crate::alert::{Alert, Grouping, Labels, Notification};

/// What the content fields need beyond the template context.
pub(super) struct Facts {
    pub labels: Labels,
    pub occurred_at: Option<String>,
}

/// The context, over how an alert (`A`) and a label map (`M`) are held: borrowed for the
/// digest, as minijinja values for templates, where one value then stands in every place that
/// shows the same map (`alert`, `alerts[0]`, and the top-level `labels` and `annotations` of a
/// per-alert target) instead of a copy for each.
#[derive(Serialize)]
struct Context<'a, A, M> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<A>,
    alerts: Vec<A>,
    annotations: M,
    group: Group<'a>,
    grouping: &'static str,
    key: &'a str,
    labels: M,
    #[serde(skip_serializing_if = "Option::is_none")]
    partner: Option<&'a str>,
    source: SourceValue<'a>,
    status: &'static str,
}

#[derive(Clone, Serialize)]
struct AlertValue<'a, M> {
    annotations: M,
    #[serde(rename = "endsAt", skip_serializing_if = "Option::is_none")]
    ends_at: Option<&'a str>,
    extra: &'a Map<String, Value>,
    fingerprint: &'a str,
    #[serde(rename = "generatorURL", skip_serializing_if = "Option::is_none")]
    generator_url: Option<&'a str>,
    labels: M,
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

fn alert_value<M>(a: &Alert, annotations: M, labels: M) -> AlertValue<'_, M> {
    AlertValue {
        annotations,
        ends_at: a.ends_at.as_deref(),
        extra: &a.extra,
        fingerprint: &a.fingerprint,
        generator_url: a.generator_url.as_deref(),
        labels,
        starts_at: a.starts_at.as_deref(),
        status: a.status.as_str(),
    }
}

/// The context of `target` around its `alerts` (the first is `alert`) and the `labels` and
/// `annotations` it shows at the top.
fn context<'a, A: Clone, M>(
    source_name: &'a str,
    notification: &'a Notification,
    target: &Subject<'a>,
    alerts: Vec<A>,
    labels: M,
    annotations: M,
) -> Context<'a, A, M> {
    Context {
        alert: alerts.first().cloned(),
        alerts,
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
        labels,
        partner: target.partner,
        source: SourceValue { kind: notification.kind.as_str(), name: source_name },
        status: target.status.as_str(),
    }
}

/// The facts the fixed payload fields are made of, and a digest of the template context (its
/// JSON: every map sorted, so equal contexts give equal bytes). The facts come from what the
/// context holds (`labels`, `alert.startsAt`), so the digest covers them too.
pub(super) fn facts_and_digest(
    source_name: &str,
    notification: &Notification,
    target: &Subject<'_>,
) -> (Facts, [u8; 32]) {
    let alerts: Vec<&Alert> = target.alerts(notification).collect();
    let first = alerts.first().copied();
    let group_labels;
    let (labels, annotations) = match (target.grouping, first) {
        (Grouping::Alert, Some(a)) => (&a.labels, &a.annotations),
        _ => {
            group_labels = notification.group_match_labels();
            (&group_labels, &notification.common_annotations)
        }
    };
    let values = alerts.iter().map(|a| alert_value(a, &a.annotations, &a.labels)).collect();
    let context = context(source_name, notification, target, values, labels, annotations);
    let mut digest = super::DigestWriter::default();
    serde_json::to_writer(&mut digest, &context).expect("the template context serialises");
    let occurred_at = first.and_then(|a| a.starts_at.clone());
    (Facts { labels: labels.clone(), occurred_at }, digest.finish())
}

/// The template context as minijinja's value: each alert's label and annotation maps made
/// once and shared wherever the context shows them.
pub(super) fn value(
    source_name: &str,
    notification: &Notification,
    target: &Subject<'_>,
) -> minijinja::Value {
    use minijinja::Value as V;
    fn of(v: impl Serialize) -> V {
        V::from(minijinja::value::Serde(v))
    }
    let parts: Vec<(V, V, V)> = target
        .alerts(notification)
        .map(|a| {
            let (annotations, labels) = (of(&a.annotations), of(&a.labels));
            let alert = of(alert_value(a, annotations.clone(), labels.clone()));
            (alert, labels, annotations)
        })
        .collect();
    let (labels, annotations) = match (target.grouping, parts.first()) {
        (Grouping::Alert, Some((_, labels, annotations))) => (labels.clone(), annotations.clone()),
        _ => (of(notification.group_match_labels()), of(&notification.common_annotations)),
    };
    let alerts = parts.into_iter().map(|(alert, ..)| alert).collect();
    of(context(source_name, notification, target, alerts, labels, annotations))
}

/// `ctx` with `fields` (the content fields rendered so far) added, for payload templates.
pub(super) fn with_fields(ctx: &minijinja::Value, fields: &Map<String, Value>) -> minijinja::Value {
    minijinja::value::merge_maps([
        minijinja::context! { fields => minijinja::Value::from(minijinja::value::Serde(fields)) },
        ctx.clone(),
    ])
}
