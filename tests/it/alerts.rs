//! The alerts feature end to end on real payloads, without I/O: captured Alertmanager and
//! Grafana bodies decode to the model, route, render and go through the real planner, the one
//! the pipeline runs, against an in-memory store.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use crate::kit::fixture;
use bytes::Bytes;
use incident_bridge::{
    alert::{AlertStatus, Grouping, Notification, NotificationKind, label_fingerprint},
    decode::{
        alertmanager,
        cloudevents::{self, Inner, InnerKind},
        grafana,
        headers::NoHeaders,
    },
    ids::{CorrelationKey, ItemId, LicensePlate},
    lifecycle::{self, DecisionKind},
    plan::{self, Advance, Answer, Claimant, Facts, Plan, Record},
    route::{Action, RawRoute, Routes, build_routes},
    scwm::{Operation, Payload},
    template::{RawTemplates, Renderer, TemplateSet, build_templates},
};
use serde_json::{Value, json};

fn am(name: &str) -> Notification {
    alertmanager::decode(&fixture(&format!("alertmanager/{name}.json"))).unwrap()
}

fn gf(name: &str) -> Notification {
    grafana::decode(&fixture(&format!("grafana/{name}.json"))).unwrap()
}

#[test]
fn every_alertmanager_fixture_decodes_as_its_index_describes() {
    let index: Value = serde_json::from_slice(&fixture("alertmanager/INDEX.json")).unwrap();
    let entries = index["fixtures"].as_array().unwrap();
    assert_eq!(entries.len(), 15);
    for entry in entries {
        let file = entry["fixture"].as_str().unwrap();
        let n = alertmanager::decode(&fixture(&format!("alertmanager/{file}"))).unwrap();
        assert_eq!(n.kind, NotificationKind::Alertmanager);
        assert_eq!(n.version, "4", "{file}");
        assert_eq!(n.receiver, entry["receiver"].as_str().unwrap(), "{file}");
        assert_eq!(n.status.as_str(), entry["status"].as_str().unwrap(), "{file}");
        assert_eq!(n.group_key, entry["groupKey"].as_str().unwrap(), "{file}");
        assert_eq!(n.truncated_alerts, entry["truncatedAlerts"].as_u64().unwrap(), "{file}");
        let statuses: Vec<&str> = n.alerts.iter().map(|a| a.status.as_str()).collect();
        let want: Vec<&str> =
            entry["alerts"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
        assert_eq!(statuses, want, "{file}");
        assert_eq!(n.external_url, "http://127.0.0.1:59571", "{file}");
        assert!(n.extra.is_empty(), "{file}: Alertmanager sends nothing outside the model");
        for a in &n.alerts {
            // Alertmanager's fingerprint is Prometheus' label hash: the fallback reproduces it.
            assert_eq!(a.fingerprint, label_fingerprint(&a.labels), "{file}");
            assert!(a.starts_at.is_some(), "{file}");
            assert!(a.generator_url.as_deref().is_some_and(|u| u.starts_with("http://127.0.0.1:")), "{file}");
            match a.status {
                AlertStatus::Firing => assert_eq!(a.ends_at, None, "{file}: the zero endsAt is no end"),
                AlertStatus::Resolved => assert!(a.ends_at.is_some(), "{file}"),
            }
            assert!(a.extra.is_empty(), "{file}");
        }
    }
}

#[test]
fn a_partly_resolved_group_stays_firing_with_one_resolved_alert() {
    let n = am("partially-resolved");
    assert_eq!(n.status, AlertStatus::Firing);
    let a: Vec<_> =
        n.alerts.iter().map(|a| (a.fingerprint.as_str(), a.status, a.ends_at.as_deref())).collect();
    assert_eq!(
        a,
        [
            ("e817690ee90aaa6a", AlertStatus::Firing, None),
            ("81b3626193eb1f73", AlertStatus::Resolved, Some("2026-11-28T12:42:03.925Z")),
        ]
    );
    assert!(n.common_annotations.is_empty());
    assert_eq!(n.common_labels["severity"], "warning");
}

#[test]
fn truncated_notifications_count_what_was_cut() {
    for name in ["truncated-firing", "truncated-resolved"] {
        let n = am(name);
        assert_eq!((n.truncated_alerts, n.alerts.len()), (3, 2), "{name}");
        assert_eq!(
            n.group_key,
            r#"{}/{fixture="truncate"}:{alertname="QueueBacklog", service="batch-worker"}"#
        );
    }
}

#[test]
fn single_alert_fields_are_read_exactly() {
    let n = am("firing-single");
    let a = &n.alerts[0];
    assert_eq!(a.fingerprint, "fd70cbc6aad0d083");
    assert_eq!(a.starts_at.as_deref(), Some("2026-11-28T12:41:48.668Z"));
    assert_eq!(
        a.generator_url.as_deref(),
        Some(
            "http://127.0.0.1:9090/graph?g0.expr=up%7Binstance%3D%2210.0.0.21%3A9100%22%7D%20%3D%3D%200&g0.tab=1"
        )
    );
    assert_eq!(a.labels["service"], "postgres");
    assert_eq!(a.annotations["summary"], "Disk /var/lib/postgresql 95% full on 10.0.0.21:9100");
    assert_eq!(n.group_labels.len(), 2);
}

#[test]
fn grafana_fixtures_keep_their_extras() {
    let firing = gf("firing");
    assert_eq!(firing.kind, NotificationKind::Grafana);
    assert_eq!((firing.status, firing.version.as_str()), (AlertStatus::Firing, "1"));
    assert_eq!(firing.extra["orgId"], 1);
    assert_eq!(firing.extra["state"], "alerting");
    assert_eq!(firing.extra["title"], "[FIRING:2] HighCPUUsage Infrastructure (checkout-api warning)");
    assert!(firing.extra["message"].as_str().unwrap().starts_with("**Firing**\n\nValue: A=93.71234"));
    assert_eq!(firing.group_key, r#"{}:{alertname="HighCPUUsage", grafana_folder="Infrastructure"}"#);
    let a = &firing.alerts[0];
    assert_eq!(a.fingerprint, "ca4945f09d68910f");
    assert_eq!(a.ends_at, None);
    assert_eq!(a.starts_at.as_deref(), Some("2026-11-28T12:40:50Z"));
    assert_eq!(a.extra["values"], json!({"A": 93.71234, "B": 93.71234, "C": 1}));
    assert!(
        a.extra["silenceURL"]
            .as_str()
            .unwrap()
            .contains("/alerting/silence/new?alertmanager=grafana&matcher=")
    );
    assert!(a.extra["dashboardURL"].as_str().unwrap().starts_with("http://localhost:3000/d/rYdddlPWk?"));
    assert!(a.extra["panelURL"].as_str().unwrap().ends_with("&viewPanel=3"));
    assert_eq!(a.extra["ruleUID"], "de5k2v9xq3ny8b");
    assert!(!a.extra.contains_key("imageURL"), "Grafana leaves imageURL out when there is none");
    assert_eq!(firing.alerts[1].fingerprint, "2297a33e65871be6");

    let resolved = gf("resolved");
    assert_eq!(resolved.status, AlertStatus::Resolved);
    assert_eq!(resolved.extra["state"], "ok");
    assert!(resolved.alerts.iter().all(|a| a.status == AlertStatus::Resolved && a.ends_at.is_some()));
    assert_eq!(resolved.alerts[0].extra["values"]["C"], 0);
}

/// The content hash of each target, in plan order.
fn hashes(n: &Notification, grouping: Grouping) -> Vec<(CorrelationKey, String)> {
    let source = TemplateSet::empty("sources.src.templates");
    Routes::default()
        .plan(n, "src", grouping)
        .iter()
        .map(|t| (t.key.clone(), Renderer::new("src", &source, n, t.subject()).content().unwrap().hash))
        .collect()
}

#[test]
fn repeat_notifications_hash_the_same_as_their_first_send() {
    for (first, repeat) in [("firing-single", "repeat-single"), ("firing-two-alerts", "repeat-two-alerts")] {
        for grouping in [Grouping::Alert, Grouping::Group] {
            assert_eq!(hashes(&am(first), grouping), hashes(&am(repeat), grouping), "{first} {grouping:?}");
        }
    }
    // ...and a real change does not.
    assert_ne!(
        hashes(&am("firing-two-alerts"), Grouping::Group),
        hashes(&am("partially-resolved"), Grouping::Group)
    );
    // Grafana's values change between notifications; the default templates do not read them.
    let g = gf("firing");
    let mut g2 = g.clone();
    g2.alerts[0].extra.insert("values".into(), json!({"A": 99.9}));
    assert_eq!(hashes(&g, Grouping::Alert), hashes(&g2, Grouping::Alert));
}

#[test]
fn default_templates_render_the_alertmanager_fixture() {
    let n = am("firing-single");
    let targets = Routes::default().plan(&n, "alertmanager", Grouping::Alert);
    let source = TemplateSet::empty("sources.alertmanager.templates");
    let content = Renderer::new("alertmanager", &source, &n, targets[0].subject()).content().unwrap();
    assert_eq!(
        Value::Object(content.add),
        json!({
            "title": "DiskAlmostFull: Disk /var/lib/postgresql 95% full on 10.0.0.21:9100",
            "description": "Filesystem /var/lib/postgresql on 10.0.0.21:9100 has less than 5% space left.\n\nSource: http://127.0.0.1:9090/graph?g0.expr=up%7Binstance%3D%2210.0.0.21%3A9100%22%7D%20%3D%3D%200&g0.tab=1",
            "severity": "critical",
            "service": "postgres",
            "source": "incident-bridge/alertmanager",
            "externalRef": "alertmanager:fp:fd70cbc6aad0d083",
            "labels": {"alertname": "DiskAlmostFull", "instance": "10.0.0.21:9100", "service": "postgres", "severity": "critical"},
            "occurredAt": "2026-11-28T12:41:48.668Z",
        })
    );
}

#[test]
fn default_templates_render_the_grafana_fixture() {
    let n = gf("firing");
    let targets = Routes::default().plan(&n, "grafana", Grouping::Alert);
    let source = TemplateSet::empty("sources.grafana.templates");
    let content = Renderer::new("grafana", &source, &n, targets[0].subject()).content().unwrap();
    assert_eq!(content.add["title"], "HighCPUUsage: CPU usage above 90% on 10.0.0.11:9100");
    assert_eq!(
        content.add["description"],
        "CPU usage on 10.0.0.11:9100 has been above 90% for 5 minutes.\n\n\
         Runbook: https://runbooks.example.com/high-cpu\n\n\
         Source: http://localhost:3000/alerting/grafana/de5k2v9xq3ny8b/view?orgId=1"
    );
    assert_eq!(content.add["category"], "Infrastructure", "Grafana's folder is the default category");
    assert_eq!(content.add["occurredAt"], "2026-11-28T12:40:50Z");
}

#[test]
fn a_truncated_group_says_what_it_left_out() {
    let n = am("truncated-firing");
    let targets = Routes::default().plan(&n, "am", Grouping::Group);
    let source = TemplateSet::empty("s");
    let content = Renderer::new("am", &source, &n, targets[0].subject()).content().unwrap();
    let description = content.add["description"].as_str().unwrap();
    assert!(description.contains("- [firing] Queue backlog high on worker 10.0.1.2"), "{description}");
    assert!(description.contains("- and 3 more not included in the notification"), "{description}");
}

/// A bridge in miniature: the real planner ([`plan::plan`], [`plan::advance`]) for one alert
/// source, with a map for a store and a list for SCWM, exactly as the pipeline drives it minus
/// the I/O. Every SCWM call succeeds; adds answer `IT-<n>`.
struct Bridge {
    source: &'static str,
    kind: NotificationKind,
    grouping: Grouping,
    routes: Routes,
    templates: TemplateSet,
    reopen_window: Duration,
    store: BTreeMap<CorrelationKey, Record>,
    calls: Vec<(Operation, Payload)>,
    now: SystemTime,
}

impl Bridge {
    fn new(source: &'static str, kind: NotificationKind, grouping: Grouping) -> Self {
        Bridge {
            source,
            kind,
            grouping,
            routes: Routes::default(),
            templates: TemplateSet::empty(format!("sources.{source}.templates")),
            reopen_window: Duration::from_secs(3600),
            store: BTreeMap::new(),
            calls: Vec::new(),
            now: UNIX_EPOCH + Duration::from_secs(1_795_000_000),
        }
    }

    /// Receives one webhook body; returns each target's decision label, in plan order.
    fn receive(&mut self, body: &[u8]) -> Vec<&'static str> {
        let n = match self.kind {
            NotificationKind::Alertmanager => alertmanager::decode(body).unwrap(),
            NotificationKind::Grafana => grafana::decode(body).unwrap(),
        };
        let event_plate = LicensePlate::generate();
        let claimant = Claimant { instance: "test", claim_ttl: Duration::from_secs(30) };
        let mut labels = Vec::new();
        for target in self.routes.plan(&n, self.source, self.grouping) {
            if target.route.action == Action::Drop {
                labels.push("dropped");
                continue;
            }
            let renderer = Renderer::new(self.source, &self.templates, &n, target.subject());
            let content = plan::Contents::new(&renderer);
            let facts = Facts {
                source: self.source,
                key: &target.key,
                status: target.status,
                position: None,
                episode: incident_bridge::alert::episode_start(target.alerts(&n)),
                event_plate: &event_plate,
                reopen_window: self.reopen_window,
                partner: target.route.partner.as_deref(),
                owner_id: target.route.owner_id.as_deref(),
                max_string_chars: 8192,
                hold: Default::default(),
            };
            let record = self.store.get(&target.key).cloned().unwrap_or_default();
            let planned = plan::plan(&record, &facts, &content, claimant, self.now, None).unwrap();
            let (decision, mut record) = match planned {
                Plan::Nothing { decision, record: saved } => {
                    if let Some(saved) = saved {
                        self.store.insert(target.key.clone(), saved);
                    }
                    labels.push(decision.label());
                    continue;
                }
                Plan::Run { decision, record } => (decision, record),
                other => panic!("a lone bridge is never busy nor resuming: {other:?}"),
            };
            // Every step was rendered before the first call, so a template error cannot leave
            // the decision half done; the item id is set at send time: after an add it is new.
            while let Some((index, payload)) = plan::next_step(&record) {
                let op = record.pending.as_ref().unwrap().steps[index].op;
                self.calls.push((op, payload.unwrap()));
                let item_id = (op == Operation::Add).then(|| ItemId::new(format!("IT-{}", self.calls.len())));
                match plan::advance(&mut record, index, Answer::Accepted { item_id }, self.now) {
                    Advance::Next | Advance::Finished => {}
                    other => panic!("{other:?}"),
                }
            }
            self.store.insert(target.key.clone(), record);
            labels.push(decision.label());
        }
        labels
    }

    fn ops(&self) -> Vec<Operation> {
        self.calls.iter().map(|(op, _)| *op).collect()
    }
}

fn body(name: &str) -> Vec<u8> {
    fixture(&format!("alertmanager/{name}.json"))
}

#[test]
fn a_group_lives_through_add_repeat_edit_and_close() {
    use Operation::*;
    let mut b = Bridge::new("am", NotificationKind::Alertmanager, Grouping::Group);
    assert_eq!(b.receive(&body("firing-two-alerts")), ["add"]);
    assert_eq!(b.receive(&body("repeat-two-alerts")), ["nothing_unchanged"]);
    assert_eq!(b.receive(&body("partially-resolved")), ["edit"]);
    assert_eq!(b.receive(&body("resolved-two-alerts")), ["close"]);
    assert_eq!(b.receive(&body("resolved-two-alerts")), ["nothing_resolved_closed"]);
    assert_eq!(b.ops(), [Add, Edit, Close]);
    let edit = &b.calls[1].1;
    assert_eq!(edit["id"], "IT-1");
    assert!(
        edit["description"].as_str().unwrap().contains("- [resolved] CPU usage above 90% on 10.0.0.12:9100")
    );
    let close = &b.calls[2].1;
    assert_eq!(close["id"], "IT-1");
    assert_eq!(close["resolution"], "resolved");
}

#[test]
fn alerts_of_a_group_live_their_own_lives_with_per_alert_grouping() {
    use Operation::*;
    let mut b = Bridge::new("am", NotificationKind::Alertmanager, Grouping::Alert);
    assert_eq!(b.receive(&body("firing-two-alerts")), ["add", "add"]);
    assert_eq!(b.receive(&body("repeat-two-alerts")), ["nothing_unchanged", "nothing_unchanged"]);
    assert_eq!(b.receive(&body("partially-resolved")), ["nothing_unchanged", "close"]);
    assert_eq!(b.receive(&body("resolved-two-alerts")), ["close", "nothing_resolved_closed"]);
    assert_eq!(b.ops(), [Add, Add, Close, Close]);
    assert_eq!(b.calls[2].1["id"], "IT-2");
    assert_eq!(b.calls[3].1["id"], "IT-1");
    assert_eq!(b.store.len(), 2);
}

#[test]
fn resolved_alerts_never_seen_firing_call_nothing() {
    let mut b = Bridge::new("am", NotificationKind::Alertmanager, Grouping::Alert);
    assert_eq!(b.receive(&body("resolved-single")), ["nothing_resolved_unknown"]);
    assert!(b.calls.is_empty() && b.store.is_empty());
}

#[test]
fn an_alert_that_fires_again_is_reopened_within_the_window_and_replaced_after_it() {
    use Operation::*;
    let mut b = Bridge::new("am", NotificationKind::Alertmanager, Grouping::Alert);
    b.receive(&body("firing-single"));
    b.receive(&body("resolved-single"));
    b.now += Duration::from_secs(60);
    assert_eq!(b.receive(&body("firing-single")), ["reopen"]);
    b.receive(&body("resolved-single"));
    b.now += Duration::from_secs(7200);
    assert_eq!(b.receive(&body("firing-single")), ["replace"]);
    assert_eq!(b.ops(), [Add, Close, Reopen, Close, Add]);
    assert_eq!(b.calls[2].1["id"], "IT-1");
    assert_eq!(b.store.values().next().unwrap().stored.as_ref().unwrap().item_id, ItemId::new("IT-5"));
}

#[test]
fn routes_drop_and_submit_to_partners() {
    use Operation::*;
    let mut b = Bridge::new("am", NotificationKind::Alertmanager, Grouping::Alert);
    b.routes = build_routes(
        &[
            RawRoute {
                matchers: vec![r#"severity="warning""#.into()],
                action: Some("drop".into()),
                ..Default::default()
            },
            RawRoute {
                matchers: vec![r#"service=~"postgres|mysql""#.into()],
                partner: Some("DBA-ONCALL".into()),
                templates: Some(RawTemplates { priority: Some("P1".into()), ..Default::default() }),
                ..Default::default()
            },
        ],
        "sources.am.routes",
    )
    .unwrap();
    assert_eq!(b.receive(&body("firing-two-alerts")), ["dropped", "dropped"]);
    assert_eq!(b.receive(&body("firing-single")), ["add"]);
    assert_eq!(b.ops(), [Add, Submit]);
    assert_eq!(b.calls[0].1["priority"], "P1");
    assert_eq!(
        Value::Object(b.calls[1].1.clone()),
        json!({"id": "IT-1", "partnerId": "DBA-ONCALL", "note": "Opened by incident-bridge/am for am:fp:fd70cbc6aad0d083"})
    );
}

#[test]
fn grafana_groups_open_and_close() {
    let mut b = Bridge::new("grafana", NotificationKind::Grafana, Grouping::Group);
    assert_eq!(b.receive(&fixture("grafana/firing.json")), ["add"]);
    assert_eq!(b.receive(&fixture("grafana/resolved.json")), ["close"]);
    assert_eq!(b.calls[0].1["title"], "HighCPUUsage: 2 alerts");
}

#[test]
fn source_templates_from_toml_shape_the_payload() {
    let raw: RawTemplates = toml::from_str(
        r#"
        title = "[{{ labels.severity | upper }}] {{ labels.alertname }}"
        [payload]
        close = '{"resolution": "auto", "closeNotes": {{ "ended " ~ alert.endsAt }}}'
        "#,
    )
    .unwrap();
    let mut b = Bridge::new("am", NotificationKind::Alertmanager, Grouping::Alert);
    b.templates = build_templates(&raw, "sources.am.templates").unwrap();
    b.receive(&body("firing-single"));
    b.receive(&body("resolved-single"));
    assert_eq!(b.calls[0].1["title"], "[CRITICAL] DiskAlmostFull");
    assert_eq!(
        Value::Object(b.calls[1].1.clone()),
        json!({"id": "IT-1", "resolution": "auto", "closeNotes": "ended 2026-11-28T12:42:10.498Z"})
    );
}

#[test]
fn a_cloudevent_carries_a_fixture_unchanged_in_every_mode() {
    let raw = fixture("alertmanager/firing-two-alerts.json");
    let direct = alertmanager::decode(&raw).unwrap();
    let data = String::from_utf8(raw.clone()).unwrap();

    let structured = format!(
        r#"{{"specversion":"1.0","id":"1","source":"/am","type":"io.prometheus.alertmanager.notification","datacontenttype":"application/json","data":{}}}"#,
        data.trim_end()
    );
    let http_structured = [("content-type", "application/cloudevents+json")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect::<Vec<_>>();
    let ev = cloudevents::decode(http_structured.as_slice(), Bytes::from(structured.clone())).unwrap();
    let nats_structured = cloudevents::decode(&NoHeaders, Bytes::from(structured)).unwrap();
    assert_eq!(ev, nats_structured);

    let mut http_binary = http::HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "/am"),
        ("ce-type", "t"),
        ("content-type", "application/json"),
    ] {
        http_binary.insert(k, http::HeaderValue::from_static(v));
    }
    let mut nats_binary = async_nats::HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "1"),
        ("ce-source", "%2Fam"),
        ("ce-type", "t"),
        ("ce-datacontenttype", "application/json"),
    ] {
        nats_binary.insert(k, v);
    }
    for ev in [
        ev,
        cloudevents::decode(&http_binary, Bytes::from(raw.clone())).unwrap(),
        cloudevents::decode(&Some(nats_binary), Bytes::from(raw.clone())).unwrap(),
    ] {
        assert_eq!(ev.source, "/am");
        match ev.decode_data(InnerKind::Alertmanager).unwrap() {
            Inner::Notification(n) => assert_eq!(n, direct),
            Inner::Native(_) => panic!("expected a notification"),
        }
    }
}

#[test]
fn the_decision_for_a_repeat_is_nothing_even_across_a_restart() {
    // The store persists Stored as JSON; a repeat after a round trip is still "unchanged".
    let mut b = Bridge::new("am", NotificationKind::Alertmanager, Grouping::Alert);
    b.receive(&body("firing-single"));
    let persisted: BTreeMap<CorrelationKey, String> =
        b.store.iter().map(|(k, v)| (k.clone(), serde_json::to_string(v).unwrap())).collect();
    b.store = persisted.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap())).collect();
    assert_eq!(b.receive(&body("repeat-single")), [DecisionKind::NothingUnchanged.as_str()]);
}

#[test]
fn compiled_routes_templates_and_targets_can_cross_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Routes>();
    send_sync::<TemplateSet>();
    send_sync::<incident_bridge::route::Target>();
    send_sync::<Notification>();
    send_sync::<Renderer<'static>>();
    send_sync::<cloudevents::CloudEvent>();
    send_sync::<lifecycle::Decision>();
}
