//! The input format every verifier target shares, so the seed corpora can be made from the
//! signature fixtures (`scripts/fuzz_seeds.py`) and a crash file reads as a request:
//!
//! ```text
//! @secret: <secret text>          options: lines starting with `@`
//! @now: <unix seconds>
//! Header-Name: value              headers: any bytes after `: `
//!
//! <body bytes>
//! ```
//!
//! Whatever the bytes, a verification must not panic; a message accepted once must be refused
//! as a replay the second time when its scheme remembers messages, and accepted again when it
//! does not.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use incident_bridge::verify::{RawAuth, SourceAuth, VerifyError, build};

pub struct Message<'a> {
    pub options: Vec<(&'a str, &'a str)>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: &'a [u8],
}

impl<'a> Message<'a> {
    pub fn parse(data: &'a [u8]) -> Message<'a> {
        let (head, body) = match data.windows(2).position(|w| w == b"\n\n") {
            Some(i) => (&data[..i], &data[i + 2..]),
            None => (data, &[][..]),
        };
        let mut options = Vec::new();
        let mut headers = Vec::new();
        for line in head.split(|&b| b == b'\n') {
            let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            let value = value.strip_prefix(b" ").unwrap_or(value);
            let Ok(name) = std::str::from_utf8(name) else { continue };
            match name.strip_prefix('@') {
                Some(option) => {
                    if let Ok(value) = std::str::from_utf8(value) {
                        options.push((option, value));
                    }
                }
                None => headers.push((name.to_owned(), value.to_vec())),
            }
        }
        Message { options, headers, body }
    }

    pub fn option(&self, name: &str) -> Option<&'a str> {
        self.options.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }

    /// `@now` in Unix seconds; a time `SystemTime` cannot hold becomes the latest it can, so the
    /// verifier still sees the far future (`UNIX_EPOCH + huge` panics in the standard library).
    pub fn now(&self) -> SystemTime {
        let secs = self.option("now").and_then(|v| v.parse().ok()).unwrap_or(1_795_869_960);
        UNIX_EPOCH.checked_add(Duration::from_secs(secs)).unwrap_or_else(latest_time)
    }

    pub fn secrets(&self, default: &str) -> Option<Vec<String>> {
        Some(vec![self.option("secret").unwrap_or(default).to_owned()])
    }
}

/// The latest time `SystemTime` holds here, found by halving the step until it fits.
fn latest_time() -> SystemTime {
    let mut t = UNIX_EPOCH;
    let mut step = Duration::MAX;
    while step > Duration::ZERO {
        match t.checked_add(step) {
            Some(later) => t = later,
            None => step /= 2,
        }
    }
    t
}

/// Builds `raw` (inputs whose options make no valid config are skipped), verifies the message
/// twice and checks what must hold.
pub fn check(raw: RawAuth, msg: &Message<'_>, remembers: bool) {
    let Ok(auth) = build(&[raw], "fuzz", &|_| Err(std::io::Error::other("no files"))) else { return };
    let first = verify(&auth, msg);
    if first.is_ok() {
        let second = verify(&auth, msg);
        if remembers {
            assert_eq!(second, Err(VerifyError::Replayed), "an accepted message must not be accepted twice");
        } else {
            assert_eq!(second, Ok(()), "a scheme without a timestamp has no replay cache");
        }
    }
    if let Err(e) = first {
        assert!(VerifyError::KINDS.contains(&e.kind()));
        assert!(e.to_string().len() < 300, "error texts stay short: {e}");
    }
}

fn verify(auth: &SourceAuth, msg: &Message<'_>) -> Result<(), VerifyError> {
    auth.verify(&msg.headers, bytes::Bytes::copy_from_slice(msg.body), msg.now()).map(|_| ())
}
