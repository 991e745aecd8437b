//! The store's values as the planner's [`Record`]s, for the readers beside the pipeline's own
//! load (explain, the reconciler, store inspection): one key's record, or every record, visited
//! a page at a time so that a walk never holds the whole store.

use crate::{
    ids::CorrelationKey,
    plan::Record,
    store::{CorrelationStore, Revision, StoreError},
};

/// The key's record and its revision; `None` when the key has none. A value that is no record
/// is [`StoreError::Corrupt`].
pub(super) async fn read(
    store: &dyn CorrelationStore,
    key: &CorrelationKey,
) -> Result<Option<(Record, Revision)>, StoreError> {
    let Some(v) = store.get(key).await? else { return Ok(None) };
    let record = serde_json::from_slice(&v.value)
        .map_err(|e| StoreError::Corrupt(format!("record for {key}: {e}")))?;
    Ok(Some((record, v.revision)))
}

/// Every key whose record holds a notification back, and when it is due.
///
/// The holds sweep runs this over every key, at most every [`crate::intake::holds::SWEEP_EVERY`],
/// and few keys hold anything: a value whose bytes do not name the field is passed over
/// unparsed, and the others are read for their key and due time only, not parsed whole.
pub(super) async fn holds(store: &dyn CorrelationStore) -> Result<Vec<(CorrelationKey, u64)>, StoreError> {
    #[derive(serde::Deserialize)]
    struct HeldOf {
        key: Option<CorrelationKey>,
        held: Option<DueOf>,
    }
    #[derive(serde::Deserialize)]
    struct DueOf {
        due_ms: u64,
    }
    let mut holds = Vec::new();
    // serde_json writes a field's name as it is, and a record without a hold leaves the field
    // out, so only a record with one (or with a string that happens to say "held") has these.
    let names_held = memchr::memmem::Finder::new(br#""held""#);
    each_as(
        store,
        |value| names_held.find(value).is_some(),
        |r: HeldOf, _| {
            if let (Some(key), Some(held)) = (r.key, r.held) {
                holds.push((key, held.due_ms));
            }
        },
    )
    .await?;
    Ok(holds)
}

/// Records read per page of a walk: about a megabyte of values.
const PAGE: usize = 1000;

/// Calls `visit` with every record the store holds and its revision, a page at a time. Values
/// that are not records (the store's own entries: its SCWM binding, the reconciler's lease) are
/// left out.
pub(super) async fn each(
    store: &dyn CorrelationStore,
    visit: impl FnMut(Record, Revision),
) -> Result<(), StoreError> {
    each_as(store, |_| true, visit).await
}

/// [`each`] for a reader that needs only part of each record: `T` names the fields it reads
/// (serde skips the rest without building them), and `wanted` passes over values by their bytes
/// before any parsing; it may let through what then proves to be nothing, never hold back what
/// is wanted. A value that does not parse as `T` is left out, as [`each`] leaves out non-records.
pub(super) async fn each_as<T: serde::de::DeserializeOwned>(
    store: &dyn CorrelationStore,
    wanted: impl Fn(&[u8]) -> bool,
    mut visit: impl FnMut(T, Revision),
) -> Result<(), StoreError> {
    let mut after: Option<String> = None;
    loop {
        let (values, next) = store.scan_page(after.as_deref(), PAGE).await?;
        for v in values.iter().filter(|v| wanted(&v.value)) {
            if let Ok(part) = serde_json::from_slice::<T>(&v.value) {
                visit(part, v.revision);
            }
        }
        match next {
            Some(key) => after = Some(key),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{
        plan::{Held, HeldKind, hold::KeptOriginal},
        store::EmbeddedStore,
    };

    fn held(due_ms: u64) -> Held {
        Held { what: HeldKind::Flap, due_ms, original: KeptOriginal { body: "e30=".into(), headers: vec![] } }
    }

    #[tokio::test]
    async fn the_holds_are_the_keys_whose_records_hold_something() {
        let store = EmbeddedStore::open_temporary().unwrap();
        let record = |key: &str, held: Option<Held>, source: &str| Record {
            key: Some(CorrelationKey::new(key)),
            source: Some(source.into()),
            held,
            ..Record::default()
        };
        let values = [
            ("a", serde_json::to_vec(&record("a", Some(held(7)), "am")).unwrap()),
            ("quiet", serde_json::to_vec(&record("quiet", None, "am")).unwrap()),
            // Says "held" where a name could be, and holds nothing: read, and left out.
            ("named", serde_json::to_vec(&record("named", None, "held")).unwrap()),
            ("b", serde_json::to_vec(&record("b", Some(held(3)), "am")).unwrap()),
            // Not a record (as the store's own entries are not), though it names the field.
            ("~lease", br#"{"held":"by me"}"#.to_vec()),
        ];
        for (key, value) in values {
            store.put(&CorrelationKey::new(key), Bytes::from(value), None).await.unwrap();
        }
        let found = holds(&store).await.unwrap();
        let found: Vec<_> = found.iter().map(|(k, due)| (k.as_str(), *due)).collect();
        assert_eq!(found, [("a", 7), ("b", 3)], "in key order, as the store is walked");
    }
}
