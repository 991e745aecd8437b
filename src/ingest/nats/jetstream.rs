//! JetStream pull consumers: at-least-once delivery. A message is acknowledged only after
//! every event it carries reached SCWM (or was dead-lettered); a transient failure naks it with
//! the pipeline's retry delay; a message that can never succeed is dead-lettered and then
//! terminated so the server stops offering it. Long SCWM calls send in-progress acks so the
//! server does not redeliver work that is still running.
//!
//! Messages reach the runner one at a time, in stream order, each waiting for room in its queue;
//! the ones behind it are already delivered to this bridge, so every message is kept in progress
//! from the moment it arrives. Otherwise the server would deliver a message that is only waiting
//! its turn again after `ack_wait`, and the work would be done twice.
//!
//! While SCWM's circuit is open, messages are not handed on (and events already running wait for
//! the circuit rather than fail), so an outage never spends `max_deliver`.
//!
//! Consuming restarts by itself (with backoff) when the stream, the consumer or the server goes
//! away, so work resumes after a NATS restart without intervention.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{AckPolicy, PullConsumer, pull, pull::MessagesErrorKind},
    message::Acker,
    stream,
};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::config::ConsumerConfig;
use crate::{
    event::{Original, Source, Transport},
    headers::{pairs_from_nats, without_credentials},
    intake::{Decoder, Identity, Inbound, Intake, Room},
    pipeline::{Delivery, Outcome},
    sources::SourceSpec,
};

/// Messages fetched per pull request; the runner's queue bounds what is actually in flight.
const MAX_BATCH: i64 = 256;

/// What the consumer works with: the source that reads its messages, the way in, and where
/// each message's wait for its outcome runs.
#[derive(Clone)]
pub struct Parts {
    pub spec: Arc<SourceSpec>,
    pub intake: Intake,
    /// The acks are sent from tasks on this tracker, which shutdown waits for.
    pub acks: TaskTracker,
}

pub async fn run(client: async_nats::Client, config: ConsumerConfig, parts: Parts, stop: CancellationToken) {
    // Shared by every message's in-progress acks, which are built only when one is due.
    let js = Arc::new(jetstream::new(client));
    let mut failures: u32 = 0;
    loop {
        match consume(&js, &config, &parts, &stop, &mut failures).await {
            Ok(()) => return,
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = Duration::from_millis(200u64.saturating_mul(1 << failures.min(5)).min(5_000));
                tracing::warn!(stream = %config.stream, consumer = %config.durable, error = %e, retry_in = ?delay, "JetStream consumer interrupted");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
}

async fn consumer(
    js: &jetstream::Context,
    config: &ConsumerConfig,
) -> Result<PullConsumer, async_nats::Error> {
    if !config.create {
        let stream = js.get_stream(&config.stream).await?;
        return stream.get_consumer(&config.durable).await;
    }
    let stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: config.stream_subjects.clone(),
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    Ok(stream
        .get_or_create_consumer(
            &config.durable,
            pull::Config {
                durable_name: Some(config.durable.clone()),
                filter_subject: config.filter_subject.clone().unwrap_or_default(),
                ack_policy: AckPolicy::Explicit,
                ack_wait: config.ack_wait,
                max_deliver: config.max_deliver,
                max_ack_pending: config.max_ack_pending,
                ..Default::default()
            },
        )
        .await?)
}

async fn consume(
    js: &Arc<jetstream::Context>,
    config: &ConsumerConfig,
    parts: &Parts,
    stop: &CancellationToken,
    failures: &mut u32,
) -> Result<(), async_nats::Error> {
    let consumer = consumer(js, config).await?;
    let batch = usize::try_from(config.max_ack_pending.clamp(1, MAX_BATCH)).unwrap_or(1);
    let mut messages = consumer.stream().max_messages_per_batch(batch).messages().await?;
    tracing::info!(stream = %config.stream, consumer = %config.durable, "consuming");
    // The server delivers at most max_ack_pending unacknowledged messages, so a channel that
    // size never makes this loop wait, and it bounds what is held here.
    let (arrived_tx, arrived_rx) = mpsc::channel(usize::try_from(config.max_ack_pending).unwrap_or(1).max(1));
    let halt = stop.child_token();
    let submitter = tokio::spawn(submit_in_order(config.clone(), parts.clone(), arrived_rx, halt.clone()));
    let ended = loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break Ok(()),
            next = messages.next() => next,
        };
        match next {
            None => break Err("the message stream ended".into()),
            // Heartbeats go missing while the server is away; the stream carries on after.
            Some(Err(e)) if e.kind() == MessagesErrorKind::MissingHeartbeat => {
                tracing::debug!(stream = %config.stream, "missed a JetStream heartbeat");
            }
            Some(Err(e)) => break Err(e.into()),
            Some(Ok(msg)) => {
                *failures = 0;
                let (settle, settled_by) = oneshot::channel();
                parts.acks.spawn(watch(Arc::clone(js), msg.reply.clone(), config.ack_wait, settled_by));
                if arrived_tx.send(Arrived { msg, settle }).await.is_err() {
                    break Ok(());
                }
            }
        }
    };
    // The message being handed on finishes; those still waiting are dropped unacknowledged (their
    // in-progress acks stop), so the server delivers them again, here or to another replica.
    halt.cancel();
    drop(arrived_tx);
    if let Err(e) = submitter.await {
        tracing::error!(error = %e, "the JetStream submitter failed");
    }
    ended
}

/// A message delivered to this bridge and not yet handed to the runner.
struct Arrived {
    msg: jetstream::Message,
    /// Takes what settles the message (waits for its events' outcomes and acks it), which its
    /// [`watch`] runs; dropped, the message is left unsettled and its in-progress acks end.
    settle: oneshot::Sender<Settle>,
}

/// What settles one message once it is handed on.
type Settle = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Hands arrived messages to the runner one at a time, in the order they arrived, until
/// `halt` or the channel closes.
async fn submit_in_order(
    config: ConsumerConfig,
    parts: Parts,
    mut arrived: mpsc::Receiver<Arrived>,
    halt: CancellationToken,
) {
    loop {
        let next = tokio::select! {
            biased;
            _ = halt.cancelled() => return,
            next = arrived.recv() => next,
        };
        let Some(Arrived { msg, settle }) = next else { return };
        if !circuit_closes(&parts, &halt).await {
            return;
        }
        let span = super::consumer_span(&msg.subject, msg.headers.as_ref());
        handle(&config, &parts, msg, settle).instrument(span).await;
    }
}

/// Waits while SCWM's circuit is open: nothing is handed on meanwhile, so no delivery is spent
/// on an outage. The messages already here keep their in-progress acks, and once
/// `max_ack_pending` are here the server stops delivering more. False when `halt` fired first.
async fn circuit_closes(parts: &Parts, halt: &CancellationToken) -> bool {
    let scwm = parts.intake.runner().pipeline().scwm();
    let mut said = false;
    while let Some(remaining) = scwm.circuit_open_for() {
        if !said {
            said = true;
            tracing::info!(
                wait_ms = remaining.as_millis() as u64,
                "SCWM circuit is open; holding JetStream messages"
            );
        }
        tokio::select! {
            () = halt.cancelled() => return false,
            () = tokio::time::sleep(remaining) => {}
        }
    }
    true
}

async fn handle(
    config: &ConsumerConfig,
    parts: &Parts,
    msg: jetstream::Message,
    settle: oneshot::Sender<Settle>,
) {
    let Ok(info) = msg.info() else {
        tracing::error!(subject = %msg.subject, "a JetStream message without delivery info; skipping it");
        return;
    };
    let (stream, sequence, delivered) = (info.stream.to_owned(), info.stream_sequence, info.delivered);
    let published_ms = u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let (message, acker) = msg.split();
    let delivered = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
    // Verification reads the headers as received; what travels on (into events and dead
    // letters) never holds credentials.
    let received = pairs_from_nats(message.headers.as_ref());
    let inbound = Inbound {
        source: Source {
            transport: Transport::Jetstream,
            name: config.source.clone(),
            subject: message.subject.to_string(),
            stream: Some(stream.clone()),
            stream_sequence: Some(sequence),
            stream_published_ms: (published_ms > 0).then_some(published_ms),
        },
        original: Original {
            body: message.payload.clone(),
            headers: without_credentials(received.iter().cloned()),
        },
        received_at: SystemTime::now(),
        identity: Some(Identity {
            time_ms: if published_ms > 0 { published_ms } else { now_ms() },
            seed: format!("js:{stream}:{sequence}"),
        }),
    };
    let last = i64::from(delivered) >= config.max_deliver;
    if delivered > 1 {
        crate::observe::redelivery(&stream);
    }

    let intake = &parts.intake;
    let (source, original) = (inbound.source.clone(), inbound.original.clone());
    let op = Decoder::new(Arc::clone(&parts.spec)).operation_hint(&inbound);
    // JetStream names its own deliveries (stream and sequence) and redelivers them itself.
    let read = match intake.read(&parts.spec, inbound, &received, true, None) {
        Ok(read) => read,
        Err(e) => {
            let ack = match intake.reject_message(&source, &original, op, e.reason(), delivered).await {
                Ok(()) => AckKind::Term,
                Err(pe) => {
                    tracing::error!(error = %pe, "dead letter could not be published; the message will come again");
                    AckKind::Nak(Some(Duration::from_secs(1)))
                }
            };
            send_ack(&acker, ack, last).await;
            return;
        }
    };

    let delivery = Delivery { attempt: delivered, last, redelivered: true };
    let tickets = intake.submit(read, delivery, Room::Wait).await;
    // The next message is handed on while this one's events run; its ack goes out when they end.
    let intake = intake.clone();
    let settling: Settle = Box::pin(
        async move {
            // JetStream delivers a nakked message again (unless this was its last delivery):
            // that is not a replay.
            let sent_again = |outcomes: &[Outcome]| !last && matches!(ack_for(outcomes), AckKind::Nak(_));
            let Ok(outcomes) = tickets.outcomes(None, sent_again).await else { return };
            let mut ack = ack_for(&outcomes);
            // The server will not offer the message again: what still wanted a retry (a busy
            // key, the store or a sink down) becomes a dead letter rather than vanish.
            if last && let AckKind::Nak(_) = ack {
                let causes: Vec<String> = outcomes
                    .iter()
                    .filter_map(|o| match o {
                        Outcome::Retry { cause, .. } => Some(cause.to_string()),
                        _ => None,
                    })
                    .collect();
                let reason =
                    ("deliveries_exhausted", format!("last delivery still failing: {}", causes.join("; ")));
                ack = match intake.reject_message(&source, &original, op, reason, delivered).await {
                    Ok(()) => AckKind::Term,
                    Err(_) => ack,
                };
            }
            send_ack(&acker, ack, last).await;
        }
        .in_current_span(),
    );
    // Its watch runs it, keeping the message in progress meanwhile; should the watch be gone,
    // the ack is still sent.
    if let Err(settling) = settle.send(settling) {
        parts.acks.spawn(settling);
    }
}

/// What the server hears about a message once all its events have outcomes.
fn ack_for(outcomes: &[Outcome]) -> AckKind {
    let retry_after = Outcome::longest_retry(outcomes);
    match retry_after {
        Some(after) => AckKind::Nak(Some(after)),
        None if !outcomes.is_empty() && outcomes.iter().all(|o| matches!(o, Outcome::Reject(_))) => {
            AckKind::Term
        }
        None => AckKind::Ack,
    }
}

async fn send_ack(acker: &Acker, ack: AckKind, last: bool) {
    if last && matches!(ack, AckKind::Nak(_)) {
        // The server will not deliver it again; the log is all that is left of it.
        tracing::error!("a message used its last delivery without finishing or being dead-lettered");
    }
    if let Err(e) = acker.ack_with(ack).await {
        // The server redelivers an unacknowledged message after ack_wait; the licensePlate is
        // derived from the stream sequence, so SCWM sees the repeat as the same request.
        tracing::warn!(error = %e, "acknowledgement failed; the message will be redelivered");
    }
}

/// Keeps one message in progress, telling the server every half `ack_wait` that it is still
/// being worked on: while it waits its turn, then while what `settle` hands over runs (its
/// events, then its ack). One task per message for both, spawned when it arrives; the ack for
/// a progress report is only built when one is due, as most messages finish first. Ends
/// without settling when `settle`'s sender is dropped (the message comes again).
async fn watch(
    js: Arc<jetstream::Context>,
    reply: Option<async_nats::Subject>,
    ack_wait: Duration,
    settle: oneshot::Receiver<Settle>,
) {
    let mut ticker = tokio::time::interval(ack_wait / 2);
    ticker.tick().await;
    let progress = || async {
        let acker = Acker::new(jetstream::Context::clone(&js), reply.clone());
        if let Err(e) = acker.ack_with(AckKind::Progress).await {
            tracing::debug!(error = %e, "in-progress ack failed");
        }
    };
    tokio::pin!(settle);
    let mut settling = loop {
        tokio::select! {
            handed = &mut settle => match handed {
                Ok(settling) => break settling,
                Err(_) => return,
            },
            _ = ticker.tick() => progress().await,
        }
    };
    loop {
        tokio::select! {
            () = &mut settling => return,
            _ = ticker.tick() => progress().await,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::RetryCause;

    fn retry(secs: u64) -> Outcome {
        Outcome::Retry { after: Duration::from_secs(secs), cause: RetryCause::ShuttingDown }
    }

    #[test]
    fn any_retry_naks_with_the_longest_delay() {
        let outcomes = [retry(1), Outcome::Duplicate { reason: "x".into() }, retry(3)];
        assert!(matches!(ack_for(&outcomes), AckKind::Nak(Some(d)) if d == Duration::from_secs(3)));
    }

    #[test]
    fn finished_outcomes_ack_and_an_empty_message_acks() {
        assert!(matches!(ack_for(&[Outcome::Duplicate { reason: "x".into() }]), AckKind::Ack));
        assert!(matches!(ack_for(&[]), AckKind::Ack));
    }
}
