//! Core NATS subscriptions: at-most-once delivery shared across replicas by a queue group.
//! A message with a reply subject gets SCWM's answer back (request/reply); the requester owns
//! retrying, so a transient failure is answered, not dead-lettered.

use std::{sync::Arc, time::SystemTime};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::Instrument;

use super::config::SubscriptionConfig;
use crate::{
    event::{Original, Source, Transport},
    headers::{pairs_from_nats, to_nats_headers, without_credentials},
    ingest::http::status,
    intake::{Answer, Decoder, DeliveryKey, Identity, Inbound, Intake, Recall, Room, Unreadable},
    pipeline::{Delivery, Outcome},
    sources::SourceSpec,
};

pub async fn run(
    client: async_nats::Client,
    config: SubscriptionConfig,
    spec: Arc<SourceSpec>,
    intake: Intake,
    stop: CancellationToken,
    replies: TaskTracker,
) {
    let mut sub = match client.queue_subscribe(config.subject.clone(), config.queue_group.clone()).await {
        Ok(sub) => sub,
        Err(e) => {
            // Only a closed client fails here; the connection itself reconnects on its own.
            tracing::error!(subject = %config.subject, error = %e, "cannot subscribe");
            return;
        }
    };
    tracing::info!(subject = %config.subject, queue_group = %config.queue_group, "subscribed");
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = sub.next() => match msg {
                Some(msg) => msg,
                None => break,
            },
        };
        let span = super::consumer_span(&msg.subject, msg.headers.as_ref());
        handle(&client, &config, &spec, &intake, &replies, msg).instrument(span).await;
    }
    if let Err(e) = sub.unsubscribe().await {
        tracing::debug!(subject = %config.subject, error = %e, "unsubscribe failed");
    }
}

async fn handle(
    client: &async_nats::Client,
    config: &SubscriptionConfig,
    spec: &Arc<SourceSpec>,
    intake: &Intake,
    replies: &TaskTracker,
    msg: async_nats::Message,
) {
    // Verification reads the headers as received; what travels on (into events and dead
    // letters) never holds credentials.
    let received = pairs_from_nats(msg.headers.as_ref());
    let original =
        Original { body: msg.payload.clone(), headers: without_credentials(received.iter().cloned()) };
    // A sender that sets an idempotency key (or a message id) gets the same licensePlate when it
    // sends again, so SCWM sees a repeat, and the original answer. The two are kept apart: the
    // same text as an `Idempotency-Key` and as a `Nats-Msg-Id` names two deliveries.
    let named = match (original.header("idempotency-key"), original.header("nats-msg-id")) {
        (Some(key), _) => Some(("nats-idempotency-key", key.to_owned())),
        (None, Some(id)) => Some(("nats-msg-id", id.to_owned())),
        (None, None) => None,
    };
    let identity = named.as_ref().map(|(namespace, id)| Identity {
        time_ms: 0,
        seed: format!("nats:{}:{namespace}:{id}", config.source),
    });
    let key = named.map(|(namespace, id)| DeliveryKey {
        namespace,
        source: config.source.clone(),
        sender: String::new(),
        id,
    });
    let inbound = Inbound {
        source: Source {
            transport: Transport::Nats,
            name: config.source.clone(),
            subject: msg.subject.to_string(),
            stream: None,
            stream_sequence: None,
            stream_published_ms: None,
        },
        original,
        received_at: SystemTime::now(),
        identity,
    };
    let reply = msg.reply.clone();
    let (source, original) = (inbound.source.clone(), inbound.original.clone());
    let op = Decoder::new(Arc::clone(spec)).operation_hint(&inbound);
    let read = match intake.read(spec, inbound, &received, true, key) {
        Ok(read) => read,
        Err(e) => {
            let published = intake.reject_message(&source, &original, op, e.reason(), 1).await;
            if let Err(pe) = published {
                tracing::error!(error = %pe, "dead letter could not be published; the message is lost to core NATS");
            }
            if let Some(reply) = reply {
                let status = if matches!(e, Unreadable::Unauthenticated(_)) { 401 } else { 422 };
                let body = json!({"status": status, "title": "Message refused", "detail": e.to_string()});
                respond(client, reply, status, Bytes::from(body.to_string())).await;
            }
            return;
        }
    };
    let claim = match intake.recall(&read, std::time::Instant::now()) {
        Recall::New(claim) => claim,
        seen => {
            // A repeat: answered from memory, or told to come back, never handled twice.
            tracing::debug!(subject = %source.subject, ?seen, "a repeated delivery");
            if let Some(reply) = reply {
                let (status, body) = repeat_reply(seen);
                respond(client, reply, status, body).await;
            }
            return;
        }
    };
    let delivery = if reply.is_some() { Delivery::SENDER_RETRIES } else { Delivery::ONLY };
    let tickets = intake.submit(read, delivery, Room::Wait).await;
    // The next message is read while this one's events run; its reply goes out when they end.
    let client = client.clone();
    replies.spawn(
        async move {
            // The requester is told to try again: its retry of this message is not a replay.
            let sent_again =
                |outcomes: &[Outcome]| outcomes.iter().any(|o| matches!(o, Outcome::Retry { .. }));
            let answered = tickets.outcomes(None, sent_again).await;
            let (status, body) = match answered {
                Ok(outcomes) => {
                    let (status, body) = reply_body(outcomes);
                    // A retry is not remembered: the resend is handled afresh.
                    if let Some(claim) = claim
                        && status < 500
                    {
                        let answer = Answer { status, content_type: "application/json", body: body.clone() };
                        claim.finish(answer, std::time::Instant::now());
                    }
                    (status, body)
                }
                // The grace is over: the requester hears so rather than wait for a reply that
                // would never come.
                Err(_) => (
                    503,
                    Bytes::from(
                        json!({"status": 503, "title": "Shutting down", "detail": "send the request again"})
                            .to_string(),
                    ),
                ),
            };
            if let Some(reply) = reply {
                respond(&client, reply, status, body).await;
            }
        }
        .in_current_span(),
    );
}

/// The reply to a repeated delivery: its first reply again, or come back later, or a refusal
/// of a key used for another request.
fn repeat_reply(seen: Recall) -> (u16, Bytes) {
    let problem = |status: u16, title: &str, detail: &str| {
        (status, Bytes::from(json!({"status": status, "title": title, "detail": detail}).to_string()))
    };
    match seen {
        Recall::Done(answer) => (answer.status, answer.body),
        Recall::InFlight { .. } => {
            problem(503, "Delivery in flight", "the first copy is still being handled")
        }
        Recall::Mismatch => problem(422, "Key reused", "this key was first sent with another request"),
        Recall::New(_) => problem(500, "Internal error", "a new delivery is not a repeat"),
    }
}

/// The reply to a request: SCWM's envelope for a single command, else a summary.
fn reply_body(mut outcomes: Vec<Outcome>) -> (u16, Bytes) {
    if outcomes.len() == 1 {
        match outcomes.pop() {
            Some(Outcome::Done(done)) if done.envelope.is_some() => {
                return (200, done.envelope.as_ref().map(|e| e.body().clone()).unwrap_or_default());
            }
            Some(Outcome::Reject(r)) if r.envelope.is_some() => {
                let status = status::of_rejection(&r);
                return (status, r.envelope.as_ref().map(|e| e.body().clone()).unwrap_or_default());
            }
            Some(other) => outcomes.push(other),
            None => {}
        }
    }
    let summary: Vec<_> = outcomes.iter().map(status::summary).collect();
    let status = outcomes.iter().map(status::of).max().unwrap_or(200);
    (status, Bytes::from(json!({"outcomes": summary}).to_string()))
}

async fn respond(client: &async_nats::Client, reply: async_nats::Subject, status: u16, body: Bytes) {
    let status = status.to_string();
    let headers =
        to_nats_headers([("Incident-Bridge-Status", status.as_str()), ("Content-Type", "application/json")]);
    if let Err(e) = client.publish_with_headers(reply, headers, body).await {
        tracing::warn!(error = %e, "reply could not be sent");
    }
}
