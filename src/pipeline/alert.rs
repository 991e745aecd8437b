//! Alert events: the lifecycle, the correlation store and SCWM meet here.
//!
//! Per key the store holds a [`Record`]: the incident the key maps to (`stored`) and, while
//! operations are under way, the intent (`pending`): which operations, with which payloads and
//! licensePlates, and which of them are done. The protocol:
//!
//! 1. Read the record. A pending intent from an earlier attempt (this process, or a replica
//!    that stopped renewing its claim within `claim_ttl`) is finished first, with its own
//!    licensePlates, so a crash between the SCWM call and the store write cannot swallow it or
//!    make SCWM act twice. A fresh claim by another replica means "busy": retry later.
//! 2. Decide with [`lifecycle::decide`]; nothing to do ends here (repeat notifications).
//! 3. Render every payload first (a template error must not leave a decision half done), then
//!    claim the key: write the intent with compare-and-swap. Two replicas can never both claim
//!    the key from the same revision, so they can never both add an incident for it.
//! 4. Call SCWM step by step, recording progress; at the end write the new mapping and clear
//!    the intent (compare-and-swap again).
//!
//! When SCWM answers 404 for an item the store maps, the mapping is dropped and the decision is
//! made again as for an unknown key.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use serde::{Deserialize, Serialize};

use super::{Delivery, Done, Outcome, Pipeline, RejectError, RetryCause};
use crate::{
    event::{AlertEvent, Event},
    ids::LicensePlate,
    ingest::source::truncate_strings,
    lifecycle::{self, Input, Stored},
    publish::ResultEvent,
    scwm::{Operation, Payload, ResponseEnvelope, ScwmError, ScwmRequest},
    store::{Revision, StoreError},
    template::{Content, Renderer},
};

/// What the store keeps per key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stored: Option<Stored>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
}

/// Operations decided and claimed but not all done yet.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Pending {
    owner: String,
    claimed_at_ms: u64,
    decision: String,
    content_hash: String,
    steps: Vec<Step>,
    /// The mapping after the last step that is done; the base for the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    progress: Option<Stored>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Step {
    op: Operation,
    license_plate: LicensePlate,
    payload: Payload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner_id: Option<String>,
    #[serde(default)]
    done: bool,
}

/// How running an intent ended.
enum Ran {
    /// Every step done and the mapping written.
    Finished {
        envelope: Option<ResponseEnvelope>,
        results: Vec<ResultEvent>,
    },
    /// SCWM no longer knows the item: the mapping is gone, decide again.
    NotFound,
    Stop(Outcome),
}

fn now_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Pipeline {
    pub(super) async fn run_alert(&self, event: &Event, alert: &AlertEvent, delivery: Delivery) -> Outcome {
        let Some(settings) = alert.source.alerts.as_ref() else {
            let error =
                RejectError::Misconfigured(format!("source `{}` has no alert settings", alert.source.name));
            return self.reject(event, None, error, 0, None).await;
        };
        let renderer =
            Renderer::new(&alert.source.name, &settings.templates, &alert.notification, &alert.target);
        let content = match renderer.content() {
            Ok(c) => c,
            Err(e) => return self.reject(event, None, RejectError::Render(e), 0, None).await,
        };
        let mut after_not_found = false;
        let mut results = Vec::new();
        // A few rounds: a compare-and-swap conflict or a 404 means deciding again.
        for _ in 0..4 {
            let (mut record, mut revision) = match self.load(event).await {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            if let Some(pending) = &record.pending {
                let age = now_ms(SystemTime::now()).saturating_sub(pending.claimed_at_ms);
                let ttl = self.claim_ttl.as_millis() as u64;
                if pending.owner != self.instance && age < ttl {
                    return Outcome::Retry {
                        after: Duration::from_millis(ttl - age),
                        cause: RetryCause::Busy,
                    };
                }
                tracing::info!(decision = %pending.decision, owner = %pending.owner, "finishing an earlier intent for this key first");
                match self.run_intent(event, &mut record, &mut revision, delivery).await {
                    Ran::Finished { results: earlier, .. } => results.extend(earlier),
                    Ran::NotFound => after_not_found = true,
                    Ran::Stop(outcome) => return outcome,
                }
            }

            let now = SystemTime::now();
            let input = Input {
                status: alert.target.status,
                content_hash: &content.hash,
                now,
                reopen_window: settings.reopen_window,
                partner: alert.target.route.partner.as_deref(),
            };
            let decision = if after_not_found {
                lifecycle::decide_after_not_found(&input)
            } else {
                lifecycle::decide(record.stored.as_ref(), &input)
            };
            tracing::info!(decision = decision.label(), reason = %decision.reason, route = %alert.target.route.name, "lifecycle decision");
            if decision.is_nothing() {
                return match results.pop() {
                    // An earlier intent finished just now: that is this event's answer.
                    Some(last) => Outcome::Done(Box::new(Done { envelope: None, results: vec![last] })),
                    None => Outcome::Duplicate { reason: decision.reason },
                };
            }
            let owner_id = alert.target.route.owner_id.clone().or_else(|| settings.owner_id.clone());
            let steps = match self.steps(event, alert, &renderer, &content, &decision.ops, owner_id) {
                Ok(s) => s,
                Err(e) => return self.reject(event, None, RejectError::Render(e), 0, None).await,
            };
            record.pending = Some(Pending {
                owner: self.instance.clone(),
                claimed_at_ms: now_ms(now),
                decision: decision.label().to_owned(),
                content_hash: content.hash.clone(),
                steps,
                progress: record.stored.clone(),
            });
            match self.save(event, &record, revision).await {
                Ok(r) => revision = Some(r),
                Err(StoreError::Conflict) => continue,
                Err(e) => return store_retry(e),
            }
            match self.run_intent(event, &mut record, &mut revision, delivery).await {
                Ran::Finished { envelope, results: mut done } => {
                    results.append(&mut done);
                    return Outcome::Done(Box::new(Done { envelope, results }));
                }
                Ran::NotFound => after_not_found = true,
                Ran::Stop(outcome) => return outcome,
            }
        }
        Outcome::Retry { after: Duration::from_millis(200), cause: RetryCause::Store(StoreError::Conflict) }
    }

    /// The operations of a decision, rendered, each with a licensePlate derived from the event's
    /// so that the same event decided again gets the same plates.
    fn steps(
        &self,
        event: &Event,
        alert: &AlertEvent,
        renderer: &Renderer<'_>,
        content: &Content,
        ops: &[Operation],
        owner_id: Option<String>,
    ) -> Result<Vec<Step>, crate::template::RenderError> {
        ops.iter()
            .enumerate()
            .map(|(i, &op)| {
                let mut payload = renderer.payload(op, content, None)?;
                truncate_strings(&mut payload, alert.source.limits.max_string_chars);
                let seed = format!("{}/{i}/{op}", event.license_plate);
                let license_plate = LicensePlate::derived(now_ms(event.received_at), seed.as_bytes());
                Ok(Step { op, license_plate, payload, owner_id: owner_id.clone(), done: false })
            })
            .collect()
    }

    /// Runs the steps of `record.pending` that are not done yet.
    async fn run_intent(
        &self,
        event: &Event,
        record: &mut Record,
        revision: &mut Option<Revision>,
        delivery: Delivery,
    ) -> Ran {
        let Some(mut pending) = record.pending.clone() else {
            return Ran::Finished { envelope: None, results: Vec::new() };
        };
        let mut current = pending.progress.clone();
        let mut results = Vec::new();
        let mut last_envelope = None;
        for i in 0..pending.steps.len() {
            if pending.steps[i].done {
                continue;
            }
            let step = pending.steps[i].clone();
            let mut payload = step.payload.clone();
            if step.op != Operation::Add {
                match &current {
                    Some(stored) => {
                        payload.insert("id".into(), stored.item_id.as_str().into());
                    }
                    None => {
                        let error = RejectError::Lifecycle(lifecycle::TransitionError::NoIncident(step.op));
                        return self.abandon(event, record, revision, current, error, None).await;
                    }
                }
            }
            let request = ScwmRequest {
                op: step.op,
                license_plate: step.license_plate.clone(),
                owner_id: step.owner_id.clone(),
                payload,
                headers: HeaderMap::new(),
            };
            match self.scwm.call(&request).await {
                Ok(success) => {
                    match self
                        .publish_answer(event, &request, &success.envelope, success.attempts, success.elapsed)
                        .await
                    {
                        Ok(result) => results.push(result),
                        Err(outcome) => return Ran::Stop(outcome),
                    }
                    let next = lifecycle::apply(
                        current.as_ref(),
                        step.op,
                        success.envelope.item_id(),
                        &pending.content_hash,
                        SystemTime::now(),
                        step.license_plate.clone(),
                    );
                    match next {
                        Ok(next) => current = Some(next),
                        Err(e) => {
                            return self
                                .abandon(event, record, revision, current, e.into(), Some(success.envelope))
                                .await;
                        }
                    }
                    last_envelope = Some(success.envelope);
                    pending.steps[i].done = true;
                    pending.progress = current.clone();
                    if pending.steps.iter().any(|s| !s.done) {
                        // Progress is recorded so a resumed intent does not repeat a done step.
                        record.pending = Some(pending.clone());
                        match self.save(event, record, *revision).await {
                            Ok(r) => *revision = Some(r),
                            Err(e) => return Ran::Stop(store_retry(e)),
                        }
                    }
                }
                Err(failure) => {
                    let not_found = step.op != Operation::Add
                        && matches!(failure.error, ScwmError::Rejected { status: 404, .. });
                    if let Some(env) = &failure.envelope
                        && let Err(outcome) =
                            self.publish_answer(event, &request, env, failure.attempts, failure.elapsed).await
                    {
                        return Ran::Stop(outcome);
                    }
                    if not_found {
                        tracing::warn!(item_id = ?current.as_ref().map(|s| s.item_id.as_str()), "SCWM no longer knows the item; forgetting the mapping");
                        *record = Record::default();
                        return match self.save(event, record, *revision).await {
                            Ok(r) => {
                                *revision = Some(r);
                                Ran::NotFound
                            }
                            Err(e) => Ran::Stop(store_retry(e)),
                        };
                    }
                    return match self.retry_or_reject(failure.error, failure.attempts, delivery) {
                        // The intent stays claimed: the retry resumes it with the same plates.
                        Ok(retry) => Ran::Stop(retry),
                        Err(error) => {
                            self.abandon(event, record, revision, current, error, failure.envelope).await
                        }
                    };
                }
            }
        }
        record.stored = current;
        record.pending = None;
        match self.save(event, record, *revision).await {
            Ok(r) => *revision = Some(r),
            // Only a replica that judged this claim stale writes here; it repeats the same
            // steps with the same licensePlates, so SCWM sees repeats and acts once.
            Err(StoreError::Conflict) => {
                tracing::warn!("the key changed under a finished intent; leaving it to its new owner")
            }
            Err(e) => return Ran::Stop(store_retry(e)),
        }
        Ran::Finished { envelope: last_envelope, results }
    }

    /// Gives up on the intent for good: the mapping keeps what is done, the intent is dropped,
    /// and the event is dead-lettered.
    async fn abandon(
        &self,
        event: &Event,
        record: &mut Record,
        revision: &mut Option<Revision>,
        current: Option<Stored>,
        error: RejectError,
        envelope: Option<ResponseEnvelope>,
    ) -> Ran {
        record.stored = current;
        record.pending = None;
        match self.save(event, record, *revision).await {
            Ok(r) => *revision = Some(r),
            Err(e) => return Ran::Stop(store_retry(e)),
        }
        Ran::Stop(self.reject(event, None, error, 0, envelope).await)
    }

    async fn load(&self, event: &Event) -> Result<(Record, Option<Revision>), Outcome> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| store_retry(StoreError::Unavailable("no correlation store configured".into())))?;
        match store.get(&event.key).await {
            Ok(None) => Ok((Record::default(), None)),
            Ok(Some(v)) => match serde_json::from_slice(&v.value) {
                Ok(record) => Ok((record, Some(v.revision))),
                Err(e) => Err(self
                    .reject(
                        event,
                        None,
                        RejectError::Store(StoreError::Corrupt(format!("record for {}: {e}", event.key))),
                        0,
                        None,
                    )
                    .await),
            },
            Err(e) => Err(store_retry(e)),
        }
    }

    async fn save(
        &self,
        event: &Event,
        record: &Record,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no correlation store configured".into()))?;
        let value = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        store.put(&event.key, Bytes::from(value), expected).await
    }
}

fn store_retry(e: StoreError) -> Outcome {
    Outcome::Retry { after: Duration::from_millis(500), cause: RetryCause::Store(e) }
}
