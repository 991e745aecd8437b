//! NATS ingest: core subscriptions (at-most-once, queue groups, request/reply) and durable
//! JetStream pull consumers (at-least-once). Both decode with the same [`Decoder`]s as HTTP and
//! hand events to the same runner.

mod connect;
mod core;
mod jetstream;

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use connect::{COMPONENT, connect};

use super::source::Decoder;
use crate::{config::NatsConfig, pipeline::Runner, sources::Sources};

/// A consumer span per message (OpenTelemetry messaging conventions), continuing the
/// publisher's trace from the message's `traceparent` header.
fn consumer_span(subject: &str, headers: Option<&async_nats::HeaderMap>) -> tracing::Span {
    let span = tracing::info_span!(
        "receive",
        otel.name = %format!("process {subject}"),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = %subject,
    );
    crate::trace_context::continue_trace(&span, &crate::headers::pairs_from_nats(headers));
    span
}

/// Starts every configured subscription and consumer on `tracker`. They stop pulling when
/// `stop` fires; work already submitted finishes through the runner.
pub fn start(
    client: &async_nats::Client,
    config: &NatsConfig,
    sources: &Sources,
    runner: &Runner,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) {
    let decoder =
        |name: &str| Arc::new(Decoder::new(Arc::clone(sources.get(name).expect("validated source name"))));
    for sub in &config.subscriptions {
        let decoder = decoder(&sub.source);
        tracker.spawn(core::run(client.clone(), sub.clone(), decoder, runner.clone(), stop.clone()));
    }
    for consumer in &config.consumers {
        let decoder = decoder(&consumer.source);
        tracker.spawn(jetstream::run(
            client.clone(),
            consumer.clone(),
            decoder,
            runner.clone(),
            stop.clone(),
        ));
    }
}
