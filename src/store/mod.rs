//! The correlation store: which SCWM item (and what state of it) each correlation key maps to,
//! kept across restarts and, with JetStream KV, shared by several replicas.
//!
//! This module owns the [`CorrelationStore`] trait, its compare-and-swap contract and its two
//! backends: [`EmbeddedStore`] (a redb file; the default; one replica) and [`JetStreamKvStore`]
//! (a NATS JetStream key-value bucket; any number of replicas). It stores opaque bytes under a
//! key and knows nothing of what they mean: the record format, and the claim/finish protocol
//! built on the compare-and-swap, belong to the caller. It must not retry, sleep or log errors
//! it returns: the caller decides from [`StoreError::kind`] and [`StoreError::is_retryable`].

pub mod binding;
mod config;
mod embedded;
mod kv;
pub mod witness;

use std::sync::Arc;

use bytes::Bytes;
use futures::{FutureExt, future::BoxFuture};

pub use config::{BackendConfig, Durability, EmbeddedOptions, OnScwmChange, RawStore, StoreConfig, build};
pub use embedded::EmbeddedStore;
pub use kv::{JetStreamKvStore, kv_key};

use crate::ids::CorrelationKey;

/// The version of a key's value. Every successful [`CorrelationStore::put`] returns a new one.
///
/// Revisions are issued by the store, never by the caller, and are unique across the whole store
/// (not only per key): each one is larger than every revision the store issued before it, also
/// across a delete and a re-create of the same key. `0` is never issued.
pub type Revision = u64;

/// A value together with the revision it was written at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    pub value: Bytes,
    pub revision: Revision,
}

/// Why a store call failed. Decide on [`StoreError::kind`] and [`StoreError::is_retryable`],
/// never on the message text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The expected revision did not match: another writer changed the key first (or the key
    /// has a value where none was expected, or none where one was). Nothing was written.
    /// Repeating the same call cannot succeed: re-read with [`CorrelationStore::get`] and
    /// decide again.
    #[error("the key was changed by another writer")]
    Conflict,

    /// The backend cannot be reached or did not answer in time (I/O error, NATS down, timeout,
    /// a database file another process holds). Retry later.
    ///
    /// For `put` and `delete` the outcome is **unknown**: the write may have been applied (a
    /// NATS publish whose acknowledgement was lost, for example). Re-read before deciding; a
    /// retry with the same expected revision returns [`StoreError::Conflict`] if the first
    /// attempt did land.
    #[error("correlation store unavailable: {0}")]
    Unavailable(String),

    /// The stored data cannot be read back as the store wrote it. Not retryable.
    #[error("correlation store data is corrupt: {0}")]
    Corrupt(String),

    /// The backend refuses the call and will refuse it again as it is: a value larger than the
    /// backend accepts, a bucket that does not exist while `create_bucket = false`, a database
    /// path whose directory does not exist, `jetstream-kv` without a NATS connection. Not
    /// retryable: fix the input or the configuration.
    #[error("correlation store refused the request: {0}")]
    Invalid(String),
}

impl StoreError {
    /// Whether the same call may succeed later without anything else changing. Only
    /// [`StoreError::Unavailable`] is; a [`StoreError::Conflict`] needs a fresh read first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }

    /// A bounded label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Conflict => "conflict",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Invalid(_) => "invalid",
        }
    }
}

/// A page of a walk through the store: its values, and the key to go on after (`None`: the
/// walk is over).
pub type ScanPage = (Vec<Versioned>, Option<String>);

/// A key-value store with compare-and-swap on every write.
///
/// # Contract
/// A key either has a value (with its [`Revision`]) or has none: never written, or deleted.
/// Every write names what it expects the key to hold now and fails with
/// [`StoreError::Conflict`] — writing nothing — when that is not so. Two writers racing from
/// the same state: exactly one succeeds. A successful write is durable when the call returns
/// (fsynced to the redb file; stored by the JetStream bucket's replicas).
///
/// Only pass revisions this store returned from [`get`](Self::get) or [`put`](Self::put).
///
/// # The claim/finish protocol
/// The caller keeps a record per correlation key (for example JSON: state, SCWM item id,
/// claimant, claim deadline) and uses the compare-and-swap to make sure one replica at a time
/// acts on a key:
/// 1. **read**: `get(key)` gives the record and its revision `r` (or none: `r` is "absent").
/// 2. **decide** from the record what to do (create an incident, edit item X, nothing).
/// 3. **claim**: `put(key, record marked "in progress by me until T", expected = r)` gives the
///    claim revision `c`. A [`StoreError::Conflict`] means another replica changed the key
///    between 1 and 3: go back to 1.
/// 4. **call SCWM**.
/// 5. **finish**: `put(key, record with the result, expected = c)`. A Conflict here means
///    someone took over the claim (for example after its deadline, `claim_ttl`, passed): go
///    back to 1 and reconcile, do not overwrite.
///
/// After [`StoreError::Unavailable`] on a write, the write may or may not have happened: go
/// back to 1 rather than assume either.
///
/// The trait is object-safe: use it as `Arc<dyn CorrelationStore>`.
pub trait CorrelationStore: Send + Sync + 'static {
    /// The current value and its revision, or `None` when the key has no value (never written,
    /// or deleted).
    fn get<'a>(&'a self, key: &'a CorrelationKey) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>>;

    /// Writes `value` only if the key's current revision is `expected` (`None`: only if the key
    /// has no value now — also true after a delete). Returns the new revision, larger than any
    /// issued before. [`StoreError::Conflict`] when another writer got there first.
    fn put<'a>(
        &'a self,
        key: &'a CorrelationKey,
        value: Bytes,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>>;

    /// Removes the value only if the key's current revision is `expected`;
    /// [`StoreError::Conflict`] otherwise, including when the key has no value.
    fn delete<'a>(
        &'a self,
        key: &'a CorrelationKey,
        expected: Revision,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Every value the store holds now, with its revision, in no particular order: what a
    /// background walk (the reconciler) reads. Not a snapshot of one instant with JetStream KV,
    /// whose keys are listed and then read one by one; a key changed meanwhile shows its newer
    /// value, and a compare-and-swap on what was read then fails, as it should.
    fn scan(&self) -> BoxFuture<'_, Result<Vec<Versioned>, StoreError>>;

    /// One page of a walk through every value: at most `limit` values after the key `after`
    /// (`None`: from the start), in the store's key order, and the key to go on after, `None`
    /// when the walk is over. A walk that runs again and again (the reconciler, the sweep for
    /// holds) uses pages so that it never holds the whole store in memory. The default gives
    /// everything [`CorrelationStore::scan`] reads as one page.
    fn scan_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> BoxFuture<'a, Result<ScanPage, StoreError>> {
        let _ = limit;
        async move {
            if after.is_some() {
                return Ok((Vec::new(), None));
            }
            Ok((self.scan().await?, None))
        }
        .boxed()
    }

    /// A bounded label: `"embedded"` or `"jetstream-kv"`.
    fn backend(&self) -> &'static str;

    /// The outbox this store writes together with its values ([`CorrelationStore::put_with`]),
    /// when it has one: the same as that outbox's [`Outbox::identity`]. `None` (the default)
    /// when a value and an outbox entry cannot be one write.
    fn outbox_identity(&self) -> Option<usize> {
        None
    }

    /// [`CorrelationStore::put`], adding `entries` (id, entry) to the outbox named by
    /// [`CorrelationStore::outbox_identity`] in the same durable write, whether or not the
    /// compare-and-swap succeeds: what the entries report has happened either way. Only called
    /// when `outbox_identity` is `Some`.
    fn put_with<'a>(
        &'a self,
        key: &'a CorrelationKey,
        value: Bytes,
        expected: Option<Revision>,
        entries: Vec<(String, Bytes)>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        let _ = (key, value, expected, entries);
        Box::pin(futures::future::ready(Err(StoreError::Unavailable(format!(
            "the {} store cannot write outbox entries with its values",
            self.backend()
        )))))
    }
}

/// A durable queue of messages to publish (result events and dead letters on NATS), in the
/// order of their ids, which the caller chooses so that they sort by when they were added (a
/// monotonic ULID). An entry is written before the pipeline moves on from what it reports and
/// removed once NATS has it, so nothing the bridge reported is lost to a crash or to NATS being
/// away. Entries too large to publish whole are kept whole apart ([`Outbox::keep`]) once they
/// have gone out cut to fit. Opaque bytes, like the correlation store: the entry format belongs
/// to the caller.
// `len` is a count read from the store, not a collection's size: an `is_empty` would only
// repeat it.
#[allow(clippy::len_without_is_empty)]
pub trait Outbox: Send + Sync + 'static {
    /// Adds entry `id`, durable when the call returns.
    fn push<'a>(&'a self, id: &'a str, entry: Bytes) -> BoxFuture<'a, Result<(), StoreError>>;

    /// The first `limit` entries in id order.
    fn peek(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>>;

    /// How many entries wait.
    fn len(&self) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Removes entry `id` (published); removing an absent one is not an error.
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Moves entry `id` out of the queue into the kept entries, as `entry`.
    fn keep<'a>(&'a self, id: &'a str, entry: Bytes) -> BoxFuture<'a, Result<(), StoreError>>;

    /// A kept entry.
    fn kept<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;

    /// The largest entry the backend takes (a KV value is bounded by the server's
    /// `max_payload`); the caller makes what it pushes fit.
    fn max_entry(&self) -> usize {
        usize::MAX
    }

    /// Names this outbox for a correlation store that can write into it together with its
    /// values ([`CorrelationStore::outbox_identity`]); `None` (the default) when none can.
    fn identity(&self) -> Option<usize> {
        None
    }
}

/// Dead letters kept for people to look at and replay (`incident-bridge dlq`): opaque entries
/// by id, bounded. An entry written again under its id replaces the old one (the caller names a
/// message the same way each time it is dead-lettered).
pub trait DeadLetterStore: Send + Sync + 'static {
    /// Writes entry `id`; then, past `limit` entries, drops the ones written longest ago.
    fn put_letter<'a>(
        &'a self,
        id: &'a str,
        entry: Bytes,
        limit: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Every entry, in no particular order.
    fn letters(&self) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>>;
    fn letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>>;
    /// Removing an absent one is not an error.
    fn remove_letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// The store and its outbox, which share one backend (one redb file, one set of KV buckets).
#[derive(Clone)]
pub struct Opened {
    pub store: Arc<dyn CorrelationStore>,
    pub outbox: Arc<dyn Outbox>,
    pub dead_letters: Arc<dyn DeadLetterStore>,
}

/// Opens the configured backend. `nats` is the bridge's NATS connection, required by
/// `jetstream-kv` and ignored by `embedded`.
pub async fn open(
    config: &StoreConfig,
    nats: Option<async_nats::Client>,
) -> Result<Arc<dyn CorrelationStore>, StoreError> {
    open_with_outbox(config, nats).await.map(|o| o.store)
}

/// Opens the configured backend, with its outbox.
pub async fn open_with_outbox(
    config: &StoreConfig,
    nats: Option<async_nats::Client>,
) -> Result<Opened, StoreError> {
    match &config.backend {
        BackendConfig::Embedded { path, temporary, options } => {
            let (path, temporary, options) = (path.clone(), *temporary, *options);
            let store = tokio::task::spawn_blocking(move || {
                if temporary {
                    EmbeddedStore::open_temporary_with(options)
                } else {
                    EmbeddedStore::open_with(path, options)
                }
            })
            .await
            .map_err(|e| StoreError::Unavailable(format!("opening the embedded store failed: {e}")))??;
            let last = store.last_revision()?;
            // A temporary store starts empty every time: nothing to remember between runs.
            let witness_file = (!temporary).then(|| witness::file_beside(store.path()));
            let store = Arc::new(store);
            let watched = witness::Witnessed::new(store.clone(), last, witness_file);
            Ok(Opened { store: watched, outbox: store.clone(), dead_letters: store })
        }
        BackendConfig::JetStreamKv { bucket, create_bucket, replicas } => {
            let Some(client) = nats else {
                return Err(StoreError::Invalid(
                    "store.backend = \"jetstream-kv\" needs a NATS connection: add a [nats] section".into(),
                ));
            };
            let store =
                JetStreamKvStore::open(client, bucket, *create_bucket, *replicas, config.timeout).await?;
            let store = Arc::new(store);
            // Revisions seen while running: a server that loses acknowledged writes is noticed.
            let watched = witness::Witnessed::new(store.clone(), 0, None);
            Ok(Opened { store: watched, outbox: store.clone(), dead_letters: store })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unavailable_is_retryable() {
        assert!(StoreError::Unavailable("down".into()).is_retryable());
        assert!(!StoreError::Conflict.is_retryable());
        assert!(!StoreError::Corrupt("bad".into()).is_retryable());
        assert!(!StoreError::Invalid("too large".into()).is_retryable());
    }

    #[test]
    fn kinds_are_bounded_labels() {
        let kinds = [
            StoreError::Conflict.kind(),
            StoreError::Unavailable(String::new()).kind(),
            StoreError::Corrupt(String::new()).kind(),
            StoreError::Invalid(String::new()).kind(),
        ];
        assert_eq!(kinds, ["conflict", "unavailable", "corrupt", "invalid"]);
    }

    #[test]
    fn the_trait_is_object_safe() {
        fn takes(_: Option<Arc<dyn CorrelationStore>>) {}
        takes(None);
    }
}
