//! Runs the pipeline behind the keyed queue: ingest submits [`Job`]s, the queue orders them per
//! correlation key and bounds how many are pending, and each job's outcome goes back to whoever
//! is waiting for it (a synchronous HTTP caller, a JetStream message to ack).

use std::sync::Arc;

use futures::{FutureExt, future::BoxFuture};

use super::{
    Delivery, Outcome, Pipeline,
    queue::{KeyedQueue, SubmitError},
};
use crate::{event::Event, ids::CorrelationKey};

/// Receives a job's outcome once the pipeline has finished with it.
pub type Reply = Box<dyn FnOnce(Outcome) -> BoxFuture<'static, ()> + Send>;

pub struct Job {
    pub event: Event,
    pub delivery: Delivery,
    pub reply: Option<Reply>,
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
                    reply(outcome).await;
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
