//! Runs the pipeline behind the keyed queue: the intake submits [`Job`]s, the queue orders them
//! per correlation key and bounds how many are pending, and each job's outcome goes back on its
//! own channel to whoever is waiting for it (a synchronous HTTP caller, a JetStream message to
//! ack); nobody waits for an asynchronous one.

use std::sync::Arc;

use futures::FutureExt;
use tokio::sync::oneshot;

use super::{
    Delivery, Outcome, Pipeline,
    queue::{KeyedQueue, SubmitError},
};
use crate::{event::Event, ids::CorrelationKey};

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
        let queue = KeyedQueue::new(capacity, workers, move |job: Job| {
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
        });
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
