//! The one way in, shared by every transport: **read → verify → decode → submit**. A transport
//! hands over a message as it received it ([`Inbound`], plus the headers as received for
//! verification) and gets back either a refusal it reports in its own words, or one outcome
//! ticket per event the message carried, which it awaits and turns into its own words (an HTTP
//! status, a JetStream ack, a NATS reply).
//!
//! It owns the order of those steps, the metrics and logs of what arrives and what is refused,
//! and the rule that a message whose work must be retried is released from its source's replay
//! cache (so the sender's retry is not refused as a replay). It must not speak any transport's
//! words (no status codes, no acks) and never calls SCWM itself: the pipeline does.

mod decoder;
pub mod holds;
pub mod repeats;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use futures::future::join_all;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use decoder::{Decoder, Identity, Inbound};
pub use repeats::{Answer, Claim, DeliveryKey, Fingerprint, Repeats};

use crate::{
    event::{Event, Original, Source},
    headers::HeaderLookup,
    incident::Operation,
    pipeline::{Delivery, Job, Outcome, RetryCause, Runner, queue::SubmitError},
    publish::PublishError,
    sources::{SourceSpec, Sources},
    verify::{Receipt, VerifyError},
};

/// Why a message never became an event.
#[derive(Debug, thiserror::Error)]
pub enum Unreadable {
    #[error("authentication failed: {}", .0.kind())]
    Unauthenticated(VerifyError),
    #[error(transparent)]
    Decode(#[from] crate::decode::DecodeError),
}

impl Unreadable {
    pub fn kind(&self) -> &'static str {
        match self {
            Unreadable::Unauthenticated(_) => "unauthenticated",
            Unreadable::Decode(_) => "decode",
        }
    }

    /// The dead letter's reason kind and sentence.
    pub fn reason(&self) -> (&'static str, String) {
        (self.kind(), self.to_string())
    }
}

/// Whether a full queue makes [`Intake::submit`] wait (a NATS consumer stops pulling meanwhile)
/// or refuse at once (an HTTP caller is told to come back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Wait,
    Refuse,
}

/// The way in: the sources by name, the runner behind them, and the moment waiting for
/// outcomes ends for good (the end of the shutdown grace).
#[derive(Clone)]
pub struct Intake {
    runner: Runner,
    sources: Sources,
    deadline: CancellationToken,
    repeats: Repeats,
}

/// A read message's events, not yet submitted, with what verified it and which delivery it is.
pub struct Read {
    pub events: Vec<Event>,
    receipt: Receipt,
    spec: Arc<SourceSpec>,
    over_nats: bool,
    delivery: Option<(DeliveryKey, Fingerprint)>,
}

/// What the bridge remembers of a read message's delivery.
#[derive(Debug)]
pub enum Recall {
    /// Not seen before (or it names no delivery): handle it. Finish the claim with the answer
    /// when it is one a resend should get again.
    New(Option<Claim>),
    /// The first delivery is still being handled.
    InFlight { idempotency_key: bool },
    /// Handled already: the answer it got.
    Done(Answer),
    /// The delivery's key was used for another request.
    Mismatch,
}

/// A submitted message: one ticket per event, in event order.
pub struct Tickets {
    tickets: Vec<Ticket>,
    /// What each ticket's event is about, in the same order.
    described: Vec<Described>,
    receipt: Receipt,
    spec: Arc<SourceSpec>,
    over_nats: bool,
    deadline: CancellationToken,
}

/// What a message would do ([`Intake::explain`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Explained {
    pub source: String,
    /// `passed`, or why it failed.
    pub verification: String,
    /// One per event the message carries (an alert a route drops carries none).
    pub events: Vec<crate::pipeline::explain::Explanation>,
}

/// What an event is about, for an answer that lists events: its key and, for an alert, its
/// alertname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    pub key: crate::ids::CorrelationKey,
    pub alertname: Option<String>,
}

impl Described {
    fn of(event: &crate::event::Event) -> Self {
        let alertname = match &event.kind {
            crate::event::EventKind::Alert(alert) => alert.alertname().map(str::to_owned),
            crate::event::EventKind::Command(_) => None,
        };
        Self { key: event.key.clone(), alertname }
    }
}

/// One event's outcome, once the pipeline has finished with it.
enum Ticket {
    Waiting(oneshot::Receiver<Outcome>),
    /// Not submitted (queue full, shutting down): its outcome is a retry, known at once.
    Refused(SubmitError),
}

/// Why some events have no outcome for the caller: they go on in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimedOut {
    /// Not within the time the caller could wait.
    Waited,
    /// The bridge is stopping and its grace is over: the caller is answered now, not never.
    ShuttingDown,
}

impl Intake {
    /// `deadline` fires when the shutdown grace is nearly over: every wait for an outcome ends
    /// then, so every caller still waiting gets an answer before the process exits.
    pub fn new(runner: Runner, sources: Sources, deadline: CancellationToken) -> Self {
        Self { runner, sources, deadline, repeats: Repeats::default() }
    }

    pub fn sources(&self) -> &Sources {
        &self.sources
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Verifies `inbound` with `spec`'s schemes over its raw body and `received` (the headers as
    /// they arrived; `inbound` carries only what may travel on, without credentials), then
    /// decodes it into events. Counts the message and, when refused, why.
    ///
    /// The delivery is named (for [`Intake::recall`]) by `key` when the transport has one (an
    /// `Idempotency-Key`, a `Nats-Msg-Id`), else by what verified it (a Standard Webhooks
    /// `webhook-id`, signed), else by what the format says (a CloudEvent's `source` and `id`).
    pub fn read(
        &self,
        spec: &Arc<SourceSpec>,
        inbound: Inbound,
        received: &dyn HeaderLookup,
        over_nats: bool,
        key: Option<DeliveryKey>,
    ) -> Result<Read, Unreadable> {
        let transport = inbound.source.transport.as_str();
        crate::observe::event_received(&spec.name, transport);
        let decoder = Decoder::new(Arc::clone(spec));
        let verified = tracing::info_span!("verify", source = %spec.name)
            .in_scope(|| decoder.verify(inbound, received, over_nats))
            .map_err(|e| {
                tracing::warn!(source = %spec.name, transport, reason = e.kind(), "webhook refused: authentication failed");
                crate::observe::auth_failure(&spec.name, e.kind());
                Unreadable::Unauthenticated(e)
            })?;
        let decoded = decoder.decode(&verified).map_err(|e| {
            tracing::info!(source = %spec.name, transport, reason = e.kind(), error = %e, "webhook refused: cannot decode");
            Unreadable::Decode(e)
        })?;
        let (inbound, receipt) = verified.into_parts();
        let signed_id = || {
            let auth = if over_nats { spec.nats_auth() } else { &spec.auth };
            auth.scheme_names()
                .contains(&"standard-webhooks")
                .then(|| inbound.original.header("webhook-id").map(|id| ("webhook-id", id.trim().to_owned())))
                .flatten()
        };
        let key = key.or_else(|| {
            let (namespace, id) =
                signed_id().or_else(|| decoded.delivery_id.clone().map(|id| ("cloudevent", id)))?;
            Some(DeliveryKey { namespace, source: spec.name.clone(), sender: String::new(), id })
        });
        let delivery = key.map(|k| {
            let fingerprint = Fingerprint::of(&[inbound.source.subject.as_bytes(), &inbound.original.body]);
            (k, fingerprint)
        });
        Ok(Read { events: decoded.events, receipt, spec: Arc::clone(spec), over_nats, delivery })
    }

    /// What the message would do, and why, without doing it: verified without remembering it
    /// against replays, decoded, and each event explained by the pipeline, which reads the
    /// store and writes nothing. A message that fails verification is still decoded and
    /// explained, so the report says both what is wrong and what it would do once right.
    pub async fn explain(
        &self,
        spec: &Arc<SourceSpec>,
        inbound: Inbound,
        received: &(dyn HeaderLookup + Sync),
    ) -> Result<Explained, crate::decode::DecodeError> {
        self.explain_against(spec, inbound, received, &Default::default()).await
    }

    /// [`Intake::explain`] against a given state and time (a test case).
    pub async fn explain_against(
        &self,
        spec: &Arc<SourceSpec>,
        inbound: Inbound,
        received: &(dyn HeaderLookup + Sync),
        against: &crate::pipeline::explain::Against,
    ) -> Result<Explained, crate::decode::DecodeError> {
        let decoder = Decoder::new(Arc::clone(spec));
        let (verification, verified) = match decoder.verify_dry(inbound.clone(), received, true) {
            Ok(v) => ("passed".to_owned(), v),
            Err(e) => (
                format!(
                    "failed ({}): {e}; the sender would get 401, and what follows is what the message would do once it verifies",
                    e.kind()
                ),
                decoder.verify_dry(inbound, received, false).expect("nothing to check cannot fail"),
            ),
        };
        let decoded = decoder.decode(&verified)?;
        let pipeline = self.runner.pipeline();
        let mut events = Vec::with_capacity(decoded.events.len());
        for event in &decoded.events {
            events.push(pipeline.explain_against(event, against).await);
        }
        Ok(Explained { source: spec.name.clone(), verification, events })
    }

    /// Sends a kept dead letter's original message through the intake and the pipeline again,
    /// as it came, with its original licensePlate: SCWM recognises a request it already
    /// carried out, so a replay cannot act twice. It is not verified again (its credentials
    /// were not kept; it was verified when it came, and an operator asks for the replay); a
    /// letter that never passed verification is refused. `within` bounds the wait for the
    /// outcomes.
    pub async fn replay(
        &self,
        kept: &crate::publish::kept::KeptLetter,
        within: Duration,
    ) -> Result<Vec<Outcome>, String> {
        if kept.reason_kind == "unauthenticated" {
            return Err("it never passed authentication; replaying it would let it in".into());
        }
        let transport = match kept.transport.as_str() {
            "nats" => crate::event::Transport::Nats,
            "jetstream" => crate::event::Transport::Jetstream,
            _ => crate::event::Transport::Http,
        };
        let original = Original { body: kept.body_bytes(), headers: kept.headers.clone() };
        let (spec, mut decoded) = self.read_again(&kept.source, transport, &kept.subject, original)?;
        // A native command's licensePlate came from its delivery, which is gone: give it back,
        // so SCWM sees the same request. An alert's plates come from what it is, and match.
        if let (Some(plate), [event]) = (&kept.license_plate, decoded.events.as_mut_slice())
            && matches!(event.kind, crate::event::EventKind::Command(_))
            && let Ok(plate) = crate::ids::LicensePlate::parse(plate)
        {
            event.license_plate = plate;
        }
        let read = Read {
            events: decoded.events,
            receipt: Receipt::default(),
            spec,
            over_nats: false,
            delivery: None,
        };
        let tickets = self.submit(read, Delivery::ONLY, Room::Refuse).await;
        tickets.outcomes(Some(within), |_| false).await.map_err(|e| format!("{e:?}"))
    }

    /// Reads a message the bridge kept (a dead letter, a held notification) as it would have
    /// been read when it came, without verifying it again: it was verified then, and its
    /// credentials were not kept.
    fn read_again(
        &self,
        source: &str,
        transport: crate::event::Transport,
        subject: &str,
        original: Original,
    ) -> Result<(Arc<SourceSpec>, decoder::Decoded), String> {
        let spec = self.sources.get(source).ok_or_else(|| format!("no source named `{source}` now"))?;
        let inbound = Inbound {
            source: Source {
                transport,
                name: source.to_owned(),
                subject: subject.to_owned(),
                stream: None,
                stream_sequence: None,
                stream_published_ms: None,
            },
            original,
            received_at: std::time::SystemTime::now(),
            identity: None,
        };
        let decoder = Decoder::new(Arc::clone(spec));
        let verified = decoder
            .verify_dry(inbound, &crate::headers::NoHeaders, false)
            .map_err(|e| format!("cannot be read again: {e}"))?;
        let decoded = decoder.decode(&verified).map_err(|e| format!("still cannot be decoded: {e}"))?;
        Ok((Arc::clone(spec), decoded))
    }

    /// Offers `key`'s held notification again (its hold is due): the key's own event only,
    /// marked as such, queued behind whatever the key has queued. A notification that cannot
    /// be read again is logged; the hold stays until a newer notification replaces it.
    pub async fn recheck(&self, key: &crate::ids::CorrelationKey, source: &str, held: &crate::plan::Held) {
        let Some(original) = held.original.to_original() else {
            tracing::error!(%key, "a held notification is not readable; it stays held until the alert changes");
            return;
        };
        let read =
            self.read_again(source, crate::event::Transport::Http, crate::event::RECHECK_SUBJECT, original);
        let (spec, decoded) = match read {
            Ok(read) => read,
            Err(e) => {
                tracing::error!(%key, error = %e, "a held notification cannot be read again; it stays held");
                return;
            }
        };
        let events: Vec<Event> = decoded.events.into_iter().filter(|e| &e.key == key).collect();
        if events.is_empty() {
            tracing::warn!(%key, "a held notification no longer yields its key (routes changed?); dropping nothing, leaving it held");
            return;
        }
        tracing::debug!(%key, "offering a held notification again");
        let read = Read { events, receipt: Receipt::default(), spec, over_nats: false, delivery: None };
        // Nobody waits for the outcome: it is logged and published like any other.
        drop(self.submit(read, Delivery::ONLY, Room::Wait).await);
    }

    /// What the bridge remembers of `read`'s delivery: seen and answered, still being handled,
    /// used for another request, or new (claimed now).
    pub fn recall(&self, read: &Read, now: Instant) -> Recall {
        let Some((key, fingerprint)) = &read.delivery else { return Recall::New(None) };
        let idempotency_key = key.namespace == "idempotency-key";
        match self.repeats.check(key.clone(), *fingerprint, now) {
            repeats::Seen::New(claim) => Recall::New(Some(claim)),
            repeats::Seen::InFlight => Recall::InFlight { idempotency_key },
            repeats::Seen::Done(answer) => Recall::Done(answer),
            repeats::Seen::Mismatch => Recall::Mismatch,
        }
    }

    /// Submits a read message's events: each gets a ticket. An event the queue cannot take
    /// (full with [`Room::Refuse`], or closed for shutdown) has its outcome at once: retry.
    pub async fn submit(&self, read: Read, delivery: Delivery, room: Room) -> Tickets {
        let Read { events, receipt, spec, over_nats, .. } = read;
        let mut tickets = Vec::with_capacity(events.len());
        let described = events.iter().map(Described::of).collect();
        for event in events {
            let (tx, rx) = oneshot::channel();
            let job = Job { event, delivery, reply: Some(tx) };
            let submitted = match room {
                Room::Wait => self.runner.submit(job).await,
                Room::Refuse => self.runner.try_submit(job),
            };
            tickets.push(match submitted {
                Ok(()) => Ticket::Waiting(rx),
                Err((error, _job)) => Ticket::Refused(error),
            });
        }
        Tickets { tickets, described, receipt, spec, over_nats, deadline: self.deadline.clone() }
    }

    /// Submits a read message's events with nobody waiting (an asynchronous command): their
    /// outcomes go only to the result sinks. When the queue refuses one, the events after it
    /// are not submitted and the message is released from its source's replay cache, since the
    /// sender is told to send it again.
    pub fn submit_detached(&self, read: Read, delivery: Delivery) -> Result<(), SubmitError> {
        let Read { events, receipt, spec, over_nats, .. } = read;
        for event in events {
            if let Err((error, _)) = self.runner.try_submit(Job { event, delivery, reply: None }) {
                let auth = if over_nats { spec.nats_auth() } else { &spec.auth };
                auth.release(&receipt);
                return Err(error);
            }
        }
        Ok(())
    }

    /// Dead-letters a whole message that never became events (or whose last delivery still had
    /// work to retry); the transport acknowledges it only when this succeeds.
    pub async fn reject_message(
        &self,
        source: &Source,
        original: &Original,
        op: Option<Operation>,
        reason: (&'static str, String),
        deliveries: u32,
    ) -> Result<(), PublishError> {
        self.runner.pipeline().reject_message(source, original, op, reason, deliveries).await
    }
}

fn refused(error: SubmitError) -> Outcome {
    let cause = match error {
        SubmitError::Full => RetryCause::Overloaded,
        SubmitError::Closed => RetryCause::ShuttingDown,
    };
    Outcome::Retry { after: Duration::from_secs(1), cause }
}

impl Tickets {
    /// How many events the message carried.
    pub fn len(&self) -> usize {
        self.tickets.len()
    }

    /// What each event is about, in the order [`Tickets::outcomes`] answers them.
    pub fn described(&self) -> &[Described] {
        &self.described
    }

    pub fn is_empty(&self) -> bool {
        self.tickets.is_empty()
    }

    /// Why the queue refused an event, when it refused one; the message is then released from
    /// its source's replay cache, since the sender is told to send it again.
    pub fn refusal(&self) -> Option<SubmitError> {
        let refusal = self.tickets.iter().find_map(|t| match t {
            Ticket::Refused(e) => Some(*e),
            Ticket::Waiting(_) => None,
        })?;
        self.auth().release(&self.receipt);
        Some(refusal)
    }

    fn auth(&self) -> &crate::verify::SourceAuth {
        if self.over_nats { self.spec.nats_auth() } else { &self.spec.auth }
    }

    /// Every event's outcome, in event order, waiting at most `within` (`None`: as long as it
    /// takes). When the wait ran out, or `sent_again` says the sender will send the message
    /// again given these outcomes (the transport knows what its answer makes a sender do), the
    /// message is released from its source's replay cache: that resend is not a replay.
    pub async fn outcomes(
        mut self,
        within: Option<Duration>,
        sent_again: impl FnOnce(&[Outcome]) -> bool,
    ) -> Result<Vec<Outcome>, TimedOut> {
        let all = join_all(std::mem::take(&mut self.tickets).into_iter().map(|t| async move {
            match t {
                Ticket::Refused(error) => refused(error),
                // The runner answers every job it accepted; a dropped sender means the worker
                // panicked, which is a retry, not a loss.
                Ticket::Waiting(rx) => rx.await.unwrap_or(Outcome::Retry {
                    after: Duration::from_secs(1),
                    cause: RetryCause::ShuttingDown,
                }),
            }
        }));
        let waited = async {
            match within {
                Some(limit) => tokio::time::timeout(limit, all).await.map_err(|_| TimedOut::Waited),
                None => Ok(all.await),
            }
        };
        let outcomes = tokio::select! {
            outcomes = waited => outcomes,
            () = self.deadline.cancelled() => Err(TimedOut::ShuttingDown),
        };
        let release = match &outcomes {
            Ok(outcomes) => sent_again(outcomes),
            Err(_) => true,
        };
        if release {
            self.auth().release(&self.receipt);
        }
        outcomes
    }
}
