//! What the correlation store holds, for people: one key's record, a page of keys with their
//! state, and forgetting a key. Reads go through the store's own API; the one write (forget)
//! is a compare-and-swap on the revision the caller saw, so it never drops what changed since.

use serde::Serialize;

use super::Pipeline;
use crate::{
    ids::CorrelationKey,
    lifecycle::IncidentState,
    plan::Record,
    store::{Revision, StoreError},
};

/// One key as a listing shows it.
#[derive(Debug, Clone, Serialize)]
pub struct KeySummary {
    pub key: String,
    /// `open`, `closed`, or `none` (no incident mapped, e.g. after a forget decision).
    pub state: &'static str,
    #[serde(rename = "itemId", skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// An intent is under way (or was left unfinished by a crash).
    pub pending: bool,
    /// When SCWM last confirmed the state, RFC 3339.
    #[serde(rename = "confirmedAt", skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<String>,
    pub revision: Revision,
}

/// Which keys a listing shows.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub prefix: Option<String>,
    /// `open`, `closed`, `pending`.
    pub state: Option<String>,
    /// Keys after this one (the previous page's `next`).
    pub after: Option<String>,
    pub limit: usize,
}

/// A page of keys, in key order.
#[derive(Debug, Clone, Serialize)]
pub struct Page {
    pub keys: Vec<KeySummary>,
    /// Pass as `after` for the next page; absent on the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// One key's record as stored.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRecord {
    pub key: String,
    pub revision: Revision,
    pub record: Record,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("no correlation store is configured")]
    NoStore,
    #[error("no record for key `{0}`")]
    NotFound(String),
    #[error("the key changed since revision {0}: read it again")]
    Changed(Revision),
    #[error(transparent)]
    Store(StoreError),
}

impl Pipeline {
    pub async fn store_get(&self, key: &str) -> Result<KeyRecord, InspectError> {
        let store = self.store.as_ref().ok_or(InspectError::NoStore)?;
        let found = super::records::read(store.as_ref(), &CorrelationKey::new(key))
            .await
            .map_err(InspectError::Store)?;
        let (record, revision) = found.ok_or_else(|| InspectError::NotFound(key.to_owned()))?;
        Ok(KeyRecord { key: key.to_owned(), revision, record })
    }

    pub async fn store_list(&self, filter: &Filter) -> Result<Page, InspectError> {
        let store = self.store.as_ref().ok_or(InspectError::NoStore)?;
        let summary = |record: crate::plan::Record, revision| {
            let key = record.key.as_ref()?.to_string();
            let state = match record.stored.as_ref().map(|s| s.state) {
                Some(IncidentState::Open) => "open",
                Some(IncidentState::Closed) => "closed",
                None => "none",
            };
            Some(KeySummary {
                key,
                state,
                item_id: record.stored.as_ref().map(|s| s.item_id.to_string()),
                source: record.source.clone(),
                pending: record.pending.is_some(),
                confirmed_at: record
                    .stored
                    .as_ref()
                    .and_then(|s| s.confirmed_at)
                    .map(|t| humantime::format_rfc3339_millis(t).to_string()),
                revision,
            })
        };
        let wanted = |k: &KeySummary| {
            !k.key.starts_with('~')
                && filter.prefix.as_ref().is_none_or(|p| k.key.starts_with(p.as_str()))
                && match filter.state.as_deref() {
                    None => true,
                    Some("pending") => k.pending,
                    Some(state) => k.state == state,
                }
                && filter.after.as_ref().is_none_or(|a| k.key.as_str() > a.as_str())
        };
        // Only the summaries that match are kept, never every record.
        let mut keys: Vec<KeySummary> = Vec::new();
        super::records::each(store.as_ref(), |record, revision| {
            keys.extend(summary(record, revision).filter(|k| wanted(k)));
        })
        .await
        .map_err(InspectError::Store)?;
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        let limit = filter.limit.max(1);
        let next = (keys.len() > limit).then(|| keys[limit - 1].key.clone());
        keys.truncate(limit);
        Ok(Page { keys, next })
    }

    /// SCWM's incident as it is now: one read of `item_id`, nothing recorded (a person asked to
    /// look; the reconciler and the planner keep their own reads). SCWM's answer, or why there
    /// is none.
    pub async fn read_incident(&self, item_id: &str) -> Result<serde_json::Value, String> {
        let request = super::converge::read_request(&crate::ids::ItemId::new(item_id), None);
        match self.scwm.call(&request).await {
            Ok(success) => Ok(serde_json::json!({
                "header": serde_json::from_str::<serde_json::Value>(success.envelope.raw_header().get())
                    .unwrap_or_default(),
                "payload": success.envelope.payload(),
            })),
            Err(failure) => Err(failure.error.to_string()),
        }
    }

    /// Drops the key's record, if it still has `revision` (the one a get showed). The next
    /// firing of its alert opens a new incident; SCWM's incident is not touched.
    pub async fn store_forget(&self, key: &str, revision: Revision) -> Result<(), InspectError> {
        let store = self.store.as_ref().ok_or(InspectError::NoStore)?;
        match store.delete(&CorrelationKey::new(key), revision).await {
            Ok(()) => {
                tracing::warn!(key, revision, "key forgotten by an operator");
                Ok(())
            }
            Err(StoreError::Conflict) => Err(match self.store_get(key).await {
                Err(InspectError::NotFound(k)) => InspectError::NotFound(k),
                _ => InspectError::Changed(revision),
            }),
            Err(e) => Err(InspectError::Store(e)),
        }
    }
}
