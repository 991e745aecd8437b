//! The incident lifecycle: a pure state machine from (what the store remembers about a
//! correlation key, what the alert or group says now) to the SCWM operations to perform, and from
//! a successful operation to what the store should remember next.
//!
//! It owns the rules and nothing else: no I/O, no clock (time is a parameter), no templates (it
//! sees only the content hash of what would be sent). The caller runs the operations in order,
//! stores [`apply`]'s result after each success, and logs every [`Decision`] with its reason.
//!
//! | stored \ event         | firing, content changed | firing, unchanged | resolved |
//! |------------------------|-------------------------|-------------------|----------|
//! | unknown                | add (+ submit)          | add (+ submit)    | nothing  |
//! | open                   | edit                    | nothing           | close    |
//! | closed < window ago    | reopen, edit            | reopen            | nothing  |
//! | closed >= window ago   | replace                 | replace           | nothing  |
//!
//! "(+ submit)": when the route names a partner. "replace": add (+ submit) a new incident; the
//! key then maps to it and the old one is no longer tracked.
//! A repeat notification (same content) must not call SCWM, which is why unchanged-and-open is
//! nothing.
//!
//! # When a message arrives after a newer one
//! Each notification states the whole current state, so when the caller has already decided a
//! newer message for the key, an older one arriving late must not undo it: [`decide_late`]
//! leaves the state as the newer message made it. It adds only what the newer message could not
//! show: that the alert fired at all. A late firing message for a key with no incident, whose
//! newer message was a resolve, adds the incident (+ submit) and closes it, as deciding the two
//! in order would have done. Every other late message is nothing.
//!
//! # When SCWM no longer knows the item
//! If an operation on a stored item answers 404, the incident is gone on SCWM's side: delete the
//! stored mapping and call [`decide`] again with `None` (or [`decide_after_not_found`], which says
//! so). A firing alert then opens a new incident; a resolved one does nothing.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::{
    alert::AlertStatus,
    ids::{ItemId, LicensePlate},
    incident::Operation,
};

/// Whether the stored incident is open or closed on SCWM's side, as far as the bridge knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncidentState {
    Open,
    Closed,
}

/// What the correlation store keeps per key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub item_id: ItemId,
    pub state: IncidentState,
    /// The content hash of what SCWM last received (add or edit): equal hash, nothing to edit.
    pub content_hash: String,
    /// When the bridge closed it; decides between reopening and opening anew.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "unix_millis")]
    pub closed_at: Option<SystemTime>,
    /// The licensePlate of the last successful operation, to tie logs and results together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_license_plate: Option<LicensePlate>,
    /// When SCWM last confirmed this state: an operation of the bridge's, or a read. Unknown
    /// (a record from before) counts as long ago.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "unix_millis")]
    pub confirmed_at: Option<SystemTime>,
    /// The partner SCWM says the incident is handed to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partner: Option<String>,
    /// A person closed it with this resolution, one the source lists as "won't fix": the key
    /// stays quiet while the alert fires, and starts afresh once it resolves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet: Option<String>,
    /// A person reopened it after the bridge closed it: a resolved notification does not close
    /// it again until the alert has fired anew.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reopened_by_person: bool,
}

impl Stored {
    /// A new mapping to `item_id`, open, as confirmed `now`.
    pub fn opened(item_id: ItemId, content_hash: &str, now: SystemTime, license_plate: LicensePlate) -> Self {
        Self {
            item_id,
            state: IncidentState::Open,
            content_hash: content_hash.to_owned(),
            closed_at: None,
            last_license_plate: Some(license_plate),
            confirmed_at: Some(now),
            partner: None,
            quiet: None,
            reopened_by_person: false,
        }
    }
}

/// What happened now, for one correlation key.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The alert's status, or the group's for group grouping.
    pub status: AlertStatus,
    /// The content hash of what would be sent now (see `template::Content`).
    pub content_hash: &'a str,
    pub now: SystemTime,
    /// A closed incident that fires again within this window is reopened, later a new one opens.
    pub reopen_window: Duration,
    /// The route's partner: a new incident is submitted to it right after it is added.
    pub partner: Option<&'a str>,
}

/// A bounded name for each kind of decision, for metrics labels and log fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DecisionKind {
    /// Firing and unknown: open an incident.
    Add,
    /// Firing, open, content changed.
    Edit,
    /// Resolved and open.
    Close,
    /// Firing again within the reopen window, content unchanged.
    Reopen,
    /// Firing again within the reopen window, content changed.
    ReopenEdit,
    /// Firing again after the reopen window: open a new incident and forget the old one.
    Replace,
    /// Firing, open, unchanged: a repeat notification.
    NothingUnchanged,
    /// Resolved, and the bridge never opened an incident for it.
    NothingResolvedUnknown,
    /// Resolved, and the incident is already closed.
    NothingResolvedClosed,
    /// Firing, arriving after a newer message that resolved it, and no incident is known: open
    /// one and close it.
    AddResolved,
    /// Arriving after a newer message for the key, whose state stands.
    NothingSuperseded,
    /// Firing, but a person closed the incident as "won't fix": their decision stands.
    NothingQuiet,
    /// Resolved after a person closed the incident as "won't fix": the key is forgotten, so the
    /// next firing opens a new incident.
    ForgetQuiet,
    /// Resolved, but a person reopened the incident the bridge had closed: their decision
    /// stands until the alert fires again.
    NothingReopenedByPerson,
    /// Resolved once more after enough fire/resolve cycles: the key is flapping. The incident
    /// stays open and is edited once to say so.
    FlapStart,
    /// Flapping: this close (or reopen) is held until the alert keeps one status for a while.
    NothingFlapping,
    /// A new alert: opened only if it still fires once `hold_add` has passed.
    NothingHeldAdd,
    /// Resolved while its add was held: no incident is opened for it.
    NothingAddDropped,
}

impl DecisionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DecisionKind::Add => "add",
            DecisionKind::Edit => "edit",
            DecisionKind::Close => "close",
            DecisionKind::Reopen => "reopen",
            DecisionKind::ReopenEdit => "reopen_edit",
            DecisionKind::Replace => "replace",
            DecisionKind::NothingUnchanged => "nothing_unchanged",
            DecisionKind::NothingResolvedUnknown => "nothing_resolved_unknown",
            DecisionKind::NothingResolvedClosed => "nothing_resolved_closed",
            DecisionKind::AddResolved => "add_resolved",
            DecisionKind::NothingSuperseded => "nothing_superseded",
            DecisionKind::NothingQuiet => "nothing_quiet",
            DecisionKind::ForgetQuiet => "forget_quiet",
            DecisionKind::NothingReopenedByPerson => "nothing_reopened_by_person",
            DecisionKind::FlapStart => "flap_start",
            DecisionKind::NothingFlapping => "nothing_flapping",
            DecisionKind::NothingHeldAdd => "nothing_held_add",
            DecisionKind::NothingAddDropped => "nothing_add_dropped",
        }
    }
}

/// What to do, in order, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The SCWM operations to perform, in order; empty for nothing.
    pub ops: Vec<Operation>,
    pub kind: DecisionKind,
    /// A sentence for the log line that records this decision.
    pub reason: String,
    /// For [`DecisionKind::Replace`]: the closed item the new incident takes the place of. After
    /// the add, the key maps to the new item and the old one is no longer tracked.
    pub replaces: Option<ItemId>,
    /// The stored mapping is to be dropped ([`DecisionKind::ForgetQuiet`]).
    pub forget: bool,
}

impl Decision {
    /// The bounded metrics label: `add`, `edit`, `close`, `reopen`, `nothing_unchanged`, ...
    pub fn label(&self) -> &'static str {
        self.kind.as_str()
    }

    /// True when SCWM is not called at all.
    pub fn is_nothing(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The rules in the module table.
pub fn decide(stored: Option<&Stored>, input: &Input<'_>) -> Decision {
    let with_submit = |mut ops: Vec<Operation>| {
        if input.partner.is_some() {
            ops.push(Operation::Submit);
        }
        ops
    };
    let submit_note = match input.partner {
        Some(p) => format!(" and submitting it to partner {p}"),
        None => String::new(),
    };
    let decision = |ops, kind, reason: String| Decision { ops, kind, reason, replaces: None, forget: false };
    if let Some(s) = stored
        && let Some(resolution) = &s.quiet
    {
        return match input.status {
            AlertStatus::Firing => decision(
                vec![],
                DecisionKind::NothingQuiet,
                format!(
                    "firing, but a person closed incident {} as {resolution:?}: staying quiet until the alert resolves",
                    s.item_id
                ),
            ),
            AlertStatus::Resolved => Decision {
                forget: true,
                ..decision(
                    vec![],
                    DecisionKind::ForgetQuiet,
                    format!(
                        "resolved at the source after a person closed incident {} as {resolution:?}: \
                         forgetting it, so the next firing opens a new incident",
                        s.item_id
                    ),
                )
            },
        };
    }
    match (input.status, stored) {
        (AlertStatus::Firing, None) => decision(
            with_submit(vec![Operation::Add]),
            DecisionKind::Add,
            format!("firing and no incident is known: adding one{submit_note}"),
        ),
        (AlertStatus::Resolved, None) => decision(
            vec![],
            DecisionKind::NothingResolvedUnknown,
            "resolved, and no incident was ever opened for it: nothing to close".into(),
        ),
        (AlertStatus::Firing, Some(s)) if s.state == IncidentState::Open => {
            if s.content_hash == input.content_hash {
                decision(
                    vec![],
                    DecisionKind::NothingUnchanged,
                    format!("firing, incident {} is open and its content is unchanged", s.item_id),
                )
            } else {
                decision(
                    vec![Operation::Edit],
                    DecisionKind::Edit,
                    format!("firing, incident {} is open and its content changed: editing it", s.item_id),
                )
            }
        }
        (AlertStatus::Resolved, Some(s)) if s.state == IncidentState::Open && s.reopened_by_person => {
            decision(
                vec![],
                DecisionKind::NothingReopenedByPerson,
                format!(
                    "resolved, but a person reopened incident {} after the bridge had closed it: leaving it open",
                    s.item_id
                ),
            )
        }
        (AlertStatus::Resolved, Some(s)) if s.state == IncidentState::Open => decision(
            vec![Operation::Close],
            DecisionKind::Close,
            format!("resolved: closing incident {}", s.item_id),
        ),
        (AlertStatus::Resolved, Some(s)) => decision(
            vec![],
            DecisionKind::NothingResolvedClosed,
            format!("resolved, and incident {} is already closed", s.item_id),
        ),
        (AlertStatus::Firing, Some(s)) => match closed_for(s, input.now) {
            Some(ago) if ago < input.reopen_window => {
                let ago = humantime::format_duration(round_secs(ago));
                let window = humantime::format_duration(input.reopen_window);
                if s.content_hash == input.content_hash {
                    decision(
                        vec![Operation::Reopen],
                        DecisionKind::Reopen,
                        format!(
                            "firing again {ago} after incident {} was closed (within {window}): reopening it",
                            s.item_id
                        ),
                    )
                } else {
                    decision(
                        vec![Operation::Reopen, Operation::Edit],
                        DecisionKind::ReopenEdit,
                        format!(
                            "firing again {ago} after incident {} was closed (within {window}) with changed \
                             content: reopening and editing it",
                            s.item_id
                        ),
                    )
                }
            }
            ago => {
                let when = match ago {
                    Some(ago) => format!("{} ago", humantime::format_duration(round_secs(ago))),
                    None => "at an unknown time".into(),
                };
                Decision {
                    ops: with_submit(vec![Operation::Add]),
                    kind: DecisionKind::Replace,
                    reason: format!(
                        "firing again, but incident {} was closed {when}, outside the reopen window of {}: \
                         adding a new incident{submit_note}",
                        s.item_id,
                        humantime::format_duration(input.reopen_window)
                    ),
                    replaces: Some(s.item_id.clone()),
                    forget: false,
                }
            }
        },
    }
}

/// The decision for a message that arrived after a newer one for the same key was decided;
/// `newer` is what that newer message said. See the module doc.
pub fn decide_late(stored: Option<&Stored>, input: &Input<'_>, newer: AlertStatus) -> Decision {
    match (input.status, stored, newer) {
        (AlertStatus::Firing, None, AlertStatus::Resolved) => {
            let mut ops = vec![Operation::Add];
            let mut reason =
                "fired before a newer message resolved it, and no incident is known: adding one".to_owned();
            if let Some(p) = input.partner {
                ops.push(Operation::Submit);
                reason.push_str(&format!(", submitting it to partner {p}"));
            }
            ops.push(Operation::Close);
            reason.push_str(" and closing it");
            Decision { ops, kind: DecisionKind::AddResolved, reason, replaces: None, forget: false }
        }
        _ => Decision {
            ops: vec![],
            kind: DecisionKind::NothingSuperseded,
            reason: format!(
                "{}, but a newer message ({}) was decided already and its state stands",
                input.status.as_str(),
                newer.as_str()
            ),
            replaces: None,
            forget: false,
        },
    }
}

/// [`decide`] after SCWM answered 404 for the stored item: the caller has deleted the mapping
/// and starts over from "unknown".
pub fn decide_after_not_found(input: &Input<'_>) -> Decision {
    let mut d = decide(None, input);
    d.reason = format!("the stored incident no longer exists in SCWM; {}", d.reason);
    d
}

/// How long ago a closed incident was closed; `None` when that is not known (a record without
/// `closed_at` is treated as closed long ago: reviving an incident of unknown age is worse than
/// opening a new one). A `closed_at` in the future (clock skew) counts as just now.
fn closed_for(s: &Stored, now: SystemTime) -> Option<Duration> {
    s.closed_at.map(|at| now.duration_since(at).unwrap_or(Duration::ZERO))
}

fn round_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}

/// An operation [`apply`] cannot turn into a next state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("{0} needs a stored incident, and there is none")]
    NoIncident(Operation),
    #[error("add succeeded without returning an item id")]
    MissingItemId,
    #[error("{0} is not part of the alert lifecycle")]
    NotALifecycleOperation(Operation),
}

/// What the store should remember after `op` succeeded. `new_item_id` is the id SCWM answered
/// (only used for add); `content_hash` is the hash the decision was made with.
pub fn apply(
    prev: Option<&Stored>,
    op: Operation,
    new_item_id: Option<ItemId>,
    content_hash: &str,
    now: SystemTime,
    license_plate: LicensePlate,
) -> Result<Stored, TransitionError> {
    if op == Operation::Add {
        // A new incident: whatever was stored before (a long-closed one) is replaced.
        let item_id = new_item_id.ok_or(TransitionError::MissingItemId)?;
        return Ok(Stored::opened(item_id, content_hash, now, license_plate));
    }
    let mut next = prev.cloned().ok_or(TransitionError::NoIncident(op))?;
    next.last_license_plate = Some(license_plate);
    next.confirmed_at = Some(now);
    match op {
        Operation::Edit => next.content_hash = content_hash.to_owned(),
        Operation::Close => {
            next.state = IncidentState::Closed;
            next.closed_at = Some(now);
        }
        Operation::Reopen => {
            next.state = IncidentState::Open;
            next.closed_at = None;
            next.reopened_by_person = false;
        }
        Operation::Submit => {}
        Operation::Add | Operation::Copy | Operation::Read => {
            return Err(TransitionError::NotALifecycleOperation(op));
        }
    }
    Ok(next)
}

/// `closed_at` as milliseconds since the Unix epoch: compact and readable in the store.
mod unix_millis {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => {
                let ms = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis();
                s.serialize_some(&u64::try_from(ms).unwrap_or(u64::MAX))
            }
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.and_then(|ms| UNIX_EPOCH.checked_add(Duration::from_millis(ms))))
    }
}

pub mod converge;

#[cfg(test)]
mod tests;
