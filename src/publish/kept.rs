//! Dead letters kept for people: each with its whole original message, reason, attempts and
//! time, in the store's backend ([`DeadLetterStore`]), bounded, for `incident-bridge dlq` to
//! list, show, replay and purge. A message dead-lettered again (a replay that failed once more,
//! a sender that sent it again) is the same entry: its id is derived from what it is.

use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{DeadLetter, PublishError};
use crate::store::DeadLetterStore;

/// A dead letter as kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptLetter {
    pub id: String,
    pub source: String,
    /// `http`, `nats` or `jetstream`.
    pub transport: String,
    /// The HTTP path or NATS subject it came on.
    pub subject: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(rename = "licensePlate", default, skip_serializing_if = "Option::is_none")]
    pub license_plate: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub reason_kind: String,
    pub reason: String,
    pub attempts: u32,
    pub deliveries: u32,
    /// RFC 3339, when it was (last) dead-lettered.
    pub at: String,
    /// The original body: as text when it is UTF-8 (`encoding: "utf-8"`), else base64.
    pub encoding: String,
    pub body: String,
    /// The original headers, credentials left out.
    pub headers: Vec<(String, String)>,
    /// How often it was replayed.
    #[serde(default)]
    pub replays: u32,
}

impl KeptLetter {
    pub fn from_letter(letter: &DeadLetter) -> Self {
        let body = &letter.original.body;
        let (encoding, text) = match std::str::from_utf8(body) {
            Ok(t) => ("utf-8", t.to_owned()),
            Err(_) => ("base64", base64::engine::general_purpose::STANDARD.encode(body)),
        };
        let plate = letter.license_plate.as_ref().map(|p| p.to_string());
        Self {
            id: id_of(&letter.source.name, plate.as_deref(), body),
            source: letter.source.name.clone(),
            transport: letter.source.transport.as_str().to_owned(),
            subject: letter.source.subject.clone(),
            op: letter.op.map(|o| o.as_str().to_owned()),
            license_plate: plate,
            key: letter.key.as_ref().map(|k| k.to_string()),
            reason_kind: letter.reason_kind.to_owned(),
            reason: letter.reason.clone(),
            attempts: letter.attempts,
            deliveries: letter.deliveries,
            at: humantime::format_rfc3339_millis(letter.at).to_string(),
            encoding: encoding.to_owned(),
            body: text,
            headers: letter.original.headers.clone(),
            replays: 0,
        }
    }

    /// The original body's bytes.
    pub fn body_bytes(&self) -> Bytes {
        match self.encoding.as_str() {
            "base64" => {
                base64::engine::general_purpose::STANDARD.decode(&self.body).unwrap_or_default().into()
            }
            _ => Bytes::from(self.body.clone().into_bytes()),
        }
    }
}

/// `dl-` and a digest of the source, the licensePlate (the request it was) and the body.
fn id_of(source: &str, plate: Option<&str>, body: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update([0]);
    h.update(plate.unwrap_or_default().as_bytes());
    h.update([0]);
    h.update(body);
    let digest = h.finalize();
    let hex: String = digest[..10].iter().map(|b| format!("{b:02x}")).collect();
    format!("dl-{hex}")
}

/// Where dead letters are kept, and how many at most.
#[derive(Clone)]
pub struct Kept {
    pub store: Arc<dyn DeadLetterStore>,
    pub limit: usize,
}

impl Kept {
    /// Keeps `letter`, as the same entry (its replay count kept) when it was kept before.
    pub async fn keep(&self, letter: &DeadLetter) -> Result<(), PublishError> {
        let mut kept = KeptLetter::from_letter(letter);
        if let Ok(Some(before)) = self.store.letter(&kept.id).await
            && let Ok(before) = serde_json::from_slice::<KeptLetter>(&before)
        {
            kept.replays = before.replays;
        }
        self.put(&kept).await
    }

    pub async fn put(&self, kept: &KeptLetter) -> Result<(), PublishError> {
        let bytes = Bytes::from(serde_json::to_vec(kept).expect("a kept letter serialises"));
        self.store
            .put_letter(&kept.id, bytes, self.limit)
            .await
            .map_err(|e| PublishError { sink: "dead-letter store", message: e.to_string() })
    }

    /// Every kept letter, newest first.
    pub async fn all(&self) -> Result<Vec<KeptLetter>, crate::store::StoreError> {
        let mut all: Vec<KeptLetter> = self
            .store
            .letters()
            .await?
            .into_iter()
            .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
            .collect();
        all.sort_by(|a, b| b.at.cmp(&a.at).then_with(|| a.id.cmp(&b.id)));
        Ok(all)
    }

    pub async fn get(&self, id: &str) -> Result<Option<KeptLetter>, crate::store::StoreError> {
        Ok(self.store.letter(id).await?.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    pub async fn remove(&self, id: &str) -> Result<(), crate::store::StoreError> {
        self.store.remove_letter(id).await
    }
}
