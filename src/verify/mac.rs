//! HMAC-SHA256 shared by every signature scheme: keys held pre-computed and redacted, signed
//! content fed in parts (never concatenated into a copy of the body), strict decoding of the
//! signatures senders send, and constant-time comparison. Must not know any header layout.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use crate::secret::Secret;

/// Length of an HMAC-SHA256 tag.
pub(crate) const TAG_LEN: usize = 32;

/// An HMAC-SHA256 tag.
pub(crate) type Tag = [u8; TAG_LEN];

/// Most signatures one header may carry. Real senders put one or two (rotation); a header with
/// thousands would only make us compare thousands of times.
pub(crate) const MAX_SIGNATURES: usize = 16;

/// One HMAC key, keyed once at start-up. Its `Debug` prints nothing of the key.
#[derive(Clone)]
pub(crate) struct MacKey(Hmac<Sha256>);

impl MacKey {
    /// The key is the secret's UTF-8 bytes (GitHub, Grafana, Stripe, generic HMAC).
    pub(crate) fn from_secret(secret: &Secret) -> Self {
        Self::from_bytes(secret.expose().as_bytes())
    }

    pub(crate) fn from_bytes(key: &[u8]) -> Self {
        // HMAC takes keys of any length, so this never fails; the fallback keeps the code free
        // of panics should a future `hmac` say otherwise.
        Self(Hmac::new_from_slice(key).unwrap_or_else(|_| Hmac::new(&Default::default())))
    }

    /// The tag of the concatenation of `parts`.
    pub(crate) fn tag(&self, parts: &[&[u8]]) -> Tag {
        let mut mac = self.0.clone();
        for part in parts {
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }
}

impl fmt::Debug for MacKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MacKey(<redacted>)")
    }
}

/// The active keys of one scheme: more than one while a secret is being rotated.
#[derive(Debug, Clone)]
pub(crate) struct KeyRing(Vec<MacKey>);

impl KeyRing {
    pub(crate) fn new(keys: Vec<MacKey>) -> Self {
        Self(keys)
    }

    /// Whether any candidate equals the tag of `parts` under any key, and the tag under the
    /// first key (a stable name for the signed content, used as its replay-cache key whichever
    /// key or candidate matched). Every key and every candidate is compared, without an early
    /// exit, so timing does not tell which one matched.
    pub(crate) fn check(&self, parts: &[&[u8]], candidates: &[Tag]) -> (bool, Tag) {
        let mut matched = Choice::from(0);
        let mut first = [0u8; TAG_LEN];
        for (i, key) in self.0.iter().enumerate() {
            let expected = key.tag(parts);
            if i == 0 {
                first = expected;
            }
            for candidate in candidates {
                matched |= expected.ct_eq(candidate);
            }
        }
        (matched.into(), first)
    }
}

/// Lower-case hex, the form GitHub, Grafana and Stripe send; their reference verifiers compare
/// the text, so upper-case is refused here too. Accepting one spelling only means any change to
/// a signature's text is a refusal.
pub(crate) fn decode_hex_lower(text: &[u8]) -> Option<Tag> {
    decode_hex(text, b'a')
}

/// Upper-case hex only, for generic senders that write it so.
pub(crate) fn decode_hex_upper(text: &[u8]) -> Option<Tag> {
    decode_hex(text, b'A')
}

fn decode_hex(text: &[u8], ten: u8) -> Option<Tag> {
    if text.len() != TAG_LEN * 2 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        c if (ten..ten + 6).contains(&c) => Some(c - ten + 10),
        _ => None,
    };
    let mut tag = [0u8; TAG_LEN];
    for (byte, pair) in tag.iter_mut().zip(text.chunks_exact(2)) {
        *byte = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(tag)
}

/// Standard base64 (`+/`), padding optional, that decodes to exactly one tag.
pub(crate) fn decode_base64_tag(text: &[u8]) -> Option<Tag> {
    // A tag is 44 characters; refusing longer text up front keeps decoding bounded.
    if text.len() > 64 {
        return None;
    }
    BASE64.decode(text).ok()?.try_into().ok()
}

/// Standard alphabet, padding optional, non-canonical trailing bits refused.
pub(crate) const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_encode_padding(true)
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

/// Constant-time equality of two byte strings whose lengths must not leak either: compares
/// their SHA-256 digests (tokens, passwords).
pub(crate) fn ct_eq_hashed(a: &[u8], b: &[u8]) -> Choice {
    Sha256::digest(a).ct_eq(&Sha256::digest(b))
}

/// SHA-256 over a domain tag and parts: a fixed-size replay-cache key whatever the input size.
pub(crate) fn replay_key(domain: &[u8], parts: &[&[u8]]) -> Tag {
    let mut h = Sha256::new();
    h.update(domain);
    for part in parts {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_decoding_is_strict() {
        let lower = "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let tag = decode_hex_lower(lower.as_bytes()).unwrap();
        assert_eq!(tag[0], 0x75);
        assert!(decode_hex_lower(lower.to_uppercase().as_bytes()).is_none());
        assert_eq!(decode_hex_upper(lower.to_uppercase().as_bytes()), Some(tag));
        assert!(decode_hex_upper(lower.as_bytes()).is_none());
        assert!(decode_hex_lower(&lower.as_bytes()[..63]).is_none());
        assert!(decode_hex_lower(format!("{}zz", &lower[..62]).as_bytes()).is_none());
        assert!(decode_hex_lower("é".repeat(32).as_bytes()).is_none());
    }

    #[test]
    fn base64_tags_must_be_exactly_32_bytes() {
        assert!(decode_base64_tag(b"g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=").is_some());
        assert!(decode_base64_tag(b"g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE").is_some());
        assert!(decode_base64_tag(b"AAAA").is_none());
        assert!(decode_base64_tag(b"!!!!").is_none());
        assert!(decode_base64_tag(&[b'A'; 1000]).is_none());
    }

    #[test]
    fn a_key_ring_matches_any_key_and_names_content_by_the_first() {
        let old = MacKey::from_bytes(b"old");
        let new = MacKey::from_bytes(b"new");
        let ring = KeyRing::new(vec![new.clone(), old.clone()]);
        let by_old = old.tag(&[b"a", b"b"]);
        let (ok, name) = ring.check(&[b"ab"], &[by_old]);
        assert!(ok);
        assert_eq!(name, new.tag(&[b"ab"]));
        assert!(!ring.check(&[b"ab"], &[[0; 32]]).0);
        assert!(!ring.check(&[b"ab"], &[]).0);
    }

    #[test]
    fn mac_key_debug_is_redacted() {
        assert_eq!(format!("{:?}", MacKey::from_bytes(b"hunter2")), "MacKey(<redacted>)");
    }
}
