//! The embedded correlation store: one redb file on local disk, for a single replica.
//!
//! It owns the file's layout (two tables, below), the revision counter and the mapping of redb
//! errors to [`StoreError`]. redb is synchronous: a point read runs inline (microseconds, from
//! the cache), scans run on tokio's blocking pool. Writes go to one writer thread ([`writer`]), which
//! reads each key's current revision, compares it with the expected one and writes only when
//! they match, inside a redb write transaction: redb runs one at a time, so the compare-and-swap
//! is atomic. The writer commits the writes that wait together in one transaction. Commits use
//! redb's default immediate durability (fsync before the commit returns), so a write that was
//! answered survives a process kill.
//!
//! redb locks the file while it is open: a second [`EmbeddedStore::open`] of the same file, from
//! this process or another, fails with [`StoreError::Unavailable`]. The embedded store therefore
//! serves exactly one replica; several replicas need the JetStream KV backend.

use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use bytes::Bytes;
use futures::{FutureExt, future::BoxFuture};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::{CorrelationStore, Outbox, Revision, ScanPage, StoreError, Versioned, config::EmbeddedOptions};
use crate::ids::CorrelationKey;

mod backend;
mod writer;
use writer::Writer;

/// Correlation key → (revision, value).
const VALUES: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("correlation");
/// The outbox: entry id (a ULID, so ids sort by when they were added) → the message to publish.
pub(super) const OUTBOX: TableDefinition<&str, &[u8]> = TableDefinition::new("outbox");
/// Outbox entries kept whole after they were published cut to fit (dead letters too large).
pub(super) const KEPT: TableDefinition<&str, &[u8]> = TableDefinition::new("kept");
/// Dead letters by id, each with the sequence it was written at, to drop the oldest first.
const DEAD_LETTERS: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("dead_letters");
/// Store-wide counters and the file's format version.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// The last revision issued. Only grows, also across deletes, so revisions are never reused.
const LAST_REVISION: &str = "last_revision";
const DEAD_LETTER_SEQ: &str = "dead_letter_seq";
/// The layout version written into a new file, checked on open.
const FORMAT: &str = "format";
const FORMAT_VERSION: u64 = 1;

/// A correlation store in a redb file. Cheap to clone; all clones share the open file, which
/// closes when the last one is dropped.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
    writer: Arc<Writer>,
    path: Arc<PathBuf>,
    /// For a temporary store: removes its directory once the last clone is gone. Declared
    /// last, so the database and its writer are closed before.
    _temporary: Option<Arc<TemporaryDir>>,
}

/// A directory of the store's own, removed when dropped.
struct TemporaryDir(PathBuf);

impl Drop for TemporaryDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").field("path", &self.path).finish()
    }
}

impl EmbeddedStore {
    /// Opens the store file at `path`, creating the file (not its directory) when missing.
    ///
    /// Blocking: call it at start-up or on the blocking pool. Fails with
    /// [`StoreError::Invalid`] when the directory does not exist or cannot be written, with
    /// [`StoreError::Unavailable`] when another store (in this process or another) has the file
    /// open, and with [`StoreError::Corrupt`] when the file is not a store file. Every message
    /// names the path.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with(path, EmbeddedOptions::default())
    }

    /// [`EmbeddedStore::open`] with `options`: the durability of its commits and the size of
    /// redb's page cache (its default, 1 GiB, is sized for large databases; a bounded cache
    /// keeps the process within a container's memory limit).
    pub fn open_with(path: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let shown = path.display();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(StoreError::Invalid(format!(
                "cannot open the correlation store {shown}: directory {} does not exist",
                dir.display()
            )));
        }
        if path.is_dir() {
            return Err(StoreError::Invalid(format!(
                "cannot open the correlation store {shown}: it is a directory, not a file"
            )));
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|io| {
                let message = format!("cannot open the correlation store {shown}: {io}");
                if is_setup_io(&io) { StoreError::Invalid(message) } else { StoreError::Unavailable(message) }
            })?;
        let file = redb::backends::FileBackend::new(file).map_err(|e| in_file(path, map_err(e)))?;
        let backend = backend::SyncedFile::new(file, options.durability);
        let db = Database::builder()
            .set_cache_size(options.cache_bytes)
            .create_with_backend(backend)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Unavailable(format!(
                    "the correlation store {shown} is already open (by another process, or another \
                 store in this one); the embedded store serves one replica — use jetstream-kv for several"
                )),
                redb::DatabaseError::Storage(redb::StorageError::Io(io)) if is_setup_io(&io) => {
                    StoreError::Invalid(format!("cannot open the correlation store {shown}: {io}"))
                }
                other => in_file(path, map_err(other)),
            })?;
        init(&db).map_err(|e| in_file(path, e))?;
        let db = Arc::new(db);
        let writer = Arc::new(Writer::start(db.clone())?);
        Ok(Self { db, writer, path: Arc::new(path.to_owned()), _temporary: None })
    }

    /// The last revision the file issued (0 for a new one).
    pub fn last_revision(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(map_err)?;
        let meta = txn.open_table(META).map_err(map_err)?;
        Ok(meta.get(LAST_REVISION).map_err(map_err)?.map(|g| g.value()).unwrap_or(0))
    }

    /// Opens a new, empty store in a directory of its own under the system's temp directory,
    /// removed when the last clone is dropped. For trials against the in-process simulator,
    /// which forgets its incidents at exit: a store kept across runs would map keys to
    /// incidents the next run's simulator never had.
    pub fn open_temporary() -> Result<Self, StoreError> {
        Self::open_temporary_with(EmbeddedOptions::default())
    }

    /// [`EmbeddedStore::open_temporary`] with `options`.
    pub fn open_temporary_with(options: EmbeddedOptions) -> Result<Self, StoreError> {
        let dir =
            std::env::temp_dir().join(format!("incident-bridge-{}", crate::ids::LicensePlate::generate()));
        std::fs::create_dir(&dir).map_err(|e| {
            StoreError::Invalid(format!("cannot create the temporary store directory {}: {e}", dir.display()))
        })?;
        let guard = Arc::new(TemporaryDir(dir.clone()));
        let mut store = Self::open_with(dir.join("correlation.redb"), options)?;
        store._temporary = Some(guard);
        Ok(store)
    }

    /// The file this store uses.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `op` against the database on the blocking pool.
    fn blocking<T, F>(&self, op: F) -> BoxFuture<'static, Result<T, StoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || op(&db))
            .map(|joined| {
                joined.unwrap_or_else(|e| Err(StoreError::Unavailable(format!("store task failed: {e}"))))
            })
            .boxed()
    }
}

/// Errors that say the path or its permissions are wrong, not that the disk is unwell.
fn is_setup_io(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem
    )
}

/// Creates the tables of a new file and checks the format of an existing one.
fn init(db: &Database) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(map_err)?;
    {
        txn.open_table(VALUES).map_err(map_err)?;
        txn.open_table(OUTBOX).map_err(map_err)?;
        txn.open_table(KEPT).map_err(map_err)?;
        txn.open_table(DEAD_LETTERS).map_err(map_err)?;
        let mut meta = txn.open_table(META).map_err(map_err)?;
        let format = meta.get(FORMAT).map_err(map_err)?.map(|v| v.value());
        match format {
            None => {
                meta.insert(FORMAT, FORMAT_VERSION).map_err(map_err)?;
            }
            Some(FORMAT_VERSION) => {}
            Some(other) => {
                return Err(StoreError::Corrupt(format!(
                    "store format {other} is not the supported format {FORMAT_VERSION}"
                )));
            }
        }
    }
    txn.commit().map_err(map_err)
}

/// Maps a redb error by its kind.
fn map_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Corrupted(m) => StoreError::Corrupt(m),
        e @ (redb::Error::TableTypeMismatch { .. }
        | redb::Error::TableIsMultimap(_)
        | redb::Error::TableIsNotMultimap(_)
        | redb::Error::TypeDefinitionChanged { .. }
        | redb::Error::UpgradeRequired(_)) => {
            StoreError::Corrupt(format!("not a correlation store file: {e}"))
        }
        // How redb reports a file that is not a redb database at all.
        redb::Error::Io(e) if e.kind() == io::ErrorKind::InvalidData => {
            StoreError::Corrupt(format!("not a correlation store file: {e}"))
        }
        e @ redb::Error::ValueTooLarge(_) => StoreError::Invalid(e.to_string()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// `e` with the file named in its message (for errors at open).
fn in_file(path: &Path, e: StoreError) -> StoreError {
    let shown = path.display();
    match e {
        StoreError::Corrupt(m) => StoreError::Corrupt(format!("{shown}: {m}")),
        StoreError::Unavailable(m) => StoreError::Unavailable(format!("{shown}: {m}")),
        StoreError::Invalid(m) => StoreError::Invalid(format!("{shown}: {m}")),
        StoreError::Conflict => StoreError::Conflict,
    }
}

impl CorrelationStore for EmbeddedStore {
    fn get<'a>(&'a self, key: &'a CorrelationKey) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        // A point read is a few microseconds from redb's cache or the kernel's page cache:
        // handing it to the blocking pool cost more (two thread wake-ups) than the read itself.
        // Scans, which can take long, still go there.
        let read = || {
            let txn = self.db.begin_read().map_err(map_err)?;
            let table = txn.open_table(VALUES).map_err(map_err)?;
            let found = table.get(key.as_str()).map_err(map_err)?;
            Ok(found.map(|guard| {
                let (revision, value) = guard.value();
                Versioned { value: Bytes::copy_from_slice(value), revision }
            }))
        };
        futures::future::ready(read()).boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a CorrelationKey,
        value: Bytes,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        self.writer.put(key.as_str(), value, expected).boxed()
    }

    fn delete<'a>(
        &'a self,
        key: &'a CorrelationKey,
        expected: Revision,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.writer.delete(key.as_str(), expected).boxed()
    }

    fn outbox_identity(&self) -> Option<usize> {
        Some(self.identity())
    }

    fn put_with<'a>(
        &'a self,
        key: &'a CorrelationKey,
        value: Bytes,
        expected: Option<Revision>,
        entries: Vec<(String, Bytes)>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        self.writer.put_with(key.as_str(), value, expected, entries).boxed()
    }

    fn scan(&self) -> BoxFuture<'_, Result<Vec<Versioned>, StoreError>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(map_err)?;
            let table = txn.open_table(VALUES).map_err(map_err)?;
            let mut values = Vec::new();
            for row in table.iter().map_err(map_err)? {
                let (_, guard) = row.map_err(map_err)?;
                let (revision, value) = guard.value();
                values.push(Versioned { value: Bytes::copy_from_slice(value), revision });
            }
            Ok(values)
        })
    }

    fn scan_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>> {
        let after = after.map(str::to_owned);
        let limit = limit.max(1);
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(map_err)?;
            let table = txn.open_table(VALUES).map_err(map_err)?;
            let range = match &after {
                Some(a) => {
                    table.range::<&str>((std::ops::Bound::Excluded(a.as_str()), std::ops::Bound::Unbounded))
                }
                None => table.range::<&str>(..),
            }
            .map_err(map_err)?;
            let mut values = Vec::new();
            let mut last = None;
            for row in range {
                let (key, guard) = row.map_err(map_err)?;
                let (revision, value) = guard.value();
                values.push(Versioned { value: Bytes::copy_from_slice(value), revision });
                if values.len() == limit {
                    last = Some(key.value().to_owned());
                    break;
                }
            }
            Ok((values, last))
        })
    }

    fn backend(&self) -> &'static str {
        "embedded"
    }
}

impl EmbeddedStore {
    /// The open file, as both its correlation table and its outbox name it: every clone of
    /// one store has the same.
    fn identity(&self) -> usize {
        Arc::as_ptr(&self.db) as usize
    }
}

impl Outbox for EmbeddedStore {
    fn identity(&self) -> Option<usize> {
        Some(EmbeddedStore::identity(self))
    }

    fn push<'a>(&'a self, id: &'a str, entry: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        self.writer.push(id, entry).boxed()
    }

    fn peek(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(map_err)?;
            let table = txn.open_table(OUTBOX).map_err(map_err)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(map_err)?.take(limit) {
                let (id, entry) = item.map_err(map_err)?;
                out.push((id.value().to_owned(), Bytes::copy_from_slice(entry.value())));
            }
            Ok(out)
        })
    }

    fn len(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(map_err)?;
            let n = txn.open_table(OUTBOX).map_err(map_err)?.len().map_err(map_err)?;
            Ok(usize::try_from(n).unwrap_or(usize::MAX))
        })
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.writer.remove(id).boxed()
    }

    fn keep<'a>(&'a self, id: &'a str, entry: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        self.writer.keep(id, entry).boxed()
    }

    fn kept<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(map_err)?;
            let table = txn.open_table(KEPT).map_err(map_err)?;
            Ok(table.get(id.as_str()).map_err(map_err)?.map(|g| Bytes::copy_from_slice(g.value())))
        })
    }
}

impl super::DeadLetterStore for EmbeddedStore {
    fn put_letter<'a>(
        &'a self,
        id: &'a str,
        entry: Bytes,
        limit: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(map_err)?;
            {
                let mut table = txn.open_table(DEAD_LETTERS).map_err(map_err)?;
                let mut meta = txn.open_table(META).map_err(map_err)?;
                let seq = meta.get(DEAD_LETTER_SEQ).map_err(map_err)?.map_or(0, |v| v.value()) + 1;
                meta.insert(DEAD_LETTER_SEQ, seq).map_err(map_err)?;
                table.insert(id.as_str(), (seq, &entry[..])).map_err(map_err)?;
                let len = usize::try_from(table.len().map_err(map_err)?).unwrap_or(usize::MAX);
                if len > limit {
                    let mut by_age: Vec<(u64, String)> = Vec::with_capacity(len);
                    for row in table.iter().map_err(map_err)? {
                        let (k, v) = row.map_err(map_err)?;
                        by_age.push((v.value().0, k.value().to_owned()));
                    }
                    by_age.sort_unstable();
                    for (_, old) in by_age.into_iter().take(len - limit) {
                        table.remove(old.as_str()).map_err(map_err)?;
                    }
                }
            }
            txn.commit().map_err(map_err)
        })
    }

    fn letters(&self) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(map_err)?;
            let table = txn.open_table(DEAD_LETTERS).map_err(map_err)?;
            let mut out = Vec::new();
            for row in table.iter().map_err(map_err)? {
                let (k, v) = row.map_err(map_err)?;
                out.push((k.value().to_owned(), Bytes::copy_from_slice(v.value().1)));
            }
            Ok(out)
        })
    }

    fn letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(map_err)?;
            let table = txn.open_table(DEAD_LETTERS).map_err(map_err)?;
            Ok(table.get(id.as_str()).map_err(map_err)?.map(|g| Bytes::copy_from_slice(g.value().1)))
        })
    }

    fn remove_letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        let id = id.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(map_err)?;
            txn.open_table(DEAD_LETTERS).map_err(map_err)?.remove(id.as_str()).map_err(map_err)?;
            txn.commit().map_err(map_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_walk_in_pages_sees_every_value_once_and_ends() {
        let store = EmbeddedStore::open_temporary().unwrap();
        for i in 0..25 {
            let key = CorrelationKey::new(format!("k{i:02}"));
            store.put(&key, Bytes::from(format!("v{i}")), None).await.unwrap();
        }
        let (mut seen, mut after, mut pages) = (Vec::new(), None::<String>, 0);
        loop {
            let (values, next) = store.scan_page(after.as_deref(), 10).await.unwrap();
            assert!(values.len() <= 10);
            pages += 1;
            seen.extend(values.into_iter().map(|v| v.value));
            match next {
                Some(k) => after = Some(k),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        let mut expected: Vec<Bytes> = (0..25).map(|i| Bytes::from(format!("v{i}"))).collect();
        expected.sort();
        seen.sort();
        assert_eq!(seen, expected);
    }

    #[test]
    fn a_missing_directory_is_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("store.redb");
        let err = EmbeddedStore::open(&path).unwrap_err();
        assert_eq!(err.kind(), "invalid", "{err}");
        assert!(err.to_string().contains(&dir.path().join("nope").display().to_string()), "{err}");
    }

    #[test]
    fn a_file_that_is_not_a_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        std::fs::write(&path, vec![0x5a; 8192]).unwrap();
        let err = EmbeddedStore::open(&path).unwrap_err();
        assert_eq!(err.kind(), "corrupt", "{err}");
        assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    }

    #[test]
    fn a_file_of_another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert(FORMAT, 99).unwrap();
            txn.commit().unwrap();
        }
        let err = EmbeddedStore::open(&path).unwrap_err();
        assert_eq!(err.kind(), "corrupt", "{err}");
    }

    #[test]
    fn a_file_with_other_tables_types_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            let other: TableDefinition<u64, u64> = TableDefinition::new("correlation");
            txn.open_table(other).unwrap().insert(1, 2).unwrap();
            txn.commit().unwrap();
        }
        let err = EmbeddedStore::open(&path).unwrap_err();
        assert_eq!(err.kind(), "corrupt", "{err}");
    }
}
