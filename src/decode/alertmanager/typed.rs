//! The quick way to read an Alertmanager-shaped body: straight into the model, field by field,
//! with no `serde_json::Value` tree between (building that tree and taking it apart was most of
//! what decoding a notification cost). It only ever answers for a body it reads whole; a body
//! with anything wrong it gives up on, and the tree-based reader beside it reads it again: that
//! one names what is wrong, and is the reference this one must agree with (the tests hold them
//! to it).

use std::{borrow::Cow, fmt};

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::alert::{Alert, AlertStatus, Labels, Notification, NotificationKind, label_fingerprint};

/// The body as a notification, or `None` when the tree-based reader must look at it.
pub(super) fn read(kind: NotificationKind, body: &[u8]) -> Option<Notification> {
    let fields: Fields = serde_json::from_slice(body).ok()?;
    let group_labels = fields.group_labels.unwrap_or_default();
    let group_key = match fields.group_key {
        Some(k) if !k.is_empty() => k,
        _ => super::synthetic_group_key(&group_labels),
    };
    Some(Notification {
        kind,
        receiver: fields.receiver.unwrap_or_default(),
        status: fields.status?,
        group_key,
        group_labels,
        common_labels: fields.common_labels.unwrap_or_default(),
        common_annotations: fields.common_annotations.unwrap_or_default(),
        external_url: fields.external_url.unwrap_or_default(),
        truncated_alerts: fields.truncated_alerts.unwrap_or(0),
        version: fields.version.unwrap_or_default(),
        extra: fields.extra,
        alerts: fields.alerts?,
    })
}

/// The top level's fields; `None` stands for absent or `null`, as the tree-based reader has it.
#[derive(Default)]
struct Fields {
    status: Option<AlertStatus>,
    alerts: Option<Vec<Alert>>,
    receiver: Option<String>,
    group_labels: Option<Labels>,
    common_labels: Option<Labels>,
    common_annotations: Option<Labels>,
    external_url: Option<String>,
    version: Option<String>,
    group_key: Option<String>,
    truncated_alerts: Option<u64>,
    extra: Map<String, Value>,
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(FieldsVisitor)
    }
}

struct FieldsVisitor;

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an Alertmanager webhook body")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        let mut b = Fields::default();
        // A field named twice counts as its last, as in the tree.
        while let Some(Name(name)) = map.next_key()? {
            match &*name {
                "status" => b.status = status(map.next_value()?)?,
                "alerts" => {
                    b.alerts = map
                        .next_value::<Option<Vec<OneAlert>>>()?
                        .map(|alerts| alerts.into_iter().map(|OneAlert(a)| a).collect())
                }
                "receiver" => b.receiver = map.next_value()?,
                "groupLabels" => b.group_labels = map.next_value()?,
                "commonLabels" => b.common_labels = map.next_value()?,
                "commonAnnotations" => b.common_annotations = map.next_value()?,
                "externalURL" => b.external_url = map.next_value()?,
                "version" => b.version = map.next_value()?,
                "groupKey" => b.group_key = map.next_value()?,
                "truncatedAlerts" => b.truncated_alerts = map.next_value()?,
                _ => {
                    b.extra.insert(name.into_owned(), map.next_value()?);
                }
            }
        }
        Ok(b)
    }
}

/// `firing` or `resolved`; anything else is left to the tree-based reader's error.
fn status<E: de::Error>(s: Option<Cow<'_, str>>) -> Result<Option<AlertStatus>, E> {
    match s {
        None => Ok(None),
        Some(s) => AlertStatus::parse(&s).map(Some).ok_or_else(|| E::custom("not a status")),
    }
}

struct OneAlert(Alert);

impl<'de> Deserialize<'de> for OneAlert {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AlertVisitor;
        impl<'de> Visitor<'de> for AlertVisitor {
            type Value = OneAlert;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an alert")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OneAlert, A::Error> {
                let (mut status_, mut labels, mut annotations) = (None, None, None);
                let (mut starts_at, mut ends_at, mut generator_url, mut fingerprint) =
                    (None, None, None, None::<String>);
                let mut extra = Map::new();
                while let Some(Name(name)) = map.next_key()? {
                    match &*name {
                        "status" => status_ = status(map.next_value()?)?,
                        "labels" => labels = map.next_value::<Option<Labels>>()?,
                        "annotations" => annotations = map.next_value::<Option<Labels>>()?,
                        "startsAt" => starts_at = map.next_value::<Option<String>>()?,
                        "endsAt" => ends_at = map.next_value::<Option<String>>()?,
                        "generatorURL" => generator_url = map.next_value::<Option<String>>()?,
                        "fingerprint" => fingerprint = map.next_value()?,
                        _ => {
                            extra.insert(name.into_owned(), map.next_value()?);
                        }
                    }
                }
                let missing = || de::Error::custom("a required field is missing");
                let labels = labels.ok_or_else(missing)?;
                let fingerprint = match fingerprint {
                    Some(f) if !f.is_empty() => f,
                    _ => label_fingerprint(&labels),
                };
                Ok(OneAlert(Alert {
                    status: status_.ok_or_else(missing)?,
                    labels,
                    annotations: annotations.unwrap_or_default(),
                    starts_at: super::non_zero_time(starts_at),
                    ends_at: super::non_zero_time(ends_at),
                    generator_url: generator_url.filter(|s| !s.is_empty()),
                    fingerprint,
                    extra,
                }))
            }
        }
        d.deserialize_map(AlertVisitor)
    }
}

/// A field's name, borrowed from the body when it has no escapes.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl<'de> Visitor<'de> for NameVisitor {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        d.deserialize_str(NameVisitor)
    }
}
