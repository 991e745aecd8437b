//! The transport-neutral alert model every alert decoder produces (Alertmanager and Grafana
//! webhooks, directly or inside a CloudEvent) and routing, templates and the lifecycle consume,
//! plus the pure functions that name what an incident is about: label fingerprints and
//! correlation keys.
//!
//! Nothing here parses bytes or knows a transport; decoders live in [`crate::decode`]. Values are
//! kept as the source sent them (timestamps stay strings) so that a repeated notification is
//! byte-for-byte the same model and renders to the same content.
//!
//! # How the alert pieces fit
//! All of it is pure; the caller owns the store, the clock and SCWM. Per notification:
//!
//! ```text
//! notification = decode::alertmanager::decode(body)?            // or grafana, or a CloudEvent's
//!                                                               //   decode_data(InnerKind::..)
//! for target in routes.plan(&notification, source, grouping):   // route::Routes
//!     if target.route.action == Drop: log, continue
//!     renderer = template::Renderer::new(source, &templates, &notification, target.subject())
//!     content  = renderer.content()?                            // RenderError → dead letter
//!     stored   = store.get(target.key)
//!     decision = lifecycle::decide(stored, &Input { status: target.status,
//!                    content_hash: &content.hash, now, reopen_window,
//!                    partner: target.route.partner })           // log decision.reason
//!     payloads = decision.ops.map(|op| renderer.payload(op, &content, None))?  // render first
//!     for (op, payload) in payloads:
//!         payload.id = stored.item_id unless op is add         // known only after an add
//!         answer = scwm.call(op, payload, owner = target.route.owner_id or the source's)
//!         on 404: delete the mapping, decision = lifecycle::decide_after_not_found(..), redo
//!         stored = lifecycle::apply(stored, op, answer.item_id(), &content.hash, now, plate)?
//!         store.put(target.key, stored)
//! ```
//!
//! The planner ([`crate::plan`]) is this, made exact; `tests/it/alerts.rs` drives it against an
//! in-memory store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::ids::CorrelationKey;

/// A label set or annotation set: sorted so iteration, rendering and hashing are stable.
pub type Labels = BTreeMap<String, String>;

/// Whether an alert (or a group of alerts) is currently firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }

    /// `"firing"` or `"resolved"`, exactly as Alertmanager and Grafana write them.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "firing" => Some(AlertStatus::Firing),
            "resolved" => Some(AlertStatus::Resolved),
            _ => None,
        }
    }
}

/// One alert of a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub status: AlertStatus,
    pub labels: Labels,
    pub annotations: Labels,
    pub starts_at: Option<String>,
    /// `None` while firing: Alertmanager sends Go's zero time `0001-01-01T00:00:00Z` then.
    pub ends_at: Option<String>,
    pub generator_url: Option<String>,
    /// From the payload; when absent, [`label_fingerprint`] of the labels, so the same label set
    /// always names the same alert.
    pub fingerprint: String,
    /// Source-specific fields outside this model, kept as received (Grafana's `values`,
    /// `silenceURL`, `dashboardURL`, `panelURL`, `imageURL`, ...), for templates.
    pub extra: Map<String, Value>,
}

/// Which webhook format a notification came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    Alertmanager,
    Grafana,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Alertmanager => "alertmanager",
            NotificationKind::Grafana => "grafana",
        }
    }
}

/// One webhook notification: a group of alerts that share the group labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub kind: NotificationKind,
    pub receiver: String,
    /// `firing` while any alert of the group fires; look at each alert's own status too.
    pub status: AlertStatus,
    pub group_key: String,
    pub group_labels: Labels,
    pub common_labels: Labels,
    pub common_annotations: Labels,
    pub external_url: String,
    /// How many alerts the sender left out (`max_alerts`); they are not in `alerts`.
    pub truncated_alerts: u64,
    /// The payload's `version` as sent ("4" for Alertmanager, "1" for Grafana).
    pub version: String,
    /// Top-level fields outside this model, kept as received (Grafana's `orgId`, `state`,
    /// `title`, `message`).
    pub extra: Map<String, Value>,
    pub alerts: Vec<Alert>,
}

impl Notification {
    /// The labels a whole group is matched and rendered with: the common labels, with the group
    /// labels on top (Alertmanager guarantees they agree; Grafana's may add folder labels).
    pub fn group_match_labels(&self) -> Labels {
        let mut labels = self.common_labels.clone();
        labels.extend(self.group_labels.iter().map(|(k, v)| (k.clone(), v.clone())));
        labels
    }
}

/// How alerts map to incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grouping {
    /// One incident per alert fingerprint.
    Alert,
    /// One incident per Alertmanager `groupKey`.
    Group,
}

impl Grouping {
    pub fn as_str(self) -> &'static str {
        match self {
            Grouping::Alert => "alert",
            Grouping::Group => "group",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "alert" => Some(Grouping::Alert),
            "group" => Some(Grouping::Group),
            _ => None,
        }
    }
}

/// The correlation key of one alert: `"<source>:fp:<fingerprint>"`.
pub fn alert_key(source: &str, fingerprint: &str) -> CorrelationKey {
    CorrelationKey::new(format!("{source}:fp:{fingerprint}"))
}

/// The correlation key of one alert group: `"<source>:group:<first 32 hex of sha256(groupKey)>"`.
/// The groupKey itself is long and full of quotes; its hash is a safe store and subject token.
pub fn group_key(source: &str, group_key: &str) -> CorrelationKey {
    let mut hex = sha256_hex(group_key.as_bytes());
    hex.truncate(32);
    CorrelationKey::new(format!("{source}:group:{hex}"))
}

/// Prometheus' label-set fingerprint (FNV-1a 64 over the sorted names and values, each followed
/// by the byte 0xff), as 16 lowercase hex digits. It is what Alertmanager sends as
/// `fingerprint`, so a payload without one still gets the key its sender would have used.
pub fn label_fingerprint(labels: &Labels) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    const SEPARATOR: u8 = 0xff;
    let mut hash = OFFSET;
    let mut add = |bytes: &[u8]| {
        for b in bytes {
            hash ^= u64::from(*b);
            hash = hash.wrapping_mul(PRIME);
        }
    };
    // A BTreeMap iterates in name order, the order Prometheus sorts by.
    for (name, value) in labels {
        add(name.as_bytes());
        add(&[SEPARATOR]);
        add(value.as_bytes());
        add(&[SEPARATOR]);
    }
    format!("{hash:016x}")
}

/// Lowercase hex SHA-256.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    crate::ids::lower_hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_fingerprint_matches_what_alertmanager_sent() {
        // From the captured firing-single fixture.
        let l = labels(&[
            ("alertname", "DiskAlmostFull"),
            ("instance", "10.0.0.21:9100"),
            ("service", "postgres"),
            ("severity", "critical"),
        ]);
        assert_eq!(label_fingerprint(&l), "fd70cbc6aad0d083");
    }

    #[test]
    fn label_fingerprint_of_nothing_is_the_fnv_offset() {
        assert_eq!(label_fingerprint(&Labels::new()), "cbf29ce484222325");
    }

    #[test]
    fn correlation_keys_follow_their_documented_shapes() {
        assert_eq!(alert_key("am", "fd70cbc6aad0d083").as_str(), "am:fp:fd70cbc6aad0d083");
        let k = group_key("am", "{}:{alertname=\"DiskAlmostFull\", service=\"postgres\"}");
        let (prefix, hash) = k.as_str().split_at("am:group:".len());
        assert_eq!(prefix, "am:group:");
        assert_eq!(hash.len(), 32);
        assert!(hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_eq!(k, group_key("am", "{}:{alertname=\"DiskAlmostFull\", service=\"postgres\"}"));
        assert_ne!(k, group_key("am", "{}:{alertname=\"Other\"}"));
        assert_ne!(k, group_key("grafana", "{}:{alertname=\"DiskAlmostFull\", service=\"postgres\"}"));
    }

    #[test]
    fn sha256_hex_is_lowercase_hex() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn group_match_labels_put_group_labels_over_common_labels() {
        let n = Notification {
            kind: NotificationKind::Alertmanager,
            receiver: String::new(),
            status: AlertStatus::Firing,
            group_key: String::new(),
            group_labels: labels(&[("alertname", "A"), ("folder", "F")]),
            common_labels: labels(&[("alertname", "A"), ("severity", "warning")]),
            common_annotations: Labels::new(),
            external_url: String::new(),
            truncated_alerts: 0,
            version: "4".into(),
            extra: Map::new(),
            alerts: vec![],
        };
        assert_eq!(
            n.group_match_labels(),
            labels(&[("alertname", "A"), ("folder", "F"), ("severity", "warning")])
        );
    }
}

/// When an alert episode began, as milliseconds since the Unix epoch: the earliest `startsAt`
/// among `alerts` that parses (RFC 3339, with `Z` or a numeric offset, as Alertmanager and
/// Grafana write it). An episode ends when the alert resolves; firing again starts a new one
/// with a new `startsAt`, which is what tells a repeat of the same episode from a new one.
pub fn episode_start<'a>(alerts: impl IntoIterator<Item = &'a Alert>) -> Option<u64> {
    alerts.into_iter().filter_map(|a| a.starts_at.as_deref().and_then(rfc3339_ms)).min()
}

/// Parses an RFC 3339 timestamp (`2024-05-01T10:00:00.123456789Z`, `...+02:00`) to milliseconds
/// since the Unix epoch. Times before the epoch (Go's zero time, for one) are `None`.
pub fn rfc3339_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let (local, offset_minutes) = if let Some(l) = s.strip_suffix(['Z', 'z']) {
        (l, 0i64)
    } else {
        let (l, off) = s.split_at(s.len().checked_sub(6)?);
        let sign = match off.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let (h, m) = off[1..].split_once(':')?;
        (l, sign * (h.parse::<i64>().ok()? * 60 + m.parse::<i64>().ok()?))
    };
    let utc = humantime::parse_rfc3339_weak(local).ok()?;
    let ms = utc.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis() as i64 - offset_minutes * 60_000;
    u64::try_from(ms).ok()
}

#[cfg(test)]
mod episode_tests {
    use super::*;

    #[test]
    fn rfc3339_times_parse_with_z_fractions_and_offsets() {
        assert_eq!(rfc3339_ms("1970-01-01T00:00:01Z"), Some(1_000));
        assert_eq!(rfc3339_ms("2024-05-01T10:00:00.123456789Z"), Some(1_714_557_600_123));
        assert_eq!(rfc3339_ms("2024-05-01T12:00:00.123+02:00"), Some(1_714_557_600_123));
        assert_eq!(rfc3339_ms("2024-05-01T08:30:00-01:30"), Some(1_714_557_600_000));
        assert_eq!(rfc3339_ms("0001-01-01T00:00:00Z"), None, "Go's zero time is before the epoch");
        assert_eq!(rfc3339_ms("yesterday"), None);
        assert_eq!(rfc3339_ms(""), None);
    }
}
