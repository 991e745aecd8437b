//! `json_depth_within` against serde_json: the first byte is the depth limit, the rest the body.
//! Never panics, and wherever serde_json parses the body, both agree on its depth.
#![no_main]

use incident_bridge::verify::limits::json_depth_within;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&max, body)) = data.split_first() else { return };
    let max = usize::from(max);
    let within = json_depth_within(body, max);
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        assert_eq!(within, depth(&value) <= max, "depth {} against limit {max}", depth(&value));
    }
});
