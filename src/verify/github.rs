//! GitHub style: `X-Hub-Signature-256: sha256=<lower-case hex>` over the body. Owns that header
//! only. Nothing but the body is signed, so this scheme cannot refuse a replay; GitHub's
//! `X-GitHub-Delivery` id is not signed and cannot help.

use super::{
    HeaderLookup, VerifyError, headers,
    mac::{self, KeyRing},
};

pub(crate) const SIGNATURE: &str = "x-hub-signature-256";

#[derive(Debug)]
pub(crate) struct Github {
    pub(crate) keys: KeyRing,
}

impl Github {
    pub(crate) fn check(&self, headers: &dyn HeaderLookup, body: &[u8]) -> Result<(), VerifyError> {
        let value = headers::single(headers, SIGNATURE)?.trim_ascii();
        let hex = value
            .strip_prefix(b"sha256=")
            .ok_or_else(|| VerifyError::malformed(SIGNATURE, "value does not start with `sha256=`"))?;
        let tag = mac::decode_hex_lower(hex).ok_or_else(|| {
            VerifyError::malformed(SIGNATURE, "not 64 lower-case hex digits after `sha256=`")
        })?;
        if self.keys.check(&[body], &[tag]).0 { Ok(()) } else { Err(VerifyError::bad_signature(SIGNATURE)) }
    }
}
