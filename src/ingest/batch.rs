//! One inbound message can carry several events (an Alertmanager notification with several
//! alerts); the transport answers for the message once, when every event has an outcome.
//! [`submit_all`] submits the events and calls `on_done` with all outcomes, in event order.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{FutureExt, future::BoxFuture};

use crate::{
    event::Event,
    pipeline::{Delivery, Job, Outcome, RetryCause, Runner, queue::SubmitError},
};

type OnDone = Box<dyn FnOnce(Vec<Outcome>) -> BoxFuture<'static, ()> + Send>;

struct Collector {
    outcomes: Vec<Option<Outcome>>,
    remaining: usize,
    on_done: Option<OnDone>,
}

/// Records outcome `index`; the last one to arrive hands all of them to `on_done`.
fn record(collector: &Mutex<Collector>, index: usize, outcome: Outcome) -> Option<(OnDone, Vec<Outcome>)> {
    let mut c = collector.lock().unwrap_or_else(|e| e.into_inner());
    if c.outcomes[index].replace(outcome).is_none() {
        c.remaining -= 1;
    }
    if c.remaining > 0 {
        return None;
    }
    let on_done = c.on_done.take()?;
    let outcomes = c.outcomes.iter_mut().filter_map(Option::take).collect();
    Some((on_done, outcomes))
}

/// Submits every event, waiting for room in the queue (`wait`) or refusing when full. Events
/// that could not be submitted count as `Retry`, so the message is offered again later. With
/// no events at all, `on_done` runs at once with no outcomes.
pub async fn submit_all<F>(runner: &Runner, events: Vec<Event>, delivery: Delivery, wait: bool, on_done: F)
where
    F: FnOnce(Vec<Outcome>) -> BoxFuture<'static, ()> + Send + 'static,
{
    if events.is_empty() {
        on_done(Vec::new()).await;
        return;
    }
    let collector = Arc::new(Mutex::new(Collector {
        outcomes: (0..events.len()).map(|_| None).collect(),
        remaining: events.len(),
        on_done: Some(Box::new(on_done)),
    }));
    for (index, event) in events.into_iter().enumerate() {
        let part = Arc::clone(&collector);
        let reply = Box::new(move |outcome: Outcome| match record(&part, index, outcome) {
            Some((on_done, outcomes)) => on_done(outcomes),
            None => async {}.boxed(),
        });
        let job = Job { event, delivery, reply: Some(reply) };
        let submitted = if wait { runner.submit(job).await } else { runner.try_submit(job) };
        if let Err((error, _job)) = submitted {
            let cause = match error {
                SubmitError::Full => RetryCause::Overloaded,
                SubmitError::Closed => RetryCause::ShuttingDown,
            };
            let outcome = Outcome::Retry { after: Duration::from_secs(1), cause };
            if let Some((on_done, outcomes)) = record(&collector, index, outcome) {
                on_done(outcomes).await;
            }
        }
    }
}
