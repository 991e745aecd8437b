//! GitHub-style verification on arbitrary headers, body and secret.
#![no_main]

mod common;

use incident_bridge::verify::RawAuth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = common::Message::parse(data);
    let raw = RawAuth {
        scheme: "github".into(),
        secrets: msg.secrets("webhook-bridge github fixture secret"),
        ..RawAuth::default()
    };
    common::check(raw, &msg, false);
});
