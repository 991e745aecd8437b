//! Bearer and Basic verification on arbitrary headers (`@scheme: basic` picks Basic, with
//! `@username`; the secret is the token or password).
#![no_main]

mod common;

use incident_bridge::verify::RawAuth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = common::Message::parse(data);
    let raw = if msg.option("scheme") == Some("basic") {
        RawAuth {
            scheme: "basic".into(),
            username: Some(msg.option("username").unwrap_or("alertmanager").to_owned()),
            passwords: msg.secrets("fuzz-password"),
            ..RawAuth::default()
        }
    } else {
        RawAuth { scheme: "bearer".into(), tokens: msg.secrets("fuzz-token"), ..RawAuth::default() }
    };
    common::check(raw, &msg, false);
});
