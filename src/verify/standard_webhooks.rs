//! Standard Webhooks (`webhook-id`, `webhook-timestamp`, `webhook-signature`): HMAC-SHA256 over
//! `{id}.{timestamp}.{body}`, keyed with the base64-decoded `whsec_` secret. Owns reading those
//! three headers; must not accept anything but `v1` (symmetric) signatures.

use super::{
    Fresh, HeaderLookup, Replay, VerifyError, headers,
    mac::{self, KeyRing, MAX_SIGNATURES, Tag},
    timestamp,
};

pub(crate) const ID: &str = "webhook-id";
pub(crate) const TIMESTAMP: &str = "webhook-timestamp";
pub(crate) const SIGNATURE: &str = "webhook-signature";

#[derive(Debug)]
pub(crate) struct StandardWebhooks {
    pub(crate) keys: KeyRing,
    pub(crate) fresh: Fresh,
}

impl StandardWebhooks {
    pub(crate) fn check(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        now: u64,
    ) -> Result<Option<Replay<'_>>, VerifyError> {
        let id = headers::single(headers, ID)?.trim_ascii();
        if id.is_empty() {
            return Err(VerifyError::malformed(ID, "empty value"));
        }
        let ts_text = headers::single_ascii(headers, TIMESTAMP)?;
        let ts = timestamp::parse_unix(TIMESTAMP, ts_text)?;
        let candidates = parse_signatures(headers::single(headers, SIGNATURE)?)?;

        let (matched, _) =
            self.keys.check(&[id, b".", ts_text.as_bytes(), b".", body], candidates.as_slice());
        if !matched {
            return Err(VerifyError::bad_signature(SIGNATURE));
        }
        // The message id names the message (the spec's idempotency key): a sender's retry reuses
        // it with a new timestamp and signature. That is not refused here as a replay: the
        // intake remembers the id and answers a repeat with the first delivery's answer, which
        // is what the spec asks for, and what makes a captured message replayed within the
        // tolerance harmless too.
        self.fresh.window.check(ts, now)?;
        Ok(None)
    }
}

/// The `v1` signatures of a space-separated `webhook-signature` list; other versions (`v1a` is
/// asymmetric) are skipped as the spec says.
fn parse_signatures(value: &[u8]) -> Result<Vec<Tag>, VerifyError> {
    let mut tags = Vec::new();
    let mut entries = 0;
    for entry in value.split(|&b| b == b' ').filter(|e| !e.is_empty()) {
        entries += 1;
        if entries > MAX_SIGNATURES {
            return Err(VerifyError::malformed(SIGNATURE, "too many signatures"));
        }
        let Some(comma) = entry.iter().position(|&b| b == b',') else {
            return Err(VerifyError::malformed(SIGNATURE, "entry is not `version,signature`"));
        };
        let (version, sig) = (&entry[..comma], &entry[comma + 1..]);
        if version == b"v1" {
            let tag = mac::decode_base64_tag(sig)
                .ok_or_else(|| VerifyError::malformed(SIGNATURE, "v1 signature is not 32 bytes of base64"))?;
            tags.push(tag);
        }
    }
    if entries == 0 {
        return Err(VerifyError::malformed(SIGNATURE, "empty value"));
    }
    if tags.is_empty() {
        return Err(VerifyError::NoSupportedSignature { header: SIGNATURE.to_owned() });
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_lists_are_read_strictly() {
        let sig = "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(parse_signatures(format!("v1,{sig}").as_bytes()).unwrap().len(), 1);
        assert_eq!(parse_signatures(format!("v1a,xyz  v1,{sig} v2,abc").as_bytes()).unwrap().len(), 1);
        let kind = |v: &str| parse_signatures(v.as_bytes()).unwrap_err().kind();
        assert_eq!(kind("v1a,abc"), "no_supported_signature");
        assert_eq!(kind(sig), "malformed_header");
        assert_eq!(kind("v1,not base64"), "malformed_header");
        assert_eq!(kind("v1,AAAA"), "malformed_header");
        assert_eq!(kind("   "), "malformed_header");
        assert_eq!(kind(&format!("v1,{sig} ").repeat(17)), "malformed_header");
    }
}
