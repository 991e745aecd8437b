//! The embedded store's file under redb: redb's own file backend, with the one decision
//! [`Durability`] is about, when a commit's sync reaches the disk. Every read, write and lock
//! goes to the file as redb asked.
//!
//! With `process-crash`, a commit's sync is made only when the last one is `sync_interval`
//! old (and at close). Skipping it keeps what a crash of the process needs: redb writes a
//! commit's pages before the header that names them, each write is in the kernel's page cache
//! once it returns, so a process killed at any point leaves the file as of its last header
//! write, as a power loss with every sync made would. What it gives up is the order of those
//! writes on the disk itself, which only a crash of the kernel or the machine can show.

use std::{
    ops::Bound,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use redb::{BackendError, StorageBackend, backends::FileBackend};

// What redb 4 without `experimental-api-5` returns from its file operations.
type BackendIoError = std::io::Error;

use crate::store::config::Durability;

#[derive(Debug)]
pub(super) struct SyncedFile {
    inner: FileBackend,
    durability: Durability,
    /// When the disk was last synced (process-crash only).
    last_sync: Mutex<Instant>,
    /// Syncs made, for the tests.
    syncs: AtomicU64,
}

impl SyncedFile {
    pub(super) fn new(inner: FileBackend, durability: Durability) -> Self {
        Self { inner, durability, last_sync: Mutex::new(Instant::now()), syncs: AtomicU64::new(0) }
    }

    fn sync(&self) -> Result<(), BackendIoError> {
        self.inner.sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl StorageBackend for SyncedFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        match self.durability {
            Durability::PowerLoss => self.sync(),
            Durability::ProcessCrash { sync_interval } => {
                let mut last = self.last_sync.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if last.elapsed() < sync_interval {
                    return Ok(());
                }
                self.sync()?;
                *last = Instant::now();
                Ok(())
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        // A clean close leaves nothing unsynced, whatever the durability.
        if matches!(self.durability, Durability::ProcessCrash { .. }) {
            self.sync()?;
        }
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn file(durability: Durability) -> (tempfile::TempDir, SyncedFile) {
        let dir = tempfile::tempdir().unwrap();
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.path().join("f"))
            .unwrap();
        (dir, SyncedFile::new(FileBackend::new(f).unwrap(), durability))
    }

    #[test]
    fn power_loss_syncs_every_commit() {
        let (_dir, f) = file(Durability::PowerLoss);
        for _ in 0..3 {
            f.sync_data().unwrap();
        }
        assert_eq!(f.syncs.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn process_crash_syncs_at_most_every_interval_and_at_close() {
        let (_dir, f) = file(Durability::ProcessCrash { sync_interval: Duration::from_secs(3600) });
        f.write(0, b"page").unwrap();
        for _ in 0..100 {
            f.sync_data().unwrap();
        }
        assert_eq!(f.syncs.load(Ordering::Relaxed), 0, "within the interval nothing is synced");
        let mut back = [0u8; 4];
        f.read(0, &mut back).unwrap();
        assert_eq!(&back, b"page", "what was written reads back unsynced");
        f.close().unwrap();
        assert_eq!(f.syncs.load(Ordering::Relaxed), 1, "a clean close syncs");

        let (_dir, f) = file(Durability::ProcessCrash { sync_interval: Duration::ZERO });
        f.sync_data().unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.syncs.load(Ordering::Relaxed), 2, "an interval that has passed syncs");
    }
}
