//! Runs the pipeline behind the keyed queue: the intake submits [`Job`]s, the queue orders them
//! per correlation key and bounds how many are pending, and each job's outcome goes back on its
//! own channel to whoever is waiting for it (a synchronous HTTP caller, a JetStream message to
//! ack); nobody waits for an asynchronous one.
//!
//! An alert notification queued behind another for the same key, with the same status, replaces
//! it: each states the whole current state, so only the newest needs to reach SCWM (an alert
//! storm's repeated edits coalesce into one). The replaced one is answered as a duplicate.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::oneshot;

use super::{
    Delivery, Outcome, Pipeline,
    queue::{Coalesce, KeyedQueue, SubmitError},
};
use crate::{
    event::{Event, EventKind},
    ids::CorrelationKey,
};

pub struct Job {
    pub event: Event,
    pub delivery: Delivery,
    /// Where the outcome goes once the pipeline has finished with the event.
    pub reply: Option<oneshot::Sender<Outcome>>,
}

#[derive(Clone)]
pub struct Runner {
    queue: KeyedQueue<CorrelationKey, Job>,
    pipeline: Arc<Pipeline>,
}

impl Runner {
    pub fn new(pipeline: Arc<Pipeline>, capacity: usize, workers: usize) -> Self {
        let worker_pipeline = Arc::clone(&pipeline);
        let coalesce = Coalesce { supersedes: Box::new(supersedes), retire: Box::new(retire) };
        let queue = KeyedQueue::with_coalescing(
            capacity,
            workers,
            move |job: Job| {
                let pipeline = Arc::clone(&worker_pipeline);
                async move {
                    let outcome = pipeline.process_one(&job.event, job.delivery).await;
                    if let Some(reply) = job.reply {
                        // The waiter may have given up (a timed-out HTTP caller); the outcome is
                        // logged and published either way.
                        let _ = reply.send(outcome);
                    }
                }
                .boxed()
            },
            coalesce,
        );
        Self { queue, pipeline }
    }

    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }

    /// Accepts the job if there is room now (HTTP: a full queue answers 503).
    pub fn try_submit(&self, job: Job) -> Result<(), (SubmitError, Box<Job>)> {
        self.queue.try_submit(job.event.key.clone(), job).map_err(|(e, job)| (e, Box::new(job)))
    }

    /// Accepts the job once there is room (NATS: stop pulling while full).
    pub async fn submit(&self, job: Job) -> Result<(), (SubmitError, Box<Job>)> {
        self.queue.submit(job.event.key.clone(), job).await.map_err(|(e, job)| (e, Box::new(job)))
    }

    pub fn depth(&self) -> usize {
        self.queue.depth()
    }

    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }

    pub fn close(&self) {
        self.queue.close();
    }

    pub async fn drained(&self) {
        self.queue.drained().await;
    }
}

/// Whether `newer` makes `older`, queued for the same key, pointless: both alerts of one source
/// saying the same status, and `newer` really the newer one.
fn supersedes(newer: &Job, older: &Job) -> bool {
    match (&newer.event.kind, &older.event.kind) {
        (EventKind::Alert(n), EventKind::Alert(o)) => {
            newer.event.source.name == older.event.source.name
                && n.target.status == o.target.status
                && comes_after(&newer.event.source, &older.event.source)
        }
        _ => false,
    }
}

/// Whether `newer` was sent after `older`. Queue order says so only when nothing orders them
/// better: a JetStream message delivered again after a replica died arrives after messages that
/// came later in the stream, so stream messages are ordered by their position (the sequence,
/// with the publish time agreeing, as the planner orders them), and a stream message is never
/// replaced by, nor replaces, one without a position.
fn comes_after(newer: &crate::event::Source, older: &crate::event::Source) -> bool {
    match (newer.stream_sequence, older.stream_sequence) {
        (None, None) => true,
        (Some(n), Some(o)) => {
            newer.stream == older.stream
                && o < n
                && older.stream_published_ms.unwrap_or(0) <= newer.stream_published_ms.unwrap_or(0)
        }
        _ => false,
    }
}

/// Answers a replaced job: a duplicate of the newer notification that runs instead.
fn retire(job: Job) {
    tracing::debug!(
        key = %job.event.key,
        license_plate = %job.event.license_plate,
        "a newer notification for this key replaced this queued one"
    );
    crate::observe::coalesced(&job.event.source.name);
    crate::observe::event_processed(&job.event.source.name, "duplicate");
    if let Some(reply) = job.reply {
        let _ = reply.send(Outcome::Duplicate {
            reason: "a newer notification for the same key was queued behind this one and is applied instead"
                .to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Source, Transport};

    fn at(sequence: Option<u64>, published_ms: u64) -> Source {
        Source {
            transport: if sequence.is_some() { Transport::Jetstream } else { Transport::Http },
            name: "am".into(),
            subject: "alerts".into(),
            stream: sequence.map(|_| "ALERTS".into()),
            stream_sequence: sequence,
            stream_published_ms: sequence.map(|_| published_ms),
        }
    }

    #[test]
    fn a_message_delivered_again_late_never_replaces_a_later_one() {
        // Queue order is all there is over HTTP.
        assert!(comes_after(&at(None, 0), &at(None, 0)));
        // A stream message redelivered after one that came later in the stream is older.
        assert!(!comes_after(&at(Some(3), 30), &at(Some(7), 70)));
        assert!(comes_after(&at(Some(7), 70), &at(Some(3), 30)));
        // A stream created again starts over: its sequence alone does not make it older.
        assert!(!comes_after(&at(Some(9), 10), &at(Some(2), 90)));
        // Nothing orders a stream message against one without a position.
        assert!(!comes_after(&at(Some(9), 90), &at(None, 0)));
        assert!(!comes_after(&at(None, 0), &at(Some(9), 90)));
    }
}
