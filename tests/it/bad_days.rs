//! SCWM's bad days and alerts' bad habits, through the real bridge: flapping alerts are damped
//! (the incident stays open, one edit says so, the held close is applied once the alert is
//! stable), `hold_add` keeps an alert that resolves at once from opening anything, and an alert
//! storm's queued notifications for one key coalesce into the newest. The breaker, the governor
//! and the outage behaviour are tested at the client (`scwm_client`) and in the chaos suite.
//!
//! Nothing sleeps to synchronise: webhooks answer once the bridge finished, and what the bridge
//! does on its own (applying a hold when due) is awaited as its published events.

use incident_bridge::{
    publish::{FlapEvent, Published},
    scwm::Operation,
    sim::{Faults, IncidentStatus, Latency, SimHandle},
};
use serde_json::Value;

use crate::kit::{
    TestApp,
    alerts::{BEARER, Step, am_source, correlation_key, keyed_notification},
    within,
};

async fn send(app: &TestApp, k: usize, step: Step) -> (u16, Value) {
    crate::kit::alerts::send(app, "am", k, step).await
}

fn ops(sim: &SimHandle) -> Vec<Operation> {
    crate::kit::operations(sim)
}

fn outcome(answer: &Value) -> &str {
    answer["outcomes"][0]["outcome"].as_str().unwrap_or_default()
}

/// Waits for the next flap event, dropping whatever else is published meanwhile.
async fn next_flap(app: &mut TestApp) -> FlapEvent {
    within(20, "a flap event", async {
        loop {
            if let Published::Flap(f) = app.published.recv().await.expect("the sink is open") {
                return f;
            }
        }
    })
    .await
}

/// Waits until the bridge has published a result for `op` on its own.
async fn next_result(app: &mut TestApp, op: Operation) {
    within(20, &format!("a {op} result"), async {
        loop {
            if let Published::Result(r) = app.published.recv().await.expect("the sink is open")
                && r.op == op
            {
                return;
            }
        }
    })
    .await
}

fn flapping(cycles: u32, quiet: &str) -> String {
    am_source(
        "am",
        &format!(
            "reopen_window = \"1h\"\n\n[sources.am.flap]\ncycles = {cycles}\nwindow = \"10m\"\nquiet = \"{quiet}\""
        ),
    )
}

#[tokio::test]
async fn a_flapping_alert_keeps_its_incident_open_and_the_held_close_is_applied_once_it_is_stable() {
    let mut app = TestApp::start_against(crate::kit::start_simulator().await, &flapping(2, "3s"), &[]).await;
    use Step::{Fire as F, Resolve as R};
    for step in [F, R, F, R, F] {
        assert_eq!(send(&app, 1, step).await.0, 200);
    }
    assert_eq!(
        ops(&app.sim),
        [Operation::Add, Operation::Close, Operation::Reopen, Operation::Close, Operation::Reopen],
        "two cycles go through as they are"
    );
    // The next resolve is the third: the key is flapping.
    let (status, answer) = send(&app, 1, R).await;
    assert_eq!(status, 200, "{answer}");
    let start = next_flap(&mut app).await;
    assert_eq!(
        (start.kind, start.cycles, start.key.as_str()),
        ("flap.start", 2, correlation_key("am", 1).as_str())
    );
    assert_eq!(start.item_id.as_ref().map(|i| i.as_str()), Some("IT-000001"));
    let requests = app.sim.requests();
    let edit = requests.last().expect("the edit");
    assert_eq!(ops(&app.sim).last(), Some(&Operation::Edit), "no close: the incident stays open");
    let description = edit.body["payload"]["description"].as_str().unwrap_or_default();
    assert!(description.contains("flapping") && description.contains("2 times"), "{description}");
    assert_eq!(app.sim.incidents()[0].status, IncidentStatus::Open);

    // More flapping: nothing reaches SCWM; the closes are held.
    for step in [F, R, F, R] {
        let (status, answer) = send(&app, 1, step).await;
        assert_eq!((status, outcome(&answer)), (200, "duplicate"), "{answer}");
    }
    assert_eq!(ops(&app.sim).len(), 6);

    // Stable (resolved) for the quiet period: the bridge closes it on its own, once. (Three
    // seconds: each step above follows the one before well within it, even on a busy machine.)
    let end = next_flap(&mut app).await;
    assert_eq!((end.kind, end.status), ("flap.end", "resolved"));
    assert_eq!(ops(&app.sim)[6..], [Operation::Close]);
    assert_eq!(app.sim.incidents()[0].status, IncidentStatus::Closed);
    assert_eq!(app.sim.incidents().len(), 1, "one incident throughout");
    app.stop().await;
}

#[tokio::test]
async fn a_flapping_alert_that_settles_firing_stays_open_without_another_call() {
    let mut app = TestApp::start_against(crate::kit::start_simulator().await, &flapping(1, "3s"), &[]).await;
    use Step::{Fire as F, Resolve as R};
    for step in [F, R, F, R] {
        assert_eq!(send(&app, 1, step).await.0, 200);
    }
    assert_eq!(next_flap(&mut app).await.kind, "flap.start");
    assert_eq!(send(&app, 1, F).await.0, 200);
    let calls = ops(&app.sim).len();
    let end = next_flap(&mut app).await;
    assert_eq!((end.kind, end.status), ("flap.end", "firing"));
    assert_eq!(ops(&app.sim).len(), calls, "firing and open: nothing to apply");
    assert_eq!(app.sim.incidents()[0].status, IncidentStatus::Open);
    app.stop().await;
}

#[tokio::test]
async fn hold_add_opens_nothing_for_an_alert_that_resolves_within_it_and_adds_one_that_keeps_firing() {
    let extra = am_source("am", "hold_add = \"3s\"");
    let mut app = TestApp::start_against(crate::kit::start_simulator().await, &extra, &[]).await;
    let (status, answer) = send(&app, 1, Step::Fire).await;
    assert_eq!((status, outcome(&answer)), (200, "duplicate"), "held: {answer}");
    let (status, answer) = send(&app, 1, Step::Resolve).await;
    assert_eq!((status, outcome(&answer)), (200, "duplicate"), "{answer}");

    assert_eq!(send(&app, 2, Step::Fire).await.0, 200);
    assert!(app.sim.requests().is_empty(), "nothing is added while held");
    // Key 2 still fires when its hold ends: the bridge adds it on its own. Key 1 never opens.
    next_result(&mut app, Operation::Add).await;
    let incidents = app.sim.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(ops(&app.sim), [Operation::Add]);
    // Counted once the add's record is saved, just after its result is published.
    let applied = r#"incident_bridge_held_total{source="am",what="add",how="applied"} 1"#;
    let metrics = within(10, "the applied hold to be counted", async {
        loop {
            let m = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
            if m.contains(applied) {
                return m;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    for line in [
        r#"incident_bridge_held_total{source="am",what="add",how="held"} 2"#,
        r#"incident_bridge_held_total{source="am",what="add",how="dropped"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
    app.stop().await;
}

/// A notification for key 1 whose summary says `n`: the same alert, its content changed.
fn changed(n: usize) -> Vec<u8> {
    let mut v: Value = serde_json::from_slice(&keyed_notification(1, Step::Fire)).unwrap();
    v["alerts"][0]["annotations"]["summary"] = format!("backlog, reading {n}").into();
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn notifications_queued_behind_a_slow_call_for_one_key_coalesce_into_the_newest() {
    let app = TestApp::start_against(crate::kit::start_simulator().await, &am_source("am", ""), &[]).await;
    // A second per call: the ten notifications below reach the bridge while the add is still
    // under way, even on a busy machine.
    app.sim.set_faults(Faults { latency: Some(Latency::Fixed { fixed_ms: 1_000 }), ..Faults::default() });
    let post = |body: Vec<u8>| {
        let (http, url) = (app.http.clone(), app.url("/webhooks/am"));
        async move {
            let resp = http
                .post(url)
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {BEARER}"))
                .body(body)
                .send()
                .await
                .expect("answered");
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let first = tokio::spawn(post(changed(0)));
    app.sim.wait_for_requests(1, std::time::Duration::from_secs(10)).await.expect("the add is under way");
    let later: Vec<_> = (1..=10).map(|n| tokio::spawn(post(changed(n)))).collect();
    let mut answers = vec![first.await.unwrap()];
    for a in later {
        answers.push(a.await.unwrap());
    }
    assert!(answers.iter().all(|(s, _)| *s == 200), "{answers:?}");
    let duplicates = answers.iter().filter(|(_, a)| outcome(a) == "duplicate").count();
    let calls = ops(&app.sim);
    assert_eq!(calls[0], Operation::Add);
    assert!(calls.len() <= 3, "eleven notifications, {} SCWM calls: {calls:?}", calls.len());
    assert!(duplicates >= 8, "{duplicates} answered as replaced: {answers:?}");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("incident_bridge_coalesced_total{source=\"am\"}"), "{metrics}");
    app.stop().await;
}
