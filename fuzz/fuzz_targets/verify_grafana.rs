//! Grafana verification on arbitrary headers, body, secret, clock and header names
//! (`@header`, `@timestamp_header`).
#![no_main]

mod common;

use incident_bridge::verify::RawAuth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = common::Message::parse(data);
    let timestamp_header = msg.option("timestamp_header").map(str::to_owned);
    let remembers = timestamp_header.is_some();
    let raw = RawAuth {
        scheme: "grafana".into(),
        secrets: msg.secrets("grafana-fixture-hmac-secret"),
        header: msg.option("header").map(str::to_owned),
        timestamp_header,
        tolerance: msg.option("tolerance").map(str::to_owned),
        ..RawAuth::default()
    };
    common::check(raw, &msg, remembers);
});
