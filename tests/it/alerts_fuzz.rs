//! Decoders, matchers and default rendering never panic, whatever the bytes: random input and
//! captured fixtures with random damage. A failure prints the smallest input proptest found.

use crate::kit::fixture;
use bytes::Bytes;
use incident_bridge::{
    alert::{Grouping, Notification},
    decode::{
        alertmanager,
        cloudevents::{self, InnerKind},
        grafana,
    },
    route::{Matcher, Routes},
    template::{Renderer, TemplateSet},
};
use proptest::prelude::*;

const FIXTURES: &[&str] = &[
    "alertmanager/firing-single.json",
    "alertmanager/partially-resolved.json",
    "alertmanager/truncated-firing.json",
    "alertmanager/prometheus-rule-resolved.json",
    "grafana/firing.json",
    "grafana/resolved.json",
];

/// One edit to a byte string: overwrite, insert or delete at a position (taken modulo length).
#[derive(Debug, Clone)]
enum Damage {
    Set(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn damage() -> impl Strategy<Value = Damage> {
    // Bytes JSON cares about are likelier than chance would make them.
    let byte = prop_oneof![any::<u8>(), prop::sample::select(b"{}[]\":,0-9.e\\ntfu".to_vec())];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Damage::Set(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| Damage::Insert(i, b)),
        any::<usize>().prop_map(Damage::Delete),
    ]
}

fn apply(mut bytes: Vec<u8>, edits: &[Damage]) -> Vec<u8> {
    for e in edits {
        let len = bytes.len().max(1);
        match *e {
            Damage::Set(i, b) if !bytes.is_empty() => bytes[i % len] = b,
            Damage::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Damage::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            _ => {}
        }
    }
    bytes
}

/// Everything downstream of a decoded notification, with the default templates.
fn route_and_render(n: &Notification) {
    let source = TemplateSet::empty("s");
    for grouping in [Grouping::Alert, Grouping::Group] {
        for t in Routes::default().plan(n, "src", grouping) {
            let r = Renderer::new("src", &source, n, t.subject());
            if let Ok(c) = r.content() {
                for op in [incident_bridge::scwm::Operation::Edit, incident_bridge::scwm::Operation::Close] {
                    let _ = r.payload(op, &c, None);
                }
            }
        }
    }
}

fn every_decoder(bytes: &[u8]) {
    for n in [alertmanager::decode(bytes), grafana::decode(bytes)].into_iter().flatten() {
        route_and_render(&n);
    }
    let headers = [("content-type", "application/cloudevents+json")];
    if let Ok(ev) = cloudevents::decode(headers.as_slice(), Bytes::copy_from_slice(bytes)) {
        for kind in [InnerKind::Alertmanager, InnerKind::Grafana, InnerKind::Native] {
            let _ = ev.decode_data(kind);
        }
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        every_decoder(&bytes);
    }

    #[test]
    fn damaged_fixtures_never_panic(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec(damage(), 1..8),
    ) {
        let bytes = apply(fixture(FIXTURES[which]), &edits);
        every_decoder(&bytes);
    }

    #[test]
    fn fixtures_wrapped_in_damaged_cloudevents_never_panic(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec(damage(), 0..6),
        binary_headers in prop::collection::vec(("ce-[a-z]{1,6}", "[ -~]{0,12}"), 0..6),
    ) {
        let data = String::from_utf8(fixture(FIXTURES[which])).unwrap();
        let event = format!(r#"{{"specversion":"1.0","id":"1","source":"s","type":"t","data":{}}}"#, data.trim_end());
        let bytes = apply(event.into_bytes(), &edits);
        every_decoder(&bytes);
        let mut headers: Vec<(String, String)> = vec![("ce-specversion".into(), "1.0".into())];
        headers.extend(binary_headers);
        if let Ok(ev) = cloudevents::decode(headers.as_slice(), Bytes::from(bytes)) {
            let _ = ev.decode_data(InnerKind::Alertmanager);
        }
    }

    #[test]
    fn matcher_parsing_never_panics(s in "\\PC{0,40}") {
        let _ = Matcher::parse_list(&s);
    }

    #[test]
    fn matcher_like_strings_never_panic(s in r#"[{ ]?[a-z"\\]{0,6}[ ]?(=|!=|=~|!~|!|~)?[ ]?"?[a-z.*|()\\"{},]{0,10}"?[ ,}]{0,2}"#) {
        if let Ok(ms) = Matcher::parse_list(&s) {
            // What parses prints back to something that parses to the same.
            for m in ms {
                prop_assert_eq!(Matcher::parse(&m.to_string()).ok(), Some(m));
            }
        }
    }
}
