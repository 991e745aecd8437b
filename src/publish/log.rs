//! The log sink: one structured line per result event, dead letter and drift event.

use futures::{FutureExt, future::BoxFuture};

use super::{DeadLetter, DriftEvent, FlapEvent, PublishError, ResultEvent, Sink};

#[derive(Debug, Default, Clone, Copy)]
pub struct LogSink;

impl Sink for LogSink {
    fn name(&self) -> &'static str {
        "log"
    }

    fn result<'a>(&'a self, e: &'a ResultEvent) -> BoxFuture<'a, Result<(), PublishError>> {
        tracing::info!(
            target: "incident_bridge::result",
            op = %e.op,
            license_plate = %e.license_plate,
            item_id = e.item_id.as_ref().map(|i| i.as_str()),
            key = %e.key,
            source = %e.source.name,
            transport = e.source.transport.as_str(),
            attempts = e.attempts,
            duration_ms = u64::try_from(e.duration.as_millis()).unwrap_or(u64::MAX),
            is_err = e.is_err,
            err_code = %e.err_code,
            header = %e.header.get(),
            "SCWM result"
        );
        async { Ok(()) }.boxed()
    }

    fn dead_letter<'a>(&'a self, d: &'a DeadLetter) -> BoxFuture<'a, Result<(), PublishError>> {
        // The pipeline already logged the failure as a warning where it handled it; this is
        // the dead-letter record itself.
        tracing::info!(
            target: "incident_bridge::dead_letter",
            op = d.op.map(|o| o.as_str()),
            license_plate = d.license_plate.as_ref().map(|l| l.as_str()),
            key = d.key.as_ref().map(|k| k.as_str()),
            source = %d.source.name,
            transport = d.source.transport.as_str(),
            reason_kind = d.reason_kind,
            reason = %d.reason,
            attempts = d.attempts,
            deliveries = d.deliveries,
            "dead letter"
        );
        async { Ok(()) }.boxed()
    }

    fn drift<'a>(&'a self, d: &'a DriftEvent) -> BoxFuture<'a, Result<(), PublishError>> {
        // The pipeline already logged the difference as a warning where it found it; this is
        // the drift event itself.
        tracing::info!(
            target: "incident_bridge::drift",
            kind = d.kind,
            key = %d.key,
            item_id = %d.item_id,
            expected = %d.expected,
            found = %d.found,
            source = d.source.as_deref(),
            detected_by = d.detected_by,
            "SCWM differs from the store"
        );
        async { Ok(()) }.boxed()
    }

    fn flap<'a>(&'a self, f: &'a FlapEvent) -> BoxFuture<'a, Result<(), PublishError>> {
        tracing::info!(
            target: "incident_bridge::flap",
            kind = f.kind,
            key = %f.key,
            item_id = f.item_id.as_ref().map(|i| i.as_str()),
            source = %f.source,
            cycles = i64::from(f.cycles),
            status = f.status,
            "flapping"
        );
        async { Ok(()) }.boxed()
    }
}
