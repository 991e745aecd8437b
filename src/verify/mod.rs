//! Authentication of inbound webhooks and NATS messages, and limits for hostile input.
//!
//! This module owns deciding whether a message comes from who it claims: signatures and
//! credentials are checked over the **raw body bytes**, before anything parses them, and the
//! answer is a [`Verified`] value that only this module can make. The pipeline asks for a
//! `Verified`, so unverified input cannot reach it by construction. This module must not parse
//! bodies, perform I/O (secret files are read through the reader [`build`] is given) or read the
//! wall clock: every verification takes `now`.
//!
//! # Schemes
//! A source lists one or more schemes ([`RawAuth`]): Standard Webhooks, GitHub style, Grafana,
//! Stripe style, generic HMAC, Bearer token, Basic auth, or `none` (an explicit opt-out that
//! must stand alone). When a source lists several, **every one must pass**: they are checked in
//! the order configured and the first failure is the answer. Each scheme may hold several
//! secrets at once (rotation): any one matching is enough.
//!
//! Signatures are compared in constant time, decoded strictly (bad hex or base64 is a
//! [`VerifyError::MalformedHeader`], never a panic), and a signature or credential header that
//! appears more than once is refused, so an attacker does not get to choose which copy counts.
//! A header is looked up through [`HeaderLookup`], implemented for HTTP and NATS header maps.
//!
//! # Timestamps and replays
//! Schemes that sign a timestamp (Standard Webhooks, Stripe, and Grafana or generic HMAC with a
//! timestamp header) refuse timestamps further than the tolerance from `now`, either way
//! (default [`DEFAULT_TOLERANCE`]). The timestamp is judged only after the signature verified,
//! so `timestamp_too_old` in a log means a genuine message that arrived late, not a forgery.
//!
//! They also remember each accepted message until its timestamp leaves the window and refuse it
//! if it comes again ([`VerifyError::Replayed`]): Standard Webhooks by `webhook-id`, the others
//! by their signed content (timestamp and body, so a replay cannot dodge the cache by re-encoding
//! or reordering its signatures). A message is remembered only after every scheme passed, so
//! an attacker cannot fill the cache with garbage. A message that was accepted but not
//! processed (the sender was told to retry) is forgotten again with [`SourceAuth::release`] and
//! the [`Receipt`] its verification gave, so the retry is not mistaken for a replay. The cache is per process and bounded
//! ([`DEFAULT_REPLAY_CACHE_SIZE`] entries unless configured): when full, the entries with the
//! oldest timestamps go first, so a replay can then succeed only for a message older than the
//! oldest one kept, and only while its timestamp is still inside the window. Replicas do not
//! share caches. Schemes that sign no timestamp (GitHub, Grafana and generic HMAC without one,
//! Bearer, Basic) cannot refuse replays.
//!
//! # Use
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//!
//! use bytes::Bytes;
//! use incident_bridge::verify::{RawAuth, Verified, build};
//!
//! // Configuration: `[[sources.billing.auth]]` entries, validated with their keys.
//! #[derive(serde::Deserialize)]
//! struct Source {
//!     auth: Vec<RawAuth>,
//! }
//! let source: Source = toml::from_str(
//!     r#"
//!     [[auth]]
//!     scheme = "standard-webhooks"
//!     secrets = ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]
//!     "#,
//! )?;
//! let auth = build(&source.auth, "sources.billing.auth", &|path| std::fs::read_to_string(path))
//!     .map_err(|problems| format!("{problems:?}"))?;
//!
//! // Per message: headers (HTTP or NATS), the raw body, and the time it arrived.
//! let headers = http::HeaderMap::from_iter([
//!     ("webhook-id".parse()?, "msg_p5jXN8AQM9LWM0D4loKWxJek".parse()?),
//!     ("webhook-timestamp".parse()?, "1614265330".parse()?),
//!     ("webhook-signature".parse()?, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=".parse()?),
//! ]);
//! let body = Bytes::from_static(br#"{"test": 2432232314}"#);
//! let now = UNIX_EPOCH + Duration::from_secs(1614265330); // SystemTime::now() in a server
//! let verified: Verified<Bytes> = auth.verify(&headers, body.clone(), now)?;
//! assert_eq!(verified.body(), &body);
//!
//! // A body that is not the one signed is refused; the error's kind is what goes to logs and
//! // metrics. (The same message again verifies: Standard Webhooks names a message by its
//! // `webhook-id`, and the intake answers a repeat with the first delivery's answer.)
//! let forged = auth.verify(&headers, Bytes::from_static(br#"{"test": 1}"#), now).unwrap_err();
//! assert_eq!(forged.kind(), "bad_signature");
//! assert!(auth.verify(&headers, body, now).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Limits
//! [`limits`] has the pure helpers that keep hostile input bounded: a JSON nesting-depth
//! scanner, truncation of text for logs, and a token-bucket rate limiter.

mod authorization;
mod config;
mod error;
mod generic_hmac;
mod github;
mod grafana;
mod headers;
pub mod limits;
mod mac;
mod replay;
mod standard_webhooks;
mod stripe;
mod timestamp;

use std::time::SystemTime;

use bytes::Bytes;

pub use config::{RawAuth, build};
pub use error::VerifyError;
pub use headers::HeaderLookup;
pub use replay::DEFAULT_REPLAY_CACHE_SIZE;
pub use timestamp::DEFAULT_TOLERANCE;

use mac::Tag;
use replay::ReplayCache;
use timestamp::Window;

/// A value that passed its source's authentication. Only this module can make one, so a
/// function that takes a `Verified<T>` cannot be handed unverified input.
#[derive(Debug, Clone)]
pub struct Verified<T> {
    inner: T,
    receipt: Receipt,
}

impl<T> Verified<T> {
    /// The verified value.
    pub fn body(&self) -> &T {
        &self.inner
    }

    /// The verified value, leaving the typestate behind.
    pub fn into_inner(self) -> T {
        self.inner
    }

    /// The verified value and the receipt for [`SourceAuth::release`].
    pub fn into_parts(self) -> (T, Receipt) {
        (self.inner, self.receipt)
    }

    /// What verification remembered of this message against replays.
    pub fn receipt(&self) -> &Receipt {
        &self.receipt
    }

    /// Something derived from the verified value (the decoded event of a verified body) stays
    /// marked as verified.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Verified<U> {
        Verified { inner: f(self.inner), receipt: self.receipt }
    }
}

/// The replay-cache entries one verification recorded: which scheme of the source, and the
/// message's key there. Empty for schemes that sign no timestamp. Hand it to
/// [`SourceAuth::release`] when the message was not processed, so that the sender's retry of
/// the same message is not refused as a replay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Receipt {
    entries: Vec<(usize, Tag)>,
}

impl Receipt {
    /// Whether the verification recorded nothing (no scheme of the source refuses replays).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// How one source authenticates its messages: the schemes [`build`] made from its `auth`
/// entries. Shared between requests (its replay caches lock internally); `Debug` shows the
/// schemes and their settings, never a secret.
#[derive(Debug)]
pub struct SourceAuth {
    schemes: Vec<Scheme>,
}

impl SourceAuth {
    /// Checks every configured scheme against `headers` and the raw `body` at time `now` and,
    /// when all pass, records the message against replays and hands the body back verified.
    pub fn verify<H: HeaderLookup + ?Sized>(
        &self,
        headers: &H,
        body: Bytes,
        now: SystemTime,
    ) -> Result<Verified<Bytes>, VerifyError> {
        let now = timestamp::unix_secs(now);
        let seen = self.check_all(&headers, &body, now)?;
        let receipt = record(&seen, now)?;
        Ok(Verified { inner: body, receipt })
    }

    /// Checks like [`verify`](Self::verify) but remembers nothing: for showing what would
    /// happen to a message (explain) without changing what happens to the next one. A message
    /// the replay cache holds is refused as a replay, as `verify` would.
    pub fn verify_dry<H: HeaderLookup + ?Sized>(
        &self,
        headers: &H,
        body: Bytes,
        now: SystemTime,
    ) -> Result<Verified<Bytes>, VerifyError> {
        let now = timestamp::unix_secs(now);
        let seen = self.check_all(&headers, &body, now)?;
        if seen.iter().any(|(_, r)| r.cache.lock().contains(&r.key, now)) {
            return Err(VerifyError::Replayed);
        }
        Ok(Verified { inner: body, receipt: Receipt { entries: Vec::new() } })
    }

    /// Every scheme's check, in order; the first failure stops them. What each scheme that signs
    /// a timestamp would remember against replays.
    fn check_all(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        now: u64,
    ) -> Result<Vec<(usize, Replay<'_>)>, VerifyError> {
        let mut seen = Vec::new();
        for (index, scheme) in self.schemes.iter().enumerate() {
            if let Some(replay) = scheme.check(headers, body, now)? {
                seen.push((index, replay));
            }
        }
        Ok(seen)
    }

    /// Forgets a verified message that was not processed, so that the sender's retry of it is
    /// accepted rather than refused as a replay. A transport calls this when its answer tells
    /// the sender to try again (HTTP 5xx, a JetStream nak): senders retry with the same message
    /// (Standard Webhooks keeps the `webhook-id`, JetStream redelivers it byte for byte), and
    /// the licensePlate derived from it keeps the retry from acting twice.
    pub fn release(&self, receipt: &Receipt) {
        for (index, key) in &receipt.entries {
            if let Some(cache) = self.schemes.get(*index).and_then(Scheme::replay_cache) {
                cache.lock().remove(key);
            }
        }
    }

    /// Accepts every message: a source configured with `scheme = "none"`, the built-in native
    /// source when it is not configured, and NATS messages of a source that does not verify
    /// NATS (NATS authenticates its clients itself).
    pub fn none() -> Self {
        Self { schemes: vec![Scheme::None] }
    }

    /// The configured schemes' names, in order, for a start-up log line.
    pub fn scheme_names(&self) -> Vec<&'static str> {
        self.schemes.iter().map(Scheme::name).collect()
    }

    /// Whether this source accepts messages without authentication (`scheme = "none"`), so the
    /// caller can say so loudly at start-up.
    pub fn is_unauthenticated(&self) -> bool {
        matches!(self.schemes.as_slice(), [Scheme::None])
    }
}

#[derive(Debug)]
enum Scheme {
    StandardWebhooks(standard_webhooks::StandardWebhooks),
    Github(github::Github),
    Grafana(grafana::Grafana),
    Stripe(stripe::Stripe),
    Hmac(generic_hmac::GenericHmac),
    Bearer(authorization::Bearer),
    Basic(authorization::Basic),
    None,
}

impl Scheme {
    fn name(&self) -> &'static str {
        match self {
            Scheme::StandardWebhooks(_) => "standard-webhooks",
            Scheme::Github(_) => "github",
            Scheme::Grafana(_) => "grafana",
            Scheme::Stripe(_) => "stripe",
            Scheme::Hmac(_) => "hmac",
            Scheme::Bearer(_) => "bearer",
            Scheme::Basic(_) => "basic",
            Scheme::None => "none",
        }
    }

    /// The replay cache of a scheme that signs a timestamp.
    fn replay_cache(&self) -> Option<&ReplayCache> {
        match self {
            Scheme::StandardWebhooks(s) => Some(&s.fresh.cache),
            Scheme::Stripe(s) => Some(&s.fresh.cache),
            Scheme::Grafana(s) => s.timestamp.as_ref().map(|(_, fresh)| &fresh.cache),
            Scheme::Hmac(s) => s.timestamp.as_ref().map(|(_, _, fresh)| &fresh.cache),
            Scheme::Github(_) | Scheme::Bearer(_) | Scheme::Basic(_) | Scheme::None => None,
        }
    }

    fn check(
        &self,
        headers: &dyn HeaderLookup,
        body: &[u8],
        now: u64,
    ) -> Result<Option<Replay<'_>>, VerifyError> {
        match self {
            Scheme::StandardWebhooks(s) => s.check(headers, body, now),
            Scheme::Github(s) => s.check(headers, body).map(|()| None),
            Scheme::Grafana(s) => s.check(headers, body, now),
            Scheme::Stripe(s) => s.check(headers, body, now),
            Scheme::Hmac(s) => s.check(headers, body, now),
            Scheme::Bearer(s) => s.check(headers).map(|()| None),
            Scheme::Basic(s) => s.check(headers).map(|()| None),
            Scheme::None => Ok(None),
        }
    }
}

/// Freshness rules of a scheme that signs a timestamp: the window and the replay cache.
#[derive(Debug)]
struct Fresh {
    window: Window,
    cache: ReplayCache,
}

impl Fresh {
    fn new(tolerance_secs: u64, cache_size: usize) -> Self {
        Self { window: Window { tolerance_secs }, cache: ReplayCache::new(cache_size) }
    }

    /// Checks the timestamp of a message whose signature verified, and names the message for
    /// the replay cache.
    fn admit(&self, ts: u64, now: u64, key: Tag) -> Result<Replay<'_>, VerifyError> {
        self.window.check(ts, now)?;
        Ok(Replay { cache: &self.cache, key, expires: self.window.expiry(ts) })
    }
}

/// A message to remember once every scheme passed.
struct Replay<'a> {
    cache: &'a ReplayCache,
    key: Tag,
    expires: u64,
}

/// Refuses the message if any cache has seen it, else records it in all of them, as one step
/// (the locks are taken in scheme order, the same for every call, so they cannot deadlock), and
/// says what it recorded where.
fn record(seen: &[(usize, Replay<'_>)], now: u64) -> Result<Receipt, VerifyError> {
    let mut guards: Vec<_> = seen.iter().map(|(_, r)| r.cache.lock()).collect();
    if seen.iter().zip(&guards).any(|((_, r), g)| g.contains(&r.key, now)) {
        return Err(VerifyError::Replayed);
    }
    for ((_, r), g) in seen.iter().zip(&mut guards) {
        g.insert(r.key, r.expires, now);
    }
    Ok(Receipt { entries: seen.iter().map(|(index, r)| (*index, r.key)).collect() })
}

#[cfg(test)]
mod tests;
