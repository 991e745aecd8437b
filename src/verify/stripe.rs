//! Stripe style: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>...]`, HMAC-SHA256 over
//! `{t}.{body}` keyed with the secret's text as is (`whsec_` prefix included, not decoded: that
//! is Stripe's rule, unlike Standard Webhooks'). Owns reading that header; `v0` and unknown
//! entries are ignored.

use super::{
    Fresh, HeaderLookup, Replay, VerifyError, headers,
    mac::{self, KeyRing, MAX_SIGNATURES, Tag},
    timestamp,
};

pub(crate) const SIGNATURE: &str = "stripe-signature";

#[derive(Debug)]
pub(crate) struct Stripe {
    pub(crate) keys: KeyRing,
    pub(crate) fresh: Fresh,
}

impl Stripe {
    pub(crate) fn check(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        now: u64,
    ) -> Result<Option<Replay<'_>>, VerifyError> {
        let (ts_text, tags) = parse(headers::single_ascii(headers, SIGNATURE)?)?;
        let ts = timestamp::parse_unix(SIGNATURE, ts_text)?;
        let (matched, content) = self.keys.check(&[ts_text.as_bytes(), b".", body], &tags);
        if !matched {
            return Err(VerifyError::bad_signature(SIGNATURE));
        }
        self.fresh.admit(ts, now, mac::replay_key(b"stripe", &[&content])).map(Some)
    }
}

/// The `t` value and the `v1` signatures.
fn parse(value: &str) -> Result<(&str, Vec<Tag>), VerifyError> {
    let mut t = None;
    let mut tags = Vec::new();
    for (i, item) in value.split(',').enumerate() {
        if i >= MAX_SIGNATURES + 2 {
            return Err(VerifyError::malformed(SIGNATURE, "too many entries"));
        }
        let Some((key, val)) = item.trim().split_once('=') else {
            return Err(VerifyError::malformed(SIGNATURE, "entry is not `key=value`"));
        };
        match key {
            // Two timestamps would let an attacker pick which one is checked.
            "t" if t.is_some() => return Err(VerifyError::malformed(SIGNATURE, "more than one `t`")),
            "t" => t = Some(val),
            "v1" => tags
                .push(mac::decode_hex_lower(val.as_bytes()).ok_or_else(|| {
                    VerifyError::malformed(SIGNATURE, "v1 is not 64 lower-case hex digits")
                })?),
            _ => {}
        }
    }
    let t = t.ok_or_else(|| VerifyError::malformed(SIGNATURE, "no `t=` timestamp"))?;
    if tags.is_empty() {
        return Err(VerifyError::NoSupportedSignature { header: SIGNATURE.to_owned() });
    }
    Ok((t, tags))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIG: &str = "d60a3612791381e975fdfea8ba9e5bc51fcf8b7a0f21861c1c5f34f23bff6233";

    #[test]
    fn headers_are_read_strictly() {
        let header = format!("t=12,v1={SIG},v0=zz,x=1");
        let (t, tags) = parse(&header).unwrap();
        assert_eq!((t, tags.len()), ("12", 1));
        let kind = |v: &str| parse(v).unwrap_err().kind();
        assert_eq!(kind(&format!("v1={SIG}")), "malformed_header");
        assert_eq!(kind(&format!("t=1,t=2,v1={SIG}")), "malformed_header");
        assert_eq!(kind("t=1,v0=abc"), "no_supported_signature");
        assert_eq!(kind("t=1,v1=abc"), "malformed_header");
        assert_eq!(kind(&format!("t=1,v1={}", SIG.to_uppercase())), "malformed_header");
        assert_eq!(kind("t=1,garbage"), "malformed_header");
        assert_eq!(kind(&format!("t=1{}", format!(",v1={SIG}").repeat(20))), "malformed_header");
    }
}
