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
//! 2. Decide with [`lifecycle::decide`]; nothing to do ends here (repeat notifications). Messages
//!    of one key can arrive out of stream order: a retried one comes back after later ones, and
//!    replicas sharing a consumer put back what another holds the claim for. So the record keeps
//!    the newest JetStream message decided for the key (written even when the decision is
//!    nothing), and an older one is decided with [`lifecycle::decide_late`]: the newer one's
//!    state stands.
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
use tracing::Instrument;

use super::{Delivery, Done, Outcome, Pipeline, RejectError, RetryCause};
use crate::{
    alert::AlertStatus,
    event::{AlertEvent, Event},
    ids::LicensePlate,
    lifecycle::{self, Input, Stored},
    publish::ResultEvent,
    scwm::{Operation, Payload, ResponseEnvelope, ScwmError, ScwmRequest},
    sources::SourceSpec,
    store::{Revision, StoreError},
    template::{Content, Renderer},
    verify::limits::truncate_strings,
};

/// What the store keeps per key.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Record {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stored: Option<Stored>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending: Option<Pending>,
    /// The newest stream message decided for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    latest: Option<Latest>,
}

/// The newest stream message decided for a key, and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Latest {
    position: Position,
    status: AlertStatus,
}

/// Where a JetStream message sits in its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Position {
    stream: String,
    sequence: u64,
    published_ms: u64,
}

impl Position {
    /// The event's position, when its transport has one.
    fn of(event: &Event) -> Option<Self> {
        let s = &event.source;
        Some(Position {
            stream: s.stream.clone()?,
            sequence: s.stream_sequence?,
            published_ms: s.stream_published_ms?,
        })
    }

    /// Whether this message came before `other` in the same stream. The publish time must agree
    /// with the sequence: a stream created again starts its sequence over, and its messages are
    /// newer than the old stream's whatever their sequence.
    fn is_before(&self, other: &Position) -> bool {
        self.stream == other.stream
            && self.sequence < other.sequence
            && self.published_ms <= other.published_ms
    }
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

/// The step an intent is given up on, as its dead letter reports it.
struct Failed<'a> {
    request: &'a ScwmRequest,
    /// HTTP attempts made for it (0 when SCWM was not called, e.g. the breaker was open).
    attempts: u32,
    envelope: Option<ResponseEnvelope>,
}

/// How running an intent ended.
enum Ran {
    /// Every step done and the mapping written.
    Finished {
        envelope: Option<ResponseEnvelope>,
        results: Vec<ResultEvent>,
    },
    /// SCWM no longer knows the item: the mapping is gone, decide again. Carries the plate of
    /// the request answered 404, which the next decision's plates follow on from, so the new
    /// add is a new request rather than a repeat of the one that opened the lost incident.
    NotFound(LicensePlate),
    Stop(Outcome),
}

fn now_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Pipeline {
    pub(super) async fn run_alert(&self, event: &Event, alert: &AlertEvent, delivery: Delivery) -> Outcome {
        let Some((spec, settings)) =
            self.sources.get(&event.source.name).and_then(|spec| Some((spec, spec.alerts.as_ref()?)))
        else {
            let error =
                RejectError::Misconfigured(format!("source `{}` has no alert settings", event.source.name));
            return self.reject(event, None, error, 0, None).await;
        };
        let renderer =
            Renderer::new(&spec.name, &settings.templates, &alert.notification, alert.target.subject());
        let content = match renderer.content() {
            Ok(c) => c,
            Err(e) => return self.reject(event, None, RejectError::Render(e), 0, None).await,
        };
        let mut after_not_found: Option<LicensePlate> = None;
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
                    Ran::NotFound(plate) => after_not_found = Some(plate),
                    Ran::Stop(outcome) => return outcome,
                }
            }

            // A message older than the newest one decided for the key is late; the newest is
            // remembered, with what it said, even when its decision is nothing.
            let position = Position::of(event);
            let late = match (&position, &record.latest) {
                (Some(p), Some(latest)) if p.is_before(&latest.position) => Some(latest.status),
                _ => None,
            };
            let newest = late.is_none()
                && position.is_some()
                && record.latest.as_ref().map(|l| &l.position) != position.as_ref();
            if newest && let Some(position) = position {
                record.latest = Some(Latest { position, status: alert.target.status });
            }

            let now = SystemTime::now();
            let input = Input {
                status: alert.target.status,
                content_hash: &content.hash,
                now,
                reopen_window: settings.reopen_window,
                partner: alert.target.route.partner.as_deref(),
            };
            let decision = tracing::info_span!("lifecycle", route = %alert.target.route.name).in_scope(|| {
                let decision = if let Some(newer) = late {
                    lifecycle::decide_late(record.stored.as_ref(), &input, newer)
                } else if after_not_found.is_some() {
                    lifecycle::decide_after_not_found(&input)
                } else {
                    lifecycle::decide(record.stored.as_ref(), &input)
                };
                tracing::info!(decision = decision.label(), reason = %decision.reason, "lifecycle decision");
                decision
            });
            crate::observe::decision(&spec.name, decision.label());
            if decision.is_nothing() {
                if newest {
                    match self.save(event, &record, revision).await {
                        Ok(_) => {}
                        Err(StoreError::Conflict) => continue,
                        Err(e) => return store_retry(e),
                    }
                }
                return match results.pop() {
                    // An earlier intent finished just now: that is this event's answer.
                    Some(last) => Outcome::Done(Box::new(Done { envelope: None, results: vec![last] })),
                    None => Outcome::Duplicate { reason: decision.reason },
                };
            }
            let owner_id = alert.target.route.owner_id.clone().or_else(|| settings.owner_id.clone());
            let previous = record
                .stored
                .as_ref()
                .and_then(|s| s.last_license_plate.as_ref())
                .or(after_not_found.as_ref());
            let steps = match self.steps(
                event,
                alert,
                spec,
                &renderer,
                &content,
                &decision.ops,
                owner_id,
                previous,
            ) {
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
                Ran::NotFound(plate) => after_not_found = Some(plate),
                Ran::Stop(outcome) => return outcome,
            }
        }
        Outcome::Retry { after: Duration::from_millis(200), cause: RetryCause::Store(StoreError::Conflict) }
    }

    /// The operations of a decision, rendered, each with a licensePlate derived from what the
    /// operation is for (see [`step_plates`]), so that the same notification decided again,
    /// even after the store was lost, sends the same plates and SCWM answers it again.
    #[allow(clippy::too_many_arguments)]
    fn steps(
        &self,
        event: &Event,
        alert: &AlertEvent,
        spec: &SourceSpec,
        renderer: &Renderer<'_>,
        content: &Content,
        ops: &[Operation],
        owner_id: Option<String>,
        previous: Option<&LicensePlate>,
    ) -> Result<Vec<Step>, crate::template::RenderError> {
        let episode = crate::alert::episode_start(alert.target.alerts(&alert.notification));
        let plates = step_plates(&StepIdentity {
            source: &spec.name,
            key: event.key.as_str(),
            episode,
            fallback: &event.license_plate,
            previous,
            content_hash: &content.hash,
            ops,
        });
        ops.iter()
            .zip(plates)
            .map(|(&op, license_plate)| {
                let mut payload = renderer.payload(op, content, None)?;
                truncate_strings(&mut payload, spec.limits.max_string_chars);
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
            let needs_id = step.op != Operation::Add;
            if needs_id && let Some(stored) = &current {
                payload.insert("id".into(), stored.item_id.as_str().into());
            }
            let request = ScwmRequest {
                op: step.op,
                license_plate: step.license_plate.clone(),
                owner_id: step.owner_id.clone(),
                payload: payload.into(),
                headers: HeaderMap::new(),
            };
            if needs_id && current.is_none() {
                let error = RejectError::Lifecycle(lifecycle::TransitionError::NoIncident(step.op));
                let failed = Failed { request: &request, attempts: 0, envelope: None };
                return self.abandon(event, record, revision, current, error, failed).await;
            }
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
                            let failed = Failed {
                                request: &request,
                                attempts: success.attempts,
                                envelope: Some(success.envelope),
                            };
                            return self.abandon(event, record, revision, current, e.into(), failed).await;
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
                        *record = Record { latest: record.latest.take(), ..Record::default() };
                        return match self.save(event, record, *revision).await {
                            Ok(r) => {
                                *revision = Some(r);
                                Ran::NotFound(step.license_plate.clone())
                            }
                            Err(e) => Ran::Stop(store_retry(e)),
                        };
                    }
                    return match self.retry_or_reject(failure.error, failure.attempts, delivery) {
                        // The intent stays claimed: the retry resumes it with the same plates.
                        Ok(retry) => Ran::Stop(retry),
                        Err(error) => {
                            let failed = Failed {
                                request: &request,
                                attempts: failure.attempts,
                                envelope: failure.envelope,
                            };
                            self.abandon(event, record, revision, current, error, failed).await
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
    /// and the event is dead-lettered with the step that failed (its operation, licensePlate
    /// and attempts).
    async fn abandon(
        &self,
        event: &Event,
        record: &mut Record,
        revision: &mut Option<Revision>,
        current: Option<Stored>,
        error: RejectError,
        failed: Failed<'_>,
    ) -> Ran {
        record.stored = current;
        record.pending = None;
        match self.save(event, record, *revision).await {
            Ok(r) => *revision = Some(r),
            Err(e) => return Ran::Stop(store_retry(e)),
        }
        Ran::Stop(self.reject(event, Some(failed.request), error, failed.attempts, failed.envelope).await)
    }

    async fn load(&self, event: &Event) -> Result<(Record, Option<Revision>), Outcome> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| store_retry(StoreError::Unavailable("no correlation store configured".into())))?;
        let started = std::time::Instant::now();
        let got = store
            .get(&event.key)
            .instrument(tracing::info_span!("store.get", backend = store.backend()))
            .await;
        crate::observe::store_operation(store.backend(), "get", started.elapsed());
        match got {
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
        let started = std::time::Instant::now();
        let put = store
            .put(&event.key, Bytes::from(value), expected)
            .instrument(tracing::info_span!("store.put", backend = store.backend()))
            .await;
        crate::observe::store_operation(store.backend(), "put", started.elapsed());
        put
    }
}

/// What an alert operation is for, which its licensePlate is derived from.
struct StepIdentity<'a> {
    source: &'a str,
    key: &'a str,
    /// When the alert episode began ([`crate::alert::episode_start`]); `None` when no
    /// `startsAt` parses.
    episode: Option<u64>,
    /// The event's own plate, the seed when there is no episode to go by.
    fallback: &'a LicensePlate,
    /// The plate of the last operation SCWM accepted for the key's incident, when the store
    /// remembers one: each operation follows on from the one before.
    previous: Option<&'a LicensePlate>,
    content_hash: &'a str,
    ops: &'a [Operation],
}

/// One licensePlate per operation, each a pure function of what the operation is for: the
/// source, the correlation key, the episode, the operation before it (the stored one for the
/// first, then the previous step's), its place and kind, and for an edit the content it sends.
///
/// So an add for a key the store does not know (or no longer knows: a lost store) carries the
/// same plate as the add that first opened the episode's incident, and SCWM, which treats a
/// repeated plate within its dedup window (24 h) as the same request, answers with that
/// incident instead of opening a second one. Chaining on the previous operation keeps a later
/// operation of the same kind distinct (an edit back to content sent before, a reopen after a
/// second close), and a new episode (a new `startsAt`) gets new plates. The time part of each
/// plate is the episode start, so plates still sort by it.
fn step_plates(id: &StepIdentity<'_>) -> Vec<LicensePlate> {
    let (time_ms, episode) = match id.episode {
        Some(ms) => (ms, format!("episode:{ms}")),
        None => (id.fallback.timestamp_ms(), format!("event:{}", id.fallback)),
    };
    let mut previous = id.previous.map(|p| p.to_string()).unwrap_or_default();
    id.ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let content = match op {
                Operation::Edit => id.content_hash,
                _ => "",
            };
            let seed =
                format!("alert/v1\n{}\n{}\n{episode}\n{previous}\n{i}\n{op}\n{content}", id.source, id.key);
            let plate = LicensePlate::derived(time_ms, seed.as_bytes());
            previous = plate.to_string();
            plate
        })
        .collect()
}

fn store_retry(e: StoreError) -> Outcome {
    Outcome::Retry { after: Duration::from_millis(500), cause: RetryCause::Store(e) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(stream: &str, sequence: u64, published_ms: u64) -> Position {
        Position { stream: stream.into(), sequence, published_ms }
    }

    #[test]
    fn a_message_is_before_another_only_when_sequence_and_time_agree_in_one_stream() {
        let latest = at("ALERTS", 10, 5_000);
        assert!(at("ALERTS", 9, 4_000).is_before(&latest));
        assert!(at("ALERTS", 9, 5_000).is_before(&latest), "same millisecond, earlier sequence");
        assert!(!at("ALERTS", 10, 5_000).is_before(&latest), "a redelivery of the same message");
        assert!(!at("ALERTS", 11, 6_000).is_before(&latest));
        assert!(!at("ALERTS", 1, 9_000).is_before(&latest), "a stream created again starts over");
        assert!(!at("OTHER", 1, 1_000).is_before(&latest), "other streams are not ordered with this one");
    }

    fn identity<'a>(
        ops: &'a [Operation],
        previous: Option<&'a LicensePlate>,
        fallback: &'a LicensePlate,
    ) -> StepIdentity<'a> {
        StepIdentity {
            source: "am",
            key: "am:fp:1",
            episode: Some(1_714_557_600_000),
            fallback,
            previous,
            content_hash: "h1",
            ops,
        }
    }

    #[test]
    fn step_plates_follow_what_the_operation_is_for_not_which_delivery_asked() {
        let (one, two) = (LicensePlate::generate(), LicensePlate::generate());
        let add = step_plates(&identity(&[Operation::Add, Operation::Submit], None, &one));
        assert_eq!(
            add,
            step_plates(&identity(&[Operation::Add, Operation::Submit], None, &two)),
            "another delivery"
        );
        assert_ne!(add[0], add[1]);
        assert_eq!(add[0].timestamp_ms(), 1_714_557_600_000, "plates sort by episode start");

        let new_episode =
            StepIdentity { episode: Some(1_714_557_700_000), ..identity(&[Operation::Add], None, &one) };
        assert_ne!(step_plates(&new_episode)[0], add[0], "a new episode opens a new incident");
        let replace = step_plates(&identity(&[Operation::Add], Some(&add[0]), &one));
        assert_ne!(replace[0], add[0], "an add after a close follows on from it");

        let edit = step_plates(&identity(&[Operation::Edit], Some(&add[0]), &one));
        let other = StepIdentity { content_hash: "h2", ..identity(&[Operation::Edit], Some(&add[0]), &one) };
        assert_ne!(edit, step_plates(&other), "an edit's plate names its content");
        let back = step_plates(&identity(&[Operation::Edit], Some(&edit[0]), &one));
        assert_ne!(back, edit, "the same content again after another edit is a new request");
    }

    #[test]
    fn without_an_episode_the_event_plate_is_the_seed() {
        let (one, two) = (LicensePlate::generate(), LicensePlate::generate());
        let a = StepIdentity { episode: None, ..identity(&[Operation::Add], None, &one) };
        let b = StepIdentity { episode: None, ..identity(&[Operation::Add], None, &two) };
        assert_ne!(step_plates(&a), step_plates(&b));
        assert_eq!(step_plates(&a), step_plates(&a));
    }

    #[test]
    fn records_written_before_positions_existed_still_read() {
        let record: Record =
            serde_json::from_str(r#"{"stored":{"item_id":"IT-000001","state":"open","content_hash":"h"}}"#)
                .unwrap();
        assert!(record.latest.is_none());
        assert_eq!(record.stored.map(|s| s.item_id.as_str().to_owned()).as_deref(), Some("IT-000001"));
    }
}
