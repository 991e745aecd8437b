//! The Grafana webhook decoder on arbitrary bytes: never panics.
#![no_main]

use incident_bridge::decode::grafana::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
});
