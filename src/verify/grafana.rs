//! Grafana alerting's HMAC: lower-case hex HMAC-SHA256 in `X-Grafana-Alerting-Signature` (name
//! configurable) over the body, or over `{timestamp}:{body}` when Grafana is configured with a
//! timestamp header. Owns those two headers. Without a timestamp nothing but the body is signed
//! and a replay cannot be refused.

use super::{
    Fresh, HeaderLookup, Replay, VerifyError, headers,
    mac::{self, KeyRing},
    timestamp,
};

pub(crate) const DEFAULT_SIGNATURE: &str = "X-Grafana-Alerting-Signature";

#[derive(Debug)]
pub(crate) struct Grafana {
    pub(crate) keys: KeyRing,
    pub(crate) header: String,
    /// The timestamp header's name and the freshness rules, when Grafana sends one.
    pub(crate) timestamp: Option<(String, Fresh)>,
}

impl Grafana {
    pub(crate) fn check(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        now: u64,
    ) -> Result<Option<Replay<'_>>, VerifyError> {
        let header = self.header.as_str();
        let value = headers::single(headers, header)?.trim_ascii();
        let tag = mac::decode_hex_lower(value)
            .ok_or_else(|| VerifyError::malformed(header, "not 64 lower-case hex digits"))?;
        let Some((ts_header, fresh)) = &self.timestamp else {
            return if self.keys.check(&[body], &[tag]).0 {
                Ok(None)
            } else {
                Err(VerifyError::bad_signature(header))
            };
        };
        let ts_text = headers::single_ascii(headers, ts_header)?;
        let ts = timestamp::parse_unix(ts_header, ts_text)?;
        let (matched, content) = self.keys.check(&[ts_text.as_bytes(), b":", body], &[tag]);
        if !matched {
            return Err(VerifyError::bad_signature(header));
        }
        fresh.admit(ts, now, mac::replay_key(b"grafana", &[&content])).map(Some)
    }
}
