//! What the bridge remembers of deliveries it has seen, so that a sender's legitimate resend
//! gets the original answer instead of a refusal or a second effect: a verified repeat of a
//! Standard Webhooks `webhook-id`, a CloudEvents `source` + `id`, a NATS `Nats-Msg-Id`, and an
//! `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header: scoped to the sender, bound
//! to a fingerprint of the request).
//!
//! Each entry is either in flight (the first delivery is being handled: a repeat is told to
//! come back) or done with the answer that was given (a repeat gets it again). An answer that
//! tells the sender to send again (a retry) is not kept: the resend is handled afresh. It owns
//! the memory bound and the expiry; it does not decide what identifies a delivery (the
//! decoders and transports do) and reads no clock (time is a parameter).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use bytes::Bytes;
use sha2::{Digest, Sha256};

/// How long a delivery is remembered: as long as SCWM treats a repeated licensePlate as the
/// same request, so a resend within it never acts twice either way.
pub const DEFAULT_TTL: Duration = Duration::from_secs(24 * 3600);
/// Entries kept at most; the oldest go first. An entry holds its answer (a few hundred bytes).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Which delivery: its namespace (so an `Idempotency-Key` and a `Nats-Msg-Id` with the same
/// text never meet), the source, the sender within it, and the id the sender gave.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeliveryKey {
    pub namespace: &'static str,
    pub source: String,
    /// Who sent it, as far as the source can tell (a digest of its credentials), so senders
    /// sharing a source never share keys; empty where the id is the sender's own (signed ids).
    pub sender: String,
    pub id: String,
}

/// The request a key was first used for: a digest of what it asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u8; 32]);

impl Fingerprint {
    pub fn of(parts: &[&[u8]]) -> Self {
        let mut h = Sha256::new();
        for p in parts {
            h.update((p.len() as u64).to_be_bytes());
            h.update(p);
        }
        Self(h.finalize().into())
    }
}

/// An answer as it was given, to give again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// What the memory says of a delivery.
#[derive(Debug)]
pub enum Seen {
    /// New: handle it, and [`Claim::finish`] with its answer (or drop the claim to forget it).
    New(Claim),
    /// The first delivery is still being handled.
    InFlight,
    /// Handled already: this was the answer.
    Done(Answer),
    /// The key was used for another request (another body): a client error.
    Mismatch,
}

enum Entry {
    InFlight { fingerprint: Fingerprint, token: u64 },
    Done { fingerprint: Fingerprint, answer: Answer, at: Instant },
}

struct Inner {
    entries: HashMap<DeliveryKey, Entry>,
    /// Keys in the order they were first seen, to evict the oldest first.
    order: VecDeque<DeliveryKey>,
    next_token: u64,
}

/// The memory of deliveries. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct Repeats {
    inner: Arc<Mutex<Inner>>,
    capacity: usize,
    ttl: Duration,
}

impl std::fmt::Debug for Repeats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repeats")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for Repeats {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY, DEFAULT_TTL)
    }
}

/// The first delivery's hold on its key. Dropped without [`Claim::finish`], the key is
/// forgotten: the next delivery is handled as new.
#[derive(Debug)]
pub struct Claim {
    memory: Repeats,
    key: DeliveryKey,
    token: u64,
    finished: bool,
}

impl Claim {
    /// Remembers `answer` as the delivery's, given at `now`.
    pub fn finish(mut self, answer: Answer, now: Instant) {
        self.finished = true;
        let mut inner = self.memory.lock();
        if let Some(Entry::InFlight { fingerprint, token }) = inner.entries.get(&self.key)
            && *token == self.token
        {
            let fingerprint = *fingerprint;
            inner.entries.insert(self.key.clone(), Entry::Done { fingerprint, answer, at: now });
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut inner = self.memory.lock();
        if matches!(inner.entries.get(&self.key), Some(Entry::InFlight { token, .. }) if *token == self.token)
        {
            inner.entries.remove(&self.key);
        }
    }
}

impl Repeats {
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        let inner = Inner { entries: HashMap::new(), order: VecDeque::new(), next_token: 0 };
        Self { inner: Arc::new(Mutex::new(inner)), capacity: capacity.max(1), ttl }
    }

    /// The map is only read and written under the lock and no operation on it can panic, so a
    /// poisoned lock still holds consistent data.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks `key` up for a delivery asking for `fingerprint` at `now`, claiming it when new.
    pub fn check(&self, key: DeliveryKey, fingerprint: Fingerprint, now: Instant) -> Seen {
        let mut inner = self.lock();
        match inner.entries.get(&key) {
            Some(Entry::InFlight { fingerprint: f, .. }) if *f != fingerprint => return Seen::Mismatch,
            Some(Entry::InFlight { .. }) => return Seen::InFlight,
            Some(Entry::Done { at, .. }) if now.saturating_duration_since(*at) >= self.ttl => {
                inner.entries.remove(&key);
            }
            Some(Entry::Done { fingerprint: f, .. }) if *f != fingerprint => return Seen::Mismatch,
            Some(Entry::Done { answer, .. }) => return Seen::Done(answer.clone()),
            None => {}
        }
        while inner.entries.len() >= self.capacity {
            let Some(oldest) = inner.order.pop_front() else { break };
            inner.entries.remove(&oldest);
        }
        let token = inner.next_token;
        inner.next_token += 1;
        inner.entries.insert(key.clone(), Entry::InFlight { fingerprint, token });
        inner.order.push_back(key.clone());
        // Keys forgotten since (a claim dropped, an expiry) may still stand in the order;
        // keep it from growing past the entries it serves.
        if inner.order.len() > 2 * self.capacity {
            let Inner { entries, order, .. } = &mut *inner;
            order.retain(|k| entries.contains_key(k));
        }
        Seen::New(Claim { memory: self.clone(), key, token, finished: false })
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str) -> DeliveryKey {
        DeliveryKey {
            namespace: "idempotency-key",
            source: "native".into(),
            sender: "s".into(),
            id: id.into(),
        }
    }

    fn answer(status: u16) -> Answer {
        Answer { status, content_type: "application/json", body: Bytes::from_static(b"{}") }
    }

    #[test]
    fn a_repeat_is_in_flight_then_gets_the_first_answer_and_another_body_is_a_mismatch() {
        let memory = Repeats::default();
        let now = Instant::now();
        let body = Fingerprint::of(&[b"add", b"{\"title\":\"x\"}"]);
        let Seen::New(claim) = memory.check(key("k"), body, now) else { panic!("new") };
        assert!(matches!(memory.check(key("k"), body, now), Seen::InFlight));
        let other = Fingerprint::of(&[b"add", b"{\"title\":\"y\"}"]);
        assert!(matches!(memory.check(key("k"), other, now), Seen::Mismatch));
        claim.finish(answer(200), now);
        assert!(matches!(memory.check(key("k"), body, now), Seen::Done(a) if a == answer(200)));
        assert!(matches!(memory.check(key("k"), other, now), Seen::Mismatch));
    }

    #[test]
    fn keys_are_apart_by_namespace_source_and_sender() {
        let memory = Repeats::default();
        let now = Instant::now();
        let f = Fingerprint::of(&[b"x"]);
        let Seen::New(a) = memory.check(key("k"), f, now) else { panic!() };
        for other in [
            DeliveryKey { namespace: "nats-msg-id", ..key("k") },
            DeliveryKey { source: "other".into(), ..key("k") },
            DeliveryKey { sender: "another".into(), ..key("k") },
        ] {
            assert!(matches!(memory.check(other, f, now), Seen::New(_)));
        }
        drop(a);
    }

    #[test]
    fn a_dropped_claim_is_forgotten_and_an_old_answer_expires() {
        let memory = Repeats::new(10, Duration::from_secs(60));
        let now = Instant::now();
        let f = Fingerprint::of(&[b"x"]);
        let Seen::New(claim) = memory.check(key("k"), f, now) else { panic!() };
        drop(claim);
        let Seen::New(claim) = memory.check(key("k"), f, now) else {
            panic!("a dropped claim frees the key")
        };
        claim.finish(answer(200), now);
        assert!(matches!(memory.check(key("k"), f, now + Duration::from_secs(59)), Seen::Done(_)));
        assert!(matches!(memory.check(key("k"), f, now + Duration::from_secs(60)), Seen::New(_)));
    }

    #[test]
    fn the_oldest_entries_go_first_past_the_capacity() {
        let memory = Repeats::new(2, DEFAULT_TTL);
        let now = Instant::now();
        let f = Fingerprint::of(&[b"x"]);
        for id in ["a", "b", "c"] {
            let Seen::New(c) = memory.check(key(id), f, now) else { panic!() };
            c.finish(answer(200), now);
        }
        assert_eq!(memory.len(), 2);
        assert!(matches!(memory.check(key("a"), f, now), Seen::New(_)), "the oldest was evicted");
        assert!(matches!(memory.check(key("c"), f, now), Seen::Done(_)));
    }
}
