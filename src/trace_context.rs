//! W3C Trace Context across the bridge: the remote parent is read from inbound HTTP and NATS
//! headers, and the current span's context is written into the SCWM request and the result
//! event, so one trace runs from the sender through SCWM to whoever reads the results.
//!
//! The OpenTelemetry propagator does the work when telemetry is initialised. [`TraceParent`]
//! is the fallback for an embedding that installs no tracing: it still continues the sender's
//! trace id on result events.

use std::{collections::HashMap, fmt};

use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::TraceContextExt,
};
use rand::RngCore;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Header pairs as a propagation carrier; names compare case-insensitively.
struct Pairs<'a>(&'a [(String, String)]);

impl Extractor for Pairs<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(n, _)| n.as_str()).collect()
    }
}

/// Makes the trace context of inbound headers (`traceparent`, `tracestate`) the parent of
/// `span`, when they carry a valid one.
pub fn continue_trace(span: &tracing::Span, headers: &[(String, String)]) {
    let parent = global::get_text_map_propagator(|p| p.extract(&Pairs(headers)));
    if parent.span().span_context().is_valid() {
        // Only fails when the span is already started elsewhere; a fresh span is not.
        let _ = span.set_parent(parent);
    }
}

/// Writes `span`'s context into HTTP request headers.
pub fn inject(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let cx = span.context();
    global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut opentelemetry_http::HeaderInjector(headers))
    });
}

struct MapInjector<'a>(&'a mut HashMap<String, String>);

impl Injector for MapInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

/// `span`'s context as header pairs (`traceparent`, maybe `tracestate`); empty when the span
/// has no valid context (no tracing installed).
pub fn headers_of(span: &tracing::Span) -> HashMap<String, String> {
    let cx = span.context();
    let mut out = HashMap::new();
    if cx.span().span_context().is_valid() {
        global::get_text_map_propagator(|p| p.inject_context(&cx, &mut MapInjector(&mut out)));
    }
    out
}

/// The trace id of `span`, for log lines, when it has a valid context.
pub fn trace_id_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses version 00 (and, as the spec asks, the first four fields of later versions).
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut fields = value.split('-');
        let version = fields.next()?;
        let trace = fields.next()?;
        let parent = fields.next()?;
        let flags = fields.next()?;
        let extra = fields.next();
        if version.len() != 2 || version == "ff" || (version == "00" && extra.is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = hex_array(trace)?;
        let parent_id: [u8; 8] = hex_array(parent)?;
        let [flags] = hex_array::<1>(flags)?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self { trace_id, parent_id, flags })
    }

    /// A new trace, sampled.
    pub fn new_root() -> Self {
        let mut rng = rand::rng();
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        while trace_id == [0; 16] {
            rng.fill_bytes(&mut trace_id);
        }
        while parent_id == [0; 8] {
            rng.fill_bytes(&mut parent_id);
        }
        Self { trace_id, parent_id, flags: 1 }
    }

    /// The same trace with a new span id: what a hop inside this trace passes on.
    pub fn child(&self) -> Self {
        let mut parent_id = [0u8; 8];
        while parent_id == [0; 8] {
            rand::rng().fill_bytes(&mut parent_id);
        }
        Self { parent_id, ..*self }
    }

    /// The child of an inbound `traceparent` when it is valid, else a new trace.
    pub fn continue_from(inbound: Option<&str>) -> Self {
        inbound.and_then(Self::parse).map(|t| t.child()).unwrap_or_else(Self::new_root)
    }

    pub fn trace_id_hex(&self) -> String {
        crate::ids::lower_hex(&self.trace_id)
    }
}

fn hex_array<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != N * 2 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{}-{}-{:02x}",
            crate::ids::lower_hex(&self.trace_id),
            crate::ids::lower_hex(&self.parent_id),
            self.flags
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn round_trips_the_spec_example() {
        let t = TraceParent::parse(SAMPLE).unwrap();
        assert_eq!(t.to_string(), SAMPLE);
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn refuses_invalid_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_child_keeps_the_trace_and_changes_the_span() {
        let t = TraceParent::parse(SAMPLE).unwrap();
        let c = TraceParent::continue_from(Some(SAMPLE));
        assert_eq!(c.trace_id, t.trace_id);
        assert_ne!(c.parent_id, t.parent_id);
        assert_ne!(TraceParent::continue_from(Some("garbage")).trace_id, t.trace_id);
    }
}
