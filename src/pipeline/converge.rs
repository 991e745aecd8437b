//! Checks against SCWM's truth while an event is handled: before an operation on an incident
//! SCWM has not confirmed for a while, and when SCWM's answer to one is surprising (409), the
//! shell reads the incident, lets the [planner](crate::plan::converge) bring the record in line,
//! saves it and reports each difference as a drift event. The rules are the planner's and the
//! lifecycle's; what is here is the read, the save and the publishing.

use std::time::SystemTime;

use http::HeaderMap;

use super::{Delivery, Outcome, Pipeline};
use crate::{
    event::Event,
    ids::{CorrelationKey, ItemId, LicensePlate},
    incident::{Operation, Payload},
    lifecycle::converge::{Drift, Observed, Seen},
    plan::{self, Record},
    publish::{DriftEvent, KeptBy, ResultEvent},
    scwm::{ScwmError, ScwmFailure, ScwmRequest, ScwmSuccess},
    store::{Revision, StoreError},
};

/// How a check ended.
pub(super) enum Checked {
    /// SCWM confirmed the record (or could not say): go on as planned.
    Confirmed,
    /// SCWM differs, the record now says what SCWM says and is saved: plan the event again.
    Replan,
    /// Stop handling the event with this outcome (SCWM or the store failed transiently).
    Stop(Outcome),
}

/// What read the incident, as a drift event names it.
pub(super) const BY_CHECK: &str = "check";

impl Pipeline {
    /// Reads the incident `record` maps to (the one an intent builds on, else the stored one),
    /// converges the record with it and saves it. `results` gets the read's result event.
    pub(super) async fn check(
        &self,
        event: &Event,
        record: &mut Record,
        revision: &mut Option<Revision>,
        delivery: Delivery,
        results: &mut Vec<ResultEvent>,
    ) -> Checked {
        let base = record.pending.as_ref().map_or(record.stored.as_ref(), |p| p.progress.as_ref());
        let Some(item_id) = base.map(|s| s.item_id.clone()) else { return Checked::Confirmed };
        let owner_id = record.pending.as_ref().and_then(|p| p.steps.first()).and_then(|s| s.owner_id.clone());
        let request = read_request(&item_id, owner_id);
        let answer = self.call(&request, delivery).await;
        let published = match &answer {
            Ok(success) => {
                self.publish_success(event, &request, success, KeptBy::Outbox).await.map(|r| results.push(r))
            }
            Err(failure) => self.publish_refusal(event, &request, failure).await,
        };
        if let Err(outcome) = published {
            return Checked::Stop(outcome);
        }
        let seen = match self.seen_in(&answer) {
            Ok(Some(seen)) => seen,
            Ok(None) => {
                tracing::warn!(item_id = %item_id, "SCWM's read names no status; going on unchecked");
                return Checked::Confirmed;
            }
            Err(failure) => {
                return match self.retry_or_reject(failure.error.clone(), failure.attempts, delivery) {
                    Ok(retry) => Checked::Stop(retry),
                    // SCWM refuses the read for good (or this was the last try): the operation
                    // itself decides; a read must not be what loses the event.
                    Err(error) => {
                        tracing::warn!(item_id = %item_id, error = %error, "reading the incident failed; going on unchecked");
                        Checked::Confirmed
                    }
                };
            }
        };
        let wont_fix = self.wont_fix(&event.source.name);
        let converged = plan::converge(record, &seen, &event.key, wont_fix, SystemTime::now());
        match self.save(event, record, *revision).await {
            Ok(r) => *revision = Some(r),
            // Another writer changed the key: planning again from a fresh read sees its work.
            Err(StoreError::Conflict) => return Checked::Replan,
            Err(e) => return Checked::Stop(super::alert::store_retry(e)),
        }
        if let Err(e) =
            self.report_drift(&event.key, Some(&event.source.name), &converged.drift, BY_CHECK).await
        {
            return Checked::Stop(self.publish_failed(e));
        }
        if converged.replan { Checked::Replan } else { Checked::Confirmed }
    }

    /// What a read's answer shows of the incident: SCWM's state, or that it has none (404);
    /// `Ok(None)` when the answer names no status, which proves nothing; the failure otherwise.
    pub(super) fn seen_in<'a>(
        &self,
        answer: &'a Result<ScwmSuccess, ScwmFailure>,
    ) -> Result<Option<Seen>, &'a ScwmFailure> {
        match answer {
            Ok(success) => {
                Ok(Observed::from_payload(success.envelope.payload(), &self.reconcile.external_ref_field)
                    .map(Seen::Incident))
            }
            Err(failure) if matches!(failure.error, ScwmError::Rejected { status: 404, .. }) => {
                Ok(Some(Seen::Missing))
            }
            Err(failure) => Err(failure),
        }
    }

    /// Publishes each difference as a drift event, and logs it.
    pub(crate) async fn report_drift(
        &self,
        key: &CorrelationKey,
        source: Option<&str>,
        drift: &[Drift],
        detected_by: &'static str,
    ) -> Result<(), crate::publish::PublishError> {
        for d in drift {
            tracing::warn!(
                key = %key,
                item_id = %d.item_id,
                kind = d.kind.as_str(),
                expected = %d.expected,
                found = %d.found,
                detected_by,
                "SCWM differs from the store; the store follows SCWM"
            );
            let event = DriftEvent {
                id: format!("drift.{}", LicensePlate::generate()),
                kind: d.kind.as_str(),
                key: key.clone(),
                item_id: d.item_id.clone(),
                expected: d.expected.clone(),
                found: d.found.clone(),
                source: source.map(str::to_owned),
                detected_by,
                at: SystemTime::now(),
            };
            self.publisher.drift(&event).await?;
        }
        Ok(())
    }

    /// The resolutions that keep a key of `source` quiet.
    pub(crate) fn wont_fix(&self, source: &str) -> &[String] {
        self.sources
            .get(source)
            .and_then(|spec| spec.alerts.as_ref())
            .map_or(&[], |a| a.wont_fix_resolutions.as_slice())
    }
}

/// A read of `item_id`. Each read is a new request (a fresh licensePlate): SCWM replays the
/// answer to a repeated plate, and a read must see the incident as it is now.
pub(crate) fn read_request(item_id: &ItemId, owner_id: Option<String>) -> ScwmRequest {
    ScwmRequest {
        op: Operation::Read,
        license_plate: LicensePlate::generate(),
        owner_id,
        payload: std::sync::Arc::new(Payload::from_iter([("id".to_owned(), item_id.as_str().into())])),
        headers: HeaderMap::new(),
    }
}
