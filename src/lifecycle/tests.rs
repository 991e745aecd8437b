//! The lifecycle table over every state × event, with and without a partner, and `apply`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;
use crate::incident::Operation::{Add, Close, Edit, Reopen, Submit};

const WINDOW: Duration = Duration::from_secs(3600);
const OLD_HASH: &str = "hash-before";
const NEW_HASH: &str = "hash-after";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn plate() -> LicensePlate {
    LicensePlate::derived(1, b"test")
}

#[derive(Debug, Clone, Copy)]
enum State {
    Unknown,
    Open,
    ClosedInsideWindow,
    ClosedOutsideWindow,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    FiringChanged,
    FiringUnchanged,
    Resolved,
}

fn stored(state: State) -> Option<Stored> {
    let base = Stored {
        item_id: ItemId::new("IT-1"),
        state: IncidentState::Open,
        content_hash: OLD_HASH.into(),
        closed_at: None,
        last_license_plate: None,
        confirmed_at: None,
        partner: None,
        quiet: None,
        reopened_by_person: false,
    };
    match state {
        State::Unknown => None,
        State::Open => Some(base),
        State::ClosedInsideWindow => Some(Stored {
            state: IncidentState::Closed,
            closed_at: Some(now() - Duration::from_secs(600)),
            ..base
        }),
        State::ClosedOutsideWindow => Some(Stored {
            state: IncidentState::Closed,
            closed_at: Some(now() - Duration::from_secs(7200)),
            ..base
        }),
    }
}

fn input(event: Event, partner: Option<&str>) -> Input<'_> {
    let (status, content_hash) = match event {
        Event::FiringChanged => (AlertStatus::Firing, NEW_HASH),
        Event::FiringUnchanged => (AlertStatus::Firing, OLD_HASH),
        Event::Resolved => (AlertStatus::Resolved, NEW_HASH),
    };
    Input { status, content_hash, now: now(), reopen_window: WINDOW, partner }
}

#[test]
fn every_state_and_event_with_and_without_partner() {
    use DecisionKind as K;
    use Event::*;
    use State::*;
    // (state, event, ops without partner, ops with partner, kind)
    type Row = (State, Event, &'static [Operation], &'static [Operation], DecisionKind);
    let table: &[Row] = &[
        (Unknown, FiringChanged, &[Add], &[Add, Submit], K::Add),
        (Unknown, FiringUnchanged, &[Add], &[Add, Submit], K::Add),
        (Unknown, Resolved, &[], &[], K::NothingResolvedUnknown),
        (Open, FiringChanged, &[Edit], &[Edit], K::Edit),
        (Open, FiringUnchanged, &[], &[], K::NothingUnchanged),
        (Open, Resolved, &[Close], &[Close], K::Close),
        (ClosedInsideWindow, FiringChanged, &[Reopen, Edit], &[Reopen, Edit], K::ReopenEdit),
        (ClosedInsideWindow, FiringUnchanged, &[Reopen], &[Reopen], K::Reopen),
        (ClosedInsideWindow, Resolved, &[], &[], K::NothingResolvedClosed),
        (ClosedOutsideWindow, FiringChanged, &[Add], &[Add, Submit], K::Replace),
        (ClosedOutsideWindow, FiringUnchanged, &[Add], &[Add, Submit], K::Replace),
        (ClosedOutsideWindow, Resolved, &[], &[], K::NothingResolvedClosed),
    ];
    for (state, event, ops, ops_with_partner, kind) in table {
        for (partner, want) in [(None, ops), (Some("DBA-ONCALL"), ops_with_partner)] {
            let s = stored(*state);
            let d = decide(s.as_ref(), &input(*event, partner));
            let case = format!("{state:?} × {event:?} × partner {partner:?}: {}", d.reason);
            assert_eq!(d.ops, *want, "{case}");
            assert_eq!(d.kind, *kind, "{case}");
            assert_eq!(d.label(), kind.as_str(), "{case}");
            assert_eq!(d.is_nothing(), want.is_empty(), "{case}");
            assert!(!d.reason.is_empty(), "{case}");
            let replaces = matches!(kind, K::Replace).then(|| ItemId::new("IT-1"));
            assert_eq!(d.replaces, replaces, "{case}");
        }
    }
}

#[test]
fn reasons_say_what_and_why() {
    let d = decide(None, &input(Event::FiringChanged, Some("DBA")));
    assert_eq!(d.reason, "firing and no incident is known: adding one and submitting it to partner DBA");
    let s = stored(State::ClosedInsideWindow);
    let d = decide(s.as_ref(), &input(Event::FiringUnchanged, None));
    assert_eq!(d.reason, "firing again 10m after incident IT-1 was closed (within 1h): reopening it");
    let s = stored(State::ClosedOutsideWindow);
    let d = decide(s.as_ref(), &input(Event::FiringUnchanged, None));
    assert_eq!(
        d.reason,
        "firing again, but incident IT-1 was closed 2h ago, outside the reopen window of 1h: adding a new incident"
    );
}

#[test]
fn labels_are_bounded_and_distinct() {
    use DecisionKind::*;
    let all = [
        Add,
        Edit,
        Close,
        Reopen,
        ReopenEdit,
        Replace,
        NothingUnchanged,
        NothingResolvedUnknown,
        NothingResolvedClosed,
        AddResolved,
        NothingSuperseded,
    ];
    let names: std::collections::BTreeSet<_> = all.iter().map(|k| k.as_str()).collect();
    assert_eq!(names.len(), all.len());
    assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
}

#[test]
fn the_reopen_window_is_exclusive_at_its_end() {
    let mut s = stored(State::ClosedInsideWindow).unwrap();
    s.closed_at = Some(now() - WINDOW);
    assert_eq!(decide(Some(&s), &input(Event::FiringUnchanged, None)).kind, DecisionKind::Replace);
    s.closed_at = Some(now() - WINDOW + Duration::from_millis(1));
    assert_eq!(decide(Some(&s), &input(Event::FiringUnchanged, None)).kind, DecisionKind::Reopen);
}

#[test]
fn closed_in_the_future_counts_as_just_closed_and_unknown_close_time_as_long_ago() {
    let mut s = stored(State::ClosedInsideWindow).unwrap();
    s.closed_at = Some(now() + Duration::from_secs(30));
    assert_eq!(decide(Some(&s), &input(Event::FiringUnchanged, None)).kind, DecisionKind::Reopen);
    s.closed_at = None;
    let d = decide(Some(&s), &input(Event::FiringUnchanged, None));
    assert_eq!(d.kind, DecisionKind::Replace);
    assert!(d.reason.contains("closed at an unknown time"), "{}", d.reason);
}

#[test]
fn a_zero_window_never_reopens() {
    let s = stored(State::ClosedInsideWindow);
    let i = Input { reopen_window: Duration::ZERO, ..input(Event::FiringChanged, None) };
    assert_eq!(decide(s.as_ref(), &i).kind, DecisionKind::Replace);
}

#[test]
fn after_a_404_the_key_starts_over_from_unknown() {
    // Edit answered 404: the caller deletes the mapping and decides again.
    let d = decide_after_not_found(&input(Event::FiringChanged, Some("P")));
    assert_eq!(d.ops, vec![Add, Submit]);
    assert!(d.reason.starts_with("the stored incident no longer exists in SCWM; firing"), "{}", d.reason);
    // Close answered 404: nothing is left to close.
    let d = decide_after_not_found(&input(Event::Resolved, None));
    assert_eq!(d.kind, DecisionKind::NothingResolvedUnknown);
}

#[test]
fn apply_gives_the_state_after_each_operation() {
    let t0 = now();
    let added = apply(None, Add, Some(ItemId::new("IT-9")), "h1", t0, plate()).unwrap();
    assert_eq!(
        added,
        Stored {
            item_id: ItemId::new("IT-9"),
            state: IncidentState::Open,
            content_hash: "h1".into(),
            closed_at: None,
            last_license_plate: Some(plate()),
            confirmed_at: Some(t0),
            partner: None,
            quiet: None,
            reopened_by_person: false,
        }
    );

    let submitted = apply(Some(&added), Submit, None, "h1", t0, plate()).unwrap();
    assert_eq!(submitted, added);

    let edited = apply(Some(&added), Edit, Some(ItemId::new("ignored")), "h2", t0, plate()).unwrap();
    assert_eq!((edited.item_id.as_str(), edited.content_hash.as_str()), ("IT-9", "h2"));

    let t1 = t0 + Duration::from_secs(60);
    let closed = apply(Some(&edited), Close, None, "ignored", t1, plate()).unwrap();
    assert_eq!(
        (closed.state, closed.closed_at, closed.content_hash.as_str()),
        (IncidentState::Closed, Some(t1), "h2")
    );

    let reopened = apply(Some(&closed), Reopen, None, "h3", t1, plate()).unwrap();
    assert_eq!((reopened.state, reopened.closed_at), (IncidentState::Open, None));
    assert_eq!(reopened.content_hash, "h2", "reopen sends no content; the edit after it records the hash");

    let replaced = apply(Some(&closed), Add, Some(ItemId::new("IT-10")), "h4", t1, plate()).unwrap();
    assert_eq!(
        (replaced.item_id.as_str(), replaced.state, replaced.closed_at),
        ("IT-10", IncidentState::Open, None)
    );
}

#[test]
fn apply_refuses_what_cannot_happen() {
    assert_eq!(apply(None, Add, None, "h", now(), plate()), Err(TransitionError::MissingItemId));
    for op in [Edit, Close, Reopen, Submit] {
        assert_eq!(apply(None, op, None, "h", now(), plate()), Err(TransitionError::NoIncident(op)));
    }
    let s = stored(State::Open).unwrap();
    for op in [Operation::Copy, Operation::Read] {
        assert_eq!(
            apply(Some(&s), op, None, "h", now(), plate()),
            Err(TransitionError::NotALifecycleOperation(op))
        );
    }
}

#[test]
fn a_whole_alert_life_replayed_through_decide_and_apply() {
    let mut store: Option<Stored> = None;
    let mut t = now();
    let mut run = |status, hash: &str, t: SystemTime, partner| -> Vec<Operation> {
        let d = decide(
            store.as_ref(),
            &Input { status, content_hash: hash, now: t, reopen_window: WINDOW, partner },
        );
        for op in &d.ops {
            let id = (*op == Add)
                .then(|| ItemId::new(format!("IT-{}", t.duration_since(UNIX_EPOCH).unwrap().as_secs())));
            store = Some(apply(store.as_ref(), *op, id, hash, t, plate()).unwrap());
        }
        d.ops
    };
    assert_eq!(run(AlertStatus::Firing, "a", t, Some("P")), vec![Add, Submit]);
    assert_eq!(run(AlertStatus::Firing, "a", t, Some("P")), vec![], "a repeat calls nothing");
    assert_eq!(run(AlertStatus::Firing, "b", t, Some("P")), vec![Edit]);
    assert_eq!(run(AlertStatus::Resolved, "b", t, Some("P")), vec![Close]);
    assert_eq!(run(AlertStatus::Resolved, "b", t, Some("P")), vec![], "a repeated resolve calls nothing");
    t += Duration::from_secs(60);
    assert_eq!(run(AlertStatus::Firing, "c", t, Some("P")), vec![Reopen, Edit]);
    assert_eq!(run(AlertStatus::Resolved, "c", t, Some("P")), vec![Close]);
    t += WINDOW * 2;
    assert_eq!(run(AlertStatus::Firing, "c", t, Some("P")), vec![Add, Submit]);
}

#[test]
fn stored_round_trips_through_json() {
    let mut s = stored(State::ClosedInsideWindow).unwrap();
    s.last_license_plate = Some(plate());
    s.closed_at = Some(UNIX_EPOCH + Duration::from_millis(1_800_000_000_123));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["closed_at"], 1_800_000_000_123u64);
    assert_eq!(json["state"], "closed");
    assert_eq!(serde_json::from_value::<Stored>(json).unwrap(), s);
    let open = stored(State::Open).unwrap();
    let json = serde_json::to_string(&open).unwrap();
    assert_eq!(json, r#"{"item_id":"IT-1","state":"open","content_hash":"hash-before"}"#);
    assert_eq!(serde_json::from_str::<Stored>(&json).unwrap(), open);
}

#[test]
fn a_late_firing_message_opens_and_closes_an_incident_only_when_none_is_known_and_a_newer_one_resolved() {
    for (partner, want) in [(None, vec![Add, Close]), (Some("DBA"), vec![Add, Submit, Close])] {
        let d = decide_late(None, &input(Event::FiringChanged, partner), AlertStatus::Resolved);
        assert_eq!((d.ops, d.kind), (want, DecisionKind::AddResolved), "{partner:?}");
    }
    let d = decide_late(None, &input(Event::FiringUnchanged, None), AlertStatus::Resolved);
    assert_eq!(
        d.reason,
        "fired before a newer message resolved it, and no incident is known: adding one and closing it"
    );
}

#[test]
fn every_other_late_message_leaves_the_newer_state_standing() {
    use Event::*;
    use State::*;
    for state in [Unknown, Open, ClosedInsideWindow, ClosedOutsideWindow] {
        for event in [FiringChanged, FiringUnchanged, Resolved] {
            for newer in [AlertStatus::Firing, AlertStatus::Resolved] {
                let s = stored(state);
                let d = decide_late(s.as_ref(), &input(event, Some("P")), newer);
                let acts = matches!(
                    (state, event, newer),
                    (Unknown, FiringChanged | FiringUnchanged, AlertStatus::Resolved)
                );
                if !acts {
                    assert!(d.is_nothing(), "{state:?} {event:?} after {newer:?}: {d:?}");
                    assert_eq!(d.kind, DecisionKind::NothingSuperseded);
                }
            }
        }
    }
}

#[test]
fn a_person_s_won_t_fix_keeps_a_firing_key_quiet_and_its_resolve_forgets_the_incident() {
    let quiet = Stored {
        state: IncidentState::Closed,
        closed_at: Some(now()),
        quiet: Some("won't fix".into()),
        ..stored(State::Open).unwrap()
    };
    for event in [Event::FiringChanged, Event::FiringUnchanged] {
        let d = decide(Some(&quiet), &input(event, Some("P")));
        assert_eq!(
            (d.kind, d.ops.as_slice(), d.forget),
            (DecisionKind::NothingQuiet, &[][..], false),
            "{event:?}"
        );
    }
    let d = decide(Some(&quiet), &input(Event::Resolved, None));
    assert_eq!((d.kind, d.ops.as_slice(), d.forget), (DecisionKind::ForgetQuiet, &[][..], true));
}

#[test]
fn a_person_s_reopen_is_not_undone_by_a_resolved_notification() {
    let reopened = Stored { reopened_by_person: true, ..stored(State::Open).unwrap() };
    let d = decide(Some(&reopened), &input(Event::Resolved, None));
    assert_eq!((d.kind, d.ops.as_slice()), (DecisionKind::NothingReopenedByPerson, &[][..]));
    // Firing again is the alert's news: an edit when the content changed, as for any open one.
    assert_eq!(decide(Some(&reopened), &input(Event::FiringChanged, None)).ops, vec![Edit]);
    // The bridge's own reopen takes the incident back.
    let ours = apply(Some(&reopened), Reopen, None, OLD_HASH, now(), plate()).unwrap();
    assert!(!ours.reopened_by_person);
}
