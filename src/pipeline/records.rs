//! The store's values as the planner's [`Record`]s, for the readers beside the pipeline's own
//! load (explain, the reconciler, store inspection): one key's record, or every record.

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

/// Every record the store holds, with its revision. Values that are not records (the store's
/// own entries: its SCWM binding, the reconciler's lease) are left out.
pub(super) async fn all(store: &dyn CorrelationStore) -> Result<Vec<(Record, Revision)>, StoreError> {
    Ok(store
        .scan()
        .await?
        .into_iter()
        .filter_map(|v| Some((serde_json::from_slice::<Record>(&v.value).ok()?, v.revision)))
        .collect())
}
