//! Alert events: the shell around the [planner](crate::plan). It loads the key's record, asks
//! the planner what to do, claims the key, calls SCWM step by step, records each answer and
//! publishes it. Every rule (claims, ordering, decisions, plates) is the planner's; what is
//! here is I/O and the outcome each way of ending means.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::HeaderMap;
use tracing::Instrument;

use super::{Delivery, Done, Outcome, Pipeline, RejectError, RetryCause, converge::Checked};
use crate::{
    event::{AlertEvent, Event},
    ids::LicensePlate,
    lifecycle::{
        DecisionKind,
        converge::{self as drift, Seen},
    },
    plan::{self, Advance, Answer, Claimant, Facts, Plan, Position, Record},
    publish::ResultEvent,
    scwm::{ResponseEnvelope, ScwmError, ScwmRequest},
    store::{Revision, StoreError},
    template::Renderer,
};

/// The step an intent is given up on, as its dead letter reports it.
struct Failed {
    request: ScwmRequest,
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
    /// SCWM no longer knows the item: the mapping is gone, plan again after this plate.
    NotFound(LicensePlate),
    /// A read showed SCWM changed under the intent: the record now says what SCWM says; plan
    /// again. The read's result events come along.
    Replan(Vec<ResultEvent>),
    Stop(Outcome),
}

impl Pipeline {
    pub(super) async fn run_alert(
        &self,
        event: &Event,
        alert: &AlertEvent,
        delivery: Delivery,
        noted: &mut super::Noted,
    ) -> Outcome {
        let Some((spec, settings)) =
            self.sources.get(&event.source.name).and_then(|spec| Some((spec, spec.alerts.as_ref()?)))
        else {
            let error =
                RejectError::Misconfigured(format!("source `{}` has no alert settings", event.source.name));
            return self.reject(event, None, error, 0, None, delivery).await;
        };
        let target = &alert.target;
        let renderer = Renderer::new(&spec.name, &settings.templates, &alert.notification, target.subject());
        // Rendered when planning needs it: a repeat whose inputs the record knows is not.
        let content = plan::Contents::new(&renderer);
        let facts = facts(spec, settings, event, alert);
        let claimant = Claimant { instance: &self.instance, claim_ttl: self.claim_ttl };
        let mut after_not_found: Option<LicensePlate> = None;
        let mut results = Vec::new();
        // A repeat is checked against SCWM at most once per event.
        let mut checked = false;
        // A few rounds: a compare-and-swap conflict or a 404 means planning again from a fresh read.
        'round: for _ in 0..4 {
            let (mut record, mut revision) = match self.load(event, delivery).await {
                Ok(r) => r,
                Err(outcome) => return outcome,
            };
            loop {
                let planned = tracing::info_span!("lifecycle", route = %target.route.name).in_scope(|| {
                    plan::plan(
                        &record,
                        &facts,
                        &content,
                        claimant,
                        SystemTime::now(),
                        after_not_found.as_ref(),
                    )
                });
                report_fallbacks(&renderer, &spec.name, &event.key);
                let planned = match planned {
                    Ok(p) => p,
                    Err(e) => {
                        return self.reject(event, None, RejectError::Render(e), 0, None, delivery).await;
                    }
                };
                let decision = match planned {
                    Plan::Busy { retry_after } => {
                        return Outcome::Retry { after: retry_after, cause: RetryCause::Busy };
                    }
                    Plan::Resume => {
                        if let Some(p) = &record.pending {
                            tracing::info!(decision = %p.decision, owner = %p.owner, "finishing an earlier intent for this key first");
                        }
                        match self.run_intent(event, &mut record, &mut revision, delivery).await {
                            Ran::Finished { results: earlier, .. } => results.extend(earlier),
                            Ran::NotFound(plate) => after_not_found = Some(plate),
                            Ran::Replan(read) => {
                                results.extend(read);
                                continue 'round;
                            }
                            Ran::Stop(outcome) => return outcome,
                        }
                        continue;
                    }
                    // A repeat of a firing alert whose incident SCWM has not confirmed for a
                    // while: a person may have closed it. Read before saying "nothing to do".
                    Plan::Nothing { decision, .. }
                        if !checked
                            && decision.kind == DecisionKind::NothingUnchanged
                            && record.stored.as_ref().is_some_and(|s| {
                                plan::unconfirmed_for(
                                    s,
                                    SystemTime::now(),
                                    self.reconcile.ownership_check_after,
                                )
                            }) =>
                    {
                        checked = true;
                        match self.check(event, &mut record, &mut revision, delivery, &mut results).await {
                            // Plan again from the record as saved, either way.
                            Checked::Confirmed | Checked::Replan => continue 'round,
                            Checked::Stop(outcome) => return outcome,
                        }
                    }
                    Plan::Nothing { decision, record: to_save } => {
                        log_decision(&spec.name, &target.route.name, alert.alertname(), &record, &decision);
                        noted.decided(&target.route.name, &record, &decision);
                        if let Some(to_save) = to_save {
                            match self.save(event, &to_save, revision).await {
                                Ok(_) => {}
                                Err(StoreError::Conflict) => continue 'round,
                                Err(e) => return store_retry(e),
                            }
                            if let Err(outcome) = self.after_hold(event, &record, &to_save, &decision).await {
                                return outcome;
                            }
                        }
                        return match results.pop() {
                            // An earlier intent finished just now: that is this event's answer.
                            Some(last) => {
                                Outcome::Done(Box::new(Done { envelope: None, results: vec![last] }))
                            }
                            None => Outcome::Duplicate { reason: decision.reason },
                        };
                    }
                    Plan::Run { decision, record: claimed } => {
                        log_decision(&spec.name, &target.route.name, alert.alertname(), &record, &decision);
                        noted.decided(&target.route.name, &record, &decision);
                        let before = std::mem::replace(&mut record, claimed);
                        (decision, before)
                    }
                };
                let (decision, before) = decision;
                match self.save(event, &record, revision).await {
                    Ok(r) => revision = Some(r),
                    Err(StoreError::Conflict) => continue 'round,
                    Err(e) => return store_retry(e),
                }
                match self.run_intent(event, &mut record, &mut revision, delivery).await {
                    Ran::Finished { envelope, results: mut done } => {
                        results.append(&mut done);
                        if let Err(outcome) = self.after_hold(event, &before, &record, &decision).await {
                            return outcome;
                        }
                        return Outcome::Done(Box::new(Done { envelope, results }));
                    }
                    Ran::NotFound(plate) => {
                        after_not_found = Some(plate);
                        continue 'round;
                    }
                    Ran::Replan(read) => {
                        results.extend(read);
                        continue 'round;
                    }
                    Ran::Stop(outcome) => return outcome,
                }
            }
        }
        Outcome::Retry { after: Duration::from_millis(200), cause: RetryCause::Store(StoreError::Conflict) }
    }

    /// Runs the steps of `record.pending` that are not done yet, saving after each answer.
    async fn run_intent(
        &self,
        event: &Event,
        record: &mut Record,
        revision: &mut Option<Revision>,
        delivery: Delivery,
    ) -> Ran {
        let mut results = Vec::new();
        let mut last_envelope = None;
        // The last step's result entry, for the write that records the intent finished.
        let mut finished_with = None;
        while let Some((index, payload)) = plan::next_step(record) {
            // An incident SCWM has not confirmed for a while is read first: is it still open,
            // still the key's?
            if plan::needs_check(record, SystemTime::now(), self.reconcile.ownership_check_after) {
                match self.check(event, record, revision, delivery, &mut results).await {
                    // The read may show the step already done (its close went through before):
                    // look again for what is left.
                    Checked::Confirmed if plan::next_step(record).map(|(i, _)| i) != Some(index) => continue,
                    Checked::Confirmed => {}
                    Checked::Replan => return Ran::Replan(results),
                    Checked::Stop(outcome) => return Ran::Stop(outcome),
                }
            }
            let step = &record.pending.as_ref().expect("next_step found an intent").steps[index];
            let request = |payload| ScwmRequest {
                op: step.op,
                license_plate: step.license_plate.clone(),
                owner_id: step.owner_id.clone(),
                payload,
                headers: HeaderMap::new(),
            };
            let request = match payload {
                Ok(payload) => request(payload.into()),
                Err(e) => {
                    let failed =
                        Failed { request: request(step.payload.clone().into()), attempts: 0, envelope: None };
                    plan::give_up(record);
                    return self.abandon(event, record, revision, e.into(), failed, delivery).await;
                }
            };
            // SCWM's acceptance, published to the sinks now; its outbox entry, when the outbox
            // is in the store, goes with the record's next write: one durable write, not two.
            let mut staged = None;
            let (answer, attempts, envelope) = match self.call(&request, delivery).await {
                Ok(success) => {
                    match self.stage_success(event, &request, &success).await {
                        Ok((result, entry)) => {
                            results.push(result);
                            staged = entry;
                        }
                        Err(outcome) => return Ran::Stop(outcome),
                    }
                    let item_id = success.envelope.item_id();
                    (Answer::Accepted { item_id }, success.attempts, success.envelope)
                }
                Err(failure) => {
                    let not_found = request.op.requires_id()
                        && matches!(failure.error, ScwmError::Rejected { status: 404, .. });
                    // "Already closed", "already open": SCWM may have changed under the bridge.
                    let conflict = request.op.requires_id()
                        && matches!(failure.error, ScwmError::Rejected { status: 409, .. });
                    if let Err(outcome) = self.publish_refusal(event, &request, &failure).await {
                        return Ran::Stop(outcome);
                    }
                    if conflict {
                        match self.check(event, record, revision, delivery, &mut results).await {
                            // SCWM shows why: the record says so now, and the event is planned
                            // again from it (a close of a closed incident is then nothing to do).
                            Checked::Replan => return Ran::Replan(results),
                            Checked::Stop(outcome) => return Ran::Stop(outcome),
                            // Nothing explains the refusal: it stands.
                            Checked::Confirmed => {}
                        }
                    }
                    if !not_found {
                        return match self.retry_or_reject(failure.error, failure.attempts, delivery) {
                            // The intent stays claimed: the retry resumes it with the same plates.
                            Ok(retry) => Ran::Stop(retry),
                            Err(error) => {
                                plan::give_up(record);
                                let failed = Failed {
                                    request,
                                    attempts: failure.attempts,
                                    envelope: failure.envelope,
                                };
                                self.abandon(event, record, revision, error, failed, delivery).await
                            }
                        };
                    }
                    let item = record
                        .pending
                        .as_ref()
                        .and_then(|p| p.progress.as_ref())
                        .map(|s| s.item_id.to_string());
                    tracing::warn!(item_id = ?item, "SCWM no longer knows the item; forgetting the mapping");
                    let Some(envelope) = failure.envelope else {
                        unreachable!("a 404 rejection carries SCWM's envelope")
                    };
                    (Answer::NotFound, failure.attempts, envelope)
                }
            };
            // What a 404 loses, named before the mapping is dropped.
            let lost = match (&answer, record.pending.as_ref().and_then(|p| p.progress.as_ref())) {
                (Answer::NotFound, Some(progress)) => {
                    drift::converge(progress, &Seen::Missing, &event.key, &[], SystemTime::now()).1
                }
                _ => Vec::new(),
            };
            let advanced = plan::advance(record, index, answer, SystemTime::now());
            if !matches!(advanced, Advance::Next | Advance::Finished)
                && let Some(entry) = staged.take()
                && let Err(e) = self.publisher.write_staged(entry).await
            {
                return Ran::Stop(self.publish_failed(e));
            }
            match advanced {
                Advance::Next => {
                    last_envelope = Some(envelope);
                    // Progress is recorded so a resumed intent does not repeat a done step.
                    match self.save_with(event, record, *revision, staged.take()).await {
                        Ok(r) => *revision = Some(r),
                        Err(e) => return Ran::Stop(store_retry(e)),
                    }
                }
                Advance::Finished => {
                    last_envelope = Some(envelope);
                    finished_with = staged.take();
                    break;
                }
                Advance::NotFound(plate) => {
                    return match self.save(event, record, *revision).await {
                        Ok(r) => {
                            *revision = Some(r);
                            if let Err(e) = self
                                .report_drift(
                                    &event.key,
                                    Some(&event.source.name),
                                    &lost,
                                    super::converge::BY_CHECK,
                                )
                                .await
                            {
                                return Ran::Stop(self.publish_failed(e));
                            }
                            Ran::NotFound(plate)
                        }
                        Err(e) => Ran::Stop(store_retry(e)),
                    };
                }
                Advance::Abandon(e) => {
                    let failed = Failed { request, attempts, envelope: Some(envelope) };
                    return self.abandon(event, record, revision, e.into(), failed, delivery).await;
                }
            }
        }
        match self.save_with(event, record, *revision, finished_with).await {
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

    /// Saves the record whose intent was given up on and dead-letters the event with the step
    /// that failed (its operation, licensePlate and attempts).
    async fn abandon(
        &self,
        event: &Event,
        record: &mut Record,
        revision: &mut Option<Revision>,
        error: RejectError,
        failed: Failed,
        delivery: Delivery,
    ) -> Ran {
        match self.save(event, record, *revision).await {
            Ok(r) => *revision = Some(r),
            Err(e) => return Ran::Stop(store_retry(e)),
        }
        Ran::Stop(
            self.reject(event, Some(&failed.request), error, failed.attempts, failed.envelope, delivery)
                .await,
        )
    }

    /// After a record with damping state was saved: the flap event when the key started or
    /// stopped flapping, the hold handed to whoever offers it again when due, and the counts.
    async fn after_hold(
        &self,
        event: &Event,
        before: &Record,
        after: &Record,
        decision: &crate::lifecycle::Decision,
    ) -> Result<(), Outcome> {
        let source = &event.source.name;
        match decision.kind {
            DecisionKind::NothingFlapping => crate::observe::held(source, "close", "held"),
            DecisionKind::NothingHeldAdd if before.held.is_none() => {
                crate::observe::held(source, "add", "held")
            }
            DecisionKind::NothingAddDropped => crate::observe::held(source, "add", "dropped"),
            DecisionKind::Add | DecisionKind::Replace
                if before.held.as_ref().is_some_and(|h| h.what == plan::HeldKind::Add) =>
            {
                crate::observe::held(source, "add", "applied")
            }
            _ => {}
        }
        let was = before.flap.as_ref().and_then(|f| f.flapping_since_ms).is_some();
        let is = after.flap.as_ref().and_then(|f| f.flapping_since_ms).is_some();
        if was != is {
            let flap = crate::publish::FlapEvent {
                id: format!("flap.{}", ulid::Ulid::new()),
                kind: if is { "flap.start" } else { "flap.end" },
                key: event.key.clone(),
                item_id: after.stored.as_ref().map(|s| s.item_id.clone()),
                source: source.clone(),
                cycles: before
                    .flap
                    .as_ref()
                    .map_or(0, |f| f.refires_ms.len() as u32)
                    .max(after.flap.as_ref().map_or(0, |f| f.refires_ms.len() as u32)),
                status: after.flap.as_ref().map_or("firing", |f| f.status.as_str()),
                at: SystemTime::now(),
            };
            tracing::info!(
                kind = flap.kind,
                cycles = i64::from(flap.cycles),
                "flapping {}",
                if is { "started" } else { "ended" }
            );
            if !is && before.held.is_some() && decision.kind == DecisionKind::Close {
                crate::observe::held(source, "close", "applied");
            }
            self.publisher.flap(&flap).await.map_err(|e| self.publish_failed(e))?;
        }
        if let Some(held) = &after.held {
            self.hold_due(&event.key, held.due_ms);
        }
        Ok(())
    }

    async fn load(&self, event: &Event, delivery: Delivery) -> Result<(Record, Option<Revision>), Outcome> {
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
                        delivery,
                    )
                    .await),
            },
            Err(e) => Err(store_retry(e)),
        }
    }

    pub(super) async fn save(
        &self,
        event: &Event,
        record: &Record,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.save_with(event, record, expected, None).await
    }

    /// [`Pipeline::save`], writing `staged` (a result's outbox entry) in the same write. The
    /// entry is in the outbox once the write was made, a lost compare-and-swap included; when
    /// the write failed it is not, and the intent, still claimed, repeats the step.
    async fn save_with(
        &self,
        event: &Event,
        record: &Record,
        expected: Option<Revision>,
        staged: Option<crate::publish::outbox::Prepared>,
    ) -> Result<Revision, StoreError> {
        let store = self
            .store
            .as_ref()
            .ok_or_else(|| StoreError::Unavailable("no correlation store configured".into()))?;
        let value = Bytes::from(serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?);
        let started = std::time::Instant::now();
        let span = tracing::info_span!("store.put", backend = store.backend());
        let put = match &staged {
            None => store.put(&event.key, value, expected).instrument(span).await,
            Some(entry) => {
                let entries = vec![(entry.id.clone(), entry.bytes.clone())];
                store.put_with(&event.key, value, expected, entries).instrument(span).await
            }
        };
        crate::observe::store_operation(store.backend(), "put", started.elapsed());
        if let Some(entry) = &staged
            && matches!(put, Ok(_) | Err(StoreError::Conflict))
        {
            self.publisher.staged_written(entry);
        }
        put
    }
}

pub(super) fn store_retry(e: StoreError) -> Outcome {
    Outcome::Retry { after: Duration::from_millis(500), cause: RetryCause::Store(e) }
}

/// What the planner needs to know of an alert event.
pub(super) fn facts<'a>(
    spec: &'a crate::sources::SourceSpec,
    settings: &'a crate::sources::AlertSettings,
    event: &'a Event,
    alert: &'a AlertEvent,
) -> Facts<'a> {
    let target = &alert.target;
    Facts {
        source: &spec.name,
        key: &event.key,
        status: target.status,
        position: position_of(event),
        episode: crate::alert::episode_start(target.alerts(&alert.notification)),
        event_plate: &event.license_plate,
        reopen_window: settings.reopen_window,
        partner: target.route.partner.as_deref(),
        owner_id: target.route.owner_id.as_deref().or(settings.owner_id.as_deref()),
        max_string_chars: spec.limits.max_string_chars,
        hold: plan::HoldFacts {
            damping: settings.damping,
            original: Some(&event.original),
            recheck: event.source.subject == crate::event::RECHECK_SUBJECT,
        },
    }
}

/// The event's position in its stream, when its transport has one.
pub(super) fn position_of(event: &Event) -> Option<Position> {
    let s = &event.source;
    Some(Position {
        stream: s.stream.clone()?,
        sequence: s.stream_sequence?,
        published_ms: s.stream_published_ms?,
    })
}

/// One line per alert decision, at debug: what the alert is called, which route took it, what
/// was decided and why, and the incident it is about. Not at info: formatting a line per alert
/// costs every event, and the decisions are kept for people anyway (`GET /v1/decisions`, the
/// console); `RUST_LOG=info,incident_bridge::pipeline::alert=debug` turns it on.
fn log_decision(
    source: &str,
    route: &str,
    alertname: Option<&str>,
    record: &Record,
    decision: &crate::lifecycle::Decision,
) {
    let item_id = record.stored.as_ref().map(|s| s.item_id.as_str());
    tracing::debug!(
        alertname,
        route,
        decision = decision.label(),
        reason = %decision.reason,
        item_id,
        "lifecycle decision"
    );
    crate::observe::decision(source, decision.label());
}

/// Logs and counts each template that failed and was stood in for.
fn report_fallbacks(renderer: &Renderer<'_>, source: &str, key: &crate::ids::CorrelationKey) {
    for f in renderer.take_fallbacks() {
        tracing::warn!(
            source,
            key = %key,
            template = %f.template,
            part = %f.part,
            error = %f.message,
            "a template failed for this alert; the built-in default stands in"
        );
        crate::observe::template_fallback(source, &f.part);
    }
}
