//! Damping: the rules that hold an alert's transitions back. A key whose alert keeps firing and
//! resolving is *flapping*: its incident stays open (one edit says so), further closes are held,
//! and once the alert has kept one status for `flap_quiet` the held end state is applied once. A
//! new alert can be held for `hold_add`: it opens an incident only if it still fires then.
//!
//! Pure, like the rest of the planner: it rewrites a lifecycle decision and the record, given the
//! time. Applying a hold when it ends needs the key's newest notification offered again at the
//! record's [`Held::due_ms`]; the record keeps that notification ([`Held::original`]), and
//! whoever schedules the offer (the intake) reads the due time from the record.

use std::time::Duration;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::{
    alert::AlertStatus,
    event::Original,
    incident::Operation,
    lifecycle::{Decision, DecisionKind},
};

/// A source's damping settings; all off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Damping {
    /// Fire → resolve → fire cycles within `flap_window` after which the next resolve makes the
    /// key flapping; 0 turns flap damping off.
    pub flap_cycles: u32,
    pub flap_window: Duration,
    /// How long a flapping alert must keep one status before its end state is applied.
    pub flap_quiet: Duration,
    /// A new alert opens an incident only if it still fires this long after it was first seen;
    /// zero opens at once.
    pub hold_add: Duration,
}

impl Damping {
    pub fn flap_damping(&self) -> bool {
        self.flap_cycles > 0
    }

    pub fn is_off(&self) -> bool {
        !self.flap_damping() && self.hold_add.is_zero()
    }
}

/// A key's recent history of status changes, kept while flap damping is on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flap {
    /// When the alert fired again after resolving, within the window (unix ms).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refires_ms: Vec<u64>,
    /// What the newest notification said, and since when the alert says so.
    pub status: AlertStatus,
    pub since_ms: u64,
    /// Since when the key is flapping; `None` while it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flapping_since_ms: Option<u64>,
}

/// What is held back, when it is to be looked at again, and what to look at then.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    pub what: HeldKind,
    /// When the key's newest notification is to be offered again (unix ms).
    pub due_ms: u64,
    /// That notification, as it arrived.
    pub original: KeptOriginal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeldKind {
    /// The add of a new alert (`hold_add`).
    Add,
    /// The end state of a flapping alert.
    Flap,
}

/// A notification's bytes and headers (without credentials, as events carry them), storable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptOriginal {
    /// Base64 of the body.
    pub body: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<(String, String)>,
}

impl KeptOriginal {
    pub fn of(original: &Original) -> Self {
        Self {
            body: base64::engine::general_purpose::STANDARD.encode(&original.body),
            headers: original.headers.clone(),
        }
    }

    pub fn to_original(&self) -> Option<Original> {
        let body = base64::engine::general_purpose::STANDARD.decode(&self.body).ok()?;
        Some(Original { body: body.into(), headers: self.headers.clone() })
    }
}

/// What the planner's caller tells it for damping: the source's settings and the event's
/// notification as it arrived.
#[derive(Debug, Clone, Copy, Default)]
pub struct HoldFacts<'a> {
    pub damping: Damping,
    pub original: Option<&'a Original>,
    /// The event is the key's held notification offered again, not a new one.
    pub recheck: bool,
}

/// What the damping rules need of one (newest, not late) event.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub status: AlertStatus,
    pub now_ms: u64,
    pub original: Option<&'a Original>,
    /// The event is the key's held notification offered again, not a new one.
    pub recheck: bool,
}

/// What damping did to a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing: the decision stands.
    None,
    /// The decision was rewritten (and the record changed).
    Rewritten,
    /// Only the record changed (history, hold): the decision stands but the record is to be
    /// saved.
    Recorded,
}

/// The note the one edit of a key that starts flapping carries.
pub fn flapping_note(cycles: usize, damping: &Damping) -> String {
    format!(
        "[incident-bridge] This alert is flapping: it fired again after resolving {cycles} times within {}. \
         The incident stays open; it is closed once the alert has stayed resolved for {}.",
        humantime::format_duration(damping.flap_window),
        humantime::format_duration(damping.flap_quiet)
    )
}

/// Applies the damping rules to `decision`, updating `flap` and `held`. `incident_open` says
/// whether the key's incident is open now.
pub fn damp(
    decision: &mut Decision,
    flap: &mut Option<Flap>,
    held: &mut Option<Held>,
    seen: Seen<'_>,
    damping: &Damping,
) -> Change {
    // A held notification offered again after a newer one changed the status (or ended the
    // hold) is stale: the newer one's state stands, and its own hold is offered in turn.
    if seen.recheck && (held.is_none() || flap.as_ref().is_some_and(|f| f.status != seen.status)) {
        *decision = nothing(
            DecisionKind::NothingSuperseded,
            "a held notification offered again, but a newer one changed the alert's status since".into(),
        );
        return Change::Rewritten;
    }
    if damping.is_off() {
        // Turned off since: what was held is decided as it stands now.
        let had = flap.is_some() || held.is_some();
        *flap = None;
        *held = None;
        return if had { Change::Recorded } else { Change::None };
    }
    let mut change = Change::None;
    if damping.flap_damping() {
        change = flap_rules(decision, flap, held, seen, damping);
    }
    if !damping.hold_add.is_zero() && change != Change::Rewritten {
        let add = hold_add_rules(decision, held, seen, damping);
        if add != Change::None {
            change = add;
        }
    }
    change
}

fn nothing(kind: DecisionKind, reason: String) -> Decision {
    Decision { ops: vec![], kind, reason, replaces: None, forget: false }
}

fn hold_for(held: &mut Option<Held>, what: HeldKind, due_ms: u64, seen: Seen<'_>) {
    let original = match (seen.original, held.as_ref()) {
        (Some(o), _) => KeptOriginal::of(o),
        (None, Some(h)) => h.original.clone(),
        (None, None) => return,
    };
    *held = Some(Held { what, due_ms, original });
}

fn flap_rules(
    decision: &mut Decision,
    flap: &mut Option<Flap>,
    held: &mut Option<Held>,
    seen: Seen<'_>,
    damping: &Damping,
) -> Change {
    let window = u64::try_from(damping.flap_window.as_millis()).unwrap_or(u64::MAX);
    let quiet = u64::try_from(damping.flap_quiet.as_millis()).unwrap_or(u64::MAX);
    let before = flap.clone();
    let f = flap.get_or_insert(Flap {
        refires_ms: vec![],
        status: seen.status,
        since_ms: seen.now_ms,
        flapping_since_ms: None,
    });
    let refired = f.status == AlertStatus::Resolved && seen.status == AlertStatus::Firing;
    if f.status != seen.status {
        if refired {
            f.refires_ms.push(seen.now_ms);
        }
        f.status = seen.status;
        f.since_ms = seen.now_ms;
    }
    f.refires_ms.retain(|at| seen.now_ms.saturating_sub(*at) < window);
    let cycles = f.refires_ms.len();
    let stable_for = seen.now_ms.saturating_sub(f.since_ms);

    let change = if f.flapping_since_ms.is_some() {
        if stable_for >= quiet {
            // Stable long enough: flapping is over, and the decision (a close for a resolved
            // alert whose incident was held open) is applied as it stands.
            f.flapping_since_ms = None;
            f.refires_ms.clear();
            if held.as_ref().is_some_and(|h| h.what == HeldKind::Flap) {
                *held = None;
            }
            decision.reason =
                format!("stable for {}: no longer flapping; {}", fmt_ms(stable_for), decision.reason);
            Change::Recorded
        } else {
            hold_for(held, HeldKind::Flap, f.since_ms.saturating_add(quiet), seen);
            // A refire's edit only says the alert fired again (a new startsAt): flapping says it
            // better. An edit of a firing alert whose content changed otherwise goes through.
            let held_kind = matches!(
                decision.kind,
                DecisionKind::Close | DecisionKind::Reopen | DecisionKind::ReopenEdit
            ) || refired && decision.kind == DecisionKind::Edit;
            if held_kind {
                let what = match decision.kind {
                    DecisionKind::Close => "close",
                    DecisionKind::Edit => "edit",
                    _ => "reopen",
                };
                *decision = nothing(
                    DecisionKind::NothingFlapping,
                    format!(
                        "flapping ({cycles} fire/resolve cycles within {}): the {what} is held until the alert \
                         keeps one status for {}",
                        humantime::format_duration(damping.flap_window),
                        humantime::format_duration(damping.flap_quiet)
                    ),
                );
                Change::Rewritten
            } else {
                Change::Recorded
            }
        }
    } else if decision.kind == DecisionKind::Close && cycles >= damping.flap_cycles as usize {
        f.flapping_since_ms = Some(seen.now_ms);
        hold_for(held, HeldKind::Flap, seen.now_ms.saturating_add(quiet), seen);
        *decision = Decision {
            ops: vec![Operation::Edit],
            kind: DecisionKind::FlapStart,
            reason: format!(
                "resolved again after {cycles} fire/resolve cycles within {}: flapping, so the incident stays \
                 open and is edited to say so; it is closed once the alert stays resolved for {}",
                humantime::format_duration(damping.flap_window),
                humantime::format_duration(damping.flap_quiet)
            ),
            replaces: None,
            forget: false,
        };
        Change::Rewritten
    } else {
        Change::Recorded
    };
    match change {
        Change::Recorded if before.as_ref() == Some(&*f) => Change::None,
        other => other,
    }
}

fn hold_add_rules(
    decision: &mut Decision,
    held: &mut Option<Held>,
    seen: Seen<'_>,
    damping: &Damping,
) -> Change {
    let hold = u64::try_from(damping.hold_add.as_millis()).unwrap_or(u64::MAX);
    let held_add = held.as_ref().filter(|h| h.what == HeldKind::Add).map(|h| h.due_ms);
    match (seen.status, held_add) {
        (AlertStatus::Resolved, Some(_)) => {
            *held = None;
            *decision = nothing(
                DecisionKind::NothingAddDropped,
                format!(
                    "resolved within hold_add ({}): no incident is opened for it",
                    humantime::format_duration(damping.hold_add)
                ),
            );
            Change::Rewritten
        }
        (AlertStatus::Firing, Some(due)) if seen.now_ms >= due => {
            if matches!(decision.kind, DecisionKind::Add | DecisionKind::Replace) {
                decision.reason = format!(
                    "still firing after hold_add ({}); {}",
                    humantime::format_duration(damping.hold_add),
                    decision.reason
                );
            }
            *held = None;
            Change::Recorded
        }
        (AlertStatus::Firing, due) if matches!(decision.kind, DecisionKind::Add | DecisionKind::Replace) => {
            let due = due.unwrap_or_else(|| seen.now_ms.saturating_add(hold));
            hold_for(held, HeldKind::Add, due, seen);
            *decision = nothing(
                DecisionKind::NothingHeldAdd,
                format!(
                    "firing: the add is held for hold_add ({}), and made only if the alert still fires then",
                    humantime::format_duration(damping.hold_add)
                ),
            );
            Change::Rewritten
        }
        _ => Change::None,
    }
}

fn fmt_ms(ms: u64) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(ms / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1000;

    fn damping() -> Damping {
        Damping {
            flap_cycles: 2,
            flap_window: Duration::from_secs(600),
            flap_quiet: Duration::from_secs(60),
            hold_add: Duration::ZERO,
        }
    }

    fn decided(kind: DecisionKind, ops: Vec<Operation>) -> Decision {
        Decision { ops, kind, reason: "lifecycle".into(), replaces: None, forget: false }
    }

    fn lifecycle(status: AlertStatus, open: bool) -> Decision {
        match (status, open) {
            (AlertStatus::Firing, true) => decided(DecisionKind::NothingUnchanged, vec![]),
            (AlertStatus::Firing, false) => decided(DecisionKind::Reopen, vec![Operation::Reopen]),
            (AlertStatus::Resolved, true) => decided(DecisionKind::Close, vec![Operation::Close]),
            (AlertStatus::Resolved, false) => decided(DecisionKind::NothingResolvedClosed, vec![]),
        }
    }

    /// Drives a key through statuses at given seconds, the incident's state following what the
    /// decisions do; returns each decision's kind.
    fn drive(steps: &[(u64, AlertStatus)], d: &Damping) -> (Vec<DecisionKind>, Option<Flap>, Option<Held>) {
        let original = Original { body: "{}".into(), headers: vec![] };
        let (mut flap, mut held, mut open) = (None, None, true);
        let mut kinds = vec![];
        for &(at, status) in steps {
            let mut decision = lifecycle(status, open);
            let seen = Seen { status, now_ms: at * S, original: Some(&original), recheck: false };
            damp(&mut decision, &mut flap, &mut held, seen, d);
            if decision.ops.contains(&Operation::Close) {
                open = false;
            }
            if decision.ops.contains(&Operation::Reopen) {
                open = true;
            }
            kinds.push(decision.kind);
        }
        (kinds, flap, held)
    }

    use AlertStatus::{Firing as F, Resolved as R};

    #[test]
    fn a_key_that_keeps_flapping_is_held_open_after_the_threshold() {
        let (kinds, flap, held) =
            drive(&[(0, F), (10, R), (20, F), (30, R), (40, F), (50, R), (60, F), (70, R)], &damping());
        use DecisionKind::*;
        assert_eq!(
            kinds,
            vec![
                NothingUnchanged,
                Close,
                Reopen,
                Close,
                Reopen,
                FlapStart,
                NothingUnchanged,
                NothingFlapping
            ]
        );
        let flap = flap.expect("history");
        assert_eq!(flap.flapping_since_ms, Some(50 * S));
        let held = held.expect("held");
        assert_eq!(held.what, HeldKind::Flap);
        assert_eq!(held.due_ms, 70 * S + 60 * S, "quiet period from the last change");
    }

    #[test]
    fn once_stable_for_the_quiet_period_the_held_close_is_applied_once() {
        let mut steps = vec![(0, F), (10, R), (20, F), (30, R), (40, F), (50, R), (60, F), (70, R)];
        // The held notification offered again at its due time.
        steps.push((130, R));
        let (kinds, flap, held) = drive(&steps, &damping());
        assert_eq!(kinds.last(), Some(&DecisionKind::Close));
        assert_eq!(flap.expect("history").flapping_since_ms, None);
        assert!(held.is_none());
    }

    #[test]
    fn a_flapping_alert_that_settles_firing_keeps_its_incident_open() {
        let steps = [(0, F), (10, R), (20, F), (30, R), (40, F), (50, R), (60, F), (125, F)];
        let (kinds, flap, held) = drive(&steps, &damping());
        assert_eq!(kinds.last(), Some(&DecisionKind::NothingUnchanged));
        assert_eq!(flap.expect("history").flapping_since_ms, None, "no longer flapping");
        assert!(held.is_none());
    }

    #[test]
    fn while_flapping_a_refire_edits_nothing_but_a_changed_firing_alert_still_edits() {
        let original = Original::default();
        let mut flap = Some(Flap {
            refires_ms: vec![0, 1],
            status: R,
            since_ms: 10 * S,
            flapping_since_ms: Some(5 * S),
        });
        let mut held = None;
        let seen =
            |status, at: u64| Seen { status, now_ms: at * S, original: Some(&original), recheck: false };
        let mut refire = decided(DecisionKind::Edit, vec![Operation::Edit]);
        damp(&mut refire, &mut flap, &mut held, seen(F, 20), &damping());
        assert_eq!(refire.kind, DecisionKind::NothingFlapping, "{}", refire.reason);
        let mut changed = decided(DecisionKind::Edit, vec![Operation::Edit]);
        damp(&mut changed, &mut flap, &mut held, seen(F, 25), &damping());
        assert_eq!(changed.kind, DecisionKind::Edit, "the same status, new content");
    }

    #[test]
    fn cycles_older_than_the_window_do_not_count() {
        let mut d = damping();
        d.flap_window = Duration::from_secs(25);
        let (kinds, ..) = drive(&[(0, F), (10, R), (20, F), (30, R), (40, F), (50, R)], &d);
        assert_eq!(kinds.last(), Some(&DecisionKind::Close), "only one refire within 25 s");
    }

    #[test]
    fn a_stale_recheck_is_nothing() {
        let original = Original::default();
        let mut flap = Some(Flap { refires_ms: vec![], status: F, since_ms: 0, flapping_since_ms: Some(0) });
        let mut held =
            Some(Held { what: HeldKind::Flap, due_ms: 60 * S, original: KeptOriginal::of(&original) });
        let mut decision = lifecycle(R, true);
        let seen = Seen { status: R, now_ms: 500 * S, original: Some(&original), recheck: true };
        assert_eq!(damp(&mut decision, &mut flap, &mut held, seen, &damping()), Change::Rewritten);
        assert_eq!(decision.kind, DecisionKind::NothingSuperseded);
    }

    #[test]
    fn hold_add_opens_only_what_still_fires_after_the_hold() {
        let d = Damping { hold_add: Duration::from_secs(30), ..Damping::default() };
        let original = Original::default();
        let (mut flap, mut held) = (None, None);
        let add = || decided(DecisionKind::Add, vec![Operation::Add]);
        let seen =
            |status, at: u64| Seen { status, now_ms: at * S, original: Some(&original), recheck: false };

        let mut first = add();
        damp(&mut first, &mut flap, &mut held, seen(F, 0), &d);
        assert_eq!(first.kind, DecisionKind::NothingHeldAdd);
        assert_eq!(held.as_ref().map(|h| h.due_ms), Some(30 * S));
        let mut repeat = add();
        damp(&mut repeat, &mut flap, &mut held, seen(F, 10), &d);
        assert_eq!(repeat.kind, DecisionKind::NothingHeldAdd);
        assert_eq!(held.as_ref().map(|h| h.due_ms), Some(30 * S), "the hold runs from the first firing");
        let mut due = add();
        damp(&mut due, &mut flap, &mut held, seen(F, 30), &d);
        assert_eq!(due.kind, DecisionKind::Add);
        assert!(held.is_none());

        // Resolved within the hold: nothing is ever opened.
        let mut again = add();
        damp(&mut again, &mut flap, &mut held, seen(F, 100), &d);
        let mut resolved = decided(DecisionKind::NothingResolvedUnknown, vec![]);
        damp(&mut resolved, &mut flap, &mut held, seen(R, 110), &d);
        assert_eq!(resolved.kind, DecisionKind::NothingAddDropped);
        assert!(held.is_none());
    }

    #[test]
    fn kept_originals_round_trip() {
        let original = Original {
            body: bytes::Bytes::from_static(b"\x00{\"a\":1}"),
            headers: vec![("h".into(), "v".into())],
        };
        assert_eq!(KeptOriginal::of(&original).to_original(), Some(original));
    }

    #[test]
    fn damping_off_clears_what_an_earlier_config_kept() {
        let mut flap = Some(Flap { refires_ms: vec![1], status: F, since_ms: 0, flapping_since_ms: Some(0) });
        let mut held = None;
        let mut d = lifecycle(R, true);
        let seen = Seen { status: R, now_ms: 1, original: None, recheck: false };
        assert_eq!(damp(&mut d, &mut flap, &mut held, seen, &Damping::default()), Change::Recorded);
        assert!(flap.is_none());
        assert_eq!(d.kind, DecisionKind::Close);
    }
}
