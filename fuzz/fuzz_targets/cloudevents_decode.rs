//! The CloudEvents decoder (structured and binary mode; headers in the shared input format) on
//! arbitrary input, then its data read as every inner kind: never panics.
#![no_main]

mod common;

use bytes::Bytes;
use incident_bridge::decode::cloudevents::{InnerKind, decode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let msg = common::Message::parse(data);
    let headers: Vec<(String, String)> =
        msg.headers.iter().map(|(n, v)| (n.clone(), String::from_utf8_lossy(v).into_owned())).collect();
    if let Ok(event) = decode(&headers[..], Bytes::copy_from_slice(msg.body)) {
        for kind in [InnerKind::Alertmanager, InnerKind::Grafana, InnerKind::Native] {
            let _ = event.decode_data(kind);
        }
    }
});
