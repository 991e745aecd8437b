//! Result events and dead letters on NATS.
//!
//! A result goes to `scwm.results.<op>` (a template): the body is SCWM's response header
//! exactly as received; headers carry the metadata (`Incident-Bridge-*`), `Nats-Msg-Id` = the
//! result's id (`ResultEvent::id_for`: the licensePlate for a final answer, so a stream
//! capturing results drops a republished one and keeps every distinct outcome), W3C
//! `traceparent`, and
//! the CloudEvents binary-mode attributes (`ce-*`, values percent-encoded as the binding says).
//! A dead letter goes to `scwm.dlq.<op>`: the original body and headers unchanged, plus
//! `Incident-Bridge-Error*` headers saying why and after how many attempts.
//!
//! When a JetStream stream captures the subject, the sink publishes through JetStream and waits
//! for the stream's ack; otherwise a core publish, flushed, is enough. Which subjects are
//! captured is looked up on the server and remembered for a while. Messages reach this sink
//! through the outbox (`super::outbox`), which retries until the publish succeeds.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tracing::Instrument;

use super::{DeadLetter, DriftEvent, FlapEvent, PublishError, ResultEvent, SubjectTemplate};
use crate::headers::to_nats_headers;

/// How long a core publish may take to leave the process before the relay tries again later.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a "captured or not" answer is trusted before it is asked again.
const CAPTURE_TTL: Duration = Duration::from_secs(30);

pub struct NatsSink {
    client: async_nats::Client,
    js: jetstream::Context,
    results: SubjectTemplate,
    dead_letters: SubjectTemplate,
    captured: Mutex<HashMap<String, (bool, Instant)>>,
}

/// A NATS message ready to go, as the outbox keeps it: subject, headers in order, body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendered {
    pub subject: String,
    pub headers: Vec<(String, String)>,
    #[serde(with = "base64_bytes")]
    pub body: Bytes,
}

impl Rendered {
    fn from_pairs(subject: String, headers: &HeaderMap, body: Bytes) -> Self {
        Self { subject, headers: crate::headers::pairs_from_nats(Some(headers)), body }
    }

    /// Bytes on the wire beyond the body, near enough to keep under the server's max_payload:
    /// `name: value\r\n` per header plus the `NATS/1.0` line and the blank line.
    pub fn header_len(&self) -> usize {
        12 + self.headers.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>()
    }
}

mod base64_bytes {
    use base64::Engine;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

impl NatsSink {
    pub fn new(client: async_nats::Client, results: SubjectTemplate, dead_letters: SubjectTemplate) -> Self {
        let js = jetstream::new(client.clone());
        Self { client, js, results, dead_letters, captured: Mutex::new(HashMap::new()) }
    }

    /// The largest message the connected server takes.
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    async fn is_captured(&self, subject: &str) -> Result<bool, PublishError> {
        if let Some((captured, at)) = self.captured.lock().unwrap_or_else(|e| e.into_inner()).get(subject)
            && at.elapsed() < CAPTURE_TTL
        {
            return Ok(*captured);
        }
        let captured = match self.js.stream_by_subject(subject).await {
            Ok(_) => true,
            Err(e) if e.kind() == jetstream::context::GetStreamByNameErrorKind::NotFound => false,
            // JetStream disabled on this server: no stream can capture anything.
            Err(e) if e.to_string().contains("not enabled") => false,
            Err(e) => return Err(error(format!("cannot tell whether a stream captures {subject}: {e}"))),
        };
        self.captured
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(subject.to_owned(), (captured, Instant::now()));
        Ok(captured)
    }

    /// The result event as a NATS message.
    pub fn render_result(&self, e: &ResultEvent) -> Rendered {
        let (subject, _, pairs, body) = self.result_parts(e);
        let headers = pairs.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
        Rendered { subject, headers, body }
    }

    /// The result event as the client sends it, for a result published at once rather than
    /// kept ([`super::KeptBy::Redelivery`]): the header map built straight from the static
    /// names, with no owned pairs between, and the span its `traceparent` names.
    pub fn result_message(&self, e: &ResultEvent) -> Outgoing {
        let (subject, span, pairs, body) = self.result_parts(e);
        let header_len = 12 + pairs.iter().map(|(n, v)| n.len() + v.len() + 4).sum::<usize>();
        let mut headers = HeaderMap::new();
        // Each name appears once among a result's headers, so an insert is an append.
        for (name, value) in pairs {
            headers.insert(async_nats::header::HeaderName::from_static(name), value);
        }
        Outgoing { subject, headers, body, header_len, span }
    }

    /// A result's subject, its publish span, its headers (with the span's `traceparent`, so a
    /// reader's trace hangs off this hop) and its body: what both ways of sending it share.
    fn result_parts(&self, e: &ResultEvent) -> (String, tracing::Span, Vec<(&'static str, String)>, Bytes) {
        let subject = self.results.render(e.op.as_str(), &e.source.name);
        let span = producer_span(&subject);
        let traceparent = crate::trace_context::headers_of(&span).remove("traceparent");
        let pairs = result_header_pairs(e, traceparent.as_deref().unwrap_or(&e.traceparent));
        (subject, span, pairs, Bytes::copy_from_slice(e.header.get().as_bytes()))
    }

    /// The dead letter as a NATS message.
    pub fn render_dead_letter(&self, d: &DeadLetter) -> Rendered {
        let op = d.op.map(|o| o.as_str()).unwrap_or("unknown");
        let subject = self.dead_letters.render(op, &d.source.name);
        Rendered::from_pairs(subject, &dead_letter_headers(d), d.original.body.clone())
    }

    /// The drift event as a NATS message: on the results subject with `{op}` = `drift`, its
    /// JSON as the body.
    pub fn render_drift(&self, d: &DriftEvent) -> Rendered {
        let subject = self.results.render("drift", d.source.as_deref().unwrap_or("unknown"));
        let body = serde_json::to_vec(d).expect("a drift event serialises");
        Rendered::from_pairs(subject, &drift_headers(d), Bytes::from(body))
    }

    /// The flap event as a NATS message: on the results subject with `{op}` = its kind
    /// (`flap.start`, `flap.end`), its JSON as the body.
    pub fn render_flap(&self, f: &FlapEvent) -> Rendered {
        let subject = self.results.render(f.kind, &f.source);
        let body = serde_json::to_vec(f).expect("a flap event serialises");
        Rendered::from_pairs(subject, &flap_headers(f), Bytes::from(body))
    }

    /// Sends once: through JetStream when a stream captures the subject, returning the stream's
    /// acknowledgement to await ([`Pending::settled`]); else a core publish, which has left
    /// the process only after [`flush`]. Sending many before awaiting any keeps NATS busy; one
    /// connection keeps them in order. The outbox retries what fails.
    ///
    /// [`flush`]: NatsSink::flush
    pub async fn start(&self, message: &Rendered) -> Result<Pending, PublishError> {
        let headers = to_nats_headers(message.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())));
        let subject = message.subject.clone();
        let span = producer_span(&subject);
        // The message names the span it was made under (its `traceparent`, written when it was
        // kept): this send, perhaps much later, continues that trace rather than start its own.
        crate::trace_context::continue_trace(&span, &message.headers);
        self.send(subject, headers, message.body.clone(), span).await
    }

    /// [`NatsSink::start`] for a message built to go at once ([`NatsSink::result_message`]).
    pub async fn start_outgoing(&self, message: Outgoing) -> Result<Pending, PublishError> {
        let Outgoing { subject, headers, body, span, .. } = message;
        self.send(subject, headers, body, span).await
    }

    async fn send(
        &self,
        subject: String,
        headers: HeaderMap,
        body: Bytes,
        span: tracing::Span,
    ) -> Result<Pending, PublishError> {
        // A client that is not connected would hold the message until it is; the outbox holds
        // it better, and a relay waiting on a dead connection would hold up the ones behind.
        let state = self.client.connection_state();
        if state != async_nats::connection::State::Connected {
            return Err(error(format!("not connected to NATS ({state:?})")));
        }
        async {
            if !self.is_captured(&subject).await? {
                self.client
                    .publish_with_headers(subject, headers, body)
                    .await
                    .map_err(|e| error(format!("publish failed: {e}")))?;
                return Ok(Pending::Sent);
            }
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, body)
                .await
                .map_err(|e| error(format!("JetStream publish of {subject} failed: {e}")))?;
            Ok(Pending::Acknowledgement { subject, ack })
        }
        .instrument(span)
        .await
    }
}

/// A message built to be sent at once, not kept: the client's header map, not owned pairs.
pub struct Outgoing {
    pub subject: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Bytes on the wire beyond the body, as [`Rendered::header_len`] counts them.
    pub header_len: usize,
    span: tracing::Span,
}

/// A message sent, not yet known to be kept.
pub enum Pending {
    /// A core publish: out once the connection is flushed.
    Sent,
    /// A JetStream publish: kept once the stream acknowledges it.
    Acknowledgement { subject: String, ack: async_nats::jetstream::context::PublishAckFuture },
}

impl Pending {
    pub async fn settled(self) -> Result<(), PublishError> {
        match self {
            Pending::Sent => Ok(()),
            Pending::Acknowledgement { subject, ack } => ack
                .await
                .map(|_| ())
                .map_err(|e| error(format!("JetStream did not acknowledge {subject}: {e}"))),
        }
    }
}

impl NatsSink {
    /// Whether the client is connected to a server now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Waits until what was published has left the process, within a bound: a connection that
    /// dies under the flush must not hold the relay.
    pub async fn flush(&self) -> Result<(), PublishError> {
        match tokio::time::timeout(FLUSH_TIMEOUT, self.client.flush()).await {
            Ok(flushed) => flushed.map_err(|e| error(format!("flush failed: {e}"))),
            Err(_) => Err(error("NATS did not take the messages in time".into())),
        }
    }
}

fn error(message: String) -> PublishError {
    PublishError { sink: "nats", message }
}

/// A span per publish, by the OpenTelemetry messaging conventions.
fn producer_span(subject: &str) -> tracing::Span {
    tracing::info_span!(
        "publish",
        otel.name = %format!("send {subject}"),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.destination.name = %subject,
    )
}

/// Metadata headers common to results and dead letters.
fn source_headers(pairs: &mut Vec<(&'static str, String)>, source: &crate::event::Source) {
    pairs.push(("Incident-Bridge-Source", source.name.clone()));
    pairs.push(("Incident-Bridge-Source-Transport", source.transport.as_str().to_owned()));
    pairs.push(("Incident-Bridge-Source-Subject", source.subject.clone()));
    if let Some(stream) = &source.stream {
        pairs.push(("Incident-Bridge-Source-Stream", stream.clone()));
    }
    if let Some(seq) = source.stream_sequence {
        pairs.push(("Incident-Bridge-Source-Sequence", seq.to_string()));
    }
}

/// A result event's headers, in order, as pairs: what the outbox keeps
/// ([`NatsSink::render_result`]) or the client sends at once ([`NatsSink::result_message`]),
/// with no header map between (the result is the one message every event publishes). Only
/// what NATS can carry.
fn result_header_pairs(e: &ResultEvent, traceparent: &str) -> Vec<(&'static str, String)> {
    // Room for every header a result can have, so the vector grows once.
    let mut pairs: Vec<(&'static str, String)> = Vec::with_capacity(24);
    pairs.extend([
        ("Nats-Msg-Id", e.id.clone()),
        ("Incident-Bridge-Final", e.is_final.to_string()),
        ("Content-Type", "application/json".into()),
        ("Incident-Bridge-Op", e.op.to_string()),
        ("Incident-Bridge-License-Plate", e.license_plate.to_string()),
        ("Incident-Bridge-Key", e.key.to_string()),
        ("Incident-Bridge-Attempts", e.attempts.to_string()),
        ("Incident-Bridge-Duration-Ms", e.duration.as_millis().to_string()),
        ("Incident-Bridge-Err-Code", e.err_code.clone()),
    ]);
    if let Some(id) = &e.item_id {
        pairs.push(("Incident-Bridge-Item-Id", id.to_string()));
    }
    source_headers(&mut pairs, &e.source);
    pairs.push(("traceparent", traceparent.to_owned()));
    pairs.push(("ce-specversion", "1.0".into()));
    pairs.push(("ce-id", ce_encode(&e.id)));
    pairs.push(("ce-source", ce_encode(&format!("/incident-bridge/sources/{}", e.source.name))));
    pairs.push(("ce-type", ce_encode(&format!("io.incident-bridge.scwm.{}.result", e.op))));
    pairs.push(("ce-time", ce_encode(&humantime::format_rfc3339_millis(e.finished_at).to_string())));
    pairs.push(("ce-datacontenttype", "application/json".into()));
    if let Some(id) = &e.item_id {
        pairs.push(("ce-subject", ce_encode(id.as_str())));
    }
    pairs.retain(|(name, value)| crate::headers::nats_can_carry(name, value));
    pairs
}

pub fn flap_headers(f: &FlapEvent) -> HeaderMap {
    let mut pairs: Vec<(&'static str, String)> = vec![
        ("Nats-Msg-Id", f.id.clone()),
        ("Content-Type", "application/json".into()),
        ("Incident-Bridge-Flap", f.kind.to_owned()),
        ("Incident-Bridge-Key", f.key.to_string()),
        ("ce-specversion", "1.0".into()),
        ("ce-id", ce_encode(&f.id)),
        ("ce-source", "/incident-bridge".into()),
        ("ce-type", format!("io.incident-bridge.alert.{}", f.kind)),
        ("ce-time", ce_encode(&humantime::format_rfc3339_millis(f.at).to_string())),
        ("ce-datacontenttype", "application/json".into()),
    ];
    if let Some(id) = &f.item_id {
        pairs.push(("Incident-Bridge-Item-Id", id.to_string()));
        pairs.push(("ce-subject", ce_encode(id.as_str())));
    }
    to_nats_headers(pairs.iter().map(|(n, v)| (*n, v.as_str())))
}

pub fn drift_headers(d: &DriftEvent) -> HeaderMap {
    let pairs: Vec<(&'static str, String)> = vec![
        ("Nats-Msg-Id", d.id.clone()),
        ("Content-Type", "application/json".into()),
        ("Incident-Bridge-Drift-Kind", d.kind.to_owned()),
        ("Incident-Bridge-Key", d.key.to_string()),
        ("Incident-Bridge-Item-Id", d.item_id.to_string()),
        ("Incident-Bridge-Detected-By", d.detected_by.to_owned()),
        ("ce-specversion", "1.0".into()),
        ("ce-id", ce_encode(&d.id)),
        ("ce-source", "/incident-bridge".into()),
        ("ce-type", "io.incident-bridge.scwm.drift".into()),
        ("ce-time", ce_encode(&humantime::format_rfc3339_millis(d.at).to_string())),
        ("ce-datacontenttype", "application/json".into()),
        ("ce-subject", ce_encode(d.item_id.as_str())),
    ];
    to_nats_headers(pairs.iter().map(|(n, v)| (*n, v.as_str())))
}

pub fn dead_letter_headers(d: &DeadLetter) -> HeaderMap {
    let mut pairs: Vec<(&'static str, String)> = vec![
        ("Incident-Bridge-Error", d.reason.replace(['\r', '\n'], " ")),
        ("Incident-Bridge-Error-Kind", d.reason_kind.to_owned()),
        ("Incident-Bridge-Attempts", d.attempts.to_string()),
        ("Incident-Bridge-Deliveries", d.deliveries.to_string()),
        ("Incident-Bridge-Dead-Lettered-At", humantime::format_rfc3339_millis(d.at).to_string()),
    ];
    if let Some(op) = d.op {
        pairs.push(("Incident-Bridge-Op", op.to_string()));
    }
    if let Some(plate) = &d.license_plate {
        pairs.push(("Incident-Bridge-License-Plate", plate.to_string()));
        pairs.push(("Nats-Msg-Id", format!("{plate}-dlq")));
    }
    if let Some(key) = &d.key {
        pairs.push(("Incident-Bridge-Key", key.to_string()));
    }
    if let Some(header) = &d.scwm_header {
        pairs.push(("Incident-Bridge-Scwm-Header", header.get().replace(['\r', '\n'], " ")));
    }
    source_headers(&mut pairs, &d.source);
    // The original headers come first and unchanged, except a message id of their own: the dead
    // letter is a new message and must not be dropped as a duplicate of the original.
    let original = d
        .original
        .headers
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("nats-msg-id"))
        .map(|(n, v)| (n.as_str(), v.as_str()));
    to_nats_headers(original.chain(pairs.iter().map(|(n, v)| (*n, v.as_str()))))
}

/// Percent-encodes a CloudEvents attribute value as the HTTP and NATS bindings require: UTF-8
/// bytes outside printable ASCII, space, `"` and `%`.
pub fn ce_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%' {
            out.push(b as char);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.extend(['%', char::from(HEX[usize::from(b >> 4)]), char::from(HEX[usize::from(b & 0x0f)])]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ce_values_are_percent_encoded_as_the_binding_says() {
        assert_eq!(ce_encode("/incident-bridge/sources/native"), "/incident-bridge/sources/native");
        assert_eq!(ce_encode("a b\"c%d"), "a%20b%22c%25d");
        assert_eq!(ce_encode("Žluť"), "%C5%BDlu%C5%A5");
    }

    fn result_with_everything() -> ResultEvent {
        use crate::{
            event::{Source, Transport},
            ids::{CorrelationKey, ItemId, LicensePlate},
            incident::Operation,
        };
        ResultEvent {
            id: "01JD1X4Y0ZKQ6N0M7W7E3H5T9B".into(),
            is_final: true,
            op: Operation::Add,
            license_plate: LicensePlate::generate(),
            item_id: Some(ItemId::new("IT-1")),
            key: CorrelationKey::new("am/abc"),
            source: Source {
                transport: Transport::Jetstream,
                name: "am".into(),
                subject: "alerts.js.am".into(),
                stream: Some("ALERTS".into()),
                stream_sequence: Some(7),
                stream_published_ms: Some(1),
            },
            attempts: 1,
            duration: Duration::from_millis(3),
            header: serde_json::value::RawValue::from_string(r#"{"isErr":false}"#.into()).unwrap(),
            is_err: false,
            // A value NATS cannot carry: left out, never sent broken.
            err_code: "line\r\nbreak".into(),
            finished_at: std::time::SystemTime::UNIX_EPOCH,
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
        }
    }

    /// A result sent at once is built into the client's map with `insert`: that is only the
    /// same message as the outbox's pairs while no name comes twice.
    #[test]
    fn a_result_names_each_header_once_and_leaves_out_what_nats_cannot_carry() {
        let e = result_with_everything();
        let pairs = result_header_pairs(&e, &e.traceparent);
        let names: std::collections::BTreeSet<&str> = pairs.iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), pairs.len(), "a name twice among {pairs:?}");
        assert!(
            names.contains("Incident-Bridge-Item-Id") && names.contains("Incident-Bridge-Source-Sequence")
        );
        assert!(!names.contains("Incident-Bridge-Err-Code"), "a value with a line break is left out");
        assert!(pairs.len() <= 24, "the capacity reserved covers every header: {}", pairs.len());
    }
}
