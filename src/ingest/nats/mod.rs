//! NATS ingest: core subscriptions (at-most-once, queue groups, request/reply) and durable
//! JetStream pull consumers (at-least-once). Both go in through the same [`Intake`] as HTTP.

pub mod config;
mod connect;
mod core;
mod jetstream;

use std::sync::Arc;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use connect::{COMPONENT, connect};

use self::config::NatsConfig;
use crate::intake::Intake;

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
/// `stop` fires; the replies and acks of what was submitted are sent from tasks on `tracker`
/// too, so waiting for it waits for them.
pub fn start(
    client: &async_nats::Client,
    config: &NatsConfig,
    intake: &Intake,
    stop: &CancellationToken,
    tracker: &TaskTracker,
) {
    let spec = |name: &str| Arc::clone(intake.sources().get(name).expect("validated source name"));
    for sub in &config.subscriptions {
        tracker.spawn(core::run(
            client.clone(),
            sub.clone(),
            spec(&sub.source),
            intake.clone(),
            stop.clone(),
            tracker.clone(),
        ));
    }
    for consumer in &config.consumers {
        let parts =
            jetstream::Parts { spec: spec(&consumer.source), intake: intake.clone(), acks: tracker.clone() };
        tracker.spawn(jetstream::run(client.clone(), consumer.clone(), parts, stop.clone()));
    }
}
