//! The bounded queue between ingest and the SCWM calls.
//!
//! Jobs with the same key run one after another in arrival order; jobs with different keys run
//! concurrently, up to `workers` at once. The total of accepted but unfinished jobs is capped at
//! `capacity`: [`KeyedQueue::try_submit`] refuses a job when full (HTTP answers 503) and
//! [`KeyedQueue::submit`] waits for room (a NATS consumer stops pulling). Memory therefore stays
//! bounded by `capacity` jobs whatever the offered load.
//!
//! Each key with pending jobs has one lane task that drains it; an idle key costs nothing.
//!
//! A queue built [`with_coalescing`](KeyedQueue::with_coalescing) lets a new job replace the job
//! queued last for its key when it says the same thing newer (an alert storm's repeated
//! notifications): the replaced job is retired, answered, and never runs. The job running now is
//! never replaced.

use std::{
    collections::{HashMap, VecDeque},
    hash::Hash,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex},
};

use futures::{FutureExt, future::BoxFuture};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio_util::task::TaskTracker;

/// Why a job was not accepted. The job is handed back so the caller can answer for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the queue is full")]
    Full,
    #[error("the queue is closed for shutdown")]
    Closed,
}

type Handler<J> = Arc<dyn Fn(J) -> BoxFuture<'static, ()> + Send + Sync>;

/// `(newer, older)`: whether the newer job makes the older one pointless.
pub type Supersedes<J> = Box<dyn Fn(&J, &J) -> bool + Send + Sync>;

/// When a newer job replaces an older one queued for the same key, and what becomes of the older.
pub struct Coalesce<J> {
    pub supersedes: Supersedes<J>,
    /// Answers for a job that was replaced and will not run.
    pub retire: Box<dyn Fn(J) + Send + Sync>,
}

pub struct KeyedQueue<K, J> {
    inner: Arc<Inner<K, J>>,
}

impl<K, J> Clone for KeyedQueue<K, J> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct Inner<K, J> {
    capacity: usize,
    /// One permit per accepted, unfinished job; it travels with the job and is released when the
    /// handler returns.
    room: Arc<Semaphore>,
    workers: Arc<Semaphore>,
    lanes: Mutex<HashMap<K, VecDeque<Queued<J>>>>,
    handler: Handler<J>,
    coalesce: Option<Coalesce<J>>,
    tracker: TaskTracker,
}

struct Queued<J> {
    job: J,
    room: OwnedSemaphorePermit,
}

impl<K, J> KeyedQueue<K, J>
where
    K: Eq + Hash + Clone + Send + std::fmt::Debug + 'static,
    J: Send + 'static,
{
    pub fn new<F>(capacity: usize, workers: usize, handler: F) -> Self
    where
        F: Fn(J) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        Self::build(capacity, workers, handler, None)
    }

    /// A queue in which a new job may replace the one queued last for its key.
    pub fn with_coalescing<F>(capacity: usize, workers: usize, handler: F, coalesce: Coalesce<J>) -> Self
    where
        F: Fn(J) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        Self::build(capacity, workers, handler, Some(coalesce))
    }

    fn build<F>(capacity: usize, workers: usize, handler: F, coalesce: Option<Coalesce<J>>) -> Self
    where
        F: Fn(J) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        Self {
            inner: Arc::new(Inner {
                capacity,
                room: Arc::new(Semaphore::new(capacity)),
                workers: Arc::new(Semaphore::new(workers)),
                lanes: Mutex::new(HashMap::new()),
                handler: Arc::new(handler),
                coalesce,
                tracker: TaskTracker::new(),
            }),
        }
    }

    /// Accepts the job if there is room now.
    pub fn try_submit(&self, key: K, job: J) -> Result<(), (SubmitError, J)> {
        match Arc::clone(&self.inner.room).try_acquire_owned() {
            Ok(room) => {
                self.enqueue(key, Queued { job, room });
                Ok(())
            }
            Err(TryAcquireError::NoPermits) => Err((SubmitError::Full, job)),
            Err(TryAcquireError::Closed) => Err((SubmitError::Closed, job)),
        }
    }

    /// Accepts the job, waiting for room.
    pub async fn submit(&self, key: K, job: J) -> Result<(), (SubmitError, J)> {
        match Arc::clone(&self.inner.room).acquire_owned().await {
            Ok(room) => {
                self.enqueue(key, Queued { job, room });
                Ok(())
            }
            Err(_) => Err((SubmitError::Closed, job)),
        }
    }

    /// Accepted jobs that have not finished (queued or running).
    pub fn depth(&self) -> usize {
        self.inner.capacity - self.inner.room.available_permits()
    }

    pub fn capacity(&self) -> usize {
        self.inner.capacity
    }

    /// Refuses new jobs from now on; accepted ones still run.
    pub fn close(&self) {
        self.inner.room.close();
    }

    /// Waits until every accepted job has finished. Call after [`close`](Self::close).
    pub async fn drained(&self) {
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }

    fn enqueue(&self, key: K, queued: Queued<J>) {
        let mut lanes = self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(lane) = lanes.get_mut(&key) {
            let replaced = match (&self.inner.coalesce, lane.back()) {
                (Some(c), Some(last)) if (c.supersedes)(&queued.job, &last.job) => lane.pop_back(),
                _ => None,
            };
            lane.push_back(queued);
            drop(lanes);
            if let (Some(c), Some(old)) = (&self.inner.coalesce, replaced) {
                (c.retire)(old.job);
                drop(old.room);
            }
            return;
        }
        lanes.insert(key.clone(), VecDeque::new());
        drop(lanes);
        self.inner.tracker.spawn(run_lane(Arc::clone(&self.inner), key, queued));
    }
}

/// Runs the jobs of one key in order until its lane is empty, then removes the lane. The lane
/// entry exists exactly while this task runs, which is what keeps the key's jobs sequential.
async fn run_lane<K, J>(inner: Arc<Inner<K, J>>, key: K, first: Queued<J>)
where
    K: Eq + Hash + std::fmt::Debug,
{
    let mut next = first;
    loop {
        let Queued { job, room } = next;
        {
            // A worker permit per job, not per lane, so a busy key cannot starve the others.
            let _worker = inner.workers.acquire().await;
            // A panicking handler must not leave the key's lane stuck forever.
            if AssertUnwindSafe((inner.handler)(job)).catch_unwind().await.is_err() {
                tracing::error!(key = ?key, "job handler panicked; continuing with the key's next job");
            }
        }
        drop(room);
        let mut lanes = inner.lanes.lock().unwrap_or_else(|e| e.into_inner());
        match lanes.get_mut(&key).and_then(VecDeque::pop_front) {
            Some(queued) => next = queued,
            None => {
                lanes.remove(&key);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use tokio::sync::{Notify, mpsc};

    use super::*;

    type Recorded = (KeyedQueue<u32, (u32, u32)>, mpsc::UnboundedReceiver<(u32, u32)>);

    /// A queue whose jobs `(key, n)` report themselves in the order they run; a job with
    /// `n == u32::MAX` waits for `gate` first.
    fn recorder(workers: usize, capacity: usize, gate: Arc<Notify>) -> Recorded {
        let (tx, rx) = mpsc::unbounded_channel();
        let q = KeyedQueue::new(capacity, workers, move |job: (u32, u32)| {
            let tx = tx.clone();
            let gate = Arc::clone(&gate);
            async move {
                if job.1 == u32::MAX {
                    gate.notified().await;
                }
                tx.send(job).unwrap();
            }
            .boxed()
        });
        (q, rx)
    }

    #[tokio::test]
    async fn jobs_of_one_key_run_in_submission_order_while_keys_interleave() {
        let (q, mut rx) = recorder(4, 10_000, Arc::new(Notify::new()));
        for i in 0..1000 {
            q.try_submit(i % 10, (i % 10, i)).unwrap();
        }
        let mut seen: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
        for _ in 0..1000 {
            let (k, i) = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
            seen.entry(k).or_default().push(i);
        }
        for (k, order) in seen {
            let expected: Vec<u32> = (0..100).map(|n| n * 10 + k).collect();
            assert_eq!(order, expected, "key {k}");
        }
        q.close();
        q.drained().await;
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_frees_room_as_jobs_finish() {
        let gate = Arc::new(Notify::new());
        let (q, mut rx) = recorder(1, 2, Arc::clone(&gate));
        q.try_submit(1, (1, u32::MAX)).unwrap();
        q.try_submit(2, (2, 0)).unwrap();
        assert_eq!(q.try_submit(3, (3, 0)).unwrap_err().0, SubmitError::Full);
        assert_eq!(q.depth(), 2);
        gate.notify_one();
        for _ in 0..2 {
            tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap();
        }
        // Room is released when the handler returns, just after the send above.
        tokio::time::timeout(Duration::from_secs(5), async {
            while q.try_submit(3, (3, 0)).is_err() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_closed_queue_refuses_new_jobs_and_drains_accepted_ones() {
        let gate = Arc::new(Notify::new());
        let (q, mut rx) = recorder(2, 10, Arc::clone(&gate));
        q.try_submit(1, (1, u32::MAX)).unwrap();
        q.close();
        assert_eq!(q.try_submit(2, (2, 0)).unwrap_err().0, SubmitError::Closed);
        assert_eq!(q.submit(2, (2, 0)).await.unwrap_err().0, SubmitError::Closed);
        let drained = tokio::spawn({
            let q = q.clone();
            async move { q.drained().await }
        });
        gate.notify_one();
        tokio::time::timeout(Duration::from_secs(5), drained).await.unwrap().unwrap();
        assert_eq!(rx.recv().await, Some((1, u32::MAX)));
    }

    #[tokio::test]
    async fn a_newer_job_replaces_the_one_queued_last_for_its_key_but_never_the_running_one() {
        let gate = Arc::new(Notify::new());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (retired_tx, mut retired) = mpsc::unbounded_channel();
        let handler_gate = Arc::clone(&gate);
        // Jobs (key, n, kind): the same kind supersedes; kind 9 waits for the gate.
        let q = KeyedQueue::with_coalescing(
            10,
            2,
            move |job: (u32, u32, u8)| {
                let (tx, gate) = (tx.clone(), Arc::clone(&handler_gate));
                async move {
                    if job.2 == 9 {
                        gate.notified().await;
                    }
                    tx.send(job.1).unwrap();
                }
                .boxed()
            },
            Coalesce {
                supersedes: Box::new(|newer: &(u32, u32, u8), older: &(u32, u32, u8)| newer.2 == older.2),
                retire: Box::new(move |old: (u32, u32, u8)| retired_tx.send(old.1).unwrap()),
            },
        );
        q.try_submit(1, (1, 0, 9)).unwrap(); // runs, held at the gate
        tokio::task::yield_now().await;
        q.try_submit(1, (1, 1, 9)).unwrap(); // the running one is never replaced: queued
        q.try_submit(1, (1, 2, 1)).unwrap();
        q.try_submit(1, (1, 3, 1)).unwrap(); // replaces 2
        q.try_submit(1, (1, 4, 2)).unwrap(); // another kind: queued behind 3
        q.try_submit(1, (1, 5, 2)).unwrap(); // replaces 4
        q.try_submit(2, (2, 6, 2)).unwrap(); // another key: untouched
        assert_eq!(q.depth(), 5, "the replaced jobs' room is free again");
        gate.notify_one();
        tokio::task::yield_now().await;
        gate.notify_one();
        let mut ran = Vec::new();
        for _ in 0..5 {
            ran.push(tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap().unwrap());
        }
        ran.sort_unstable();
        assert_eq!(ran, vec![0, 1, 3, 5, 6]);
        assert_eq!(retired.recv().await, Some(2));
        assert_eq!(retired.recv().await, Some(4));
    }

    #[tokio::test]
    async fn a_panicking_job_does_not_block_its_key() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let q = KeyedQueue::new(10, 2, move |n: u32| {
            let tx = tx.clone();
            async move {
                assert_ne!(n, 0, "job zero panics on purpose");
                tx.send(n).unwrap();
            }
            .boxed()
        });
        q.try_submit("k", 0).unwrap();
        q.try_submit("k", 1).unwrap();
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await.unwrap();
        assert_eq!(got, Some(1));
    }
}
