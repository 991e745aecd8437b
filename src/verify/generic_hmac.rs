//! Generic HMAC-SHA256 for senders with their own conventions: a configured header, hex or
//! base64, an optional prefix such as `sha256=`, over the body or over
//! `{timestamp}{separator}{body}` when a timestamp header is configured. Owns reading those
//! headers. Without a timestamp a replay cannot be refused.

use super::{
    Fresh, HeaderLookup, Replay, VerifyError, headers,
    mac::{self, KeyRing, Tag},
    timestamp,
};

/// How the signature is written in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// Lower-case hex, as nearly every sender writes it.
    Hex,
    /// Upper-case hex. One spelling per setting, so a changed signature text is always refused.
    HexUpper,
    /// Standard base64, padding optional.
    Base64,
}

#[derive(Debug)]
pub(crate) struct GenericHmac {
    pub(crate) keys: KeyRing,
    pub(crate) header: String,
    pub(crate) encoding: Encoding,
    pub(crate) prefix: String,
    /// Timestamp header, separator and freshness rules, when the sender signs a timestamp.
    pub(crate) timestamp: Option<(String, String, Fresh)>,
}

impl GenericHmac {
    pub(crate) fn check(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        now: u64,
    ) -> Result<Option<Replay<'_>>, VerifyError> {
        let header = self.header.as_str();
        let tag = self.signature(headers::single(headers, header)?.trim_ascii())?;
        let Some((ts_header, separator, fresh)) = &self.timestamp else {
            return if self.keys.check(&[body], &[tag]).0 {
                Ok(None)
            } else {
                Err(VerifyError::bad_signature(header))
            };
        };
        let ts_text = headers::single_ascii(headers, ts_header)?;
        let ts = timestamp::parse_unix(ts_header, ts_text)?;
        let (matched, content) = self.keys.check(&[ts_text.as_bytes(), separator.as_bytes(), body], &[tag]);
        if !matched {
            return Err(VerifyError::bad_signature(header));
        }
        fresh.admit(ts, now, mac::replay_key(b"hmac", &[&content])).map(Some)
    }

    fn signature(&self, value: &[u8]) -> Result<Tag, VerifyError> {
        let header = self.header.as_str();
        let encoded = value.strip_prefix(self.prefix.as_bytes()).ok_or_else(|| {
            VerifyError::malformed(header, "value does not start with the configured prefix")
        })?;
        match self.encoding {
            Encoding::Hex => mac::decode_hex_lower(encoded)
                .ok_or_else(|| VerifyError::malformed(header, "not 64 lower-case hex digits")),
            Encoding::HexUpper => mac::decode_hex_upper(encoded)
                .ok_or_else(|| VerifyError::malformed(header, "not 64 upper-case hex digits")),
            Encoding::Base64 => mac::decode_base64_tag(encoded)
                .ok_or_else(|| VerifyError::malformed(header, "not 32 bytes of base64")),
        }
    }
}
