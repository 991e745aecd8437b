//! Every reference vector in `tests/fixtures/signatures/`: each valid one accepted, each invalid
//! one refused for the right reason, over HTTP and NATS header maps alike, with the clock fixed
//! at the vector's `verify_at_unix`.
//!
//! Two Stripe vectors the reference library calls valid are refused on purpose: a timestamp an
//! hour in the future, and a stale one checked with the tolerance switched off. The bridge's
//! window holds both ways and cannot be switched off (see `verify`'s module doc).

use std::{
    collections::BTreeMap,
    io,
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use incident_bridge::verify::{RawAuth, SourceAuth, VerifyError, build};
use serde_json::Value;

fn load(file: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/signatures").join(file);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn no_files(_: &Path) -> io::Result<String> {
    Err(io::Error::new(io::ErrorKind::NotFound, "no such file"))
}

fn source(raw: RawAuth) -> SourceAuth {
    build(&[raw], "sources.fixture.auth", &no_files).unwrap()
}

fn secret_of(v: &Value) -> String {
    v["secret"].as_str().unwrap().to_owned()
}

/// The vector's headers as an HTTP and as a NATS header map.
fn header_maps(v: &Value) -> (http::HeaderMap, async_nats::HeaderMap) {
    let mut h = http::HeaderMap::new();
    let mut n = async_nats::HeaderMap::new();
    for (name, value) in v["headers"].as_object().unwrap() {
        let value = value.as_str().unwrap();
        h.append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            http::HeaderValue::from_str(value).unwrap(),
        );
        n.append(name.as_str(), value);
    }
    (h, n)
}

fn verify_at(v: &Value) -> SystemTime {
    // GitHub vectors sign no timestamp and carry no time; any will do.
    UNIX_EPOCH + Duration::from_secs(v["verify_at_unix"].as_u64().unwrap_or(1_795_869_960))
}

/// Verifies `v` with a fresh `SourceAuth` per transport (so the replay cache of one run does
/// not refuse the other) and returns the outcome's kind, `"ok"` when accepted.
fn outcome(v: &Value, make: &dyn Fn() -> SourceAuth) -> &'static str {
    let body = Bytes::from(v["payload"].as_str().unwrap().to_owned());
    let (http_headers, nats_headers) = header_maps(v);
    let kind = |r: Result<_, VerifyError>| r.map_or_else(|e| e.kind(), |_| "ok");
    let over_http = kind(make().verify(&http_headers, body.clone(), verify_at(v)));
    let over_nats = kind(make().verify(&nats_headers, body, verify_at(v)));
    assert_eq!(over_http, over_nats, "{}: HTTP and NATS disagree", v["name"]);
    over_http
}

/// Runs every vector of `file` and checks it against `expected` (vector name to kind, `"ok"`
/// for accepted). A vector missing from `expected` fails the test, so a new vector needs a
/// decision.
fn check_file(file: &str, expected: &[(&str, &str)], make: &dyn Fn(&Value) -> SourceAuth) {
    let expected: BTreeMap<&str, &str> = expected.iter().copied().collect();
    let fixture = load(file);
    let vectors = fixture["vectors"].as_array().unwrap();
    let mut failures = Vec::new();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let Some(&want) = expected.get(name) else {
            failures.push(format!("{name}: no expectation in this test"));
            continue;
        };
        if v["expected"] == "valid" && want != "ok" {
            assert!(
                file == "stripe.json"
                    && matches!(name, "valid-future-timestamp" | "valid-stale-timestamp-no-tolerance"),
                "{name}: only the documented Stripe divergences may refuse a valid vector"
            );
        }
        if v["expected"] == "invalid" {
            assert_ne!(want, "ok", "{name}: an invalid vector must be refused");
        }
        let got = outcome(v, &|| make(v));
        if got != want {
            failures.push(format!("{name}: expected {want}, got {got}"));
        }
    }
    assert_eq!(vectors.len(), expected.len(), "{file}: expectations for vectors that do not exist");
    assert!(failures.is_empty(), "{file}:\n{}", failures.join("\n"));
}

#[test]
fn standard_webhooks_vectors() {
    check_file(
        "standard-webhooks.json",
        &[
            ("spec-example", "ok"),
            ("valid-small-json", "ok"),
            ("valid-alertmanager-firing-body", "ok"),
            ("valid-unicode-json", "ok"),
            ("invalid-tampered-body", "bad_signature"),
            ("invalid-reserialized-body", "bad_signature"),
            ("invalid-wrong-secret", "bad_signature"),
            ("invalid-stale-timestamp", "timestamp_too_old"),
            ("valid-timestamp-at-tolerance-edge", "ok"),
            ("invalid-future-timestamp", "timestamp_in_future"),
            ("invalid-msg-id-mismatch", "bad_signature"),
            ("invalid-timestamp-header-mismatch", "bad_signature"),
            ("valid-multiple-signatures", "ok"),
            ("invalid-unknown-version-only", "no_supported_signature"),
            ("invalid-missing-signature-header", "missing_header"),
            ("valid-secret-without-prefix", "ok"),
        ],
        &|v| {
            source(RawAuth {
                scheme: "standard-webhooks".into(),
                secrets: Some(vec![secret_of(v)]),
                ..RawAuth::default()
            })
        },
    );
}

#[test]
fn github_vectors() {
    check_file(
        "github.json",
        &[
            ("github-docs-example", "ok"),
            ("valid-small-json", "ok"),
            ("valid-alertmanager-firing-body", "ok"),
            ("valid-unicode-json", "ok"),
            ("invalid-tampered-body", "bad_signature"),
            ("invalid-reserialized-body", "bad_signature"),
            ("invalid-wrong-secret", "bad_signature"),
            ("invalid-missing-prefix", "malformed_header"),
            ("invalid-uppercase-hex", "malformed_header"),
            ("invalid-sha1-header-value", "malformed_header"),
        ],
        &|v| {
            source(RawAuth {
                scheme: "github".into(),
                secrets: Some(vec![secret_of(v)]),
                ..RawAuth::default()
            })
        },
    );
}

#[test]
fn stripe_vectors() {
    check_file(
        "stripe.json",
        &[
            ("valid-small-json", "ok"),
            ("valid-alertmanager-firing-body", "ok"),
            ("valid-unicode-json", "ok"),
            ("invalid-tampered-body", "bad_signature"),
            ("invalid-wrong-secret", "bad_signature"),
            ("invalid-stale-timestamp", "timestamp_too_old"),
            // The reference skips the age check when told to; the bridge never does.
            ("valid-stale-timestamp-no-tolerance", "timestamp_too_old"),
            // The reference checks only the lower bound; the bridge checks both.
            ("valid-future-timestamp", "timestamp_in_future"),
            ("valid-multiple-v1", "ok"),
            ("valid-with-v0-entry", "ok"),
            ("invalid-only-v0", "no_supported_signature"),
            ("invalid-timestamp-changed", "bad_signature"),
            ("invalid-malformed-header", "malformed_header"),
            ("invalid-secret-base64-decoded", "bad_signature"),
        ],
        &|v| {
            let tolerance = v["tolerance_seconds"].as_u64().map(|s| format!("{s}s"));
            source(RawAuth {
                scheme: "stripe".into(),
                secrets: Some(vec![secret_of(v)]),
                tolerance,
                ..RawAuth::default()
            })
        },
    );
}

const GRAFANA_TIMESTAMP: &str = "X-Grafana-Alerting-Timestamp";

fn grafana(v: &Value, timestamp_header: bool) -> SourceAuth {
    source(RawAuth {
        scheme: "grafana".into(),
        secrets: Some(vec![secret_of(v)]),
        timestamp_header: timestamp_header.then(|| GRAFANA_TIMESTAMP.to_owned()),
        ..RawAuth::default()
    })
}

#[test]
fn grafana_vectors() {
    // A vector that sends a timestamp header was made by a Grafana configured with one.
    check_file(
        "grafana.json",
        &[
            ("valid-no-timestamp", "ok"),
            ("valid-with-timestamp", "ok"),
            ("valid-resolved-with-timestamp", "ok"),
            ("invalid-tampered-body", "bad_signature"),
            ("invalid-wrong-secret", "bad_signature"),
            ("invalid-stale-timestamp", "timestamp_too_old"),
            ("invalid-timestamp-header-changed", "bad_signature"),
            ("invalid-prefixed-signature", "malformed_header"),
            ("invalid-ts-signature-checked-without-ts", "bad_signature"),
        ],
        &|v| grafana(v, v["headers"].get(GRAFANA_TIMESTAMP).is_some()),
    );
}

#[test]
fn a_grafana_source_that_expects_a_timestamp_refuses_a_message_without_one() {
    let fixture = load("grafana.json");
    let vectors = fixture["vectors"].as_array().unwrap();
    let stripped = vectors.iter().find(|v| v["name"] == "invalid-ts-signature-checked-without-ts").unwrap();
    assert_eq!(outcome(stripped, &|| grafana(stripped, true)), "missing_header");
    let untimed = vectors.iter().find(|v| v["name"] == "valid-no-timestamp").unwrap();
    assert_eq!(outcome(untimed, &|| grafana(untimed, true)), "missing_header");
}

#[test]
fn the_stripe_divergences_are_only_the_window() {
    // With a tolerance wide enough, the two vectors the bridge refuses verify: their signatures
    // are sound, only their timestamps are outside the bridge's window.
    let fixture = load("stripe.json");
    for name in ["valid-future-timestamp", "valid-stale-timestamp-no-tolerance"] {
        let v = fixture["vectors"].as_array().unwrap().iter().find(|v| v["name"] == name).unwrap();
        let wide = || {
            source(RawAuth {
                scheme: "stripe".into(),
                secrets: Some(vec![secret_of(v)]),
                tolerance: Some("2h".into()),
                ..RawAuth::default()
            })
        };
        assert_eq!(outcome(v, &wide), "ok", "{name}");
    }
}

#[test]
fn every_valid_vector_of_a_file_verifies_at_one_source_even_when_ids_repeat() {
    // Repeated ids are deliveries the intake answers from memory; verification lets them in.
    let fixture = load("standard-webhooks.json");
    let auth = source(RawAuth {
        scheme: "standard-webhooks".into(),
        secrets: Some(vec![fixture["secret"].as_str().unwrap().to_owned()]),
        ..RawAuth::default()
    });
    for v in fixture["vectors"].as_array().unwrap() {
        if v["expected"] != "valid" || v["secret"] != fixture["secret"] {
            continue;
        }
        let (headers, _) = header_maps(v);
        let body = Bytes::from(v["payload"].as_str().unwrap().to_owned());
        let result = auth.verify(&headers, body, verify_at(v)).map(|_| "ok").map_err(|e| e.kind());
        assert_eq!(result, Ok("ok"), "{}", v["name"]);
    }
}
