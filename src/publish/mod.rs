//! What the bridge emits after processing: a result event for every SCWM answer, a dead
//! letter for every event that cannot succeed, and a drift event for every difference found
//! between the store and SCWM. Sinks deliver them (the log, a channel for tests, NATS); the
//! [`Publisher`] fans out to all configured sinks.
//!
//! A sink reports failure instead of dropping: the pipeline then retries the event rather than
//! acknowledge it, so nothing is lost silently.

mod channel;
pub mod config;
pub mod kept;
mod log;
pub mod nats;
pub mod outbox;
mod subject;

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use base64::Engine;
use futures::future::BoxFuture;
use serde::Serialize;
use serde_json::value::RawValue;

pub use channel::{ChannelSink, Published};
pub use log::LogSink;
pub use subject::SubjectTemplate;

use crate::{
    event::{Original, Source},
    ids::{CorrelationKey, ItemId, LicensePlate},
    incident::Operation,
};

/// One SCWM answer, with the metadata that ties it to its request.
#[derive(Debug, Clone, Serialize)]
pub struct ResultEvent {
    /// Names the outcome this event reports ([`ResultEvent::id_for`]): its `Nats-Msg-Id` and
    /// CloudEvents `id`, the same on every re-publish of this event and different for every
    /// other outcome of the same request.
    pub id: String,
    /// Whether this answer settles the request: SCWM accepted it, or refused it for good. A
    /// transient failure (a 503 to be retried) is not final; the request's final result follows.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub op: Operation,
    #[serde(rename = "licensePlate")]
    pub license_plate: LicensePlate,
    #[serde(rename = "itemId", skip_serializing_if = "Option::is_none")]
    pub item_id: Option<ItemId>,
    pub key: CorrelationKey,
    pub source: Source,
    pub attempts: u32,
    #[serde(rename = "durationMs", serialize_with = "millis")]
    pub duration: Duration,
    /// SCWM's response header exactly as received.
    pub header: Box<RawValue>,
    #[serde(rename = "isErr")]
    pub is_err: bool,
    #[serde(rename = "errCode")]
    pub err_code: String,
    #[serde(rename = "finishedAt", serialize_with = "rfc3339")]
    pub finished_at: SystemTime,
    /// The `traceparent` to send on with the result.
    #[serde(skip)]
    pub traceparent: String,
}

impl ResultEvent {
    /// The id of a result: `<licensePlate>` alone for the final answer of a request, which is
    /// the same however often the request is sent (SCWM answers a repeated licensePlate the
    /// same way), so a stream's duplicate window keeps one; `<licensePlate>.t<ULID>` for a
    /// transient failure, new for each, so none of them hides another or the final answer.
    pub fn id_for(plate: &LicensePlate, is_final: bool) -> String {
        if is_final { plate.to_string() } else { format!("{plate}.t{}", LicensePlate::generate()) }
    }
}

/// An event the bridge gave up on, with everything needed to understand and replay it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub op: Option<Operation>,
    #[serde(rename = "licensePlate", skip_serializing_if = "Option::is_none")]
    pub license_plate: Option<LicensePlate>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<CorrelationKey>,
    pub source: Source,
    /// A bounded label: `decode`, `scwm_rejected`, `retries_exhausted`, ...
    pub reason_kind: &'static str,
    /// A sentence for humans.
    pub reason: String,
    /// SCWM attempts made by the last delivery (0 when SCWM was not called).
    pub attempts: u32,
    /// Deliveries of the message, the last one included (1 for HTTP).
    pub deliveries: u32,
    /// SCWM's response header when SCWM answered.
    #[serde(rename = "scwmHeader", skip_serializing_if = "Option::is_none")]
    pub scwm_header: Option<Box<RawValue>>,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    #[serde(serialize_with = "original")]
    pub original: Original,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*t))
}

/// The original body as text when it is UTF-8, else base64, so any body survives JSON.
fn original<S: serde::Serializer>(o: &Original, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeStruct;
    let mut st = s.serialize_struct("Original", 3)?;
    match std::str::from_utf8(&o.body) {
        Ok(text) => {
            st.serialize_field("encoding", "utf-8")?;
            st.serialize_field("body", text)?;
        }
        Err(_) => {
            st.serialize_field("encoding", "base64")?;
            st.serialize_field("body", &base64::engine::general_purpose::STANDARD.encode(&o.body))?;
        }
    }
    st.serialize_field("headers", &o.headers)?;
    st.end()
}

/// A difference between what the store said of an incident and what SCWM says: a person
/// closed, reopened or handed it over, or SCWM lost or renumbered it. Each is found once, by a
/// read, and reported once.
#[derive(Debug, Clone, Serialize)]
pub struct DriftEvent {
    /// `drift.<ULID>`: new for every difference found, so none hides another.
    pub id: String,
    /// A bounded label: `closed`, `reopened`, `deleted`, `not_ours`, `handed_over`.
    pub kind: &'static str,
    pub key: CorrelationKey,
    #[serde(rename = "itemId")]
    pub item_id: ItemId,
    /// What the store said.
    pub expected: String,
    /// What SCWM says.
    pub found: String,
    /// The source the key's alerts come from, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// What read the incident: `check` (before an operation, or after SCWM refused one) or
    /// `reconciler`.
    #[serde(rename = "detectedBy")]
    pub detected_by: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
}

/// A key started or stopped flapping: `flap.start` when its incident was held open, `flap.end`
/// when the alert kept one status for the quiet period and its end state was applied.
#[derive(Debug, Clone, Serialize)]
pub struct FlapEvent {
    /// `flap.<ULID>`.
    pub id: String,
    /// `flap.start` or `flap.end`.
    pub kind: &'static str,
    pub key: CorrelationKey,
    #[serde(rename = "itemId", skip_serializing_if = "Option::is_none")]
    pub item_id: Option<ItemId>,
    pub source: String,
    /// Fire → resolve → fire cycles within the window when it started.
    pub cycles: u32,
    /// The alert's status when the event was made.
    pub status: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
}

/// A sink could not take an event; the caller must not acknowledge the event's source.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{sink}: {message}")]
pub struct PublishError {
    pub sink: &'static str,
    pub message: String,
}

/// What keeps a result from being lost between SCWM's answer and NATS having it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptBy {
    /// The outbox: written durably before the work is acknowledged, published from there.
    Outbox,
    /// The transport, which delivers the work again until it is acknowledged (a JetStream
    /// message not on its last delivery): the result is published at once and the message
    /// acknowledged after; a crash between leaves it unacknowledged, and its redelivery sends
    /// SCWM the same request (the same licensePlate), which SCWM answers again, and publishes
    /// the same result under the same message id. The outbox takes it when that cannot be done
    /// at once ([`outbox::Relay::publish_or_enqueue`]).
    Redelivery,
}

/// Somewhere result events and dead letters go.
pub trait Sink: Send + Sync {
    fn name(&self) -> &'static str;
    fn result<'a>(&'a self, event: &'a ResultEvent) -> BoxFuture<'a, Result<(), PublishError>>;
    fn dead_letter<'a>(&'a self, letter: &'a DeadLetter) -> BoxFuture<'a, Result<(), PublishError>>;
    fn drift<'a>(&'a self, drift: &'a DriftEvent) -> BoxFuture<'a, Result<(), PublishError>>;
    fn flap<'a>(&'a self, flap: &'a FlapEvent) -> BoxFuture<'a, Result<(), PublishError>>;
}

/// Every configured sink, and the outbox in front of NATS; an event counts as published when
/// every sink took it and the outbox holds it durably.
#[derive(Clone, Default)]
pub struct Publisher {
    sinks: Vec<Arc<dyn Sink>>,
    relay: Option<Arc<outbox::Relay>>,
    kept: Option<kept::Kept>,
}

impl Publisher {
    pub fn new(sinks: Vec<Arc<dyn Sink>>) -> Self {
        Self { sinks, relay: None, kept: None }
    }

    /// Results and dead letters bound for NATS go through `relay`'s outbox.
    pub fn with_outbox(mut self, relay: Arc<outbox::Relay>) -> Self {
        self.relay = Some(relay);
        self
    }

    /// Dead letters are kept in `kept` too, for people to list and replay.
    pub fn with_kept(mut self, kept: kept::Kept) -> Self {
        self.kept = Some(kept);
        self
    }

    pub fn kept(&self) -> Option<&kept::Kept> {
        self.kept.as_ref()
    }

    pub fn relay(&self) -> Option<&Arc<outbox::Relay>> {
        self.relay.as_ref()
    }

    /// Whether what this work will publish can be taken: not when the outbox is full.
    pub fn room(&self) -> Result<(), PublishError> {
        self.relay.as_ref().map_or(Ok(()), |relay| relay.room())
    }

    pub async fn result(&self, event: &ResultEvent, kept: KeptBy) -> Result<(), PublishError> {
        for sink in &self.sinks {
            sink.result(event).await?;
        }
        if let Some(relay) = &self.relay {
            let sink = relay.sink();
            match kept {
                KeptBy::Outbox => relay.enqueue(outbox::EntryKind::Result, sink.render_result(event)).await?,
                KeptBy::Redelivery => {
                    relay
                        .publish_or_enqueue(outbox::EntryKind::Result, sink.result_message(event), || {
                            sink.render_result(event)
                        })
                        .await?
                }
            }
        }
        crate::observe::result_published(&event.source.name, event.op.as_str());
        Ok(())
    }

    /// Publishes `event` to every sink but the outbox, and returns its outbox entry for the
    /// caller to write in its next write to the store `store` names (one durable write for the
    /// record and the result, instead of two); `None` when there is no outbox, or it is not in
    /// that store (then the entry is written here, as [`Publisher::result`] does). The caller
    /// reports the entry written with [`Publisher::staged_written`], or, when its write did not
    /// happen, writes it alone with [`Publisher::write_staged`].
    pub async fn stage_result(
        &self,
        event: &ResultEvent,
        store: Option<usize>,
    ) -> Result<Option<outbox::Prepared>, PublishError> {
        let Some(relay) = self.relay.as_ref().filter(|r| store.is_some() && r.identity() == store) else {
            return self.result(event, KeptBy::Outbox).await.map(|()| None);
        };
        for sink in &self.sinks {
            sink.result(event).await?;
        }
        let prepared = relay.prepare(outbox::EntryKind::Result, relay.sink().render_result(event));
        crate::observe::result_published(&event.source.name, event.op.as_str());
        Ok(Some(prepared))
    }

    /// A staged result's entry is in the store: the relay may publish it.
    pub fn staged_written(&self, prepared: &outbox::Prepared) {
        if let Some(relay) = &self.relay {
            relay.pushed(prepared);
        }
    }

    /// Writes a staged result's entry alone, when the write it was staged for did not happen.
    pub async fn write_staged(&self, prepared: outbox::Prepared) -> Result<(), PublishError> {
        let Some(relay) = &self.relay else { return Ok(()) };
        relay.write_prepared(prepared).await
    }

    pub async fn dead_letter(&self, letter: &DeadLetter) -> Result<(), PublishError> {
        // Kept first: whoever hears of the letter can find it.
        if let Some(kept) = &self.kept {
            kept.keep(letter).await?;
        }
        for sink in &self.sinks {
            sink.dead_letter(letter).await?;
        }
        if let Some(relay) = &self.relay {
            relay.enqueue(outbox::EntryKind::DeadLetter, relay.sink().render_dead_letter(letter)).await?;
        }
        crate::observe::dead_letter(&letter.source.name, letter.reason_kind);
        Ok(())
    }

    pub async fn drift(&self, drift: &DriftEvent) -> Result<(), PublishError> {
        for sink in &self.sinks {
            sink.drift(drift).await?;
        }
        if let Some(relay) = &self.relay {
            relay.enqueue(outbox::EntryKind::Drift, relay.sink().render_drift(drift)).await?;
        }
        crate::observe::drift(drift.kind, drift.detected_by);
        Ok(())
    }

    pub async fn flap(&self, flap: &FlapEvent) -> Result<(), PublishError> {
        for sink in &self.sinks {
            sink.flap(flap).await?;
        }
        if let Some(relay) = &self.relay {
            relay.enqueue(outbox::EntryKind::Flap, relay.sink().render_flap(flap)).await?;
        }
        crate::observe::flap(&flap.source, if flap.kind == "flap.start" { "start" } else { "end" });
        Ok(())
    }
}
