//! The transport-neutral event every ingest path produces and the pipeline consumes: what to do,
//! for which key, under which licensePlate, and where it came from (kept for result events and
//! dead letters).

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use serde::Serialize;

pub use crate::incident::Command;
use crate::{
    alert::Notification,
    ids::{CorrelationKey, LicensePlate},
    incident::Operation,
    route::Target,
    trace_context::TraceParent,
};

/// How an event reached the bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    Nats,
    Jetstream,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Nats => "nats",
            Transport::Jetstream => "jetstream",
        }
    }
}

/// Where an event came from. Copied into its result event and dead letter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub transport: Transport,
    /// The configured source name (`native` for `/v1/incidents`).
    pub name: String,
    /// HTTP path or NATS subject.
    pub subject: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_sequence: Option<u64>,
    /// When the stream stored the message, in milliseconds since the Unix epoch (JetStream).
    /// With the sequence it orders one key's messages: a sequence starts over when a stream is
    /// created again, the time does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_published_ms: Option<u64>,
}

/// The `subject` of an event the bridge offers itself again: a key's held notification, looked
/// at once more when its hold ends.
pub const RECHECK_SUBJECT: &str = "~recheck";

/// The bytes and headers an event arrived with, so a dead letter can carry them unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Original {
    pub body: Bytes,
    pub headers: Vec<(String, String)>,
}

impl Original {
    /// The first header of that name, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One incident's worth of an alert notification: an alert, or a group of alerts that took the
/// same route. What its source says about turning it into an incident is configuration, looked
/// up by the source's name ([`Source::name`]) where it is needed, never carried in the event.
#[derive(Debug, Clone)]
pub struct AlertEvent {
    /// The whole notification, shared by every target planned from it.
    pub notification: Arc<Notification>,
    pub target: Target,
}

impl AlertEvent {
    /// The `alertname` label of the target's (first) alert, else of the group: what people call
    /// the alert, for answers and logs.
    pub fn alertname(&self) -> Option<&str> {
        let n = &self.notification;
        self.target
            .alerts(n)
            .next()
            .and_then(|a| a.labels.get("alertname"))
            .or_else(|| n.group_labels.get("alertname"))
            .or_else(|| n.common_labels.get("alertname"))
            .map(String::as_str)
    }
}

#[derive(Debug, Clone)]
pub enum EventKind {
    Command(Command),
    Alert(Box<AlertEvent>),
}

#[derive(Debug, Clone)]
pub struct Event {
    /// The licensePlate of the event's (first) SCWM request.
    pub license_plate: LicensePlate,
    /// Events with the same key are processed in arrival order.
    pub key: CorrelationKey,
    pub source: Source,
    pub received_at: SystemTime,
    pub original: Original,
    /// The trace this event belongs to: continued from the sender's `traceparent`, or new.
    /// The fallback for result events when no tracing is installed.
    pub trace: TraceParent,
    /// The span of the inbound request or message: the parent of the event's processing.
    pub span: tracing::Span,
    pub kind: EventKind,
}

impl Event {
    /// The operation this event asks for, when it names one.
    pub fn operation(&self) -> Option<Operation> {
        match &self.kind {
            EventKind::Command(c) => Some(c.op),
            EventKind::Alert(_) => None,
        }
    }
}
