//! Sources: named decoders shared by every transport. A transport hands over the bytes it
//! received and where they came from; the source turns them into events with their keys and
//! licensePlates. Today the built-in `native` source decodes incident commands.

use std::time::SystemTime;

use crate::{
    decode::{DecodeError, native},
    event::{Event, EventKind, Original, Source},
    ids::{CorrelationKey, LicensePlate},
    scwm::Operation,
    trace_context::TraceParent,
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

/// How a source reads messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoder {
    /// Incident commands; on NATS the operation is the subject's last token.
    Native,
}

impl Decoder {
    pub fn for_source(name: &str) -> Option<Self> {
        (name == "native").then_some(Decoder::Native)
    }

    /// The operation a message asks for, when it can be told without decoding the body (for
    /// the dead-letter subject of a message that does not decode).
    pub fn operation_hint(&self, inbound: &Inbound) -> Option<Operation> {
        match self {
            Decoder::Native => native_op(&inbound.source.subject).ok(),
        }
    }

    pub fn events(&self, inbound: &Inbound) -> Result<Vec<Event>, DecodeError> {
        match self {
            Decoder::Native => {
                let op = native_op(&inbound.source.subject)?;
                let decoded = native::decode(op, &inbound.original.body)?;
                let plate = plate_for(inbound, "");
                let key = decoded.key.unwrap_or_else(|| CorrelationKey::new(format!("plate:{plate}")));
                Ok(vec![event(inbound, plate, key, EventKind::Command(decoded.command))])
            }
        }
    }
}

/// `incidents.commands.close` → `close`.
fn native_op(subject: &str) -> Result<Operation, DecodeError> {
    let token = subject.rsplit('.').next().unwrap_or(subject);
    token.parse().map_err(|e: crate::scwm::envelope::UnknownOperation| {
        DecodeError::Invalid(format!("subject `{subject}`: {e}"))
    })
}

/// A licensePlate derived from the message identity (plus `part` when a message carries
/// several events), or a fresh one when the message has no identity.
fn plate_for(inbound: &Inbound, part: &str) -> LicensePlate {
    match &inbound.identity {
        Some(id) => LicensePlate::derived(id.time_ms, format!("{}#{part}", id.seed).as_bytes()),
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
        kind,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::event::Transport;

    fn inbound(subject: &str, body: &'static [u8], identity: Option<Identity>) -> Inbound {
        Inbound {
            source: Source {
                transport: Transport::Jetstream,
                name: "native".into(),
                subject: subject.into(),
                stream: Some("S".into()),
                stream_sequence: Some(7),
            },
            original: Original { body: Bytes::from_static(body), headers: vec![] },
            received_at: SystemTime::now(),
            identity,
        }
    }

    #[test]
    fn native_messages_take_their_operation_from_the_subject() {
        let e =
            Decoder::Native.events(&inbound("incidents.commands.close", br#"{"id":"IT-1"}"#, None)).unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].operation(), Some(Operation::Close));
        assert_eq!(e[0].key, CorrelationKey::new("item:IT-1"));
        let err = Decoder::Native.events(&inbound("incidents.commands.delete", b"{}", None)).unwrap_err();
        assert!(err.to_string().contains("delete"), "{err}");
    }

    #[test]
    fn an_identity_makes_the_license_plate_stable_across_redeliveries() {
        let id = Some(Identity { time_ms: 1_700_000_000_000, seed: "js:S:7".into() });
        let a = Decoder::Native.events(&inbound("x.add", b"{}", id.clone())).unwrap();
        let b = Decoder::Native.events(&inbound("x.add", b"{}", id)).unwrap();
        assert_eq!(a[0].license_plate, b[0].license_plate);
        let c = Decoder::Native.events(&inbound("x.add", b"{}", None)).unwrap();
        assert_ne!(a[0].license_plate, c[0].license_plate);
    }
}
