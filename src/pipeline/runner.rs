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
/// saying the same status, and `newer` not from earlier in their stream. Queue order is arrival
/// order, and a redelivered stream message arrives after the ones published behind it: replacing
/// a later message with it would drop the later one, and the planner then (rightly) decides the
/// earlier one as late, so the key's last word would be lost.
fn supersedes(newer: &Job, older: &Job) -> bool {
    match (&newer.event.kind, &older.event.kind) {
        (EventKind::Alert(n), EventKind::Alert(o)) => {
            let earlier_in_stream = super::alert::position_of(&newer.event)
                .zip(super::alert::position_of(&older.event))
                .is_some_and(|(n, o)| n.is_before(&o));
            newer.event.source.name == older.event.source.name
                && n.target.status == o.target.status
                && !earlier_in_stream
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
    use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

    use super::*;
    use crate::{
        event::{Original, Source, Transport},
        intake::{Decoder, Inbound},
    };

    /// An Alertmanager notification for one alert, `status` "firing" or "resolved", as JetStream
    /// message `sequence` of stream ALERTS.
    fn job(sequence: u64, status: &str) -> Job {
        let text = "[sources.am]\nkind = \"alertmanager\"\n[[sources.am.auth]]\nscheme = \"bearer\"\n\
                    tokens = [\"t\"]\n[scwm]\nurl = \"http://127.0.0.1:1/incident\"\ntoken = \"x\"\nowner_id = \"O\"\n";
        let config = crate::config::load(text, &BTreeMap::new(), &|p| std::fs::read_to_string(p)).unwrap();
        let spec = Arc::clone(config.sources.get("am").unwrap());
        let body = serde_json::json!({
            "receiver": "r", "status": status, "version": "4", "groupKey": "g", "externalURL": "http://am",
            "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "truncatedAlerts": 0,
            "alerts": [{"status": status, "labels": {"alertname": "A"}, "annotations": {},
                "startsAt": "2026-11-28T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://p", "fingerprint": "00000000000000aa"}],
        });
        let inbound = Inbound {
            source: Source {
                transport: Transport::Jetstream,
                name: "am".into(),
                subject: "alerts.in".into(),
                stream: Some("ALERTS".into()),
                stream_sequence: Some(sequence),
                stream_published_ms: Some(1_000 + sequence),
            },
            original: Original { body: serde_json::to_vec(&body).unwrap().into(), headers: vec![] },
            received_at: SystemTime::now(),
            identity: None,
        };
        let decoder = Decoder::new(spec);
        let headers = vec![("authorization", "Bearer t")];
        let verified = decoder.verify(inbound, &headers, false).unwrap();
        let event = decoder.decode(&verified).unwrap().events.pop().unwrap();
        Job { event, delivery: Delivery { attempt: 1, last: false, redelivered: false }, reply: None }
    }

    #[test]
    fn a_redelivered_message_does_not_replace_a_later_one_of_its_stream() {
        assert!(supersedes(&job(5, "resolved"), &job(2, "resolved")), "the later message replaces");
        assert!(
            !supersedes(&job(2, "resolved"), &job(5, "resolved")),
            "an earlier one arriving late does not"
        );
        assert!(!supersedes(&job(5, "firing"), &job(2, "resolved")), "another status never replaces");
    }
}
