//! Property tests for every HMAC scheme: a correctly signed message is accepted, and changing
//! any single byte of the body or of a signed header's value (signature, timestamp, id) makes
//! it refused, for a reason other than a replay.

use std::{
    io,
    path::Path,
    time::{Duration, UNIX_EPOCH},
};

use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use incident_bridge::verify::{RawAuth, SourceAuth, build};
use proptest::prelude::*;
use sha2::Sha256;

const NOW: u64 = 1_795_869_960;

type Headers = Vec<(String, Vec<u8>)>;

/// Signs (body, timestamp) into headers.
type Signer = Box<dyn Fn(&[u8], u64) -> Headers>;

fn no_files(_: &Path) -> io::Result<String> {
    Err(io::Error::new(io::ErrorKind::NotFound, "no such file"))
}

fn tag(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One scheme's configuration and a signer for it.
struct Case {
    raw: RawAuth,
    sign: Signer,
}

fn header(name: &str, value: String) -> (String, Vec<u8>) {
    (name.to_owned(), value.into_bytes())
}

fn raw(scheme: &str, secret: &str) -> RawAuth {
    RawAuth { scheme: scheme.into(), secrets: Some(vec![secret.to_owned()]), ..RawAuth::default() }
}

/// Every HMAC scheme, with and without timestamps where that is an option, for `secret` (ASCII
/// text; Standard Webhooks gets it base64-encoded behind `whsec_`).
fn cases(secret: &str, id: &str) -> Vec<(&'static str, Case)> {
    let s = secret.to_owned();
    let id = id.to_owned();
    let sw_secret = format!("whsec_{}", b64(secret.as_bytes()));
    vec![
        ("standard-webhooks", {
            let s = s.clone();
            Case {
                raw: raw("standard-webhooks", &sw_secret),
                sign: Box::new(move |body, ts| {
                    let ts = ts.to_string();
                    let sig = tag(s.as_bytes(), &[id.as_bytes(), b".", ts.as_bytes(), b".", body]);
                    vec![
                        header("webhook-id", id.clone()),
                        header("webhook-timestamp", ts),
                        header("webhook-signature", format!("v1,{}", b64(&sig))),
                    ]
                }),
            }
        }),
        ("github", {
            let s = s.clone();
            Case {
                raw: raw("github", secret),
                sign: Box::new(move |body, _| {
                    vec![header(
                        "X-Hub-Signature-256",
                        format!("sha256={}", hex(&tag(s.as_bytes(), &[body]))),
                    )]
                }),
            }
        }),
        ("grafana", {
            let s = s.clone();
            Case {
                raw: raw("grafana", secret),
                sign: Box::new(move |body, _| {
                    vec![header("X-Grafana-Alerting-Signature", hex(&tag(s.as_bytes(), &[body])))]
                }),
            }
        }),
        ("grafana-timestamp", {
            let s = s.clone();
            Case {
                raw: RawAuth {
                    timestamp_header: Some("X-Grafana-Alerting-Timestamp".into()),
                    ..raw("grafana", secret)
                },
                sign: Box::new(move |body, ts| {
                    let ts = ts.to_string();
                    vec![
                        header(
                            "X-Grafana-Alerting-Signature",
                            hex(&tag(s.as_bytes(), &[ts.as_bytes(), b":", body])),
                        ),
                        header("X-Grafana-Alerting-Timestamp", ts),
                    ]
                }),
            }
        }),
        ("stripe", {
            let s = s.clone();
            Case {
                raw: raw("stripe", secret),
                sign: Box::new(move |body, ts| {
                    let ts = ts.to_string();
                    let sig = hex(&tag(s.as_bytes(), &[ts.as_bytes(), b".", body]));
                    vec![header("Stripe-Signature", format!("t={ts},v1={sig}"))]
                }),
            }
        }),
        ("hmac-hex", {
            let s = s.clone();
            Case {
                raw: RawAuth {
                    header: Some("X-Signature".into()),
                    prefix: Some("sha256=".into()),
                    ..raw("hmac", secret)
                },
                sign: Box::new(move |body, _| {
                    vec![header("X-Signature", format!("sha256={}", hex(&tag(s.as_bytes(), &[body]))))]
                }),
            }
        }),
        ("hmac-hex-upper", {
            let s = s.clone();
            Case {
                raw: RawAuth {
                    header: Some("X-Signature".into()),
                    encoding: Some("hex-upper".into()),
                    ..raw("hmac", secret)
                },
                sign: Box::new(move |body, _| {
                    vec![header("X-Signature", hex(&tag(s.as_bytes(), &[body])).to_uppercase())]
                }),
            }
        }),
        ("hmac-base64-timestamp", {
            let s = s.clone();
            Case {
                raw: RawAuth {
                    header: Some("X-Signature".into()),
                    encoding: Some("base64".into()),
                    timestamp_header: Some("X-Timestamp".into()),
                    ..raw("hmac", secret)
                },
                sign: Box::new(move |body, ts| {
                    let ts = ts.to_string();
                    vec![
                        header("X-Signature", b64(&tag(s.as_bytes(), &[ts.as_bytes(), b".", body]))),
                        header("X-Timestamp", ts),
                    ]
                }),
            }
        }),
    ]
}

fn source(raw: &RawAuth) -> SourceAuth {
    build(std::slice::from_ref(raw), "sources.prop.auth", &no_files).unwrap()
}

fn verify(raw: &RawAuth, headers: &Headers, body: &[u8]) -> Result<(), &'static str> {
    let now = UNIX_EPOCH + Duration::from_secs(NOW);
    source(raw).verify(headers, Bytes::copy_from_slice(body), now).map(|_| ()).map_err(|e| e.kind())
}

/// What to change: the body, or byte `index` of header number `header`.
#[derive(Debug, Clone)]
enum Target {
    Body,
    Header(usize),
}

fn mutate(bytes: &mut [u8], index: prop::sample::Index, flip: u8) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let i = index.index(bytes.len());
    bytes[i] ^= flip;
    true
}

/// What of a header value a verifier reads: not the whitespace around it (RFC 9110, 5.5), not
/// base64's padding (optional, by design). A byte turned into either changes nothing: the
/// property once found base64's trailing `=` flipped into a space.
fn significant(value: &[u8]) -> &[u8] {
    let trimmed = value.trim_ascii();
    let unpadded = trimmed.iter().rposition(|b| *b != b'=').map_or(0, |i| i + 1);
    &trimmed[..unpadded]
}

fn check_scheme(
    scheme: &str,
    secret: &str,
    id: &str,
    body: &[u8],
    skew: i64,
    (target, index, flip): (&Target, prop::sample::Index, u8),
) -> Result<(), TestCaseError> {
    let ts = NOW.checked_add_signed(skew).unwrap();
    let (_, case) = cases(secret, id).into_iter().find(|(name, _)| *name == scheme).unwrap();
    let headers = (case.sign)(body, ts);
    prop_assert_eq!(verify(&case.raw, &headers, body), Ok(()), "must accept what it signed");

    let (mut h, mut b) = (headers.clone(), body.to_vec());
    let changed = match target {
        Target::Body => mutate(&mut b, index, flip),
        Target::Header(n) => {
            let n = n % h.len();
            mutate(&mut h[n].1, index, flip) && significant(&h[n].1) != significant(&headers[n].1)
        }
    };
    if changed {
        let got = verify(&case.raw, &h, &b);
        prop_assert!(got.is_err(), "a changed message was accepted: {:?}", target);
        prop_assert_ne!(got, Err("replayed"));
    }
    Ok(())
}

macro_rules! single_byte_changes_are_refused {
    ($($test:ident => $scheme:literal,)*) => {
        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
            $(
                #[test]
                fn $test(
                    secret in "[ -~]{1,40}",
                    id in "msg_[A-Za-z0-9]{1,24}",
                    body in prop::collection::vec(any::<u8>(), 0..300),
                    skew in -300i64..=300,
                    target in prop_oneof![Just(Target::Body), (0usize..3).prop_map(Target::Header)],
                    index in any::<prop::sample::Index>(),
                    // Case and low bits often, as the likeliest near-misses; any other change too.
                    flip in prop_oneof![Just(0x20u8), Just(1u8), 1u8..=255],
                ) {
                    check_scheme($scheme, &secret, &id, &body, skew, (&target, index, flip))?;
                }
            )*
        }
    };
}

single_byte_changes_are_refused! {
    standard_webhooks => "standard-webhooks",
    github => "github",
    grafana => "grafana",
    grafana_with_timestamp => "grafana-timestamp",
    stripe => "stripe",
    generic_hmac_hex => "hmac-hex",
    generic_hmac_hex_upper => "hmac-hex-upper",
    generic_hmac_base64_with_timestamp => "hmac-base64-timestamp",
}

/// A signature's padding turned into a space, and a space before it, leave the same signature
/// ([`significant`]); a byte changed inside it does not.
#[test]
fn whitespace_around_a_signature_and_its_padding_are_not_part_of_it_and_a_change_inside_it_is() {
    for scheme in ["standard-webhooks", "hmac-base64-timestamp"] {
        let (_, case) = cases("A", "msg_0").into_iter().find(|(name, _)| *name == scheme).unwrap();
        let headers = (case.sign)(b"", NOW);
        let at = headers.iter().position(|(n, _)| n.ends_with("ignature")).expect("a signature header");
        let mut padded = headers.clone();
        let last = padded[at].1.last_mut().unwrap();
        assert_eq!(*last, b'=', "{scheme}: base64 padding ends the value");
        *last = b' ';
        padded[at].1.insert(0, b' ');
        assert_eq!(verify(&case.raw, &padded, b""), Ok(()), "{scheme}: the same signature, trimmed");
        let mut changed = headers.clone();
        let middle = changed[at].1.len() / 2;
        changed[at].1[middle] ^= 1;
        assert!(verify(&case.raw, &changed, b"").is_err(), "{scheme}: a changed signature");
    }
}
