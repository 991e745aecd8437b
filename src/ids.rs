//! Identifier newtypes shared by every stage: the licensePlate of one logical SCWM request, the
//! SCWM item id and the correlation key that ties events about one incident together.
//!
//! Parsing happens once at the edge; the rest of the crate only sees these types.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ulid::Ulid;

/// `bytes` as lowercase hex: how digests and trace ids are written.
pub fn lower_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The id of one logical SCWM request. It is sent in the request header, echoed by SCWM, and
/// reused unchanged on every retry so that SCWM can recognise a repeat.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LicensePlate(String);

/// Why a client-supplied licensePlate was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a licensePlate must be a ULID or a UUID")]
pub struct InvalidLicensePlate;

impl LicensePlate {
    /// A fresh, time-ordered licensePlate for a new logical request.
    pub fn generate() -> Self {
        Self(Ulid::new().to_string())
    }

    /// A licensePlate that is a pure function of `seed`: the same message delivered twice (a
    /// JetStream redelivery, a client retry with the same idempotency key) gets the same plate,
    /// so SCWM and the simulator see one logical request. The ULID time part is `time_ms` so
    /// plates still sort by when the message was first published.
    pub fn derived(time_ms: u64, seed: &[u8]) -> Self {
        let digest = Sha256::digest(seed);
        let mut random = [0u8; 16];
        random.copy_from_slice(&digest[..16]);
        let random = u128::from_be_bytes(random) & ((1u128 << 80) - 1);
        Self(Ulid::from_parts(time_ms & ((1u64 << 48) - 1), random).to_string())
    }

    /// Accepts a ULID (canonical 26 characters) or a hyphenated UUID, as a client may pass its
    /// own plate to make a request idempotent.
    pub fn parse(s: &str) -> Result<Self, InvalidLicensePlate> {
        if s.len() == 26 && Ulid::from_string(s).is_ok() {
            return Ok(Self(s.to_ascii_uppercase()));
        }
        if is_hyphenated_uuid(s) {
            return Ok(Self(s.to_ascii_lowercase()));
        }
        Err(InvalidLicensePlate)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The time part of a ULID plate (0 for a UUID), so plates derived from this one sort with it.
    pub fn timestamp_ms(&self) -> u64 {
        Ulid::from_string(&self.0).map(|u| u.timestamp_ms()).unwrap_or(0)
    }
}

fn is_hyphenated_uuid(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

impl fmt::Display for LicensePlate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The id SCWM gives an incident (`payload.id`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ItemId(String);

impl ItemId {
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ItemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What makes two events "about the same incident": commands with the same key are applied in
/// arrival order, and the correlation store maps a key to its SCWM item.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CorrelationKey(String);

impl CorrelationKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CorrelationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_plates_are_distinct_ulids() {
        let a = LicensePlate::generate();
        let b = LicensePlate::generate();
        assert_ne!(a, b);
        assert_eq!(LicensePlate::parse(a.as_str()), Ok(a));
    }

    #[test]
    fn derived_plates_are_stable_and_seed_sensitive() {
        let a = LicensePlate::derived(1_700_000_000_000, b"stream-A/42");
        assert_eq!(a, LicensePlate::derived(1_700_000_000_000, b"stream-A/42"));
        assert_ne!(a, LicensePlate::derived(1_700_000_000_000, b"stream-A/43"));
        assert!(LicensePlate::parse(a.as_str()).is_ok());
    }

    #[test]
    fn parse_accepts_ulid_and_uuid_and_refuses_the_rest() {
        assert!(LicensePlate::parse("01JD1X4Y0ZKQ6N0M7W7E3H5T9B").is_ok());
        assert!(LicensePlate::parse("0192f0c4-7b8e-7c1a-9d3e-123456789abc").is_ok());
        assert_eq!(LicensePlate::parse("nope"), Err(InvalidLicensePlate));
        assert_eq!(LicensePlate::parse(""), Err(InvalidLicensePlate));
        assert_eq!(LicensePlate::parse("0192f0c4-7b8e-7c1a-9d3e-123456789abZ"), Err(InvalidLicensePlate));
    }
}
