//! The Alertmanager webhook decoder on arbitrary bytes: never panics, and what it accepts has
//! at least one alert with a fingerprint.
#![no_main]

use incident_bridge::decode::alertmanager::decode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(n) = decode(data) {
        assert!(n.alerts.iter().all(|a| !a.fingerprint.is_empty()));
    }
});
