//! The one place the steps meet: [`Pipeline::process_one`] takes a decoded event, calls SCWM,
//! publishes the result event or dead letter, and returns an [`Outcome`]. Each transport alone
//! turns the outcome into its own words (HTTP status; JetStream ack, nak or term).
//!
//! The pipeline never acknowledges anything itself and never drops an event: it either
//! finishes it (result published), gives up on it for good (dead letter published), or says
//! "retry later" and lets the transport keep it.

mod alert;
pub mod config;
mod converge;
pub mod explain;
pub mod inspect;
pub mod journal;
pub mod queue;
pub mod reconcile;
mod records;
mod runner;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http::HeaderMap;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use runner::{Job, Runner};

use crate::{
    event::{Command, Event, EventKind},
    lifecycle::TransitionError,
    plan,
    publish::{DeadLetter, KeptBy, PublishError, Publisher, ResultEvent},
    scwm::{
        ResponseEnvelope,
        client::{ScwmClient, ScwmFailure, ScwmRequest, ScwmSuccess},
        error::ScwmError,
        retry::RetryPolicy,
    },
    sources::Sources,
    store::{CorrelationStore, StoreError},
    template::RenderError,
};

/// How the transport delivered this event, which decides what a transient failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// 1 for the first delivery.
    pub attempt: u32,
    /// No redelivery will follow: a transient failure now is final and gets dead-lettered.
    pub last: bool,
    /// The transport delivers again by itself (JetStream): when the last delivery fails, the
    /// deliveries are what ran out, not the retries of one call.
    pub redelivered: bool,
}

impl Delivery {
    /// A delivery whose sender will retry on its own (synchronous HTTP).
    pub const SENDER_RETRIES: Delivery = Delivery { attempt: 1, last: false, redelivered: false };
    /// A delivery nobody will repeat (asynchronous HTTP).
    pub const ONLY: Delivery = Delivery { attempt: 1, last: true, redelivered: false };

    /// Whether this delivery waits out an open circuit rather than fail at once. Only a sender
    /// that retries on its own (synchronous HTTP, a NATS request) is better told "retry in N
    /// seconds"; anything else would spend a JetStream delivery, or end in a dead letter, for
    /// an outage that is not the event's fault.
    pub fn rides_out_outages(&self) -> bool {
        self.last || self.redelivered
    }

    /// What keeps a native command's result between SCWM's answer and NATS: its transport's
    /// redelivery while one follows (the message is acknowledged only after the result is
    /// out), else the outbox.
    fn results_kept_by(&self) -> KeptBy {
        if self.redelivered && !self.last { KeptBy::Redelivery } else { KeptBy::Outbox }
    }
}

/// What happened to one event.
#[derive(Debug)]
pub enum Outcome {
    /// SCWM accepted every operation; result events are published.
    Done(Box<Done>),
    /// Nothing needed doing (e.g. a repeat notification).
    Duplicate { reason: String },
    /// A transient failure: keep the event and offer it again after `after`.
    Retry { after: Duration, cause: RetryCause },
    /// A permanent failure; the event is dead-lettered.
    Reject(Box<Rejection>),
}

impl Outcome {
    /// A bounded label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Done(_) => "done",
            Outcome::Duplicate { .. } => "duplicate",
            Outcome::Retry { .. } => "retry",
            Outcome::Reject(_) => "reject",
        }
    }

    /// How long to wait before offering the event again, when it should be.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Outcome::Retry { after, .. } => Some(*after),
            _ => None,
        }
    }

    /// The longest wait any of `outcomes` asks for; `None` when none needs a retry.
    pub fn longest_retry(outcomes: &[Outcome]) -> Option<Duration> {
        outcomes.iter().filter_map(Outcome::retry_after).max()
    }
}

#[derive(Debug)]
pub struct Done {
    /// SCWM's answer to the last operation, when this event's own work called SCWM.
    pub envelope: Option<ResponseEnvelope>,
    pub results: Vec<ResultEvent>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetryCause {
    #[error(transparent)]
    Scwm(ScwmError),
    #[error("publishing failed: {0}")]
    Publish(PublishError),
    #[error("the bridge is shutting down")]
    ShuttingDown,
    #[error("too much work queued")]
    Overloaded,
    #[error("correlation store: {0}")]
    Store(StoreError),
    #[error("another replica is working on this key")]
    Busy,
}

#[derive(Debug)]
pub struct Rejection {
    pub error: RejectError,
    /// SCWM's answer, when it sent one: a synchronous caller receives it as is.
    pub envelope: Option<ResponseEnvelope>,
}

#[derive(Debug, thiserror::Error)]
pub enum RejectError {
    #[error(transparent)]
    Scwm(ScwmError),
    /// The last attempt of a call nobody will deliver again failed transiently.
    #[error("gave up after {} SCWM attempt{}: {error}", attempts, plural(*attempts))]
    Exhausted { attempts: u32, error: ScwmError },
    /// The transport's last delivery failed transiently: `deliveries` deliveries, the last of
    /// which made `attempts` SCWM attempts.
    #[error(
        "gave up after {} deliveries, the last with {} SCWM attempt{}: {error}",
        deliveries, attempts, plural(*attempts)
    )]
    DeliveriesExhausted { deliveries: u32, attempts: u32, error: ScwmError },
    #[error("template: {0}")]
    Render(#[from] RenderError),
    #[error("lifecycle: {0}")]
    Lifecycle(#[from] TransitionError),
    #[error("correlation store: {0}")]
    Store(StoreError),
    #[error("{0}")]
    Misconfigured(String),
}

impl RejectError {
    pub fn kind(&self) -> &'static str {
        match self {
            RejectError::Scwm(_) => "scwm_rejected",
            RejectError::Exhausted { .. } => "retries_exhausted",
            RejectError::DeliveriesExhausted { .. } => "deliveries_exhausted",
            RejectError::Render(_) => "template",
            RejectError::Lifecycle(_) => "lifecycle",
            RejectError::Store(_) => "store",
            RejectError::Misconfigured(_) => "misconfigured",
        }
    }
}

fn plural(n: u32) -> &'static str {
    if n == 1 { "" } else { "s" }
}

impl RejectError {
    /// How long the caller should wait before sending again, when the error is a transient one
    /// that ran out of tries (an open circuit's remaining time, SCWM's `Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RejectError::Scwm(e)
            | RejectError::Exhausted { error: e, .. }
            | RejectError::DeliveriesExhausted { error: e, .. } => e.retry_after(),
            _ => None,
        }
    }
}

pub struct Pipeline {
    scwm: ScwmClient,
    publisher: Publisher,
    /// Redelivery delays for transient failures that SCWM gave no Retry-After for.
    redelivery: RetryPolicy,
    /// Where alert keys map to SCWM items; `None` when no source carries alerts.
    store: Option<Arc<dyn CorrelationStore>>,
    /// Who this process is when it claims a key in the store.
    instance: String,
    /// How long another replica's claim is respected before its work is taken over.
    claim_ttl: Duration,
    /// Every source's settings, looked up by the name an event carries.
    sources: Sources,
    /// Fires when shutdown can wait no longer: a native command SCWM has not answered by then
    /// is given up ([`Pipeline::interrupted`]).
    cutoff: CancellationToken,
    interrupted: AtomicUsize,
    /// When to read an incident before acting on it, and how to read SCWM's answer.
    reconcile: config::ReconcileSettings,
    /// Where a key's hold goes, with its due time, to be offered again then.
    holds: Option<tokio::sync::mpsc::UnboundedSender<(crate::ids::CorrelationKey, u64)>>,
    /// The recent decisions, for people.
    journal: Arc<journal::Journal>,
}

/// What an alert's planning decided, noted as it happens for the journal entry written once
/// the event's outcome is known.
#[derive(Debug, Default)]
pub(crate) struct Noted {
    decision: Option<&'static str>,
    reason: Option<String>,
    route: Option<String>,
    item_id: Option<String>,
}

impl Noted {
    fn decided(&mut self, route: &str, record: &plan::Record, decision: &crate::lifecycle::Decision) {
        self.decision = Some(decision.label());
        self.reason = Some(decision.reason.clone());
        self.route = Some(route.to_owned());
        self.item_id = record.stored.as_ref().map(|s| s.item_id.to_string());
    }
}

impl Pipeline {
    pub fn new(scwm: ScwmClient, publisher: Publisher, redelivery: RetryPolicy) -> Self {
        Self {
            scwm,
            publisher,
            redelivery,
            store: None,
            instance: crate::ids::LicensePlate::generate().to_string(),
            claim_ttl: Duration::from_secs(30),
            sources: Sources::default(),
            cutoff: CancellationToken::new(),
            interrupted: AtomicUsize::new(0),
            reconcile: config::ReconcileSettings::default(),
            holds: None,
            journal: Arc::new(journal::Journal::default()),
        }
    }

    /// Where the decisions are kept for people (`[admin] recent_decisions` of them).
    pub fn with_journal(mut self, journal: Arc<journal::Journal>) -> Self {
        self.journal = journal;
        self
    }

    pub fn journal(&self) -> &Arc<journal::Journal> {
        &self.journal
    }

    /// Every hold the pipeline records goes to `holds` as (key, due unix ms), so that the key's
    /// held notification is offered again when due.
    pub fn with_holds(
        mut self,
        holds: tokio::sync::mpsc::UnboundedSender<(crate::ids::CorrelationKey, u64)>,
    ) -> Self {
        self.holds = Some(holds);
        self
    }

    fn hold_due(&self, key: &crate::ids::CorrelationKey, due_ms: u64) {
        if let Some(holds) = &self.holds {
            let _ = holds.send((key.clone(), due_ms));
        }
    }

    /// The key's hold, with the source of its alerts, when it has one.
    pub async fn held(
        &self,
        key: &crate::ids::CorrelationKey,
    ) -> Result<Option<(String, crate::plan::Held)>, StoreError> {
        let Some(store) = &self.store else { return Ok(None) };
        let Some((record, _)) = records::read(store.as_ref(), key).await? else { return Ok(None) };
        Ok(record.source.zip(record.held))
    }

    /// Every key with a hold, and when it is due: what a fresh process (or one taking over from
    /// a replica that died) has to offer again.
    pub async fn holds(&self) -> Result<Vec<(crate::ids::CorrelationKey, u64)>, StoreError> {
        let Some(store) = &self.store else { return Ok(vec![]) };
        records::holds(store.as_ref()).await
    }

    /// When the pipeline reads an incident before acting on it, and which field of a read
    /// names the key.
    pub fn with_reconcile(mut self, reconcile: config::ReconcileSettings) -> Self {
        self.reconcile = reconcile;
        self
    }

    /// Native commands still waiting for SCWM when `cutoff` fires are given up: dead-lettered
    /// when no transport will deliver them again, and answered "retry later".
    pub fn with_cutoff(mut self, cutoff: CancellationToken) -> Self {
        self.cutoff = cutoff;
        self
    }

    /// Native commands given up at the cutoff so far.
    pub fn interrupted(&self) -> usize {
        self.interrupted.load(Ordering::Acquire)
    }

    /// The sources whose events this pipeline processes (their alert settings and limits).
    pub fn with_sources(mut self, sources: Sources) -> Self {
        self.sources = sources;
        self
    }

    /// Alerts need a correlation store; `claim_ttl` bounds how long a crashed replica's
    /// unfinished work waits before another takes it over.
    pub fn with_store(mut self, store: Arc<dyn CorrelationStore>, claim_ttl: Duration) -> Self {
        self.store = Some(store);
        self.claim_ttl = claim_ttl;
        self
    }

    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Dead-letters a whole message: one that never became an event (it failed authentication
    /// or no decoder could read it, `reason_kind` `unauthenticated` or `decode`), or one whose
    /// last delivery still had work to retry (`deliveries_exhausted`). The transport
    /// acknowledges the message only when this succeeds.
    pub async fn reject_message(
        &self,
        source: &crate::event::Source,
        original: &crate::event::Original,
        op: Option<crate::scwm::Operation>,
        (reason_kind, reason): (&'static str, String),
        deliveries: u32,
    ) -> Result<(), PublishError> {
        tracing::warn!(
            source = %source.name,
            subject = %source.subject,
            reason_kind,
            error = %reason,
            "message dead-lettered"
        );
        let letter = DeadLetter {
            op,
            license_plate: None,
            key: None,
            source: source.clone(),
            reason_kind,
            reason,
            attempts: 0,
            deliveries,
            scwm_header: None,
            at: std::time::SystemTime::now(),
            original: original.clone(),
        };
        let published = self.publisher.dead_letter(&letter).await;
        self.journal.record(journal::Entry {
            seq: 0,
            at: letter.at,
            source: source.name.clone(),
            transport: source.transport.as_str(),
            key: String::new(),
            alertname: None,
            route: None,
            decision: "refused".to_owned(),
            reason: format!("{reason_kind}: {}", letter.reason),
            outcome: if published.is_ok() { "reject" } else { "retry" },
            detail: published.as_ref().err().map(|e| format!("the dead letter could not be published: {e}")),
            item_id: None,
            license_plate: None,
            trace_id: None,
            attempt: deliveries.max(1),
        });
        published
    }

    pub fn scwm(&self) -> &ScwmClient {
        &self.scwm
    }

    /// One SCWM request for an event: it waits out an open circuit (until the shutdown cutoff)
    /// when the delivery should, else meets it.
    async fn call(&self, request: &ScwmRequest, delivery: Delivery) -> Result<ScwmSuccess, ScwmFailure> {
        if delivery.rides_out_outages() {
            self.scwm.call_riding_out(request, &self.cutoff).await
        } else {
            self.scwm.call(request).await
        }
    }

    pub async fn process_one(&self, event: &Event, delivery: Delivery) -> Outcome {
        let span = tracing::info_span!(
            parent: &event.span,
            "event",
            otel.name = "process event",
            license_plate = %event.license_plate,
            key = %event.key,
            source = %event.source.name,
            transport = event.source.transport.as_str(),
            // i64: the OpenTelemetry layer exports unsigned integers as text.
            attempt = i64::from(delivery.attempt),
            trace_id = tracing::field::Empty,
        );
        let trace_id = crate::trace_context::trace_id_of(&span).unwrap_or_else(|| event.trace.trace_id_hex());
        span.record("trace_id", &trace_id);
        async {
            // Work whose result could not be kept is refused for later before SCWM acts on it.
            if let Err(e) = self.publisher.room() {
                let outcome = self.publish_failed(e);
                crate::observe::event_processed(&event.source.name, outcome.label());
                return outcome;
            }
            let mut noted = Noted::default();
            let outcome = match &event.kind {
                EventKind::Command(cmd) => self.run_command(event, cmd, delivery).await,
                EventKind::Alert(alert) => self.run_alert(event, alert, delivery, &mut noted).await,
            };
            match &outcome {
                Outcome::Retry { after, cause } => {
                    tracing::warn!(retry_in_ms = after.as_millis() as u64, error = %cause, "event will be retried")
                }
                Outcome::Reject(r) => tracing::warn!(error = %r.error, "event dead-lettered"),
                other => tracing::debug!(outcome = other.label(), "event finished"),
            }
            crate::observe::event_processed(&event.source.name, outcome.label());
            self.journal.record(entry(event, delivery, &outcome, noted, &trace_id));
            outcome
        }
        .instrument(span)
        .await
    }

    async fn run_command(&self, event: &Event, cmd: &Command, delivery: Delivery) -> Outcome {
        let request = command_request(event, cmd);
        let started = Instant::now();
        let called = tokio::select! {
            called = self.call(&request, delivery) => called,
            () = self.cutoff.cancelled() => return self.interrupt(event, &request, delivery).await,
        };
        match called {
            Ok(success) => self.finish(event, &request, success, delivery).await,
            Err(failure) => self.fail(event, &request, failure, delivery, started.elapsed()).await,
        }
    }

    /// Gives up a native command SCWM has not answered when shutdown can wait no longer. SCWM
    /// may have acted on it, so the event is not simply dropped: unless the transport delivers
    /// it again (JetStream), it is dead-lettered with its licensePlate, which makes a resend
    /// safe, and the caller is told to retry.
    async fn interrupt(&self, event: &Event, request: &ScwmRequest, delivery: Delivery) -> Outcome {
        self.interrupted.fetch_add(1, Ordering::AcqRel);
        let retry = Outcome::Retry { after: Duration::from_secs(1), cause: RetryCause::ShuttingDown };
        if delivery.redelivered {
            return retry;
        }
        let letter = DeadLetter {
            op: Some(request.op),
            license_plate: Some(request.license_plate.clone()),
            key: Some(event.key.clone()),
            source: event.source.clone(),
            reason_kind: "interrupted",
            reason: format!(
                "the bridge shut down before SCWM answered {} (licensePlate {}); SCWM may have acted on it, \
                 and a resend with the same licensePlate is safe",
                request.op, request.license_plate
            ),
            attempts: 1,
            deliveries: delivery.attempt,
            scwm_header: None,
            at: std::time::SystemTime::now(),
            original: event.original.clone(),
        };
        if let Err(e) = self.publisher.dead_letter(&letter).await {
            tracing::error!(error = %e, license_plate = %request.license_plate, "an interrupted command could not be dead-lettered");
        }
        retry
    }

    async fn finish(
        &self,
        event: &Event,
        request: &ScwmRequest,
        success: ScwmSuccess,
        delivery: Delivery,
    ) -> Outcome {
        match self.publish_success(event, request, &success, delivery.results_kept_by()).await {
            Ok(result) => {
                Outcome::Done(Box::new(Done { envelope: Some(success.envelope), results: vec![result] }))
            }
            Err(outcome) => outcome,
        }
    }

    async fn fail(
        &self,
        event: &Event,
        request: &ScwmRequest,
        failure: ScwmFailure,
        delivery: Delivery,
        elapsed: Duration,
    ) -> Outcome {
        let ScwmFailure { error, attempts, envelope, .. } = failure;
        // SCWM answered: that answer is a result like any other, even when it is an error.
        if let Some(env) = &envelope
            && let Err(outcome) = self
                .publish_answer(
                    result_event(event, request, env, attempts, elapsed, !error.is_retryable()),
                    delivery.results_kept_by(),
                )
                .await
        {
            return outcome;
        }
        match self.retry_or_reject(error, attempts, delivery) {
            Ok(retry) => retry,
            Err(error) => self.reject(event, Some(request), error, attempts, envelope, delivery).await,
        }
    }

    /// Publishes one SCWM answer, `result` ([`result_event`]). On failure the outcome to
    /// return instead.
    async fn publish_answer(&self, result: ResultEvent, kept: KeptBy) -> Result<ResultEvent, Outcome> {
        match self.publisher.result(&result, kept).await {
            Ok(()) => Ok(result),
            Err(e) => Err(self.publish_failed(e)),
        }
    }

    /// Publishes SCWM's acceptance as a final result, kept as `kept` says.
    async fn publish_success(
        &self,
        event: &Event,
        request: &ScwmRequest,
        success: &ScwmSuccess,
        kept: KeptBy,
    ) -> Result<ResultEvent, Outcome> {
        let result = result_event(event, request, &success.envelope, success.attempts, success.elapsed, true);
        self.publish_answer(result, kept).await
    }

    /// SCWM's acceptance of an alert's step, published to every sink but the outbox when the
    /// outbox is in the correlation store: its entry is returned, to be written with the
    /// record ([`Publisher::stage_result`]).
    async fn stage_success(
        &self,
        event: &Event,
        request: &ScwmRequest,
        success: &ScwmSuccess,
    ) -> Result<(ResultEvent, Option<crate::publish::outbox::Prepared>), Outcome> {
        let result = result_event(event, request, &success.envelope, success.attempts, success.elapsed, true);
        let store = self.store.as_ref().and_then(|s| s.outbox_identity());
        match self.publisher.stage_result(&result, store).await {
            Ok(entry) => Ok((result, entry)),
            Err(e) => Err(self.publish_failed(e)),
        }
    }

    /// Publishes SCWM's refusal, when it answered at all; final unless it is to be retried.
    async fn publish_refusal(
        &self,
        event: &Event,
        request: &ScwmRequest,
        failure: &ScwmFailure,
    ) -> Result<(), Outcome> {
        let Some(envelope) = &failure.envelope else { return Ok(()) };
        let is_final = !failure.error.is_retryable();
        let result = result_event(event, request, envelope, failure.attempts, failure.elapsed, is_final);
        self.publish_answer(result, KeptBy::Outbox).await.map(|_| ())
    }

    fn publish_failed(&self, e: PublishError) -> Outcome {
        Outcome::Retry { after: self.redelivery.initial_backoff, cause: RetryCause::Publish(e) }
    }

    /// A transient error becomes `Ok(Retry)` while the transport will deliver again; otherwise
    /// the error to dead-letter the event with.
    fn retry_or_reject(
        &self,
        error: ScwmError,
        attempts: u32,
        delivery: Delivery,
    ) -> Result<Outcome, RejectError> {
        if !error.is_retryable() {
            return Err(RejectError::Scwm(error));
        }
        if delivery.last && delivery.redelivered {
            return Err(RejectError::DeliveriesExhausted { deliveries: delivery.attempt, attempts, error });
        }
        if delivery.last {
            return Err(RejectError::Exhausted { attempts, error });
        }
        // Later deliveries wait longer, whatever SCWM asked for, so a long outage does not burn
        // through the transport's delivery budget in seconds.
        let backoff = self.redelivery.backoff(delivery.attempt, &mut rand::rng());
        let after = error.retry_after().map_or(backoff, |asked| asked.max(backoff));
        Ok(Outcome::Retry { after, cause: RetryCause::Scwm(error) })
    }

    /// Dead-letters the event and answers `Reject`, or `Retry` when the dead letter could not
    /// be published (the event must not be acknowledged then).
    async fn reject(
        &self,
        event: &Event,
        request: Option<&ScwmRequest>,
        error: RejectError,
        attempts: u32,
        envelope: Option<ResponseEnvelope>,
        delivery: Delivery,
    ) -> Outcome {
        let letter = DeadLetter {
            op: request.map(|r| r.op),
            license_plate: Some(request.map_or(&event.license_plate, |r| &r.license_plate).clone()),
            key: Some(event.key.clone()),
            source: event.source.clone(),
            reason_kind: error.kind(),
            reason: error.to_string(),
            attempts,
            deliveries: delivery.attempt,
            scwm_header: envelope.as_ref().map(|e| e.raw_header().to_owned()),
            at: std::time::SystemTime::now(),
            original: event.original.clone(),
        };
        if let Err(e) = self.publisher.dead_letter(&letter).await {
            return self.publish_failed(e);
        }
        Outcome::Reject(Box::new(Rejection { error, envelope }))
    }
}

/// The journal's entry for an event's outcome: what was decided and why, and what SCWM did.
fn entry(
    event: &Event,
    delivery: Delivery,
    outcome: &Outcome,
    noted: Noted,
    trace_id: &str,
) -> journal::Entry {
    let (decision, alertname) = match &event.kind {
        EventKind::Command(cmd) => (cmd.op.as_str(), None),
        EventKind::Alert(alert) => (noted.decision.unwrap_or("none"), alert.alertname().map(str::to_owned)),
    };
    let done = match outcome {
        Outcome::Done(d) => Some(d),
        _ => None,
    };
    let last = done.and_then(|d| d.results.last());
    let detail = match outcome {
        Outcome::Retry { cause, .. } => Some(cause.to_string()),
        Outcome::Reject(r) => Some(r.error.to_string()),
        Outcome::Done(_) | Outcome::Duplicate { .. } => None,
    };
    let reason = match (noted.reason, outcome) {
        (Some(reason), _) => reason,
        (None, Outcome::Duplicate { reason }) => reason.clone(),
        (None, Outcome::Done(d)) => {
            let ops: Vec<_> = d.results.iter().map(|r| r.op.as_str()).collect();
            format!("SCWM accepted {}", ops.join(", "))
        }
        (None, _) => String::new(),
    };
    journal::Entry {
        seq: 0,
        at: std::time::SystemTime::now(),
        source: event.source.name.clone(),
        transport: event.source.transport.as_str(),
        key: event.key.to_string(),
        alertname,
        route: noted.route,
        decision: decision.to_owned(),
        reason,
        outcome: outcome.label(),
        detail,
        item_id: done
            .and_then(|d| d.results.iter().rev().find_map(|r| r.item_id.as_ref()))
            .map(|i| i.to_string())
            .or(noted.item_id),
        license_plate: Some(last.map_or(&event.license_plate, |r| &r.license_plate).to_string()),
        trace_id: Some(trace_id.to_owned()),
        attempt: delivery.attempt,
    }
}

fn result_event(
    event: &Event,
    request: &ScwmRequest,
    envelope: &ResponseEnvelope,
    attempts: u32,
    duration: Duration,
    is_final: bool,
) -> ResultEvent {
    let header = envelope.header();
    ResultEvent {
        id: ResultEvent::id_for(&request.license_plate, is_final),
        is_final,
        op: request.op,
        license_plate: request.license_plate.clone(),
        item_id: envelope
            .item_id()
            .or_else(|| request.payload.get("id").and_then(|v| v.as_str()).map(crate::ids::ItemId::new)),
        key: event.key.clone(),
        source: event.source.clone(),
        attempts,
        duration,
        header: envelope.raw_header().to_owned(),
        is_err: header.is_err,
        err_code: header.err_code.clone(),
        finished_at: std::time::SystemTime::now(),
        traceparent: crate::trace_context::headers_of(&tracing::Span::current())
            .remove("traceparent")
            .unwrap_or_else(|| event.trace.child().to_string()),
    }
}

/// The one SCWM request a native command is: its operation and payload as sent, the event's
/// licensePlate.
fn command_request(event: &Event, cmd: &Command) -> ScwmRequest {
    ScwmRequest {
        op: cmd.op,
        license_plate: event.license_plate.clone(),
        owner_id: None,
        payload: Arc::clone(&cmd.payload),
        headers: HeaderMap::new(),
    }
}
