//! Route order, drop, grouping overrides and config validation of routes.

use super::*;
use crate::{
    alert::{AlertStatus, NotificationKind},
    decode::alertmanager,
    template::RawTemplates,
};

fn raw(matchers: &[&str]) -> RawRoute {
    RawRoute { matchers: matchers.iter().map(|m| m.to_string()).collect(), ..Default::default() }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Two alerts in one group: db-1 (critical, postgres, firing) and db-2 (info, resolved).
fn notification() -> Notification {
    alertmanager::decode(
        br#"{"status":"firing","groupKey":"{}:{alertname=\"Disk\"}","groupLabels":{"alertname":"Disk"},
        "commonLabels":{"alertname":"Disk","team":"db"},
        "alerts":[
          {"status":"firing","labels":{"alertname":"Disk","team":"db","instance":"db-1","severity":"critical","service":"postgres"},"fingerprint":"f1"},
          {"status":"resolved","labels":{"alertname":"Disk","team":"db","instance":"db-2","severity":"info"},"fingerprint":"f2"}]}"#,
    )
    .unwrap()
}

#[test]
fn the_first_matching_route_wins_and_the_default_takes_the_rest() {
    let routes = build_routes(
        &[
            RawRoute { action: Some("drop".into()), ..raw(&[r#"severity="info""#]) },
            RawRoute { owner_id: Some("DBA".into()), ..raw(&[r#"service=~"postgres|mysql""#]) },
            RawRoute { owner_id: Some("LATER".into()), ..raw(&[r#"service="postgres""#]) },
        ],
        "sources.am.routes",
    )
    .unwrap();
    let r = routes.first_match(&labels(&[("severity", "info"), ("service", "postgres")]));
    assert_eq!((r.name.as_str(), r.action), ("sources.am.routes[0]", Action::Drop));
    let r = routes.first_match(&labels(&[("severity", "critical"), ("service", "postgres")]));
    assert_eq!(r.owner_id.as_deref(), Some("DBA"));
    let r = routes.first_match(&labels(&[("service", "redis")]));
    assert_eq!((r.name.as_str(), r.action), ("default", Action::Open));
    assert!(Arc::ptr_eq(r, routes.default_route()));
    assert_eq!(routes.iter().count(), 3);
}

#[test]
fn all_matchers_of_a_route_must_match() {
    let routes = build_routes(&[raw(&[r#"team="db""#, r#"severity!="info""#])], "r").unwrap();
    assert_eq!(routes.first_match(&labels(&[("team", "db"), ("severity", "critical")])).name, "r[0]");
    assert_eq!(routes.first_match(&labels(&[("team", "db"), ("severity", "info")])).name, "default");
    assert_eq!(routes.first_match(&labels(&[("severity", "critical")])).name, "default");
}

#[test]
fn one_entry_may_hold_several_matchers() {
    let routes = build_routes(&[raw(&[r#"{team="db", severity="critical"}"#])], "r").unwrap();
    let route = routes.iter().next().unwrap();
    assert_eq!(route.matchers.len(), 2);
}

#[test]
fn a_route_without_matchers_catches_everything() {
    let routes = build_routes(&[RawRoute { action: Some("drop".into()), ..raw(&[]) }], "r").unwrap();
    assert_eq!(routes.first_match(&labels(&[])).action, Action::Drop);
}

#[test]
fn per_alert_plan_keys_each_alert_by_fingerprint() {
    let n = notification();
    let routes =
        build_routes(&[RawRoute { action: Some("drop".into()), ..raw(&[r#"severity="info""#]) }], "r")
            .unwrap();
    let targets = routes.plan(&n, "am", Grouping::Alert);
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0].key.as_str(), "am:fp:f1");
    assert_eq!((targets[0].status, targets[0].route.action), (AlertStatus::Firing, Action::Open));
    assert_eq!(targets[1].key.as_str(), "am:fp:f2");
    assert_eq!((targets[1].status, targets[1].route.action), (AlertStatus::Resolved, Action::Drop));
    assert_eq!(targets[1].alerts(&n).next().unwrap().fingerprint, "f2");
}

#[test]
fn per_group_plan_makes_one_target_matched_on_group_labels() {
    let n = notification();
    // `severity` is not a common label: on group labels it is empty, so this route does not
    // match the group even though one alert is critical.
    let routes = build_routes(
        &[raw(&[r#"severity="critical""#]), RawRoute { partner: Some("P".into()), ..raw(&[r#"team="db""#]) }],
        "r",
    )
    .unwrap();
    let targets = routes.plan(&n, "am", Grouping::Group);
    assert_eq!(targets.len(), 1);
    let t = &targets[0];
    assert_eq!(t.key, alert::group_key("am", "{}:{alertname=\"Disk\"}"));
    assert_eq!((t.grouping, t.status, t.alerts.clone()), (Grouping::Group, AlertStatus::Firing, vec![0, 1]));
    assert_eq!((t.route.name.as_str(), t.route.partner.as_deref()), ("r[1]", Some("P")));
}

#[test]
fn a_group_is_resolved_only_when_all_its_alerts_are() {
    let mut n = notification();
    n.alerts[0].status = AlertStatus::Resolved;
    let targets = Routes::default().plan(&n, "am", Grouping::Group);
    assert_eq!(targets[0].status, AlertStatus::Resolved);
    n.alerts[0].status = AlertStatus::Firing;
    n.alerts.swap(0, 1);
    assert_eq!(Routes::default().plan(&n, "am", Grouping::Group)[0].status, AlertStatus::Firing);
}

#[test]
fn a_route_can_switch_an_alert_source_to_group_grouping() {
    let n = notification();
    let routes = build_routes(
        &[
            RawRoute { action: Some("drop".into()), ..raw(&[r#"severity="info""#]) },
            RawRoute { grouping: Some("group".into()), ..raw(&[r#"team="db""#]) },
        ],
        "r",
    )
    .unwrap();
    let targets = routes.plan(&n, "am", Grouping::Alert);
    // db-2 is caught by the per-alert drop route first; db-1 falls through to the group route.
    assert_eq!(targets.len(), 2);
    assert_eq!((targets[0].grouping, targets[0].alerts.clone()), (Grouping::Group, vec![0]));
    assert!(targets[0].key.as_str().starts_with("am:group:"));
    assert_eq!((targets[1].grouping, targets[1].route.action), (Grouping::Alert, Action::Drop));
}

#[test]
fn a_route_can_switch_a_group_source_to_alert_grouping() {
    let n = notification();
    let routes =
        build_routes(&[RawRoute { grouping: Some("alert".into()), ..raw(&[r#"service="postgres""#]) }], "r")
            .unwrap();
    let targets = routes.plan(&n, "am", Grouping::Group);
    assert_eq!(targets.len(), 2);
    assert_eq!((targets[0].grouping, targets[0].key.as_str()), (Grouping::Alert, "am:fp:f1"));
    assert_eq!((targets[1].grouping, targets[1].route.name.as_str()), (Grouping::Group, "default"));
}

#[test]
fn a_notification_without_alerts_plans_nothing() {
    let mut n = notification();
    n.alerts.clear();
    assert!(Routes::default().plan(&n, "am", Grouping::Group).is_empty());
    assert_eq!(n.kind, NotificationKind::Alertmanager);
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let bad = [
        RawRoute {
            action: Some("page".into()),
            grouping: Some("cluster".into()),
            owner_id: Some(" ".into()),
            ..raw(&[r#"a=~"(""#, "", r#"ok="1""#])
        },
        RawRoute {
            action: Some("drop".into()),
            partner: Some("P".into()),
            templates: Some(RawTemplates::default()),
            ..raw(&[])
        },
        RawRoute {
            templates: Some(RawTemplates { title: Some("{{".into()), ..Default::default() }),
            ..raw(&[])
        },
    ];
    let errors = build_routes(&bad, "sources.am.routes").unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sources.am.routes[0].matchers[0]",
            "sources.am.routes[0].matchers[1]",
            "sources.am.routes[0].action",
            "sources.am.routes[0].grouping",
            "sources.am.routes[0].owner_id",
            "sources.am.routes[1].partner",
            "sources.am.routes[1].templates",
            "sources.am.routes[2].templates.title",
        ]
    );
    assert_eq!(errors[0].1, "`a=~\"(\"`: column 4: invalid regex `(`: unclosed group");
    assert_eq!(errors[2].1, "`page` is not an action (expected open or drop)");
    assert_eq!(errors[5].1, "has no effect on a route whose action is drop");
}

#[test]
fn routes_parse_from_the_documented_toml() {
    #[derive(serde::Deserialize)]
    struct Source {
        templates: RawTemplates,
        routes: Vec<RawRoute>,
    }
    #[derive(serde::Deserialize)]
    struct File {
        sources: std::collections::BTreeMap<String, Source>,
    }
    let text = r#"
        [sources.alertmanager.templates]
        title = "{{ labels.alertname }}: {{ annotations.summary | default('no summary') }}"
        [[sources.alertmanager.routes]]
        matchers = ['severity="info"']
        action = "drop"
        [[sources.alertmanager.routes]]
        matchers = ['service=~"postgres|mysql"']
        owner_id = "DBA"
        partner = "DBA-ONCALL"
        grouping = "group"
        [sources.alertmanager.routes.templates]
        priority = "P1"
    "#;
    let file: File = toml::from_str(text).unwrap();
    let source = &file.sources["alertmanager"];
    assert!(crate::template::build_templates(&source.templates, "sources.alertmanager.templates").is_ok());
    let routes = build_routes(&source.routes, "sources.alertmanager.routes").unwrap();
    let r: Vec<&Arc<Route>> = routes.iter().collect();
    assert_eq!(r[0].action, Action::Drop);
    assert_eq!((r[1].owner_id.as_deref(), r[1].partner.as_deref()), (Some("DBA"), Some("DBA-ONCALL")));
    assert_eq!(r[1].grouping, Some(Grouping::Group));
    assert!(r[1].templates.as_ref().is_some_and(|t| t.has_field(crate::template::Field::Priority)));

    let typo = "matchers = []\nowner = \"x\"\n";
    let err = toml::from_str::<RawRoute>(typo).unwrap_err();
    assert!(err.to_string().contains("unknown field `owner`"), "{err}");
}
