//! The native command decoder on arbitrary bytes, for every operation: never panics.
#![no_main]

use incident_bridge::{decode::native::decode, scwm::Operation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for op in Operation::ALL {
        let _ = decode(op, data);
    }
});
