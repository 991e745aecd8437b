//! Decoding a transport's message with its source: bytes and headers in, events with their keys
//! and licensePlates out. Every transport goes through [`Decoder`] (by way of the intake), so
//! every source reads the same way whatever carried it.

use std::{sync::Arc, time::SystemTime};

use crate::{
    alert::Notification,
    decode::{
        DecodeError, alertmanager,
        cloudevents::{self, Inner},
        grafana, native,
    },
    event::{AlertEvent, Event, EventKind, Original, Source},
    ids::{CorrelationKey, LicensePlate},
    incident::Operation,
    route::Action,
    sources::{SourceKind, SourceSpec},
    trace_context::TraceParent,
    verify::{
        HeaderLookup, Verified, VerifyError,
        limits::{json_depth_within, truncate_strings},
    },
};

/// A message as a transport received it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub source: Source,
    pub original: Original,
    pub received_at: SystemTime,
    /// A stable identity of the message across redeliveries, when the transport has one
    /// (JetStream stream + sequence, or a sender's idempotency key): licensePlates derived from
    /// it stay the same when the message comes again.
    pub identity: Option<Identity>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The time part of derived licensePlates, so they still sort by arrival.
    pub time_ms: u64,
    pub seed: String,
}

impl Identity {
    /// An identity of its own for a message that brings none, so that its licensePlate is known
    /// before it is decoded (an HTTP answer carries it even when the body is refused).
    pub fn fresh(kind: &str) -> Self {
        let plate = LicensePlate::generate();
        Identity { time_ms: plate.timestamp_ms(), seed: format!("{kind}:fresh:{plate}") }
    }

    /// The licensePlate of the message's event `part` (`""` for a message of one event).
    pub fn license_plate(&self, part: &str) -> LicensePlate {
        LicensePlate::derived(self.time_ms, format!("{}#{part}", self.seed).as_bytes())
    }
}

/// A message's events, and the id its sender gave it (CloudEvents).
#[derive(Debug)]
pub struct Decoded {
    pub events: Vec<Event>,
    pub delivery_id: Option<String>,
}

/// Reads messages the way one source says.
#[derive(Debug, Clone)]
pub struct Decoder {
    spec: Arc<SourceSpec>,
}

impl Decoder {
    pub fn new(spec: Arc<SourceSpec>) -> Self {
        Self { spec }
    }

    pub fn spec(&self) -> &Arc<SourceSpec> {
        &self.spec
    }

    /// The operation a message asks for, when it can be told without decoding the body (for
    /// the dead-letter subject of a message that does not decode).
    pub fn operation_hint(&self, inbound: &Inbound) -> Option<Operation> {
        match self.spec.kind {
            SourceKind::Native => native_op(&inbound.source.subject).ok(),
            _ => None,
        }
    }

    /// Authenticates a message with the source's schemes (for NATS: only when the source
    /// verifies NATS) over its raw body and the headers as received, before anything parses
    /// it. `inbound` carries the headers that travel on, without credentials.
    pub fn verify<H: HeaderLookup + ?Sized>(
        &self,
        inbound: Inbound,
        received_headers: &H,
        over_nats: bool,
    ) -> Result<Verified<Inbound>, VerifyError> {
        let auth = if over_nats { self.spec.nats_auth() } else { &self.spec.auth };
        let Inbound { source, original, received_at, identity } = inbound;
        let Original { body, headers } = original;
        let verified = auth.verify(received_headers, body, SystemTime::now())?;
        Ok(verified.map(|body| Inbound {
            source,
            original: Original { body, headers },
            received_at,
            identity,
        }))
    }

    /// [`Decoder::verify`] without remembering the message against replays (explain). With
    /// `check = false` nothing is checked at all: the caller reports the failure and still
    /// shows what the message would do.
    pub fn verify_dry<H: HeaderLookup + ?Sized>(
        &self,
        inbound: Inbound,
        received_headers: &H,
        check: bool,
    ) -> Result<Verified<Inbound>, VerifyError> {
        let none = crate::verify::SourceAuth::none();
        let auth = if check { &self.spec.auth } else { &none };
        let Inbound { source, original, received_at, identity } = inbound;
        let Original { body, headers } = original;
        let verified = auth.verify_dry(received_headers, body, SystemTime::now())?;
        Ok(verified.map(|body| Inbound {
            source,
            original: Original { body, headers },
            received_at,
            identity,
        }))
    }

    /// The events a message carries: one per native command, one per alert or group that a
    /// route does not drop. Fails, without partial results, when the message is not readable.
    /// Only a verified message can be decoded.
    pub fn events(&self, inbound: &Verified<Inbound>) -> Result<Vec<Event>, DecodeError> {
        self.decode(inbound).map(|d| d.events)
    }

    /// [`Decoder::events`], with the id the sender gave the message when its format has one (a
    /// CloudEvent's `source` and `id`), which names the delivery for repeats.
    pub fn decode(&self, inbound: &Verified<Inbound>) -> Result<Decoded, DecodeError> {
        let inbound = inbound.body();
        let body = &inbound.original.body;
        let limits = &self.spec.limits;
        // Checked on the raw bytes, before any parser can recurse that deep.
        if !json_depth_within(body, limits.max_depth) {
            return Err(DecodeError::Invalid(format!("JSON nested deeper than {} levels", limits.max_depth)));
        }
        let plain = |events| Ok(Decoded { events, delivery_id: None });
        match self.spec.kind {
            SourceKind::Native => {
                let op = native_op(&inbound.source.subject)?;
                plain(vec![self.command(inbound, native::decode(op, body)?)])
            }
            SourceKind::Alertmanager => plain(self.alerts(inbound, alertmanager::decode(body)?)?),
            SourceKind::Grafana => plain(self.alerts(inbound, grafana::decode(body)?)?),
            SourceKind::CloudEvents(inner) => {
                let event = cloudevents::decode(&inbound.original.headers[..], body.clone())?;
                // `source` + `id` name a CloudEvent; a producer resends with both the same.
                let delivery_id = Some(format!("{}\n{}", event.source, event.id));
                let events = match event.decode_data(inner)? {
                    Inner::Notification(n) => self.alerts(inbound, n)?,
                    Inner::Native(cmd) => vec![self.command(inbound, cmd)],
                };
                Ok(Decoded { events, delivery_id })
            }
        }
    }

    fn command(&self, inbound: &Inbound, mut decoded: native::NativeCommand) -> Event {
        // Not shared yet, so this changes the payload in place.
        truncate_strings(
            std::sync::Arc::make_mut(&mut decoded.command.payload),
            self.spec.limits.max_string_chars,
        );
        let plate = plate_for(inbound, "");
        let key = decoded.key.unwrap_or_else(|| CorrelationKey::new(format!("plate:{plate}")));
        event(inbound, plate, key, EventKind::Command(decoded.command))
    }

    fn alerts(&self, inbound: &Inbound, notification: Notification) -> Result<Vec<Event>, DecodeError> {
        let Some(settings) = &self.spec.alerts else {
            return Err(DecodeError::Invalid(format!("source `{}` does not take alerts", self.spec.name)));
        };
        if notification.alerts.len() > self.spec.limits.max_alerts {
            return Err(DecodeError::Invalid(format!(
                "{} alerts in one notification; the limit is {}",
                notification.alerts.len(),
                self.spec.limits.max_alerts
            )));
        }
        let notification = Arc::new(notification);
        crate::observe::alerts_received(&self.spec.name, notification.alerts.len());
        let mut events = Vec::new();
        for target in settings.routes.plan(&notification, &self.spec.name, settings.grouping) {
            if target.route.action == Action::Drop {
                crate::observe::decision(&self.spec.name, "drop");
                tracing::info!(
                    source = %self.spec.name,
                    key = %target.key,
                    route = %target.route.name,
                    decision = "drop",
                    "route drops this alert; no incident"
                );
                continue;
            }
            let plate = plate_for(inbound, target.key.as_str());
            let key = target.key.clone();
            let alert = AlertEvent { notification: Arc::clone(&notification), target };
            events.push(event(inbound, plate, key, EventKind::Alert(Box::new(alert))));
        }
        Ok(events)
    }
}

/// `incidents.commands.close` (NATS) or `/v1/incidents/close` (HTTP) → `close`.
fn native_op(subject: &str) -> Result<Operation, DecodeError> {
    let token = subject.rsplit(['.', '/']).next().unwrap_or(subject);
    token.parse().map_err(|e: crate::incident::UnknownOperation| {
        DecodeError::Invalid(format!("subject `{subject}`: {e}"))
    })
}

/// A licensePlate derived from the message identity (plus `part` when a message carries
/// several events), or a fresh one when the message has no identity.
fn plate_for(inbound: &Inbound, part: &str) -> LicensePlate {
    match &inbound.identity {
        Some(id) => id.license_plate(part),
        None => LicensePlate::generate(),
    }
}

fn event(inbound: &Inbound, license_plate: LicensePlate, key: CorrelationKey, kind: EventKind) -> Event {
    Event {
        license_plate,
        key,
        source: inbound.source.clone(),
        received_at: inbound.received_at,
        original: inbound.original.clone(),
        trace: TraceParent::continue_from(inbound.original.header("traceparent")),
        span: tracing::Span::current(),
        kind,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::Transport;

    fn native() -> Decoder {
        Decoder::new(Arc::new(SourceSpec::builtin_native()))
    }

    fn verified(inbound: Inbound) -> Verified<Inbound> {
        native().verify(inbound, &[] as &[(String, String)], false).unwrap()
    }

    fn inbound(subject: &str, body: &'static [u8], identity: Option<Identity>) -> Inbound {
        Inbound {
            source: Source {
                transport: Transport::Jetstream,
                name: "native".into(),
                subject: subject.into(),
                stream: Some("S".into()),
                stream_sequence: Some(7),
                stream_published_ms: Some(1_700_000_000_000),
            },
            original: Original { body: Bytes::from_static(body), headers: vec![] },
            received_at: SystemTime::now(),
            identity,
        }
    }

    #[test]
    fn native_messages_take_their_operation_from_the_subject() {
        let e = native()
            .events(&verified(inbound("incidents.commands.close", br#"{"id":"IT-1"}"#, None)))
            .unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].operation(), Some(Operation::Close));
        assert_eq!(e[0].key, CorrelationKey::new("item:IT-1"));
        let err = native().events(&verified(inbound("incidents.commands.delete", b"{}", None))).unwrap_err();
        assert!(err.to_string().contains("delete"), "{err}");
    }

    #[test]
    fn an_identity_makes_the_license_plate_stable_across_redeliveries() {
        let id = Some(Identity { time_ms: 1_700_000_000_000, seed: "js:S:7".into() });
        let a = native().events(&verified(inbound("x.add", b"{}", id.clone()))).unwrap();
        let b = native().events(&verified(inbound("x.add", b"{}", id))).unwrap();
        assert_eq!(a[0].license_plate, b[0].license_plate);
        let c = native().events(&verified(inbound("x.add", b"{}", None))).unwrap();
        assert_ne!(a[0].license_plate, c[0].license_plate);
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep: &'static [u8] = Box::leak(
            format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes().into_boxed_slice(),
        );
        let err = native().events(&verified(inbound("x.add", deep, None))).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
    }
}
