//! The templates used where neither a route nor its source overrides a field.
//!
//! They read only what is stable across repeat notifications (labels, annotations, startsAt,
//! generatorURL, statuses): Grafana's `values` and its dashboard and panel URLs change with every
//! notification and would turn each repeat into an edit.

use super::Field;
use crate::alert::NotificationKind;

const TITLE: &str = "{{ labels.alertname | default('Alert') }}
{%- if annotations.summary is defined %}: {{ annotations.summary }}
{%- elif alerts | length > 1 %}: {{ alerts | length }} alerts
{%- endif %}";

const DESCRIPTION: &str = "\
{{ annotations.description | default(annotations.summary | default((labels.alertname | default('Alert')) ~ ' is ' ~ status)) }}
{%- if grouping == 'group' and (alerts | length > 1 or group.truncatedAlerts > 0) %}

Alerts:
{%- for a in alerts %}
- [{{ a.status }}] {{ a.annotations.summary | default(a.labels.instance | default(a.fingerprint)) }}
{%- endfor %}
{%- if group.truncatedAlerts > 0 %}
- and {{ group.truncatedAlerts }} more not included in the notification
{%- endif %}
{%- endif %}
{%- if annotations.runbook_url is defined %}

Runbook: {{ annotations.runbook_url }}
{%- endif %}
{%- if alert.generatorURL is defined %}

Source: {{ alert.generatorURL }}
{%- endif %}";

const SEVERITY: &str = "{{ labels.severity | default('') }}";
const PRIORITY: &str = "{{ labels.priority | default('') }}";
const CATEGORY_ALERTMANAGER: &str = "{{ labels.category | default('') }}";
/// Grafana puts every rule in a folder, a natural category when no label names one.
const CATEGORY_GRAFANA: &str = "{{ labels.category | default(labels.grafana_folder | default('')) }}";
const SERVICE: &str = "{{ labels.service | default(labels.job | default('')) }}";
const RESOLUTION: &str = "resolved";
const CLOSE_NOTES: &str = "Resolved at the source
{%- if alert.endsAt is defined %} at {{ alert.endsAt }}{% endif %}: \
{{ annotations.summary | default(labels.alertname | default('alert')) }}";
const REASON: &str = "Firing again
{%- if alert.startsAt is defined %} since {{ alert.startsAt }}{% endif %}: \
{{ annotations.summary | default(labels.alertname | default('alert')) }}";
const NOTE: &str = "Opened by incident-bridge/{{ source.name }} for {{ key }}";

/// The default template of `field` for a source of `kind`.
pub(super) fn source(kind: NotificationKind, field: Field) -> &'static str {
    match field {
        Field::Title => TITLE,
        Field::Description => DESCRIPTION,
        Field::Severity => SEVERITY,
        Field::Priority => PRIORITY,
        Field::Category => match kind {
            NotificationKind::Alertmanager => CATEGORY_ALERTMANAGER,
            NotificationKind::Grafana => CATEGORY_GRAFANA,
        },
        Field::Service => SERVICE,
        Field::Resolution => RESOLUTION,
        Field::CloseNotes => CLOSE_NOTES,
        Field::Reason => REASON,
        Field::Note => NOTE,
    }
}
