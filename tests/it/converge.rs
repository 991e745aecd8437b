//! Converging with SCWM's truth: a person acts on incidents in SCWM (the simulator's person
//! endpoint) while alerts flow through the real bridge, and the bridge finds out by reading:
//! before acting on an incident it has not seen confirmed for a while, after SCWM refuses an
//! operation as a conflict, on a repeat, and in the background (the reconciler). Assertions are
//! on what SCWM received and holds, what the sender was answered, and the drift events.
//!
//! Nothing sleeps to synchronise: webhooks answer once the bridge finished, drift events are
//! awaited on the bridge's channel sink, and the reconciler's progress is counted in reads at
//! the simulator.

use std::time::Duration;

use futures::StreamExt;

use incident_bridge::{
    publish::{DriftEvent, Published},
    scwm::Operation,
    sim::{IncidentStatus, PersonAction, SimHandle},
};
use serde_json::{Value, json};

use crate::kit::{
    TestApp,
    alerts::{BEARER, Step, am_source, correlation_key, keyed_notification},
    within,
};

/// An Alertmanager source `am` with a one-hour reopen window, and `reconcile` as the
/// `[reconcile]` table.
fn config(source_settings: &str, reconcile: &str) -> String {
    format!(
        "{}\n[reconcile]\n{reconcile}\n",
        am_source("am", &format!("reopen_window = \"1h\"\n{source_settings}"))
    )
}

/// Checks only when SCWM surprises the bridge; no background reads.
const SURPRISES_ONLY: &str = "enabled = false\nownership_check_after = \"1h\"";
/// A read before every operation on an incident, and on every repeat; no background reads.
const CHECK_ALWAYS: &str = "enabled = false\nownership_check_after = \"0s\"";

async fn send(app: &TestApp, k: usize, step: Step) -> (u16, Value) {
    crate::kit::alerts::send(app, "am", k, step).await
}

/// Each SCWM operation the simulator received, in order.
fn ops(sim: &SimHandle) -> Vec<Operation> {
    crate::kit::operations(sim)
}

fn reads(sim: &SimHandle) -> usize {
    ops(sim).into_iter().filter(|op| *op == Operation::Read).count()
}

fn status_of(sim: &SimHandle, id: &str) -> IncidentStatus {
    sim.incidents().into_iter().find(|i| i.id.as_str() == id).expect("the incident exists").status
}

fn person(sim: &SimHandle, id: &str, action: PersonAction) {
    sim.act(id, &action).expect("the person's action is allowed");
}

fn close_as(resolution: &str) -> PersonAction {
    PersonAction::Close { resolution: Some(json!(resolution)), close_notes: Some(json!("done by hand")) }
}

/// Everything published so far, without waiting.
fn drain(app: &mut TestApp) -> Vec<Published> {
    std::iter::from_fn(|| app.published.try_recv().ok()).collect()
}

fn drifts(published: &[Published]) -> Vec<DriftEvent> {
    published
        .iter()
        .filter_map(|p| match p {
            Published::Drift(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

fn dead_letters(published: &[Published]) -> Vec<String> {
    published
        .iter()
        .filter_map(|p| match p {
            Published::DeadLetter(d) => Some(d.reason.clone()),
            _ => None,
        })
        .collect()
}

/// Waits for the next `n` drift events, keeping everything published meanwhile in `seen`.
async fn next_drifts(app: &mut TestApp, n: usize, seen: &mut Vec<Published>) -> Vec<DriftEvent> {
    within(30, &format!("{n} drift events"), async {
        let mut found = Vec::new();
        while found.len() < n {
            let p = app.published.recv().await.expect("the sink is open");
            if let Published::Drift(d) = &p {
                found.push(d.clone());
            }
            seen.push(p);
        }
        found
    })
    .await
}

#[tokio::test]
async fn a_close_refused_as_already_closed_is_success_when_a_person_closed_the_incident() {
    let mut app =
        TestApp::start_against(crate::kit::start_simulator().await, &config("", SURPRISES_ONLY), &[]).await;
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    person(&app.sim, "IT-000001", close_as("fixed"));
    drain(&mut app);

    let (status, answer) = send(&app, 1, Step::Resolve).await;
    assert_eq!(status, 200, "the desired end state holds: {answer}");
    assert_eq!(ops(&app.sim), [Operation::Add, Operation::Close, Operation::Read]);
    assert_eq!(app.sim.requests()[1].status, Some(409), "SCWM refused the close");
    let published = drain(&mut app);
    assert_eq!(dead_letters(&published), Vec::<String>::new(), "nothing reached its end state as a failure");
    let drift = drifts(&published);
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!((drift[0].kind, drift[0].item_id.as_str()), ("closed", "IT-000001"));
    assert_eq!((drift[0].expected.as_str(), drift[0].found.as_str()), ("open", "closed (fixed)"));
    assert_eq!(drift[0].key.as_str(), correlation_key("am", 1));
    assert_eq!(drift[0].detected_by, "check");

    // The store now says closed: the alert firing again reopens the incident (inside the window).
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    assert_eq!(ops(&app.sim)[3..], [Operation::Reopen]);
    assert_eq!(status_of(&app.sim, "IT-000001"), IncidentStatus::Open);
    app.stop().await;
}

#[tokio::test]
async fn a_repeat_finds_the_incident_a_person_closed_and_reopens_it() {
    let mut app =
        TestApp::start_against(crate::kit::start_simulator().await, &config("", CHECK_ALWAYS), &[]).await;
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    person(&app.sim, "IT-000001", close_as("fixed"));
    drain(&mut app);

    // Byte for byte the same notification: without a read it would be "nothing to do".
    let (status, answer) = send(&app, 1, Step::Fire).await;
    assert_eq!(status, 200, "{answer}");
    let after_add = &ops(&app.sim)[1..];
    assert_eq!(after_add.first(), Some(&Operation::Read), "{after_add:?}");
    assert!(
        after_add.contains(&Operation::Reopen),
        "the firing alert has its incident open again: {after_add:?}"
    );
    assert!(!after_add.contains(&Operation::Add), "no second incident: {after_add:?}");
    assert_eq!(status_of(&app.sim, "IT-000001"), IncidentStatus::Open);
    let published = drain(&mut app);
    assert_eq!(drifts(&published).iter().map(|d| d.kind).collect::<Vec<_>>(), ["closed"]);
    assert!(dead_letters(&published).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn an_edit_of_an_incident_a_person_closed_reopens_it_with_the_new_content() {
    let mut app =
        TestApp::start_against(crate::kit::start_simulator().await, &config("", CHECK_ALWAYS), &[]).await;
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    person(&app.sim, "IT-000001", close_as("fixed"));
    drain(&mut app);

    let mut changed: Value = serde_json::from_slice(&keyed_notification(1, Step::Fire)).unwrap();
    changed["alerts"][0]["annotations"]["summary"] = json!("Queue q001 is backing up badly");
    let resp = app
        .http
        .post(app.url("/webhooks/am"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {BEARER}"))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The read before the edit finds the close; the event is planned again as reopen + edit,
    // and with `ownership_check_after = "0s"` each of those is read before too.
    assert_eq!(
        ops(&app.sim)[1..],
        [Operation::Read, Operation::Read, Operation::Reopen, Operation::Read, Operation::Edit]
    );
    let incident = app.sim.incidents().into_iter().next().unwrap();
    assert_eq!(incident.status, IncidentStatus::Open);
    assert!(incident.fields["title"].as_str().unwrap().contains("badly"), "{:?}", incident.fields);
    assert_eq!(drifts(&drain(&mut app)).iter().map(|d| d.kind).collect::<Vec<_>>(), ["closed"]);
    app.stop().await;
}

#[tokio::test]
async fn an_id_that_now_names_another_incident_is_not_closed() {
    let mut app =
        TestApp::start_against(crate::kit::start_simulator().await, &config("", CHECK_ALWAYS), &[]).await;
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    // SCWM starts over (a restore, a new environment): IT-000001 is someone else's incident.
    app.sim.reset();
    let other = app.command("add", json!({"title": "printer on fire", "externalRef": "ticket-42"})).await;
    assert_eq!(other.status(), 200);
    assert_eq!(status_of(&app.sim, "IT-000001"), IncidentStatus::Open);
    drain(&mut app);

    let (status, answer) = send(&app, 1, Step::Resolve).await;
    assert_eq!(status, 200, "{answer}");
    let after = ops(&app.sim);
    assert!(!after.contains(&Operation::Close), "the unrelated incident is left alone: {after:?}");
    assert_eq!(status_of(&app.sim, "IT-000001"), IncidentStatus::Open);
    let published = drain(&mut app);
    let drift = drifts(&published);
    assert_eq!(drift.iter().map(|d| d.kind).collect::<Vec<_>>(), ["not_ours"], "{drift:?}");
    assert!(drift[0].found.contains("ref:ticket-42") || drift[0].found.contains("ticket-42"), "{drift:?}");
    assert!(dead_letters(&published).is_empty());

    // The mapping is gone: the next firing opens an incident of its own.
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    assert_eq!(ops(&app.sim).last(), Some(&Operation::Add));
    assert_eq!(app.sim.incidents().len(), 2);
    app.stop().await;
}

#[tokio::test]
async fn a_deleted_incident_is_reported_once_and_its_resolve_is_nothing_to_do() {
    let mut app =
        TestApp::start_against(crate::kit::start_simulator().await, &config("", SURPRISES_ONLY), &[]).await;
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    person(&app.sim, "IT-000001", PersonAction::Delete);
    drain(&mut app);

    let (status, answer) = send(&app, 1, Step::Resolve).await;
    assert_eq!(status, 200, "{answer}");
    let published = drain(&mut app);
    assert_eq!(
        drifts(&published).iter().map(|d| (d.kind, d.item_id.as_str())).collect::<Vec<_>>(),
        [("deleted", "IT-000001")]
    );
    assert!(dead_letters(&published).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn a_wont_fix_close_keeps_the_key_quiet_until_the_alert_resolves() {
    let reconcile = "interval = \"0s\"\nreads_per_second = 50\nownership_check_after = \"1h\"";
    let mut app = TestApp::start_against(
        crate::kit::start_simulator().await,
        &config("wont_fix_resolutions = [\"Won't fix\"]", reconcile),
        &[],
    )
    .await;
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    person(&app.sim, "IT-000001", close_as("won't fix"));
    let mut seen = Vec::new();
    let drift = next_drifts(&mut app, 1, &mut seen).await;
    assert_eq!((drift[0].kind, drift[0].detected_by), ("closed", "reconciler"));

    // The alert keeps firing: the person's decision stands.
    let before = ops(&app.sim).into_iter().filter(|op| *op != Operation::Read).count();
    let (status, answer) = send(&app, 1, Step::Fire).await;
    assert_eq!(status, 200, "{answer}");
    let acted: Vec<_> = ops(&app.sim).into_iter().filter(|op| *op != Operation::Read).collect();
    assert_eq!(acted.len(), before, "no reopen, no new incident: {acted:?}");
    assert_eq!(status_of(&app.sim, "IT-000001"), IncidentStatus::Closed);

    // It resolves at the source; the next firing is a new episode with an incident of its own.
    assert_eq!(send(&app, 1, Step::Resolve).await.0, 200);
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200);
    let acted: Vec<_> = ops(&app.sim).into_iter().filter(|op| *op != Operation::Read).collect();
    assert_eq!(acted, [Operation::Add, Operation::Add]);
    assert_eq!(status_of(&app.sim, "IT-000001"), IncidentStatus::Closed);
    assert_eq!(status_of(&app.sim, "IT-000002"), IncidentStatus::Open);
    assert!(dead_letters(&seen).is_empty() && dead_letters(&drain(&mut app)).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_reconciler_finds_each_change_a_person_made_once() {
    let reconcile = "interval = \"0s\"\nreads_per_second = 50\ninclude_closed_for = \"1h\"\nownership_check_after = \"1h\"";
    let mut app =
        TestApp::start_against(crate::kit::start_simulator().await, &config("", reconcile), &[]).await;
    for k in 1..=4 {
        assert_eq!(send(&app, k, Step::Fire).await.0, 200);
    }
    assert_eq!(send(&app, 2, Step::Resolve).await.0, 200);
    let (one, two, three, four) = ("IT-000001", "IT-000002", "IT-000003", "IT-000004");
    person(&app.sim, one, close_as("fixed"));
    person(&app.sim, two, PersonAction::Reopen { reason: Some(json!("not fixed at all")) });
    person(&app.sim, three, PersonAction::Delete);
    person(&app.sim, four, PersonAction::Submit { partner_id: json!("P-9"), note: None });

    let mut seen = Vec::new();
    let mut found: Vec<_> = next_drifts(&mut app, 4, &mut seen)
        .await
        .into_iter()
        .map(|d| (d.item_id.to_string(), d.kind, d.found, d.detected_by))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            (one.to_owned(), "closed", "closed (fixed)".to_owned(), "reconciler"),
            (two.to_owned(), "reopened", "open".to_owned(), "reconciler"),
            (three.to_owned(), "deleted", "no such incident".to_owned(), "reconciler"),
            (four.to_owned(), "handed_over", "partner P-9".to_owned(), "reconciler"),
        ]
    );

    // Two more rounds over the three keys left: nothing is reported twice.
    let now = reads(&app.sim);
    app.sim
        .wait_for_requests(app.sim.request_count() + 6, Duration::from_secs(30))
        .await
        .expect("reads go on");
    assert!(reads(&app.sim) >= now + 6);
    let again = drifts(&drain(&mut app));
    assert!(again.is_empty(), "each change is reported once: {again:?}");

    // What the store learnt decides the next events.
    let before = ops(&app.sim).into_iter().filter(|op| *op != Operation::Read).count();
    assert_eq!(send(&app, 1, Step::Fire).await.0, 200, "firing again after a person's close");
    assert_eq!(send(&app, 2, Step::Resolve).await.0, 200, "a repeat of the resolve after a person's reopen");
    assert_eq!(send(&app, 3, Step::Fire).await.0, 200, "firing again after the incident was deleted");
    let acted: Vec<_> = ops(&app.sim).into_iter().filter(|op| *op != Operation::Read).skip(before).collect();
    assert_eq!(acted, [Operation::Reopen, Operation::Add], "reopen 1, leave 2 open, a new incident for 3");
    assert_eq!(status_of(&app.sim, one), IncidentStatus::Open);
    assert_eq!(status_of(&app.sim, two), IncidentStatus::Open, "the person's reopen stands");
    assert!(dead_letters(&seen).is_empty());
    app.stop().await;
}

#[tokio::test]
async fn the_reconciler_stays_within_its_read_rate() {
    let rate = 5.0;
    let reconcile = format!("interval = \"0s\"\nreads_per_second = {rate}\nownership_check_after = \"1h\"");
    let app = TestApp::start_against(crate::kit::start_simulator().await, &config("", &reconcile), &[]).await;
    for k in 1..=3 {
        assert_eq!(send(&app, k, Step::Fire).await.0, 200);
    }
    let want = 3 + 12;
    let log = app.sim.wait_for_requests(want, Duration::from_secs(30)).await.expect("the reconciler reads");
    let times: Vec<Duration> = log
        .iter()
        .filter(|r| r.body["header"]["eventName"] == Operation::Read.default_event_name())
        .map(|r| {
            let at = humantime::parse_rfc3339(&r.received_at).expect("an RFC 3339 time");
            at.duration_since(std::time::UNIX_EPOCH).unwrap()
        })
        .collect();
    assert!(times.len() >= 12, "{} reads", times.len());
    // In any stretch of the log, no more reads than the rate allows (plus the one that opens
    // the stretch, and one for the clock's millisecond resolution).
    for i in 0..times.len() {
        for j in i + 1..times.len() {
            let span = (times[j] - times[i]).as_secs_f64();
            let allowed = (span * rate).floor() as usize + 2;
            let count = j - i + 1;
            assert!(count <= allowed, "{count} reads within {span:.3}s at {rate}/s");
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn two_replicas_sharing_a_kv_store_report_each_change_once_on_nats() {
    let nats = crate::kit::nats::NatsServer::start();
    let client = nats.client().await;
    let mut drift_subject = client.subscribe("scwm.results.drift").await.unwrap();
    client.flush().await.unwrap();
    let reconcile = "interval = \"0s\"\nreads_per_second = 50\nownership_check_after = \"1h\"";
    let extra = format!(
        "{}\n[nats]\nurl = \"{}\"\nsubscriptions = []\n\n[store]\nbackend = \"jetstream-kv\"\nbucket = \"converge\"\n",
        config("", reconcile),
        nats.url()
    );
    let mut a = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    let mut b = TestApp::start_with_text(&crate::kit::config_text(&a.sim.url(), &extra)).await;
    for k in 1..=3 {
        assert_eq!(send(&a, k, Step::Fire).await.0, 200);
    }
    person(&a.sim, "IT-000001", close_as("fixed"));
    person(&a.sim, "IT-000003", PersonAction::Submit { partner_id: json!("P-2"), note: None });

    let mut kinds = Vec::new();
    within(30, "two drift events on NATS", async {
        while kinds.len() < 2 {
            let msg = drift_subject.next().await.expect("subscribed");
            let id = crate::kit::nats::header(&msg, "Nats-Msg-Id").unwrap_or_default().to_owned();
            assert!(id.starts_with("drift."), "{id}");
            let body: Value = serde_json::from_slice(&msg.payload).expect("a JSON drift event");
            assert_eq!(crate::kit::nats::header(&msg, "Incident-Bridge-Drift-Kind"), body["kind"].as_str());
            kinds.push((
                body["itemId"].as_str().unwrap().to_owned(),
                body["kind"].as_str().unwrap().to_owned(),
            ));
        }
    })
    .await;
    kinds.sort();
    assert_eq!(
        kinds,
        [("IT-000001".to_owned(), "closed".to_owned()), ("IT-000003".into(), "handed_over".into())]
    );

    // More rounds over every key: neither replica reports either change again.
    app_reads_on(&a.sim, 9).await;
    client.flush().await.unwrap();
    let published: Vec<_> = drain(&mut a).into_iter().chain(drain(&mut b)).collect();
    assert_eq!(drifts(&published).len(), 2, "once across both replicas: {:?}", drifts(&published));
    assert!(
        tokio::time::timeout(Duration::from_millis(1), drift_subject.next()).await.is_err(),
        "no third drift event on NATS"
    );
    b.stop().await;
    a.stop().await;
}

/// Waits until the simulator has seen `n` more reads than now.
async fn app_reads_on(sim: &SimHandle, n: usize) {
    let want = sim.request_count() + n;
    sim.wait_for_requests(want, Duration::from_secs(30)).await.expect("the reconciler reads on");
}
