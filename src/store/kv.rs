//! The JetStream KV correlation store: a NATS key-value bucket that any number of replicas share.
//!
//! It owns the mapping of [`CorrelationStore`] calls onto the bucket, the encoding of correlation
//! keys into KV keys, and the mapping of async-nats error kinds to [`StoreError`]. Revisions are
//! the KV entry revisions (the bucket stream's sequence numbers): unique across the bucket and
//! increasing, also across a delete and a re-create.
//!
//! - `put(None)` publishes with "expected last subject sequence = 0" (the key has no message);
//!   when the key's last message is a delete or purge marker, it publishes again expecting that
//!   marker's revision. async-nats' own `Store::create` does the same, but reports a lost
//!   acknowledgement as "already exists"; doing it here keeps a timeout an
//!   [`StoreError::Unavailable`].
//! - `put(Some(r))` is KV `update(key, value, r)`; `delete(r)` is `delete_expect_revision`.
//!   "Wrong last sequence" is recognised by its error kind and becomes [`StoreError::Conflict`].
//! - Delete and purge markers read as "no value".
//! - Every call is bounded by the configured timeout.
//!
//! Durability: a write returns once the bucket's stream has stored it (on a majority of its
//! replicas). nats-server flushes file storage to disk on an interval (`sync_interval`, two
//! minutes by default), so with one server an acknowledged write survives a restart or a kill of
//! the server process but not necessarily a crash of its machine; run the bucket with three
//! replicas, or the server with `sync_interval: always`, where that matters.
//!
//! It must not create the bucket unless asked to, and must not retry: a retry of an unacknowledged
//! write is the caller's decision (see [`StoreError::Unavailable`]).

use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::GetStreamErrorKind,
    kv::{self, EntryError, Operation, UpdateError, UpdateErrorKind},
    stream::StorageType,
};
use base64::Engine;
use bytes::Bytes;
use futures::{FutureExt, TryStreamExt, future::BoxFuture};
use sha2::{Digest, Sha256};

use super::{CorrelationStore, Outbox, Revision, StoreError, Versioned};
use crate::ids::CorrelationKey;

/// Correlation keys up to this many bytes are stored under their reversible encoding; longer
/// ones under a digest, so that no KV subject comes near the NATS protocol's line limit (4 KiB by
/// default, past which the server closes the whole connection).
const MAX_ENCODED_KEY_BYTES: usize = 512;
/// Room left in the server's `max_payload` for the headers a write carries.
const HEADER_ALLOWANCE: usize = 256;

/// The KV key a correlation key is stored under.
///
/// KV keys allow only `[-/_=.a-zA-Z0-9]` and no leading or trailing dot, while correlation keys
/// contain `:` and arbitrary text, so the key's UTF-8 bytes are encoded as base64url without
/// padding (alphabet `[-_a-zA-Z0-9]`): `"am:group/1"` is stored as `YW06Z3JvdXAvMQ`. It is
/// reversible and distinct keys never collide. Two special cases, neither of which the encoding
/// can produce otherwise: the empty key is stored as `=`, and a key longer than 512 bytes as
/// `sha256.` followed by the base64url digest of its bytes (not reversible; a walk of the store
/// takes each key from its record, not from its name).
pub fn kv_key(key: &CorrelationKey) -> String {
    let raw = key.as_str().as_bytes();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if raw.is_empty() {
        "=".to_owned()
    } else if raw.len() <= MAX_ENCODED_KEY_BYTES {
        b64.encode(raw)
    } else {
        format!("sha256.{}", b64.encode(Sha256::digest(raw)))
    }
}

/// A correlation store in a JetStream key-value bucket. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamKvStore {
    kv: kv::Store,
    /// `<bucket>-outbox`: the outbox's entries, by id.
    outbox: kv::Store,
    /// `<bucket>-kept`: outbox entries kept whole after they went out cut to fit.
    kept: kv::Store,
    client: async_nats::Client,
    timeout: Duration,
    /// The bucket's own value limit, when it has one.
    bucket_max_value: Option<usize>,
}

impl std::fmt::Debug for JetStreamKvStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamKvStore")
            .field("bucket", &self.kv.name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Bucket names the KV API accepts.
pub(super) fn is_valid_bucket(bucket: &str) -> bool {
    !bucket.is_empty() && bucket.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl JetStreamKvStore {
    /// Opens `bucket` on `client`'s JetStream, creating it when it does not exist and `create`
    /// is set (history 1, file storage, `replicas` copies). `timeout` bounds this call and every
    /// later one.
    ///
    /// A missing bucket with `create = false` is [`StoreError::Invalid`]; no answer from NATS is
    /// [`StoreError::Unavailable`].
    pub async fn open(
        client: async_nats::Client,
        bucket: &str,
        create: bool,
        replicas: usize,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        if !is_valid_bucket(bucket) {
            return Err(StoreError::Invalid(format!(
                "`{bucket}` is not a KV bucket name (letters, digits, `_` and `-`)"
            )));
        }
        let mut js = jetstream::new(client.clone());
        js.set_timeout(timeout);
        let kv = bounded(timeout, open_bucket(&js, bucket, create, replicas)).await?;
        // The outbox's buckets go with the store's: created with it, or expected beside it.
        let outbox =
            bounded(timeout, open_bucket(&js, &format!("{bucket}-outbox"), create, replicas)).await?;
        let kept = bounded(timeout, open_bucket(&js, &format!("{bucket}-kept"), create, replicas)).await?;
        let bucket_max_value =
            usize::try_from(kv.stream.cached_info().config.max_message_size).ok().filter(|&max| max > 0);
        Ok(Self { kv, outbox, kept, client, timeout, bucket_max_value })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.kv.name
    }

    /// The largest value a put accepts now: the connected server's `max_payload` (1 MiB by
    /// default) less room for headers, or the bucket's own limit if smaller.
    pub fn max_value_len(&self) -> usize {
        let by_server = self.client.max_payload().saturating_sub(HEADER_ALLOWANCE);
        self.bucket_max_value.map_or(by_server, |b| b.min(by_server))
    }

    async fn create(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        match self.kv.update(key, value.clone(), 0).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                // The key has a message: a value (conflict) or a delete/purge marker, after which
                // the key counts as absent and may be created again.
                match self.kv.entry(key).await.map_err(entry_error)? {
                    Some(kv::Entry { operation: Operation::Delete | Operation::Purge, revision, .. }) => {
                        self.kv.update(key, value, revision).await.map_err(update_error)
                    }
                    _ => Err(StoreError::Conflict),
                }
            }
            Err(e) => Err(update_error(e)),
        }
    }
}

async fn open_bucket(
    js: &jetstream::Context,
    bucket: &str,
    create: bool,
    replicas: usize,
) -> Result<kv::Store, StoreError> {
    let get = |e: jetstream::context::KeyValueError| {
        StoreError::Unavailable(format!("cannot open KV bucket `{bucket}`: {e}"))
    };
    match js.get_stream(format!("KV_{bucket}")).await {
        Ok(_) => js.get_key_value(bucket).await.map_err(get),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(je)
                if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                if !create {
                    return Err(StoreError::Invalid(format!(
                        "KV bucket `{bucket}` does not exist and store.create_bucket is false: create it \
                         (e.g. `nats kv add {bucket} --history 1 --storage file`) or set create_bucket = true"
                    )));
                }
                let config = kv::Config {
                    bucket: bucket.to_owned(),
                    description: "incident-bridge correlation store".into(),
                    history: 1,
                    storage: StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                };
                match js.create_key_value(config).await {
                    Ok(kv) => Ok(kv),
                    // Another replica may have created it meanwhile, with other settings.
                    Err(create_err) => js.get_key_value(bucket).await.map_err(|_| {
                        StoreError::Unavailable(format!("cannot create KV bucket `{bucket}`: {create_err}"))
                    }),
                }
            }
            _ => Err(StoreError::Unavailable(format!("cannot look up KV bucket `{bucket}`: {e}"))),
        },
    }
}

/// Bounds `fut` by `timeout`.
async fn bounded<T>(
    timeout: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(timeout, fut).await.unwrap_or_else(|_| {
        Err(StoreError::Unavailable(format!(
            "no answer from NATS within {}",
            humantime::format_duration(timeout)
        )))
    })
}

fn update_error(e: UpdateError) -> StoreError {
    match e.kind() {
        UpdateErrorKind::WrongLastRevision => StoreError::Conflict,
        UpdateErrorKind::InvalidKey => StoreError::Invalid(e.to_string()),
        UpdateErrorKind::TimedOut | UpdateErrorKind::Other => StoreError::Unavailable(with_source(&e)),
    }
}

fn entry_error(e: EntryError) -> StoreError {
    match e.kind() {
        kv::EntryErrorKind::InvalidKey => StoreError::Invalid(e.to_string()),
        kv::EntryErrorKind::TimedOut | kv::EntryErrorKind::Other => StoreError::Unavailable(with_source(&e)),
    }
}

/// The error and its source: async-nats' kinds print as "other error" without it.
fn with_source(e: &dyn std::error::Error) -> String {
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

impl CorrelationStore for JetStreamKvStore {
    fn get<'a>(&'a self, key: &'a CorrelationKey) -> BoxFuture<'a, Result<Option<Versioned>, StoreError>> {
        let key = kv_key(key);
        bounded(self.timeout, async move {
            let entry = self.kv.entry(key).await.map_err(entry_error)?;
            Ok(entry.and_then(|e| match e.operation {
                Operation::Put => Some(Versioned { value: e.value, revision: e.revision }),
                Operation::Delete | Operation::Purge => None,
            }))
        })
        .boxed()
    }

    fn put<'a>(
        &'a self,
        key: &'a CorrelationKey,
        value: Bytes,
        expected: Option<Revision>,
    ) -> BoxFuture<'a, Result<Revision, StoreError>> {
        let key = kv_key(key);
        bounded(self.timeout, async move {
            let max = self.max_value_len();
            if value.len() > max {
                return Err(StoreError::Invalid(format!(
                    "a value of {} bytes is larger than the {max} bytes the KV bucket accepts",
                    value.len()
                )));
            }
            match expected {
                None => self.create(&key, value).await,
                // Expected sequence 0 means "no message" to JetStream; no value has revision 0.
                Some(0) => Err(StoreError::Conflict),
                Some(revision) => self.kv.update(&key, value, revision).await.map_err(update_error),
            }
        })
        .boxed()
    }

    fn delete<'a>(
        &'a self,
        key: &'a CorrelationKey,
        expected: Revision,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        let key = kv_key(key);
        bounded(self.timeout, async move {
            if expected == 0 {
                return Err(StoreError::Conflict);
            }
            self.kv.delete_expect_revision(&key, Some(expected)).await.map_err(update_error)
        })
        .boxed()
    }

    fn scan(&self) -> BoxFuture<'_, Result<Vec<Versioned>, StoreError>> {
        async move {
            let keys: Vec<String> = bounded(self.timeout, async {
                let keys = self
                    .kv
                    .keys()
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("listing keys: {e}")))?;
                keys.try_collect::<Vec<String>>()
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("listing keys: {e}")))
            })
            .await?;
            let mut values = Vec::with_capacity(keys.len());
            for key in keys {
                let entry =
                    bounded(self.timeout, async { self.kv.entry(&key).await.map_err(entry_error) }).await?;
                if let Some(e) = entry
                    && e.operation == Operation::Put
                {
                    values.push(Versioned { value: e.value, revision: e.revision });
                }
            }
            Ok(values)
        }
        .boxed()
    }

    fn backend(&self) -> &'static str {
        "jetstream-kv"
    }
}

impl Outbox for JetStreamKvStore {
    fn push<'a>(&'a self, id: &'a str, entry: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        bounded(self.timeout, async move {
            let max = self.max_value_len();
            if entry.len() > max {
                return Err(StoreError::Invalid(format!(
                    "an outbox entry of {} bytes is larger than the {max} bytes the KV bucket accepts",
                    entry.len()
                )));
            }
            self.outbox.put(id, entry).await.map(|_| ()).map_err(|e| StoreError::Unavailable(with_source(&e)))
        })
        .boxed()
    }

    fn peek(&self, limit: usize) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>> {
        bounded(self.timeout, async move {
            let unavailable = |e: &dyn std::error::Error| StoreError::Unavailable(with_source(e));
            let mut ids: Vec<String> = Vec::new();
            let mut keys = self.outbox.keys().await.map_err(|e| unavailable(&e))?;
            while let Some(key) = futures::StreamExt::next(&mut keys).await {
                ids.push(key.map_err(|e| unavailable(&e))?);
            }
            ids.sort();
            let mut out = Vec::new();
            for id in ids.into_iter().take(limit) {
                if let Some(entry) = self.outbox.get(&id).await.map_err(|e| unavailable(&e))? {
                    out.push((id, entry));
                }
            }
            Ok(out)
        })
        .boxed()
    }

    fn len(&self) -> BoxFuture<'_, Result<usize, StoreError>> {
        bounded(self.timeout, async move {
            let mut keys = self.outbox.keys().await.map_err(|e| StoreError::Unavailable(with_source(&e)))?;
            let mut n = 0;
            while let Some(key) = futures::StreamExt::next(&mut keys).await {
                key.map_err(|e| StoreError::Unavailable(with_source(&e)))?;
                n += 1;
            }
            Ok(n)
        })
        .boxed()
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        bounded(self.timeout, async move {
            self.outbox.delete(id).await.map_err(|e| StoreError::Unavailable(with_source(&e)))
        })
        .boxed()
    }

    fn keep<'a>(&'a self, id: &'a str, entry: Bytes) -> BoxFuture<'a, Result<(), StoreError>> {
        bounded(self.timeout, async move {
            // A KV value is bounded by the server's max_payload: what does not fit is kept cut,
            // with the marker the relay put in it.
            let max = self.max_value_len();
            let entry = if entry.len() > max { entry.slice(..max) } else { entry };
            self.kept.put(id, entry).await.map_err(|e| StoreError::Unavailable(with_source(&e)))?;
            self.outbox.delete(id).await.map_err(|e| StoreError::Unavailable(with_source(&e)))
        })
        .boxed()
    }

    fn max_entry(&self) -> usize {
        self.max_value_len()
    }

    fn kept<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        bounded(self.timeout, async move {
            self.kept.get(id).await.map_err(|e| StoreError::Unavailable(with_source(&e)))
        })
        .boxed()
    }
}

/// Dead letters live in the `<bucket>-kept` bucket beside the outbox's kept entries, under keys
/// of their own (`dlq.<id>`), so no bucket is added to a deployment that made its buckets by
/// hand. The bucket's revisions order them, to drop the ones written longest ago.
const LETTER_PREFIX: &str = "dlq.";

impl super::DeadLetterStore for JetStreamKvStore {
    fn put_letter<'a>(
        &'a self,
        id: &'a str,
        entry: Bytes,
        limit: usize,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        bounded(self.timeout, async move {
            let max = self.max_value_len();
            let entry = if entry.len() > max { entry.slice(..max) } else { entry };
            let unavailable = |e: &dyn std::error::Error| StoreError::Unavailable(with_source(e));
            self.kept.put(format!("{LETTER_PREFIX}{id}"), entry).await.map_err(|e| unavailable(&e))?;
            let keys = self.letter_keys().await?;
            if keys.len() > limit {
                let mut by_age = Vec::with_capacity(keys.len());
                for k in keys {
                    if let Some(e) = self.kept.entry(&k).await.map_err(entry_error)? {
                        by_age.push((e.revision, k));
                    }
                }
                by_age.sort_unstable();
                let excess = by_age.len().saturating_sub(limit);
                for (_, k) in by_age.into_iter().take(excess) {
                    self.kept.purge(&k).await.map_err(|e| unavailable(&e))?;
                }
            }
            Ok(())
        })
        .boxed()
    }

    fn letters(&self) -> BoxFuture<'_, Result<Vec<(String, Bytes)>, StoreError>> {
        bounded(self.timeout, async move {
            let mut out = Vec::new();
            for key in self.letter_keys().await? {
                if let Some(v) =
                    self.kept.get(&key).await.map_err(|e| StoreError::Unavailable(with_source(&e)))?
                {
                    out.push((key[LETTER_PREFIX.len()..].to_owned(), v));
                }
            }
            Ok(out)
        })
        .boxed()
    }

    fn letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Bytes>, StoreError>> {
        bounded(self.timeout, async move {
            self.kept
                .get(format!("{LETTER_PREFIX}{id}"))
                .await
                .map_err(|e| StoreError::Unavailable(with_source(&e)))
        })
        .boxed()
    }

    fn remove_letter<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        bounded(self.timeout, async move {
            self.kept
                .purge(format!("{LETTER_PREFIX}{id}"))
                .await
                .map_err(|e| StoreError::Unavailable(with_source(&e)))
        })
        .boxed()
    }
}

impl JetStreamKvStore {
    async fn letter_keys(&self) -> Result<Vec<String>, StoreError> {
        let keys =
            self.kept.keys().await.map_err(|e| StoreError::Unavailable(format!("listing keys: {e}")))?;
        let keys: Vec<String> =
            keys.try_collect().await.map_err(|e| StoreError::Unavailable(format!("listing keys: {e}")))?;
        Ok(keys.into_iter().filter(|k| k.starts_with(LETTER_PREFIX)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(encoded: &str) -> String {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).unwrap();
        String::from_utf8(bytes).unwrap()
    }

    fn is_valid_kv_key(k: &str) -> bool {
        !k.is_empty()
            && !k.starts_with('.')
            && !k.ends_with('.')
            && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
    }

    #[test]
    fn keys_are_encoded_reversibly_into_the_kv_alphabet() {
        for raw in ["am:group/1", "a b", "ünïcødé ✓", ".leading.", "x", "=", "sha256.abc"] {
            let encoded = kv_key(&CorrelationKey::new(raw));
            assert!(is_valid_kv_key(&encoded), "{raw} -> {encoded}");
            assert_eq!(decode(&encoded), raw);
        }
        assert_eq!(kv_key(&CorrelationKey::new("am:group/1")), "YW06Z3JvdXAvMQ");
    }

    #[test]
    fn the_empty_key_and_long_keys_get_forms_the_encoding_cannot_produce() {
        assert_eq!(kv_key(&CorrelationKey::new("")), "=");
        let long = "k".repeat(MAX_ENCODED_KEY_BYTES + 1);
        let encoded = kv_key(&CorrelationKey::new(long.clone()));
        assert!(encoded.starts_with("sha256.") && is_valid_kv_key(&encoded), "{encoded}");
        assert_ne!(encoded, kv_key(&CorrelationKey::new(format!("{long}k"))));
        let at_limit = "k".repeat(MAX_ENCODED_KEY_BYTES);
        assert_eq!(decode(&kv_key(&CorrelationKey::new(at_limit.clone()))), at_limit);
    }

    #[test]
    fn bucket_names_follow_the_kv_rules() {
        assert!(is_valid_bucket("incident-bridge"));
        assert!(is_valid_bucket("INCIDENTS_2"));
        assert!(!is_valid_bucket(""));
        assert!(!is_valid_bucket("a.b"));
        assert!(!is_valid_bucket("a b"));
    }
}
