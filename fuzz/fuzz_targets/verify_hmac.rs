//! Generic HMAC verification on arbitrary headers, body, secret, clock and settings (`@header`,
//! `@encoding`, `@prefix`, `@timestamp_header`, `@separator`).
#![no_main]

mod common;

use incident_bridge::verify::RawAuth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = common::Message::parse(data);
    let opt = |name| msg.option(name).map(str::to_owned);
    let timestamp_header = opt("timestamp_header");
    let remembers = timestamp_header.is_some();
    let raw = RawAuth {
        scheme: "hmac".into(),
        secrets: msg.secrets("fuzz-secret"),
        header: Some(opt("header").unwrap_or_else(|| "X-Signature".to_owned())),
        encoding: opt("encoding"),
        prefix: opt("prefix"),
        separator: timestamp_header.as_ref().and(opt("separator")),
        timestamp_header,
        tolerance: opt("tolerance"),
        ..RawAuth::default()
    };
    common::check(raw, &msg, remembers);
});
