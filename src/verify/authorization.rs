//! `Authorization: Bearer <token>` and `Authorization: Basic base64(user:pass)`: what
//! Alertmanager's `http_config` sends. Owns reading that header. Nothing is signed and nothing
//! names the message, so these schemes cannot refuse a replay; use them over TLS.

use subtle::Choice;

use super::{
    HeaderLookup, VerifyError, headers,
    mac::{self, BASE64},
};
use crate::secret::Secret;

pub(crate) const AUTHORIZATION: &str = "authorization";

/// The credentials after `<scheme> `, where the scheme name is matched without regard to case
/// (RFC 9110) and may be followed by several spaces.
fn credentials<'a>(headers: &'a dyn HeaderLookup, scheme: &str) -> Result<&'a [u8], VerifyError> {
    let value = headers::single(headers, AUTHORIZATION)?.trim_ascii();
    let space = value.iter().position(|&b| b == b' ').unwrap_or(value.len());
    let (name, rest) = value.split_at(space);
    if !name.eq_ignore_ascii_case(scheme.as_bytes()) {
        return Err(VerifyError::malformed(AUTHORIZATION, "not the configured authentication scheme"));
    }
    let rest = rest.trim_ascii_start();
    if rest.is_empty() {
        return Err(VerifyError::malformed(AUTHORIZATION, "no credentials after the scheme"));
    }
    Ok(rest)
}

fn bad_credentials() -> VerifyError {
    VerifyError::BadCredentials { header: AUTHORIZATION.to_owned() }
}

/// Any one of several secrets, compared without an early exit.
fn any_matches(secrets: &[Secret], presented: &[u8]) -> bool {
    secrets
        .iter()
        .fold(Choice::from(0), |acc, s| acc | mac::ct_eq_hashed(s.expose().as_bytes(), presented))
        .into()
}

#[derive(Debug)]
pub(crate) struct Bearer {
    pub(crate) tokens: Vec<Secret>,
}

impl Bearer {
    pub(crate) fn check(&self, headers: &dyn HeaderLookup) -> Result<(), VerifyError> {
        let token = credentials(headers, "Bearer")?;
        if any_matches(&self.tokens, token) { Ok(()) } else { Err(bad_credentials()) }
    }
}

#[derive(Debug)]
pub(crate) struct Basic {
    pub(crate) username: String,
    pub(crate) passwords: Vec<Secret>,
}

impl Basic {
    pub(crate) fn check(&self, headers: &dyn HeaderLookup) -> Result<(), VerifyError> {
        let encoded = credentials(headers, "Basic")?;
        // Credentials are short; refusing long values keeps decoding bounded.
        if encoded.len() > 4096 {
            return Err(VerifyError::malformed(AUTHORIZATION, "credentials too long"));
        }
        let decoded = base64::Engine::decode(&BASE64, encoded)
            .map_err(|_| VerifyError::malformed(AUTHORIZATION, "Basic credentials are not base64"))?;
        let colon = decoded
            .iter()
            .position(|&b| b == b':')
            .ok_or_else(|| VerifyError::malformed(AUTHORIZATION, "Basic credentials have no `:`"))?;
        let (user, pass) = (&decoded[..colon], &decoded[colon + 1..]);
        // Both compared every time, so timing does not tell a right user name from a wrong one.
        let user_ok = mac::ct_eq_hashed(self.username.as_bytes(), user);
        let pass_ok = Choice::from(u8::from(any_matches(&self.passwords, pass)));
        if bool::from(user_ok & pass_ok) { Ok(()) } else { Err(bad_credentials()) }
    }
}
