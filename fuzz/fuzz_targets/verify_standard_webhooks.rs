//! Standard Webhooks verification on arbitrary headers, body, secret and clock.
#![no_main]

mod common;

use incident_bridge::verify::RawAuth;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = common::Message::parse(data);
    let raw = RawAuth {
        scheme: "standard-webhooks".into(),
        secrets: msg.secrets("whsec_W+HbJtg3GfOZtLYyLX8hIGpjLf+ddhXI"),
        tolerance: msg.option("tolerance").map(str::to_owned),
        ..RawAuth::default()
    };
    common::check(raw, &msg, true);
});
