//! Which SCWM a correlation store belongs to. Its mappings name SCWM item ids, which mean
//! something only in the SCWM that issued them: a store carried over to another SCWM (another
//! URL or owner, or a new run of the in-process simulator, which starts from nothing) maps keys
//! to incidents that SCWM does not have, or that are other incidents there. So the store keeps
//! a record of the SCWM it was written against, under a key no correlation key can take, and
//! [`bind`] checks it when the bridge starts.
//!
//! This module owns that record and the check, nothing else: it reads and writes the record
//! through the [`CorrelationStore`] contract like any other value and never touches the
//! mappings.

use std::time::SystemTime;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{CorrelationStore, OnScwmChange, StoreError};
use crate::ids::CorrelationKey;

/// The key of the record. Correlation keys start with a source name (letters, digits, `-`,
/// `_`), `item:`, `ref:` or `plate:`, so none can be this.
pub const BINDING_KEY: &str = "~bridge/scwm";

/// The SCWM a store belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScwmIdentity {
    /// The operation URLs, one line per distinct URL, sorted.
    pub urls: Vec<String>,
    pub owner_id: String,
    /// Set for the in-process simulator: every run is a new, empty SCWM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub simulator_run: Option<String>,
}

impl std::fmt::Display for ScwmIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (owner {})", self.urls.join(", "), self.owner_id)?;
        if let Some(run) = &self.simulator_run {
            write!(f, ", in-process simulator run {run}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Record {
    scwm: ScwmIdentity,
    /// When this record was written, in milliseconds since the Unix epoch.
    written_at_ms: u64,
}

/// What [`bind`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    /// A store without a record (new, or written before records existed): it has one now.
    New,
    /// The store belongs to this SCWM.
    Same,
    /// It belonged to `previous`; `on_scwm_change = "adopt"` made it this SCWM's.
    Adopted { previous: ScwmIdentity },
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error(
        "the correlation store was written against SCWM {recorded}, but this configuration talks to \
         {configured}. Its mappings name incidents of the other SCWM. Point the store at one for this \
         SCWM (store.path or store.bucket; store.temporary = true for trials against the in-process \
         simulator), or set store.on_scwm_change = \"adopt\" if it is the same SCWM under a new address"
    )]
    OtherScwm { recorded: ScwmIdentity, configured: ScwmIdentity },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks that `store` belongs to `scwm`, recording it in a store that has no record yet.
pub async fn bind(
    store: &dyn CorrelationStore,
    scwm: &ScwmIdentity,
    on_change: OnScwmChange,
) -> Result<Bound, BindError> {
    let key = CorrelationKey::new(BINDING_KEY);
    // Replicas sharing a KV bucket start together: a conflict means another one wrote the
    // record first, so read it again.
    for _ in 0..5 {
        let record = Record {
            scwm: scwm.clone(),
            written_at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        };
        let value = Bytes::from(serde_json::to_vec(&record).expect("a binding record serialises"));
        let (found, revision) = match store.get(&key).await? {
            None => (None, None),
            Some(v) => {
                let found: Record = serde_json::from_slice(&v.value)
                    .map_err(|e| StoreError::Corrupt(format!("the store's SCWM record: {e}")))?;
                (Some(found.scwm), Some(v.revision))
            }
        };
        let bound = match found {
            None => Bound::New,
            Some(recorded) if recorded == *scwm => return Ok(Bound::Same),
            Some(recorded) => match on_change {
                OnScwmChange::Refuse => {
                    return Err(BindError::OtherScwm { recorded, configured: scwm.clone() });
                }
                OnScwmChange::Adopt => Bound::Adopted { previous: recorded },
            },
        };
        match store.put(&key, value, revision).await {
            Ok(_) => return Ok(bound),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(StoreError::Unavailable("the store's SCWM record kept changing under the bridge".into()).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    fn scwm(url: &str) -> ScwmIdentity {
        ScwmIdentity { urls: vec![url.into()], owner_id: "OWNER".into(), simulator_run: None }
    }

    #[tokio::test]
    async fn a_new_store_is_bound_and_then_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("s.redb")).unwrap();
        let a = scwm("https://scwm-a/incident");
        assert_eq!(bind(&store, &a, OnScwmChange::Refuse).await.unwrap(), Bound::New);
        assert_eq!(bind(&store, &a, OnScwmChange::Refuse).await.unwrap(), Bound::Same);
    }

    #[tokio::test]
    async fn another_scwm_is_refused_unless_adopted() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path().join("s.redb")).unwrap();
        let a = scwm("https://scwm-a/incident");
        bind(&store, &a, OnScwmChange::Refuse).await.unwrap();

        let b = scwm("https://scwm-b/incident");
        let err = bind(&store, &b, OnScwmChange::Refuse).await.unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("scwm-a") && text.contains("scwm-b") && text.contains("on_scwm_change"),
            "{text}"
        );
        let other_owner = ScwmIdentity { owner_id: "OTHER".into(), ..a.clone() };
        assert!(bind(&store, &other_owner, OnScwmChange::Refuse).await.is_err());
        let next_run = ScwmIdentity { simulator_run: Some("run-2".into()), ..a.clone() };
        assert!(bind(&store, &next_run, OnScwmChange::Refuse).await.is_err(), "a new simulator run");

        assert_eq!(bind(&store, &b, OnScwmChange::Adopt).await.unwrap(), Bound::Adopted { previous: a });
        assert_eq!(bind(&store, &b, OnScwmChange::Refuse).await.unwrap(), Bound::Same);
    }
}
