//! Default and overridden templates, payload shapes, render errors and the content hash.

use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::{
    alert::{Grouping, NotificationKind},
    decode::alertmanager,
    route::{Route, Routes, Target},
};

const BODY: &str = r#"{"receiver":"r","status":"firing","groupKey":"{}:{alertname=\"DiskFull\"}","version":"4",
 "groupLabels":{"alertname":"DiskFull"},"commonLabels":{"alertname":"DiskFull","severity":"critical"},
 "commonAnnotations":{},"externalURL":"http://am","truncatedAlerts":0,
 "alerts":[
  {"status":"firing","labels":{"alertname":"DiskFull","instance":"db-1","severity":"critical","service":"postgres"},
   "annotations":{"summary":"Disk full on db-1","description":"Only 2% left on db-1."},
   "startsAt":"2026-11-28T12:00:00Z","endsAt":"0001-01-01T00:00:00Z","generatorURL":"http://prom/g","fingerprint":"aaa"},
  {"status":"resolved","labels":{"alertname":"DiskFull","instance":"db-2","severity":"critical"},
   "annotations":{"summary":"Disk full on db-2"},
   "startsAt":"2026-11-28T11:00:00Z","endsAt":"2026-11-28T12:30:00Z","fingerprint":"bbb"}]}"#;

fn notification() -> Notification {
    alertmanager::decode(BODY.as_bytes()).unwrap()
}

fn target(n: &Notification, grouping: Grouping, route: Route) -> Target {
    Routes::new(vec![route]).plan(n, "am", grouping).remove(0)
}

fn set(raw: RawTemplates) -> TemplateSet {
    build_templates(&raw, "sources.am.templates").unwrap()
}

#[test]
fn built_in_templates_compile_for_every_kind() {
    for kind in [NotificationKind::Alertmanager, NotificationKind::Grafana] {
        let d = TemplateSet::defaults(kind);
        assert!(Field::ALL.iter().all(|f| d.has_field(*f)), "{kind:?}");
    }
}

#[test]
fn defaults_render_a_full_add_payload_for_one_alert() {
    let n = notification();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let source = TemplateSet::empty("sources.am.templates");
    let c = Renderer::new("am", &source, &n, t.subject()).content().unwrap();
    assert_eq!(
        Value::Object(c.add.clone()),
        json!({
            "title": "DiskFull: Disk full on db-1",
            "description": "Only 2% left on db-1.\n\nSource: http://prom/g",
            "severity": "critical",
            "service": "postgres",
            "source": "incident-bridge/am",
            "externalRef": "am:fp:aaa",
            "labels": {"alertname":"DiskFull","instance":"db-1","severity":"critical","service":"postgres"},
            "occurredAt": "2026-11-28T12:00:00Z",
        })
    );
    assert_eq!(c.fields, c.add);
    assert_eq!(c.hash.len(), 64);
}

#[test]
fn defaults_for_a_group_list_its_alerts() {
    let n = notification();
    let t = target(&n, Grouping::Group, Route::catch_all("r"));
    let source = TemplateSet::empty("s");
    let c = Renderer::new("am", &source, &n, t.subject()).content().unwrap();
    assert_eq!(c.add["title"], "DiskFull: 2 alerts");
    assert_eq!(
        c.add["description"],
        "DiskFull is firing\n\nAlerts:\n- [firing] Disk full on db-1\n- [resolved] Disk full on db-2\n\nSource: http://prom/g"
    );
    assert_eq!(c.add["labels"], json!({"alertname":"DiskFull","severity":"critical"}));
    assert!(c.add["externalRef"].as_str().unwrap().starts_with("am:group:"));
    assert!(!c.add.contains_key("service"), "no common service label: left out");
}

#[test]
fn operation_payloads_have_their_documented_shapes() {
    let n = notification();
    let mut route = Route::catch_all("r");
    route.partner = Some("DBA".into());
    let t = target(&n, Grouping::Alert, route);
    let source = TemplateSet::empty("s");
    let r = Renderer::new("am", &source, &n, t.subject());
    let c = r.content().unwrap();
    let id = ItemId::new("IT-7");
    assert_eq!(r.payload(Operation::Add, &c, Some(&id)).unwrap(), c.add, "add never carries an id");
    let edit = r.payload(Operation::Edit, &c, Some(&id)).unwrap();
    assert_eq!(edit["id"], "IT-7");
    assert!(!edit.contains_key("source") && !edit.contains_key("externalRef"));
    assert_eq!(edit["title"], c.add["title"]);
    let close = r.payload(Operation::Close, &c, Some(&id)).unwrap();
    assert_eq!(
        Value::Object(close),
        json!({"id":"IT-7","resolution":"resolved","closeNotes":"Resolved at the source: Disk full on db-1"})
    );
    let reopen = r.payload(Operation::Reopen, &c, Some(&id)).unwrap();
    assert_eq!(
        Value::Object(reopen),
        json!({"id":"IT-7","reason":"Firing again since 2026-11-28T12:00:00Z: Disk full on db-1"})
    );
    let submit = r.payload(Operation::Submit, &c, None).unwrap();
    assert_eq!(
        Value::Object(submit),
        json!({"partnerId":"DBA","note":"Opened by incident-bridge/am for am:fp:aaa"})
    );
    assert_eq!(
        r.payload(Operation::Read, &c, Some(&id)),
        Err(RenderError::UnsupportedOperation(Operation::Read))
    );
}

#[test]
fn submit_without_a_partner_is_an_error() {
    let n = notification();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let source = TemplateSet::empty("s");
    let r = Renderer::new("am", &source, &n, t.subject());
    let c = r.content().unwrap();
    assert_eq!(r.payload(Operation::Submit, &c, None), Err(RenderError::NoPartner));
}

#[test]
fn route_overrides_beat_source_overrides_beat_defaults() {
    let n = notification();
    let source = set(RawTemplates {
        title: Some("S: {{ labels.alertname }}".into()),
        priority: Some("P3".into()),
        ..Default::default()
    });
    let mut route = Route::catch_all("r");
    route.templates = Some(
        build_templates(&RawTemplates { priority: Some("P1".into()), ..Default::default() }, "r.templates")
            .unwrap(),
    );
    let t = target(&n, Grouping::Alert, route);
    let c = Renderer::new("am", &source, &n, t.subject()).content().unwrap();
    assert_eq!(c.add["title"], "S: DiskFull");
    assert_eq!(c.add["priority"], "P1");
    assert_eq!(c.add["severity"], "critical", "from the defaults");
}

#[test]
fn an_empty_template_leaves_its_field_out() {
    let n = notification();
    let source = set(RawTemplates { severity: Some(String::new()), ..Default::default() });
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let c = Renderer::new("am", &source, &n, t.subject()).content().unwrap();
    assert!(!c.add.contains_key("severity"));
}

#[test]
fn a_template_that_does_not_compile_is_reported_with_its_key() {
    let raw = RawTemplates {
        title: Some("{{ labels.alertname ".into()),
        close_notes: Some("{% if x %}".into()),
        payload: Some(RawPayloadTemplates { edit: Some("{{ }".into()), ..Default::default() }),
        ..Default::default()
    };
    let errors = build_templates(&raw, "sources.am.templates").unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "sources.am.templates.title",
            "sources.am.templates.close_notes",
            "sources.am.templates.payload.edit"
        ]
    );
    assert!(errors[0].1.starts_with("not a valid template: syntax error"), "{}", errors[0].1);
    assert!(errors[0].1.ends_with("(line 1)"), "{}", errors[0].1);
}

#[test]
fn an_undefined_variable_falls_back_to_the_default_and_says_so() {
    let n = notification();
    let source = set(RawTemplates { title: Some("{{ annotations.missing }}".into()), ..Default::default() });
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let r = Renderer::new("am", &source, &n, t.subject());
    let c = r.content().expect("the alert is not lost");
    assert_eq!(c.add["title"], "DiskFull: Disk full on db-1", "the built-in title stands in");
    let fallbacks = r.take_fallbacks();
    assert_eq!(
        fallbacks,
        [Fallback {
            template: "sources.am.templates.title".into(),
            part: "title".into(),
            message: "undefined value: `annotations.missing` is undefined (line 1)".into(),
        }]
    );
    let description = c.add["description"].as_str().unwrap();
    assert!(description.starts_with("Only 2% left on db-1."), "{description}");
    assert!(
        description.ends_with(
            "[incident-bridge] the template of `title` (sources.am.templates.title: undefined value: \
             `annotations.missing` is undefined (line 1)) failed; the built-in default stands in."
        ),
        "{description}"
    );
    assert!(r.take_fallbacks().is_empty(), "each failure is handed over once");
    // ...and a template that says what to print instead does not fail.
    let source = set(RawTemplates {
        title: Some("{{ annotations.missing | default('none') }}".into()),
        ..Default::default()
    });
    let r = Renderer::new("am", &source, &n, t.subject());
    assert_eq!(r.content().unwrap().add["title"], "none");
    assert!(r.take_fallbacks().is_empty());
}

#[test]
fn a_route_template_that_fails_gives_way_to_the_source_one() {
    let n = notification();
    let source = set(RawTemplates { title: Some("from the source".into()), ..Default::default() });
    let route_layer = build_templates(
        &RawTemplates { title: Some("{{ labels.team }}".into()), ..Default::default() },
        "sources.am.routes[0].templates",
    )
    .unwrap();
    let route = Route { templates: Some(route_layer), ..Route::catch_all("r") };
    let t = target(&n, Grouping::Alert, route);
    let r = Renderer::new("am", &source, &n, t.subject());
    assert_eq!(r.content().unwrap().add["title"], "from the source");
    assert_eq!(r.take_fallbacks()[0].template, "sources.am.routes[0].templates.title");
}

#[test]
fn absent_optional_alert_values_are_undefined_not_null() {
    let n = notification();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let source = set(RawTemplates { title: Some("{{ alert.endsAt }}".into()), ..Default::default() });
    let r = Renderer::new("am", &source, &n, t.subject());
    assert_eq!(r.content().unwrap().add["title"], "DiskFull: Disk full on db-1");
    assert_eq!(r.take_fallbacks().len(), 1, "undefined, so the default stood in");
    let source = set(RawTemplates {
        title: Some("{{ alert.endsAt | default('still firing') }}".into()),
        ..Default::default()
    });
    assert_eq!(Renderer::new("am", &source, &n, t.subject()).content().unwrap().add["title"], "still firing");
}

#[test]
fn a_filter_that_does_not_exist_is_a_config_error() {
    let raw = RawTemplates {
        title: Some("{{ labels.alertname | shout }}".into()),
        severity: Some("{{ labels.team }}".into()),
        payload: Some(RawPayloadTemplates {
            close: Some(r#"{"r": {{ nope() }}}"#.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let errors = build_templates(&raw, "sources.am.templates").unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["sources.am.templates.title", "sources.am.templates.payload.close"], "{errors:?}");
    assert!(errors[0].1.contains("unknown filter"), "{errors:?}");
    assert!(errors[1].1.contains("unknown function"), "{errors:?}");
}

#[test]
fn payload_templates_print_json_and_must_render_objects() {
    let n = notification();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let source = set(RawTemplates {
        payload: Some(RawPayloadTemplates {
            add: Some(
                r#"{"summary": {{ fields.title }}, "ref": {{ key }}, "who": {{ labels.instance | upper }}}"#
                    .into(),
            ),
            close: Some("[1, 2]".into()),
            reopen: Some("not json".into()),
            submit: Some(r#"{"partner": {{ partner | default('nobody') }}}"#.into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let r = Renderer::new("am", &source, &n, t.subject());
    let c = r.content().unwrap();
    assert_eq!(
        Value::Object(c.add.clone()),
        json!({"summary":"DiskFull: Disk full on db-1","ref":"am:fp:aaa","who":"DB-1"})
    );
    assert_eq!(c.fields["title"], "DiskFull: Disk full on db-1");
    assert_eq!(c.hash, content_hash(&c.add));
    let id = ItemId::new("IT-1");
    assert!(r.take_fallbacks().is_empty());
    // A payload template that renders no JSON object gives way to the built-in payload.
    let close = r.payload(Operation::Close, &c, Some(&id)).unwrap();
    assert_eq!(close["id"], "IT-1");
    assert_eq!(close["resolution"], "resolved", "the built-in close payload");
    let reopen = r.payload(Operation::Reopen, &c, Some(&id)).unwrap();
    assert!(reopen["reason"].as_str().unwrap().starts_with("Firing again"), "{reopen:?}");
    let fallbacks = r.take_fallbacks();
    assert_eq!(
        fallbacks.iter().map(|f| (f.template.as_str(), f.part.as_str())).collect::<Vec<_>>(),
        [
            ("sources.am.templates.payload.close", "payload.close"),
            ("sources.am.templates.payload.reopen", "payload.reopen")
        ]
    );
    assert_eq!(fallbacks[0].message, "rendered an array, not an object");
    // The edit default is derived from the (custom) add payload.
    let edit = r.payload(Operation::Edit, &c, Some(&id)).unwrap();
    assert_eq!(
        Value::Object(edit),
        json!({"id":"IT-1","summary":"DiskFull: Disk full on db-1","ref":"am:fp:aaa","who":"DB-1"})
    );
}

#[test]
fn a_value_with_quotes_cannot_break_a_payload_template() {
    let body = BODY.replace("Disk full on db-1", r#"say \"hi\", }{"#);
    let n = alertmanager::decode(body.as_bytes()).unwrap();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let source = set(RawTemplates {
        payload: Some(RawPayloadTemplates {
            add: Some(r#"{"s": {{ annotations.summary }}}"#.into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    let c = Renderer::new("am", &source, &n, t.subject()).content().unwrap();
    assert_eq!(c.add["s"], r#"say "hi", }{"#);
}

#[test]
fn submit_payload_template_may_name_the_partner_itself() {
    let n = notification();
    let mut route = Route::catch_all("r");
    route.partner = Some("DBA".into());
    route.templates = Some(
        build_templates(
            &RawTemplates {
                payload: Some(RawPayloadTemplates {
                    submit: Some(r#"{"partnerId": {{ partner | lower }}, "note": "n"}"#.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "r.templates",
        )
        .unwrap(),
    );
    let t = target(&n, Grouping::Alert, route);
    let source = TemplateSet::empty("s");
    let r = Renderer::new("am", &source, &n, t.subject());
    let c = r.content().unwrap();
    let p = r.payload(Operation::Submit, &c, Some(&ItemId::new("IT-1"))).unwrap();
    assert_eq!(Value::Object(p), json!({"id":"IT-1","partnerId":"dba","note":"n"}));
}

#[test]
fn content_hash_is_canonical() {
    let a: Payload = serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":2,"p":1}],"x":"s"}}"#).unwrap();
    let b: Payload = serde_json::from_str(r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#).unwrap();
    assert_eq!(content_hash(&a), content_hash(&b));
    let c: Payload = serde_json::from_str(r#"{"a":{"x":"s","y":[{"p":1,"q":2},1]},"b":1}"#).unwrap();
    assert_ne!(content_hash(&a), content_hash(&c), "array order matters");
    // The digest of the canonical text: keys sorted at every level, compact, escaped as JSON
    // (what stores written by earlier versions hold).
    let text = r#"{"a":{"x":"s","y":[1,{"p":1,"q":2}]},"b":1}"#;
    assert_eq!(content_hash(&a), crate::alert::sha256_hex(text.as_bytes()));
    let escaped: Payload = serde_json::from_str(r#"{"t":"a\"b\u00e9\n"}"#).unwrap();
    assert_eq!(content_hash(&escaped), crate::alert::sha256_hex("{\"t\":\"a\\\"bé\\n\"}".as_bytes()));
}

#[test]
fn equal_notifications_hash_equal_and_changes_show() {
    let source = TemplateSet::empty("s");
    let hash = |body: &str| {
        let n = alertmanager::decode(body.as_bytes()).unwrap();
        let t = Routes::default().plan(&n, "am", Grouping::Alert).remove(0);
        Renderer::new("am", &source, &n, t.subject()).content().unwrap().hash
    };
    assert_eq!(hash(BODY), hash(BODY));
    assert_ne!(hash(BODY), hash(&BODY.replace("Only 2% left", "Only 1% left")));
}

#[test]
fn truncate_follows_jinja() {
    let kw = || Kwargs::from_iter(Vec::<(&str, minijinja::Value)>::new());
    assert_eq!(truncate("short", Some(10), None, None, kw()).unwrap(), "short");
    // As in Jinja, the word the cut lands in is dropped whole.
    assert_eq!(truncate("hello big world", Some(14), None, None, kw()).unwrap(), "hello big...");
    assert_eq!(truncate("hello big world", Some(12), None, None, kw()).unwrap(), "hello...");
    assert_eq!(truncate("hello big world", Some(11), Some(true), None, kw()).unwrap(), "hello bi...");
    assert_eq!(truncate("hello big world", Some(8), Some(true), Some("…".into()), kw()).unwrap(), "hello b…");
    assert_eq!(truncate("héllo wörld", Some(3), Some(true), Some(String::new()), kw()).unwrap(), "hél");
    assert_eq!(truncate("ab", Some(1), Some(true), None, kw()).unwrap(), "...");
}

#[test]
fn truncate_takes_keyword_arguments_in_templates() {
    let n = notification();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let source = set(RawTemplates {
        title: Some("{{ annotations.description | truncate(12, end='~', killwords=true) }}".into()),
        description: Some("{{ 'a b c d e f g' | truncate(length=12, leeway=2) }}".into()),
        ..Default::default()
    });
    let c = Renderer::new("am", &source, &n, t.subject()).content().unwrap();
    assert_eq!(c.add["title"], "Only 2% lef~");
    assert_eq!(c.add["description"], "a b c d e f g");
    let source =
        set(RawTemplates { title: Some("{{ 'x' | truncate(bogus=1) }}".into()), ..Default::default() });
    let r = Renderer::new("am", &source, &n, t.subject());
    assert_eq!(
        r.content().unwrap().add["title"],
        "DiskFull: Disk full on db-1",
        "an unknown keyword fails it"
    );
    assert_eq!(r.take_fallbacks().len(), 1);
}

#[test]
fn builtins_the_docs_promise_are_there() {
    let n = notification();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let source = set(RawTemplates {
        title: Some(
            "{{ labels.instance | upper }} {{ alert.generatorURL | urlencode }} {{ labels | tojson }}".into(),
        ),
        description: Some(
            "{{ ['a', 'b'] | join('+') }} {{ annotations.summary | lower | replace('disk', 'D') }}".into(),
        ),
        ..Default::default()
    });
    let c = Renderer::new("am", &source, &n, t.subject()).content().unwrap();
    assert!(c.add["title"].as_str().unwrap().starts_with("DB-1 http%3A//prom/g {"), "{}", c.add["title"]);
    assert_eq!(c.add["description"], "a+b D full on db-1");
}

#[test]
fn the_route_layer_is_shared_not_copied() {
    let n = notification();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let t2 = t.clone();
    assert!(Arc::ptr_eq(&t.route, &t2.route));
}

#[test]
fn the_context_prints_as_the_json_it_was_each_map_sorted_and_absent_values_left_out() {
    let n = notification();
    let t = target(&n, Grouping::Alert, Route::catch_all("r"));
    let source = set(RawTemplates {
        title: Some("{{ alert|tojson }}".into()),
        description: Some(
            "{{ group|tojson }} {{ source|tojson }} {{ key }} {{ grouping }} {{ status }}".into(),
        ),
        ..Default::default()
    });
    let c = Renderer::new("am", &source, &n, t.subject()).content().unwrap();
    let title: Value = serde_json::from_str(c.fields["title"].as_str().unwrap()).unwrap();
    assert_eq!(
        title,
        json!({"annotations":{"description":"Only 2% left on db-1.","summary":"Disk full on db-1"},
               "extra":{},"fingerprint":"aaa","generatorURL":"http://prom/g",
               "labels":{"alertname":"DiskFull","instance":"db-1","severity":"critical","service":"postgres"},
               "startsAt":"2026-11-28T12:00:00Z","status":"firing"}),
        "a firing alert has no endsAt"
    );
    let printed = c.fields["title"].as_str().unwrap();
    let mut at = 0;
    for k in ["annotations", "extra", "fingerprint", "generatorURL", "labels", "startsAt", "status"] {
        let found =
            printed[at..].find(&format!("\"{k}\"")).unwrap_or_else(|| panic!("{k} in order: {printed}"));
        at += found;
    }
    let description = c.fields["description"].as_str().unwrap();
    assert!(description.starts_with(r#"{"commonAnnotations": {}, "commonLabels": "#), "{description}");
    assert!(description.contains(r#""truncatedAlerts": 0, "version": "4"}"#), "{description}");
    assert!(
        description.contains(r#"{"kind": "alertmanager", "name": "am"} am:fp:aaa alert firing"#),
        "{description}"
    );
}

#[test]
fn the_template_value_shows_exactly_the_context_the_digest_is_of() {
    // The value templates see and the digest that stands for it are built apart (the value
    // only when something renders); they must show the same context, byte for byte as JSON.
    let mut n = notification();
    n.extra.insert("tenant".into(), json!({"id": 7, "tags": ["a", "b"]}));
    n.alerts[0].extra.insert("weight".into(), json!(1.5));
    for grouping in [Grouping::Alert, Grouping::Group] {
        for t in Routes::new(vec![Route::catch_all("r")]).plan(&n, "am", grouping) {
            let subject = t.subject();
            let (_, digest) = context::facts_and_digest("am", &n, &subject);
            let value = context::value("am", &n, &subject);
            let mut of_value = DigestWriter::default();
            serde_json::to_writer(&mut of_value, &value).unwrap();
            assert_eq!(of_value.finish(), digest, "{grouping:?} {}: {value}", subject.key);
        }
    }
}
