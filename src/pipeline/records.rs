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

/// Records read per page of a walk: about a megabyte of values.
const PAGE: usize = 1000;

/// Calls `visit` with every record the store holds and its revision, a page at a time. Values
/// that are not records (the store's own entries: its SCWM binding, the reconciler's lease) are
/// left out.
pub(super) async fn each(
    store: &dyn CorrelationStore,
    mut visit: impl FnMut(Record, Revision),
) -> Result<(), StoreError> {
    let mut after: Option<String> = None;
    loop {
        let (values, next) = store.scan_page(after.as_deref(), PAGE).await?;
        for v in values {
            if let Ok(record) = serde_json::from_slice::<Record>(&v.value) {
                visit(record, v.revision);
            }
        }
        match next {
            Some(key) => after = Some(key),
            None => return Ok(()),
        }
    }
}
