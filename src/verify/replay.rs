//! The bounded cache of messages already accepted, for replay protection. Owns the memory bound
//! and the expiry rule; must not decide what identifies a message (each scheme does) and must
//! not read the clock.
//!
//! Limits worth knowing:
//! - It is per process (and per configured scheme). Several replicas each keep their own, so a
//!   message replayed to another replica within the window is accepted there.
//! - It is bounded by count. When full, the entries closest to expiry (the oldest timestamps) go
//!   first, so a replay can then succeed only for a message older than the oldest entry kept,
//!   and only until its timestamp leaves the window.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::{Mutex, MutexGuard, PoisonError},
};

use super::mac::Tag;

/// The default number of entries: at about 150 bytes each, 100 000 entries stay near 15 MB.
pub const DEFAULT_REPLAY_CACHE_SIZE: usize = 100_000;

pub(crate) struct ReplayCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
pub(crate) struct Entries {
    /// Key to its expiry (Unix seconds).
    by_key: HashMap<Tag, u64>,
    /// The same entries ordered by expiry, to purge and evict the oldest first.
    by_expiry: BTreeSet<(u64, Tag)>,
}

impl ReplayCache {
    /// `capacity` is at least 1 (a zero is taken as 1: the cache must remember something).
    pub(crate) fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), inner: Mutex::new(Entries::default()) }
    }

    /// Locks the cache. The lock is held only for map operations, which cannot panic, so a
    /// poisoned lock still holds consistent data and is used as is.
    pub(crate) fn lock(&self) -> Guard<'_> {
        Guard { capacity: self.capacity, entries: self.inner.lock().unwrap_or_else(PoisonError::into_inner) }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().entries.by_key.len()
    }
}

impl fmt::Debug for ReplayCache {
    // The keys say nothing secret, but they are noise; the size is what an operator wants.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayCache").field("capacity", &self.capacity).finish_non_exhaustive()
    }
}

/// A locked cache: lets a caller check several keys and then record them as one step.
pub(crate) struct Guard<'a> {
    capacity: usize,
    entries: MutexGuard<'a, Entries>,
}

impl Guard<'_> {
    /// Whether `key` was recorded and has not expired at `now`.
    pub(crate) fn contains(&self, key: &Tag, now: u64) -> bool {
        self.entries.by_key.get(key).is_some_and(|&expires| expires >= now)
    }

    /// Forgets `key`, if it is recorded.
    pub(crate) fn remove(&mut self, key: &Tag) {
        let e = &mut *self.entries;
        if let Some(expires) = e.by_key.remove(key) {
            e.by_expiry.remove(&(expires, *key));
        }
    }

    /// Records `key` until `expires`, first dropping what expired and, when still full, the
    /// entries that expire soonest.
    pub(crate) fn insert(&mut self, key: Tag, expires: u64, now: u64) {
        let e = &mut *self.entries;
        if let Some(old) = e.by_key.remove(&key) {
            e.by_expiry.remove(&(old, key));
        }
        while let Some(&(exp, k)) = e.by_expiry.first() {
            if exp >= now && e.by_key.len() < self.capacity {
                break;
            }
            e.by_expiry.pop_first();
            e.by_key.remove(&k);
        }
        e.by_key.insert(key, expires);
        e.by_expiry.insert((expires, key));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Tag {
        let mut k = [0u8; 32];
        k[..4].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[test]
    fn an_entry_is_seen_until_it_expires() {
        let c = ReplayCache::new(10);
        c.lock().insert(key(1), 100, 50);
        assert!(c.lock().contains(&key(1), 100));
        assert!(!c.lock().contains(&key(1), 101));
        assert!(!c.lock().contains(&key(2), 50));
    }

    #[test]
    fn inserting_more_than_the_capacity_keeps_the_newest_and_stays_bounded() {
        let c = ReplayCache::new(1000);
        for n in 0..5000 {
            c.lock().insert(key(n), 10_000 + u64::from(n), 0);
            assert!(c.len() <= 1000);
        }
        assert_eq!(c.len(), 1000);
        let g = c.lock();
        assert_eq!(g.entries.by_expiry.len(), 1000, "both indexes hold the same entries");
        assert!(!g.contains(&key(3999), 0), "oldest evicted first");
        assert!(g.contains(&key(4000), 0));
        assert!(g.contains(&key(4999), 0));
    }

    #[test]
    fn expired_entries_are_purged_before_anything_live_is_evicted() {
        let c = ReplayCache::new(3);
        c.lock().insert(key(1), 10, 0);
        c.lock().insert(key(2), 10, 0);
        c.lock().insert(key(3), 500, 0);
        c.lock().insert(key(4), 600, 100);
        assert_eq!(c.len(), 2);
        assert!(c.lock().contains(&key(3), 100));
        assert!(c.lock().contains(&key(4), 100));
    }

    #[test]
    fn reinserting_a_key_moves_its_expiry() {
        let c = ReplayCache::new(3);
        c.lock().insert(key(1), 10, 0);
        c.lock().insert(key(1), 20, 0);
        assert_eq!(c.len(), 1);
        assert!(c.lock().contains(&key(1), 15));
        assert_eq!(c.lock().entries.by_expiry.len(), 1);
    }

    #[test]
    fn a_removed_key_is_forgotten_from_both_indexes() {
        let c = ReplayCache::new(3);
        c.lock().insert(key(1), 10, 0);
        c.lock().insert(key(2), 10, 0);
        c.lock().remove(&key(1));
        c.lock().remove(&key(9));
        assert!(!c.lock().contains(&key(1), 0));
        assert!(c.lock().contains(&key(2), 0));
        assert_eq!(c.lock().entries.by_expiry.len(), 1);
    }

    #[test]
    fn a_zero_capacity_still_remembers_one_message() {
        let c = ReplayCache::new(0);
        c.lock().insert(key(1), 10, 0);
        assert!(c.lock().contains(&key(1), 0));
    }
}
