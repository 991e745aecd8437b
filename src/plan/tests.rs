//! The planner's rules, one at a time: ordering, claims, decisions, plates and the steps'
//! answers.

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

mod planning {
    use std::time::{Duration, SystemTime};

    use super::super::*;
    use crate::{
        alert::{Grouping, Notification},
        decode::alertmanager,
        lifecycle::{DecisionKind, IncidentState},
        route::{Route, Routes, Target},
        template::{RawTemplates, TemplateSet, build_templates},
    };

    const FIRING: &str = r#"{"receiver":"r","status":"firing","groupKey":"{}:{alertname=\"DiskFull\"}","version":"4",
     "groupLabels":{"alertname":"DiskFull"},"commonLabels":{"alertname":"DiskFull"},"commonAnnotations":{},
     "externalURL":"http://am","truncatedAlerts":0,
     "alerts":[{"status":"firing","labels":{"alertname":"DiskFull","instance":"db-1"},
       "annotations":{"summary":"Disk full on db-1"},"startsAt":"2026-11-28T12:00:00Z",
       "endsAt":"0001-01-01T00:00:00Z","fingerprint":"aaa"}]}"#;

    struct World {
        notification: Notification,
        target: Target,
        templates: TemplateSet,
        key: CorrelationKey,
        plate: LicensePlate,
    }

    fn world(body: &str) -> World {
        world_with(body, None)
    }

    /// `body` routed to a route that submits new incidents to `partner`.
    fn world_with(body: &str, partner: Option<&str>) -> World {
        let notification = alertmanager::decode(body.as_bytes()).unwrap();
        let route = Route { partner: partner.map(str::to_owned), ..Route::catch_all("r") };
        let target = Routes::new(vec![route]).plan(&notification, "am", Grouping::Alert).remove(0);
        let templates = build_templates(&RawTemplates::default(), "sources.am.templates").unwrap();
        let key = target.key.clone();
        World { notification, target, templates, key, plate: LicensePlate::generate() }
    }

    const ME: Claimant<'static> = Claimant { instance: "me", claim_ttl: Duration::from_secs(30) };

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    /// Plans `w`'s event against `record`, at `now()`.
    fn plan_for(w: &World, record: &Record, position: Option<Position>) -> Plan {
        let renderer =
            crate::template::Renderer::new("am", &w.templates, &w.notification, w.target.subject());
        let content = Contents::new(&renderer);
        let facts = Facts {
            source: "am",
            key: &w.key,
            status: w.target.status,
            position,
            episode: crate::alert::episode_start(w.target.alerts(&w.notification)),
            event_plate: &w.plate,
            reopen_window: Duration::from_secs(3600),
            partner: w.target.route.partner.as_deref(),
            owner_id: Some("TEAM"),
            max_string_chars: 8192,
            hold: Default::default(),
        };
        plan(record, &facts, &content, ME, now(), None).unwrap()
    }

    fn run(p: Plan) -> (crate::lifecycle::Decision, Record) {
        match p {
            Plan::Run { decision, record } => (decision, record),
            other => panic!("expected a run, got {other:?}"),
        }
    }

    /// The kind of a plan that calls nothing.
    fn nothing(p: Plan) -> DecisionKind {
        match p {
            Plan::Nothing { decision, .. } => decision.kind,
            other => panic!("expected nothing, got {other:?}"),
        }
    }

    #[test]
    fn an_unknown_firing_key_claims_an_add_whose_plate_names_the_episode() {
        let w = world_with(FIRING, Some("DBA"));
        let (decision, record) = run(plan_for(&w, &Record::default(), None));
        assert_eq!(decision.kind, DecisionKind::Add);
        let pending = record.pending.as_ref().unwrap();
        assert_eq!((pending.owner.as_str(), pending.claimed_at_ms), ("me", unix_ms(now())));
        let ops: Vec<_> = pending.steps.iter().map(|s| s.op).collect();
        assert_eq!(ops, [Operation::Add, Operation::Submit]);
        assert!(pending.steps.iter().all(|s| s.owner_id.as_deref() == Some("TEAM") && !s.done));
        assert_eq!(pending.steps[0].payload["externalRef"], w.key.as_str());
        assert_eq!(pending.steps[1].payload["partnerId"], "DBA");

        let again = world_with(FIRING, Some("DBA"));
        let (_, other_delivery) = run(plan_for(&again, &Record::default(), None));
        assert_eq!(
            other_delivery.pending.unwrap().steps[0].license_plate,
            pending.steps[0].license_plate,
            "the same episode planned from another delivery sends the same plate"
        );
    }

    #[test]
    fn a_fresh_claim_of_another_replica_is_busy_and_a_stale_or_own_one_is_resumed() {
        let w = world(FIRING);
        let (_, mut record) = run(plan_for(&w, &Record::default(), None));
        record.pending.as_mut().unwrap().owner = "other".into();
        record.pending.as_mut().unwrap().claimed_at_ms = unix_ms(now()) - 10_000;
        match plan_for(&w, &record, None) {
            Plan::Busy { retry_after } => assert_eq!(retry_after, Duration::from_secs(20)),
            other => panic!("{other:?}"),
        }
        record.pending.as_mut().unwrap().claimed_at_ms = unix_ms(now()) - 31_000;
        assert!(matches!(plan_for(&w, &record, None), Plan::Resume), "a stale claim is taken over");
        record.pending.as_mut().unwrap().owner = "me".into();
        record.pending.as_mut().unwrap().claimed_at_ms = unix_ms(now());
        assert!(matches!(plan_for(&w, &record, None), Plan::Resume), "its own claim is resumed");
    }

    /// The record after `w`'s add was answered with `IT-1`.
    fn opened(w: &World) -> Record {
        let (_, mut record) = run(plan_for(w, &Record::default(), None));
        let answer = Answer::Accepted { item_id: Some(ItemId::new("IT-1")) };
        assert_eq!(advance(&mut record, 0, answer, now()), Advance::Finished);
        record
    }

    #[test]
    fn a_repeat_is_nothing_and_only_a_newer_stream_position_is_saved() {
        let w = world(FIRING);
        let record = opened(&w);
        let stored = record.stored.as_ref().unwrap();
        assert_eq!((stored.item_id.as_str(), stored.state), ("IT-1", IncidentState::Open));
        assert!(record.pending.is_none());

        match plan_for(&w, &record, None) {
            Plan::Nothing { decision, record: None } => {
                assert_eq!(decision.kind, DecisionKind::NothingUnchanged)
            }
            other => panic!("{other:?}"),
        }
        let at = Position { stream: "S".into(), sequence: 7, published_ms: 1 };
        let saved = match plan_for(&w, &record, Some(at.clone())) {
            Plan::Nothing { record: Some(r), .. } => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(saved.latest.as_ref().map(|l| &l.position), Some(&at));
        let older = Position { sequence: 6, ..at };
        match plan_for(&w, &saved, Some(older)) {
            Plan::Nothing { decision, record: None } => {
                assert_eq!(decision.kind, DecisionKind::NothingSuperseded)
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn steps_address_the_incident_of_the_steps_before_them() {
        let w = world_with(FIRING, Some("DBA"));
        let (_, mut record) = run(plan_for(&w, &Record::default(), None));
        let (first, payload) = next_step(&record).unwrap();
        assert_eq!(first, 0);
        assert!(payload.unwrap().get("id").is_none(), "an add has no id yet");
        let answer = Answer::Accepted { item_id: Some(ItemId::new("IT-9")) };
        assert_eq!(advance(&mut record, 0, answer, now()), Advance::Next);
        let (second, payload) = next_step(&record).unwrap();
        assert_eq!((second, payload.unwrap()["id"].as_str()), (1, Some("IT-9")));
        assert_eq!(advance(&mut record, 1, Answer::Accepted { item_id: None }, now()), Advance::Finished);
        assert!(next_step(&record).is_none());
        assert_eq!(record.stored.unwrap().item_id.as_str(), "IT-9");
    }

    #[test]
    fn a_404_drops_the_mapping_but_keeps_the_stream_position() {
        let w = world(FIRING);
        let mut record = opened(&w);
        record.latest = Some(Latest {
            position: Position { stream: "S".into(), sequence: 3, published_ms: 1 },
            status: AlertStatus::Firing,
        });
        let resolved = world(&FIRING.replace("\"status\":\"firing\"", "\"status\":\"resolved\""));
        let (decision, mut closing) = run(plan_for(&resolved, &record, None));
        assert_eq!(decision.kind, DecisionKind::Close);
        let plate = closing.pending.as_ref().unwrap().steps[0].license_plate.clone();
        assert_eq!(advance(&mut closing, 0, Answer::NotFound, now()), Advance::NotFound(plate));
        assert!(closing.stored.is_none() && closing.pending.is_none());
        assert!(closing.latest.is_some());
    }

    fn closed_by_a_person(resolution: &str) -> crate::lifecycle::converge::Seen {
        crate::lifecycle::converge::Seen::Incident(crate::lifecycle::converge::Observed {
            state: IncidentState::Closed,
            external_ref: None,
            resolution: Some(resolution.into()),
            partner: None,
        })
    }

    #[test]
    fn a_close_intent_on_an_incident_a_person_closed_is_dropped_and_the_resolve_is_then_nothing() {
        let w = world(FIRING);
        let resolved = world(&FIRING.replace("\"status\":\"firing\"", "\"status\":\"resolved\""));
        let later = now() + Duration::from_secs(7200);
        let (_, mut closing) = run(plan_for(&resolved, &opened(&w), None));
        assert!(needs_check(&closing, later, Duration::from_secs(600)), "confirmed two hours ago");
        assert!(!needs_check(&closing, now(), Duration::from_secs(600)), "confirmed just now");

        let converged = converge(&mut closing, &closed_by_a_person("fixed"), &w.key, &[], later);
        assert!(converged.replan);
        assert_eq!(converged.drift.len(), 1);
        assert!(closing.pending.is_none(), "the close is not sent");
        assert_eq!(closing.stored.as_ref().unwrap().state, IncidentState::Closed);
        assert_eq!(nothing(plan_for(&resolved, &closing, None)), DecisionKind::NothingResolvedClosed);
    }

    #[test]
    fn a_won_t_fix_keeps_the_key_quiet_while_firing_and_the_resolve_forgets_it() {
        let w = world(FIRING);
        let mut record = opened(&w);
        let wont_fix = vec!["won't fix".to_owned()];
        let converged = converge(&mut record, &closed_by_a_person("won't fix"), &w.key, &wont_fix, now());
        assert!(!converged.replan, "no intent was under way");
        let changed = world(&FIRING.replace("DiskFull\"}", "DiskFull\", \"x\": \"1\"}"));
        for event in [&w, &changed] {
            assert_eq!(nothing(plan_for(event, &record, None)), DecisionKind::NothingQuiet);
        }
        let resolved = world(&FIRING.replace("\"status\":\"firing\"", "\"status\":\"resolved\""));
        let forgotten = match plan_for(&resolved, &record, None) {
            Plan::Nothing { decision, record: Some(r) } => {
                assert_eq!(decision.kind, DecisionKind::ForgetQuiet);
                r
            }
            other => panic!("{other:?}"),
        };
        assert!(forgotten.stored.is_none());
        let (decision, _) = run(plan_for(&w, &forgotten, None));
        assert_eq!(decision.kind, DecisionKind::Add, "the next firing starts afresh");
    }

    #[test]
    fn an_add_answered_without_an_id_is_given_up_keeping_what_was_done() {
        let w = world(FIRING);
        let (_, mut record) = run(plan_for(&w, &Record::default(), None));
        let advanced = advance(&mut record, 0, Answer::Accepted { item_id: None }, now());
        assert_eq!(advanced, Advance::Abandon(TransitionError::MissingItemId));
        assert_eq!(
            record,
            Record {
                key: Some(w.key.clone()),
                source: Some("am".into()),
                memo: record.memo.clone(),
                ..Record::default()
            },
            "nothing was done, nothing is kept"
        );
    }

    fn inputs_of(w: &World) -> String {
        crate::template::Renderer::new("am", &w.templates, &w.notification, w.target.subject())
            .inputs()
            .to_owned()
    }

    #[test]
    fn a_claim_remembers_what_its_inputs_render_to_and_the_finished_record_keeps_it() {
        let w = world(FIRING);
        let record = opened(&w);
        let memo = record.memo.as_ref().expect("a memo");
        assert_eq!(memo.inputs, inputs_of(&w));
        assert_eq!(&memo.hash, &record.stored.as_ref().unwrap().content_hash, "the add's content");
    }

    /// The memo stands for rendering: a repeat with the inputs it names is decided on its hash,
    /// and inputs it does not name are rendered.
    #[test]
    fn a_repeat_whose_inputs_the_memo_names_is_decided_on_the_memo_s_hash_without_rendering() {
        let w = world(FIRING);
        let mut record = opened(&w);
        // A memo that says these inputs render to something else than SCWM has: believed.
        record.memo = Some(ContentMemo { inputs: inputs_of(&w), hash: "not what SCWM has".into() });
        let (decision, _) = run(plan_for(&w, &record, None));
        assert_eq!(decision.kind, DecisionKind::Edit, "the memo's hash differs from the stored one");

        // The same memo for other inputs: rendered, the content is what SCWM has, nothing to do.
        record.memo = Some(ContentMemo { inputs: "other inputs".into(), hash: "not what SCWM has".into() });
        assert_eq!(nothing(plan_for(&w, &record, None)), DecisionKind::NothingUnchanged);
    }

    #[test]
    fn inputs_differ_when_the_alert_the_templates_or_the_source_differ_and_not_otherwise() {
        let w = world(FIRING);
        assert_eq!(inputs_of(&w), inputs_of(&world(FIRING)), "another delivery of the same notification");
        assert_ne!(inputs_of(&w), inputs_of(&world(&FIRING.replace("Disk full", "Disk nearly full"))));
        let mut other_templates = world(FIRING);
        let raw = RawTemplates { title: Some("{{ labels.alertname }}".into()), ..RawTemplates::default() };
        other_templates.templates = build_templates(&raw, "sources.am.templates").unwrap();
        assert_ne!(inputs_of(&w), inputs_of(&other_templates));
        let other_source =
            crate::template::Renderer::new("other", &w.templates, &w.notification, w.target.subject());
        assert_ne!(inputs_of(&w), other_source.inputs());
    }

    #[test]
    fn an_incident_found_open_that_the_intent_meant_to_reopen_is_no_person_s_reopen_to_respect() {
        use crate::lifecycle::{
            IncidentState,
            converge::{Observed, Seen},
        };
        let closed = Stored {
            state: IncidentState::Closed,
            closed_at: Some(now()),
            ..Stored::opened(crate::ids::ItemId::new("IT-1"), "h", now(), LicensePlate::generate())
        };
        let mut record = Record {
            pending: Some(Pending {
                owner: "another".into(),
                claimed_at_ms: 0,
                decision: "reopen".into(),
                content_hash: "h".into(),
                steps: vec![Step {
                    op: Operation::Reopen,
                    license_plate: LicensePlate::generate(),
                    payload: Payload::new(),
                    owner_id: None,
                    done: false,
                }],
                progress: Some(closed.clone()),
            }),
            stored: Some(closed),
            ..Record::default()
        };
        let open = Seen::Incident(Observed {
            state: IncidentState::Open,
            external_ref: None,
            resolution: None,
            partner: None,
        });
        let converged = converge(&mut record, &open, &CorrelationKey::new("am:fp:1"), &[], now());
        assert_eq!(converged.drift.len(), 1, "found open: said so");
        assert!(converged.replan);
        let stored = record.stored.as_ref().unwrap();
        assert_eq!(stored.state, IncidentState::Open);
        assert!(!stored.reopened_by_person, "the next resolve closes it");
    }

    #[test]
    fn a_close_seen_with_the_step_s_own_resolution_is_the_step_done() {
        let w = world(FIRING);
        let resolved = world(&FIRING.replace("\"status\":\"firing\"", "\"status\":\"resolved\""));
        let (_, mut closing) = run(plan_for(&resolved, &opened(&w), None));
        let ours =
            closing.pending.as_ref().unwrap().steps[0].payload["resolution"].as_str().unwrap().to_owned();
        let converged = converge(&mut closing, &closed_by_a_person(&ours), &w.key, &[], now());
        assert_eq!(converged, Converged { drift: vec![], replan: false });
        // Closed with our resolution: our close, done; it was the intent's last step, so the
        // intent is over (an intent with every step done would be resumed for ever).
        assert!(closing.pending.is_none(), "{closing:?}");
        assert_eq!(closing.stored.as_ref().unwrap().state, IncidentState::Closed);
        assert!(next_step(&closing).is_none());
    }

    #[test]
    fn an_operation_on_an_item_without_an_incident_cannot_be_sent() {
        let record = Record {
            pending: Some(Pending {
                owner: "me".into(),
                claimed_at_ms: 0,
                decision: "close".into(),
                content_hash: "h".into(),
                steps: vec![Step {
                    op: Operation::Close,
                    license_plate: LicensePlate::generate(),
                    payload: Payload::new(),
                    owner_id: None,
                    done: false,
                }],
                progress: None,
            }),
            ..Record::default()
        };
        let (_, payload) = next_step(&record).unwrap();
        assert_eq!(payload, Err(TransitionError::NoIncident(Operation::Close)));
    }
}
