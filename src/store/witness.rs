//! The witness of a store's revisions: it notices when a correlation store *goes backwards*,
//! as a store restored from an older copy, or a JetStream server that lost what it had
//! acknowledged (a power failure under lazy fsync), would. Both backends issue revisions that
//! only grow, across every key; a write answered with a revision no larger than one already seen
//! means the store forgot writes. The bridge cannot undo that (SCWM's dedup of the identity
//! licensePlates and the reconciler converge what follows): it says so, in an error line and in
//! `incident_bridge_store_rollbacks_total`, once per time it happens.
//!
//! For a store on local disk (the embedded one), the highest revision is also kept in a small file
//! beside it, written at most once a second, so a store file restored while the bridge was down is
//! noticed when it opens. It owns only that bookkeeping: every call goes to the store unchanged.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{FutureExt, future::BoxFuture};

use super::{CorrelationStore, Revision, ScanPage, StoreError, Versioned};
use crate::ids::CorrelationKey;

/// How often the highest revision is written to the witness file at most.
const WRITE_EVERY: Duration = Duration::from_secs(1);

/// Where the highest revision of the store file at `path` is kept: beside it.
pub fn file_beside(path: &std::path::Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".witness");
    path.with_file_name(name)
}

/// A store with its revisions watched.
pub struct Witnessed {
    me: std::sync::Weak<Witnessed>,
    inner: Arc<dyn CorrelationStore>,
    highest: AtomicU64,
    file: Option<WitnessFile>,
}

struct WitnessFile {
    path: PathBuf,
    /// When it was last written, and whether a later write is already scheduled.
    last_written: std::sync::Mutex<(Option<Instant>, bool)>,
}

impl Witnessed {
    /// Watches `inner`, whose highest revision issued so far is `last` (when it can say). With
    /// `file`, the revision kept there by an earlier run is compared with `last` first.
    pub fn new(inner: Arc<dyn CorrelationStore>, last: u64, file: Option<PathBuf>) -> Arc<Self> {
        let remembered = file
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(remembered) = remembered
            && remembered > last
        {
            went_backwards(inner.backend(), remembered, last);
        }
        let witness = Arc::new_cyclic(|me| Self {
            me: me.clone(),
            inner,
            highest: AtomicU64::new(last),
            file: file.map(|path| WitnessFile { path, last_written: std::sync::Mutex::new((None, false)) }),
        });
        witness.flush();
        witness
    }

    fn saw(&self, revision: Revision) {
        self.highest.fetch_max(revision, Ordering::AcqRel);
    }

    /// A write's new revision: larger than every revision seen before the write was sent
    /// (`before`), or the store went backwards. (Revisions seen while it was under way may be
    /// larger: other writes landed meanwhile.)
    fn wrote(&self, before: Revision, revision: Revision) {
        self.highest.fetch_max(revision, Ordering::AcqRel);
        if revision <= before {
            went_backwards(self.inner.backend(), before, revision);
            // The store's present is what it is now: count the next rollback from here.
            self.highest.store(revision, Ordering::Release);
        }
        self.remember();
    }

    /// Writes the highest revision to the file now, or once a second has passed since the last
    /// write (one write scheduled at a time), so the file is never more than a second behind.
    fn remember(&self) {
        let Some(file) = &self.file else { return };
        let mut state = file.last_written.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *state {
            (Some(at), scheduled) if at.elapsed() < WRITE_EVERY => {
                if scheduled {
                    return;
                }
                let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
                state.1 = true;
                let (me, wait) = (self.me.clone(), WRITE_EVERY.saturating_sub(at.elapsed()));
                rt.spawn(async move {
                    tokio::time::sleep(wait).await;
                    if let Some(me) = me.upgrade() {
                        me.flush();
                    }
                });
            }
            _ => {
                drop(state);
                self.flush();
            }
        }
    }

    fn flush(&self) {
        let Some(file) = &self.file else { return };
        *file.last_written.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (Some(Instant::now()), false);
        let highest = self.highest.load(Ordering::Acquire);
        let path = file.path.clone();
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(".tmp");
        let tmp = path.with_file_name(tmp_name);
        // Small and rare; a lost write only makes the next check less strict.
        let write = move || {
            if let Err(e) =
                std::fs::write(&tmp, highest.to_string()).and_then(|()| std::fs::rename(&tmp, &path))
            {
                tracing::debug!(error = %e, "the store's witness file could not be written");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(write)),
            Err(_) => write(),
        }
    }
}

fn went_backwards(backend: &'static str, seen: u64, now: u64) {
    tracing::error!(
        backend,
        highest_seen = seen,
        revision_now = now,
        "the correlation store went backwards: it issued revision {seen} before and {now} now, so it has \
         lost writes it had acknowledged (restored from an older copy, or a server that lost data). \
         Incidents acted on since may be acted on again; SCWM's licensePlate dedup and the reconciler \
         converge them"
    );
    crate::observe::store_rollback(backend);
}

impl CorrelationStore for Witnessed {
    fn get<'a>(&'a self, key: &'a CorrelationKey) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        async move {
            let got = self.inner.get(key).await?;
            if let Some(v) = &got {
                self.saw(v.revision);
            }
            Ok(got)
        }
        .boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a CorrelationKey,
        value: Bytes,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        async move {
            let before = self.highest.load(Ordering::Acquire);
            let revision = self.inner.put(key, value, expected).await?;
            self.wrote(before, revision);
            Ok(revision)
        }
        .boxed()
    }

    fn outbox_identity(&self) -> Option<usize> {
        self.inner.outbox_identity()
    }

    fn put_with<'a>(
        &'a self,
        key: &'a CorrelationKey,
        value: Bytes,
        expected: Option<Revision>,
        entries: Vec<(String, Bytes)>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        async move {
            let before = self.highest.load(Ordering::Acquire);
            let revision = self.inner.put_with(key, value, expected, entries).await?;
            self.wrote(before, revision);
            Ok(revision)
        }
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        key: &'a CorrelationKey,
        expected: Revision,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.inner.delete(key, expected)
    }

    fn scan(&self) -> BoxFuture<'_, Result<Vec<Versioned>, StoreError>> {
        async move {
            let all = self.inner.scan().await?;
            if let Some(max) = all.iter().map(|v| v.revision).max() {
                self.saw(max);
            }
            Ok(all)
        }
        .boxed()
    }

    fn scan_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>> {
        async move {
            let page = self.inner.scan_page(after, limit).await?;
            if let Some(max) = page.0.iter().map(|v| v.revision).max() {
                self.saw(max);
            }
            Ok(page)
        }
        .boxed()
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    fn key(k: &str) -> CorrelationKey {
        CorrelationKey::new(k)
    }

    #[tokio::test]
    async fn a_store_restored_from_an_older_copy_is_noticed_when_it_opens_and_when_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let witness_file = dir.path().join("store.redb.witness");
        let open = |path: PathBuf| async move {
            let store =
                tokio::task::spawn_blocking(move || EmbeddedStore::open(path)).await.unwrap().unwrap();
            let last = store.last_revision().unwrap();
            (Arc::new(store) as Arc<dyn CorrelationStore>, last)
        };
        let (store, last) = open(path.clone()).await;
        let watched = Witnessed::new(store, last, Some(witness_file.clone()));
        let r1 = watched.put(&key("a"), Bytes::from_static(b"1"), None).await.unwrap();
        drop(watched);
        let copy = dir.path().join("older.redb");
        std::fs::copy(&path, &copy).unwrap();

        let (store, last) = open(path.clone()).await;
        let watched = Witnessed::new(store, last, Some(witness_file.clone()));
        let r2 = watched.put(&key("a"), Bytes::from_static(b"2"), Some(r1)).await.unwrap();
        let _r3 = watched.put(&key("b"), Bytes::from_static(b"3"), None).await.unwrap();
        assert!(r2 > r1);
        // The file is written at most once a second, and at most a second after a write.
        tokio::time::timeout(Duration::from_secs(5), async {
            while std::fs::read_to_string(&witness_file).ok().as_deref() != Some("3") {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the witness file catches up");
        drop(watched);

        // The older copy comes back, as after a power failure that lost the last writes.
        std::fs::copy(&copy, &path).unwrap();
        let before = rollbacks();
        let (store, last) = open(path.clone()).await;
        assert!(last < 3);
        let watched = Witnessed::new(store, last, Some(witness_file.clone()));
        assert_eq!(rollbacks() - before, 1, "noticed when it opened");
        drop(watched);
    }

    #[tokio::test]
    async fn revisions_seen_while_a_write_is_under_way_are_no_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store =
            Arc::new(tokio::task::spawn_blocking(move || EmbeddedStore::open(path)).await.unwrap().unwrap());
        let watched = Witnessed::new(store, 0, None);
        let before = rollbacks();
        // Issued when nothing larger was seen; another writer's later revision read meanwhile.
        let seen_before = watched.highest.load(Ordering::Acquire);
        watched.saw(1_000);
        watched.wrote(seen_before, 5);
        assert_eq!(rollbacks() - before, 0);
        assert_eq!(watched.highest.load(Ordering::Acquire), 1_000);
    }

    #[tokio::test]
    async fn a_write_answered_with_a_revision_already_seen_is_a_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let store =
            Arc::new(tokio::task::spawn_blocking(move || EmbeddedStore::open(path)).await.unwrap().unwrap());
        let watched = Witnessed::new(store, 0, None);
        watched.saw(100);
        let before = rollbacks();
        watched.put(&key("a"), Bytes::from_static(b"1"), None).await.unwrap();
        assert_eq!(rollbacks() - before, 1);
        // Counted once: later writes go on from the store's present.
        watched.put(&key("b"), Bytes::from_static(b"1"), None).await.unwrap();
        assert_eq!(rollbacks() - before, 1);
    }

    /// Rollbacks noticed in this process so far.
    pub(super) fn rollbacks() -> u64 {
        crate::observe::store_rollbacks_noticed()
    }
}
