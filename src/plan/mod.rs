//! The alert planner: the functional core of the alert pipeline. From what the store holds for
//! a correlation key ([`Record`]), what an alert event says ([`Facts`]) and its rendered
//! content, [`plan`] says what to do; after each SCWM answer, [`advance`] says what the store
//! holds next. The pipeline is the shell around it: it loads, calls SCWM, saves and publishes.
//!
//! It owns the record format, the claim rules between replicas, the order of stream messages,
//! the choice of lifecycle decision, the rendered steps and their licensePlates. It performs no
//! I/O and reads no clock (`now` is a parameter), so the pipeline, an operator's "explain" and
//! the tests all run the same code.
//!
//! # The protocol, per key
//! 1. A pending intent from an earlier attempt (this process's, or a replica's whose claim is
//!    older than `claim_ttl`) is finished first, with its own licensePlates, so a crash between
//!    the SCWM call and the store write cannot swallow it or make SCWM act twice
//!    ([`Plan::Resume`]). A fresh claim by another replica means "busy" ([`Plan::Busy`]).
//! 2. Decide with [`lifecycle`]. Messages of one key can arrive out of stream order (a retried
//!    one comes back after later ones), so the record keeps the newest stream message decided
//!    for the key, written even when the decision is nothing, and an older one is decided with
//!    [`lifecycle::decide_late`]: the newer one's state stands.
//! 3. Render every step first (a template error must not leave a decision half done), then the
//!    caller claims the key by writing [`Plan::Run`]'s record with compare-and-swap: two replicas
//!    can never both claim it from the same revision, so they never both add an incident.
//! 4. The caller runs the steps in order; [`advance`] records each answer. At the end the new
//!    mapping is in place and the intent is gone.
//!
//! When SCWM answers 404 for an item the store maps, the mapping is dropped ([`Advance::NotFound`])
//! and the caller plans again as for an unknown key.

pub mod hold;
mod plates;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use hold::{Damping, Flap, Held, HeldKind, HoldFacts};
pub use plates::{StepIdentity, step_plates};

use crate::{
    alert::AlertStatus,
    ids::{CorrelationKey, ItemId, LicensePlate},
    incident::{Operation, Payload},
    lifecycle::{self, Decision, Input, Stored, TransitionError},
    template::{Content, RenderError, Renderer},
    verify::limits::truncate_strings,
};

/// What the store keeps per key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The incident the key maps to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stored: Option<Stored>,
    /// Operations decided and claimed but not all done yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// The newest stream message decided for this key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest: Option<Latest>,
    /// The correlation key itself, for whoever walks the store (a backend may keep only a hash
    /// of a long key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<CorrelationKey>,
    /// The source whose alerts the key comes from, for the same readers (its settings say
    /// which resolutions mean "won't fix").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The last licensePlate of a mapping that was dropped (a person's "won't fix" ran its
    /// course, the id turned out to be another incident's): the next steps chain on from it,
    /// so a new incident is not mistaken by SCWM for a repeat of the one that opened the old.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub follows: Option<LicensePlate>,
    /// The key's recent status changes, while its source damps flapping.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flap: Option<Flap>,
    /// A transition held back (a flapping alert's end state, a new alert's add) and when to look
    /// at it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
    /// The content hash the key's last rendered inputs gave: a repeat with the same inputs has
    /// the same content, so it need not be rendered to be found unchanged. Kept on writes made
    /// anyway, never a write of its own (inputs that change while the content does not, as
    /// Grafana's values do, would make every repeat a write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memo: Option<ContentMemo>,
}

/// Inputs ([`Renderer::inputs`]) and the content hash they render to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentMemo {
    pub inputs: String,
    pub hash: String,
}

/// One target's content, rendered only when a decision needs more than its hash and the
/// record's [`ContentMemo`] does not already know the hash for these inputs.
pub struct Contents<'r> {
    renderer: &'r Renderer<'r>,
    rendered: std::cell::OnceCell<Content>,
}

impl<'r> Contents<'r> {
    pub fn new(renderer: &'r Renderer<'r>) -> Self {
        Contents { renderer, rendered: std::cell::OnceCell::new() }
    }

    /// The content, rendered on first need.
    pub fn get(&self) -> Result<&Content, RenderError> {
        if let Some(content) = self.rendered.get() {
            return Ok(content);
        }
        let content = self.renderer.content()?;
        Ok(self.rendered.get_or_init(|| content))
    }

    /// The content hash: `memo`'s when it was made from the same inputs, else rendered.
    pub fn hash<'m>(&'m self, memo: Option<&'m ContentMemo>) -> Result<&'m str, RenderError> {
        match memo {
            Some(m) if self.rendered.get().is_none() && m.inputs == self.renderer.inputs() => Ok(&m.hash),
            _ => Ok(&self.get()?.hash),
        }
    }

    /// What to remember for the next event, once the content is rendered.
    fn memo(&self) -> Option<ContentMemo> {
        let content = self.rendered.get()?;
        Some(ContentMemo { inputs: self.renderer.inputs().to_owned(), hash: content.hash.clone() })
    }
}

/// The newest stream message decided for a key, and what it said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Latest {
    pub position: Position,
    pub status: AlertStatus,
}

/// Where a JetStream message sits in its stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub stream: String,
    pub sequence: u64,
    pub published_ms: u64,
}

impl Position {
    /// Whether this message came before `other` in the same stream. The publish time must agree
    /// with the sequence: a stream created again starts its sequence over, and its messages are
    /// newer than the old stream's whatever their sequence.
    pub fn is_before(&self, other: &Position) -> bool {
        self.stream == other.stream
            && self.sequence < other.sequence
            && self.published_ms <= other.published_ms
    }
}

/// Operations decided and claimed but not all done yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The instance that claimed the key.
    pub owner: String,
    pub claimed_at_ms: u64,
    /// The decision's label, for logs.
    pub decision: String,
    pub content_hash: String,
    pub steps: Vec<Step>,
    /// The mapping after the last step that is done; the base for the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Stored>,
}

/// One SCWM operation of an intent, rendered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub op: Operation,
    pub license_plate: LicensePlate,
    pub payload: Payload,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
    #[serde(default)]
    pub done: bool,
}

/// What an alert event says, as far as planning needs it.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub source: &'a str,
    pub key: &'a CorrelationKey,
    /// The alert's status, or the group's.
    pub status: AlertStatus,
    /// Where the message sits in its stream (JetStream), for ordering.
    pub position: Option<Position>,
    /// When the alert episode began ([`crate::alert::episode_start`]).
    pub episode: Option<u64>,
    /// The event's own licensePlate: the seed of the step plates when there is no episode.
    pub event_plate: &'a LicensePlate,
    pub reopen_window: Duration,
    /// The route's partner: a new incident is submitted to it.
    pub partner: Option<&'a str>,
    /// The ownerId of every SCWM request (the route's, else the source's); `None`: the client's.
    pub owner_id: Option<&'a str>,
    /// Every string sent on to SCWM is cut to this many characters.
    pub max_string_chars: usize,
    /// Flap damping and hold_add: the source's settings and the notification to keep.
    pub hold: HoldFacts<'a>,
}

/// Who plans, for the claim rules between replicas.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    pub instance: &'a str,
    /// How long another replica's claim is respected before its work is taken over.
    pub claim_ttl: Duration,
}

/// What to do for one event.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Another replica holds a fresh claim on the key: offer the event again after this long.
    Busy { retry_after: Duration },
    /// An earlier intent is unfinished and may be taken over: run its steps (with its own
    /// licensePlates), then plan again.
    Resume,
    /// No SCWM call. `record`, when set, must be saved (compare-and-swap): it remembers the
    /// newest stream message.
    Nothing { decision: Decision, record: Option<Record> },
    /// Claim the key by saving `record` (compare-and-swap; a conflict means plan again from a
    /// fresh read), then run its pending steps.
    Run { decision: Decision, record: Record },
}

/// Plans one event against `record`. `after_not_found` is the licensePlate of a request SCWM
/// just answered 404 for this key (its mapping is gone): the decision says so, and the new
/// steps follow on from that plate instead of repeating the ones that opened the lost incident.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    record: &Record,
    facts: &Facts<'_>,
    content: &Contents<'_>,
    claimant: Claimant<'_>,
    now: SystemTime,
    after_not_found: Option<&LicensePlate>,
) -> Result<Plan, RenderError> {
    if let Some(pending) = &record.pending {
        let age = unix_ms(now).saturating_sub(pending.claimed_at_ms);
        let ttl = u64::try_from(claimant.claim_ttl.as_millis()).unwrap_or(u64::MAX);
        if pending.owner != claimant.instance && age < ttl {
            return Ok(Plan::Busy { retry_after: Duration::from_millis(ttl - age) });
        }
        return Ok(Plan::Resume);
    }

    // A message older than the newest one decided for the key is late; the newest is
    // remembered, with what it said, even when its decision is nothing.
    let late = match (&facts.position, &record.latest) {
        (Some(p), Some(latest)) if p.is_before(&latest.position) => Some(latest.status),
        _ => None,
    };
    // From the record as read: the working copy below is changed while the hash is in use.
    let content_hash = content.hash(record.memo.as_ref())?;
    let mut record = record.clone();
    let newest = late.is_none()
        && facts.position.is_some()
        && record.latest.as_ref().map(|l| &l.position) != facts.position.as_ref();
    if newest && let Some(position) = facts.position.clone() {
        record.latest = Some(Latest { position, status: facts.status });
    }
    let mut changed = newest;
    if record.key.as_ref() != Some(facts.key) {
        record.key = Some(facts.key.clone());
    }
    if record.source.as_deref() != Some(facts.source) {
        record.source = Some(facts.source.to_owned());
    }

    let input = Input {
        status: facts.status,
        content_hash,
        now,
        reopen_window: facts.reopen_window,
        partner: facts.partner,
    };
    let mut decision = if let Some(newer) = late {
        lifecycle::decide_late(record.stored.as_ref(), &input, newer)
    } else if after_not_found.is_some() {
        lifecycle::decide_after_not_found(&input)
    } else {
        lifecycle::decide(record.stored.as_ref(), &input)
    };
    // Damping looks at the newest notifications only: a late one changes no history.
    if late.is_none() {
        let seen = hold::Seen {
            status: facts.status,
            now_ms: unix_ms(now),
            original: facts.hold.original,
            recheck: facts.hold.recheck,
        };
        let damped = hold::damp(&mut decision, &mut record.flap, &mut record.held, seen, &facts.hold.damping);
        changed |= damped != hold::Change::None;
    }
    // A person's reopen stands until the alert fires again; then the incident is the bridge's
    // to close once more.
    if facts.status == AlertStatus::Firing
        && late.is_none()
        && let Some(stored) = record.stored.as_mut()
        && stored.reopened_by_person
    {
        stored.reopened_by_person = false;
        changed = true;
    }
    if decision.forget {
        if let Some(plate) = record.stored.take().and_then(|s| s.last_license_plate) {
            record.follows = Some(plate);
        }
        changed = true;
    }
    if decision.is_nothing() {
        if changed && let Some(memo) = content.memo() {
            record.memo = Some(memo);
        }
        return Ok(Plan::Nothing { decision, record: changed.then_some(record) });
    }
    // Steps are sent: their payloads and the hash they are known by come from this rendering.
    let content_hash = content.get()?.hash.as_str();

    let previous = record
        .stored
        .as_ref()
        .and_then(|s| s.last_license_plate.as_ref())
        .or(after_not_found)
        .or(record.follows.as_ref());
    let plates = step_plates(&StepIdentity {
        source: facts.source,
        key: facts.key.as_str(),
        episode: facts.episode,
        fallback: facts.event_plate,
        previous,
        content_hash,
        ops: &decision.ops,
    });
    let steps = decision
        .ops
        .iter()
        .zip(plates)
        .map(|(&op, license_plate)| {
            let mut payload = content.renderer.payload(op, content.get()?, None)?;
            if decision.kind == lifecycle::DecisionKind::FlapStart && op == Operation::Edit {
                let cycles = record.flap.as_ref().map_or(0, |f| f.refires_ms.len());
                add_note(&mut payload, &hold::flapping_note(cycles, &facts.hold.damping));
            }
            truncate_strings(&mut payload, facts.max_string_chars);
            Ok(Step { op, license_plate, payload, owner_id: facts.owner_id.map(str::to_owned), done: false })
        })
        .collect::<Result<Vec<_>, RenderError>>()?;
    record.pending = Some(Pending {
        owner: claimant.instance.to_owned(),
        claimed_at_ms: unix_ms(now),
        decision: decision.label().to_owned(),
        content_hash: content_hash.to_owned(),
        steps,
        progress: record.stored.clone(),
    });
    record.memo = content.memo();
    Ok(Plan::Run { decision, record })
}

/// The next step of `record`'s intent that is not done: its index, and the payload to send,
/// with the `id` of the incident it addresses (known only once an add is done). `None` when
/// every step is done (or there is no intent). An operation on an item when no incident is
/// known cannot be sent: that is a [`TransitionError`], and the intent is given up.
pub fn next_step(record: &Record) -> Option<(usize, Result<Payload, TransitionError>)> {
    let pending = record.pending.as_ref()?;
    let (index, step) = pending.steps.iter().enumerate().find(|(_, s)| !s.done)?;
    let mut payload = step.payload.clone();
    if step.op.requires_id() {
        match &pending.progress {
            Some(stored) => {
                payload.insert("id".into(), stored.item_id.as_str().into());
            }
            None => return Some((index, Err(TransitionError::NoIncident(step.op)))),
        }
    }
    Some((index, Ok(payload)))
}

/// What SCWM said to one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// SCWM accepted it; an add answers with the new incident's id.
    Accepted { item_id: Option<ItemId> },
    /// SCWM does not know the incident the step addresses (404).
    NotFound,
}

/// What the store holds after an answer, and what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Recorded; more steps follow. Save the record so a resumed intent does not repeat this one.
    Next,
    /// Every step done: the record holds the new mapping and no intent. Save it.
    Finished,
    /// The incident is gone on SCWM's side: the mapping and the intent are dropped. Save the
    /// record and plan again, after this step's plate.
    NotFound(LicensePlate),
    /// The answer cannot be applied (an add without an id): the intent is given up as by
    /// [`give_up`]. Save the record and dead-letter the event.
    Abandon(TransitionError),
}

/// Records the answer to step `index` of `record`'s intent.
pub fn advance(record: &mut Record, index: usize, answer: Answer, now: SystemTime) -> Advance {
    let Some(pending) = record.pending.as_mut() else { return Advance::Finished };
    let Some(step) = pending.steps.get(index).cloned() else { return Advance::Finished };
    match answer {
        Answer::NotFound => {
            // What the inputs render to does not depend on the mapping: the memo stays.
            *record = Record {
                latest: record.latest.take(),
                key: record.key.take(),
                memo: record.memo.take(),
                ..Record::default()
            };
            Advance::NotFound(step.license_plate)
        }
        Answer::Accepted { item_id } => {
            let next = lifecycle::apply(
                pending.progress.as_ref(),
                step.op,
                item_id,
                &pending.content_hash,
                now,
                step.license_plate,
            );
            match next {
                Err(e) => {
                    give_up(record);
                    Advance::Abandon(e)
                }
                Ok(mut next) => {
                    if step.op == Operation::Submit
                        && let Some(partner) = step.payload.get("partnerId").and_then(|p| p.as_str())
                    {
                        // The bridge's own handover is no drift when a read reports it.
                        next.partner = Some(partner.to_owned());
                    }
                    pending.steps[index].done = true;
                    pending.progress = Some(next);
                    if pending.steps.iter().any(|s| !s.done) {
                        Advance::Next
                    } else {
                        record.stored = pending.progress.take();
                        record.pending = None;
                        Advance::Finished
                    }
                }
            }
        }
    }
}

/// Whether the next step of `record`'s intent addresses an incident SCWM has not confirmed for
/// `after` (or ever, as far as the record knows): read it first, and [`converge`] with what
/// SCWM says, so the step does not act on an incident that changed or is another's now.
pub fn needs_check(record: &Record, now: SystemTime, after: Duration) -> bool {
    let Some(pending) = &record.pending else { return false };
    let Some(step) = pending.steps.iter().find(|s| !s.done) else { return false };
    let Some(progress) = &pending.progress else { return false };
    step.op.requires_id() && unconfirmed_for(progress, now, after)
}

/// Whether SCWM last confirmed `stored` at least `after` ago (or never did).
pub fn unconfirmed_for(stored: &Stored, now: SystemTime, after: Duration) -> bool {
    stored.confirmed_at.is_none_or(|at| now.duration_since(at).unwrap_or(Duration::ZERO) >= after)
}

/// What [`converge`] did to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    /// Each difference SCWM showed.
    pub drift: Vec<lifecycle::converge::Drift>,
    /// The intent that was under way no longer fits SCWM's state and was dropped: plan again.
    pub replan: bool,
}

/// Brings `record` in line with what a read of its incident found: the mapping an intent is
/// building on when one is under way (which is then dropped if SCWM changed under it, so the
/// event is planned again from the truth), else the stored one. See
/// [`lifecycle::converge`](crate::lifecycle::converge).
pub fn converge(
    record: &mut Record,
    seen: &lifecycle::converge::Seen,
    key: &CorrelationKey,
    wont_fix: &[String],
    now: SystemTime,
) -> Converged {
    step_seen_done(record, seen, now);
    let base = match &record.pending {
        Some(pending) => pending.progress.as_ref(),
        None => record.stored.as_ref(),
    };
    let Some(base) = base else { return Converged { drift: vec![], replan: false } };
    let (mut next, drift) = lifecycle::converge::converge(base, seen, key, wont_fix, now);
    // The intent was about to reopen the incident: the alert fires and the bridge wants it open.
    // Found open (a person's reopen, or the reopen of an owner that died or whose claim only
    // looked stale), it is open as the bridge wanted: not a person's decision for the bridge to
    // respect, so the next resolve closes it.
    let meant_reopen = record
        .pending
        .as_ref()
        .and_then(|p| p.steps.iter().find(|s| !s.done))
        .is_some_and(|s| s.op == Operation::Reopen);
    if meant_reopen && let Some(next) = next.as_mut() {
        next.reopened_by_person = false;
    }
    if next.is_none()
        && let Some(plate) = &base.last_license_plate
    {
        record.follows = Some(plate.clone());
    }
    let replan = record.pending.is_some() && !drift.is_empty();
    if replan {
        record.pending = None;
    }
    match &mut record.pending {
        Some(pending) => pending.progress = next,
        None => record.stored = next,
    }
    Converged { drift, replan }
}

/// Gives up on the intent for good: the mapping keeps what is done, the intent is dropped.
pub fn give_up(record: &mut Record) {
    if let Some(pending) = record.pending.take() {
        record.stored = pending.progress;
    }
}

/// Milliseconds since the Unix epoch; 0 before it.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)).unwrap_or(0)
}

#[cfg(test)]
mod tests;

/// Appends `note` to the payload's description (or makes it the description).
fn add_note(payload: &mut Payload, note: &str) {
    let description = match payload.get("description").and_then(|d| d.as_str()) {
        Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
        _ => note.to_owned(),
    };
    payload.insert("description".into(), description.into());
}

/// When SCWM already shows what the intent's next close does, with the close's own resolution,
/// that close was carried out with its licensePlate: by an owner that died between SCWM's answer
/// and its store write, or by one still at work whose claim looked stale (a clock that jumped).
/// The step is recorded as done rather than taken for a person's close. (A close with another
/// resolution is a person's. A reopen leaves no such mark; see [`converge`].)
fn step_seen_done(record: &mut Record, seen: &lifecycle::converge::Seen, now: SystemTime) {
    let lifecycle::converge::Seen::Incident(observed) = seen else { return };
    let Some(pending) = record.pending.as_ref() else { return };
    let Some(progress) = pending.progress.as_ref() else { return };
    let Some(index) = pending.steps.iter().position(|s| !s.done) else { return };
    let step = &pending.steps[index];
    let shows_it = match (step.op, observed.state) {
        (Operation::Close, lifecycle::IncidentState::Closed) => {
            let ours = step.payload.get("resolution").and_then(|r| r.as_str());
            ours.is_some() && observed.resolution.as_deref() == ours
        }
        _ => false,
    };
    if !shows_it || progress.state == observed.state {
        return;
    }
    // Recorded as SCWM's answer to it would be: the last step done ends the intent.
    advance(record, index, Answer::Accepted { item_id: None }, now);
}
