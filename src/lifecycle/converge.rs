//! Converging with SCWM's truth. People work in SCWM too: they close, reopen and hand over
//! incidents, and SCWM can lose or renumber them. A read of the incident a key maps to says
//! what SCWM holds ([`Seen`]); [`converge`] brings the stored mapping in line with it and names
//! each difference ([`Drift`]), so the next decision starts from the truth.
//!
//! Pure, like the rest of the lifecycle: it never reads SCWM itself and takes the time as a
//! parameter. The shell reads, calls [`converge`], saves the mapping and publishes the drift.
//!
//! | SCWM says                                  | the mapping becomes                          | drift          |
//! |--------------------------------------------|----------------------------------------------|----------------|
//! | no such incident (404)                     | dropped: the key is unknown again             | `deleted`      |
//! | an incident whose `externalRef` is another key | dropped (the id was reused or renumbered) | `not_ours`     |
//! | closed, the mapping says open              | closed now (quiet for a "won't fix" resolution) | `closed`     |
//! | open, the mapping says closed              | open, reopened by a person                    | `reopened`     |
//! | handed to a partner the mapping does not name | the partner recorded                       | `handed_over`  |
//!
//! An incident without the `externalRef` field is taken to be the key's: nothing tells
//! otherwise.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

use super::{IncidentState, Stored};
use crate::ids::{CorrelationKey, ItemId};

/// What a read of an incident found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// SCWM has no incident with the id (404).
    Missing,
    Incident(Observed),
}

/// The parts of a read's answer convergence looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub state: IncidentState,
    /// The correlation key the incident was opened for, when SCWM reports the field.
    pub external_ref: Option<String>,
    pub resolution: Option<String>,
    pub partner: Option<String>,
}

impl Observed {
    /// Reads a `read` answer's payload: `status` (`open`/`closed`, as the contract has it), the
    /// `external_ref_field` the templates fill with the key, `resolution` and `partnerId`.
    /// `None` when the status is missing or unknown: such an answer proves nothing.
    pub fn from_payload(payload: &Value, external_ref_field: &str) -> Option<Self> {
        let text = |name: &str| match payload.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string()),
        };
        let state = match text("status")?.to_ascii_lowercase().as_str() {
            "open" => IncidentState::Open,
            "closed" => IncidentState::Closed,
            _ => return None,
        };
        Some(Self {
            state,
            external_ref: text(external_ref_field),
            resolution: text("resolution"),
            partner: text("partnerId"),
        })
    }
}

/// A bounded name for each difference, for metrics, subjects and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DriftKind {
    Deleted,
    NotOurs,
    Closed,
    Reopened,
    HandedOver,
}

impl DriftKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DriftKind::Deleted => "deleted",
            DriftKind::NotOurs => "not_ours",
            DriftKind::Closed => "closed",
            DriftKind::Reopened => "reopened",
            DriftKind::HandedOver => "handed_over",
        }
    }
}

/// One difference between the mapping and SCWM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    pub kind: DriftKind,
    #[serde(rename = "itemId")]
    pub item_id: ItemId,
    /// What the mapping said.
    pub expected: String,
    /// What SCWM says.
    pub found: String,
}

/// What the mapping is to hold after SCWM was seen, and each difference. A mapping SCWM
/// confirms comes back with `confirmed_at = now` and no drift. `wont_fix` lists the resolutions
/// that keep the key quiet while its alert fires.
pub fn converge(
    stored: &Stored,
    seen: &Seen,
    key: &CorrelationKey,
    wont_fix: &[String],
    now: SystemTime,
) -> (Option<Stored>, Vec<Drift>) {
    let drift = |kind, expected: String, found: String| Drift {
        kind,
        item_id: stored.item_id.clone(),
        expected,
        found,
    };
    let observed = match seen {
        Seen::Missing => {
            let lost = drift(DriftKind::Deleted, state_word(stored.state).into(), "no such incident".into());
            return (None, vec![lost]);
        }
        Seen::Incident(observed) => observed,
    };
    if let Some(other) = &observed.external_ref
        && other != key.as_str()
    {
        let found = format!("an incident for {other}");
        return (None, vec![drift(DriftKind::NotOurs, format!("the incident for {key}"), found)]);
    }
    let mut next = stored.clone();
    next.confirmed_at = Some(now);
    let mut drifts = Vec::new();
    match (stored.state, observed.state) {
        (IncidentState::Open, IncidentState::Closed) => {
            next.state = IncidentState::Closed;
            // As if it had been closed at the moment the bridge learned of it: the reopen
            // window counts from now.
            next.closed_at = Some(now);
            next.reopened_by_person = false;
            next.quiet =
                observed.resolution.clone().filter(|r| wont_fix.iter().any(|w| w.eq_ignore_ascii_case(r)));
            let found = match &observed.resolution {
                Some(r) => format!("closed ({r})"),
                None => "closed".into(),
            };
            drifts.push(drift(DriftKind::Closed, "open".into(), found));
        }
        (IncidentState::Closed, IncidentState::Open) => {
            next.state = IncidentState::Open;
            next.closed_at = None;
            next.quiet = None;
            next.reopened_by_person = true;
            drifts.push(drift(DriftKind::Reopened, "closed".into(), "open".into()));
        }
        _ => {}
    }
    if let Some(partner) = &observed.partner
        && stored.partner.as_ref() != Some(partner)
    {
        next.partner = Some(partner.clone());
        let expected = stored.partner.clone().unwrap_or_else(|| "no partner".into());
        drifts.push(drift(DriftKind::HandedOver, expected, format!("partner {partner}")));
    }
    (Some(next), drifts)
}

fn state_word(state: IncidentState) -> &'static str {
    match state {
        IncidentState::Open => "open",
        IncidentState::Closed => "closed",
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::json;

    use super::*;
    use crate::ids::LicensePlate;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    fn open() -> Stored {
        Stored::opened(
            ItemId::new("IT-1"),
            "h",
            now() - Duration::from_secs(3600),
            LicensePlate::derived(1, b"t"),
        )
    }

    fn key() -> CorrelationKey {
        CorrelationKey::new("am:abc")
    }

    fn seen(payload: Value) -> Seen {
        Seen::Incident(Observed::from_payload(&payload, "externalRef").expect("a status"))
    }

    #[test]
    fn a_confirmed_mapping_is_kept_and_marked_confirmed_now() {
        let (next, drift) =
            converge(&open(), &seen(json!({"status": "open", "externalRef": "am:abc"})), &key(), &[], now());
        assert!(drift.is_empty());
        assert_eq!(next, Some(Stored { confirmed_at: Some(now()), ..open() }));
    }

    #[test]
    fn a_person_s_close_closes_the_mapping_now_and_a_won_t_fix_keeps_it_quiet() {
        let wont_fix = vec!["Won't fix".to_owned()];
        let read = json!({"status": "closed", "externalRef": "am:abc", "resolution": "won't fix"});
        let (next, drift) = converge(&open(), &seen(read), &key(), &wont_fix, now());
        let next = next.unwrap();
        assert_eq!((next.state, next.closed_at), (IncidentState::Closed, Some(now())));
        assert_eq!(next.quiet.as_deref(), Some("won't fix"));
        assert_eq!(drift.len(), 1);
        assert_eq!((drift[0].kind, drift[0].found.as_str()), (DriftKind::Closed, "closed (won't fix)"));

        let (next, _) = converge(
            &open(),
            &seen(json!({"status": "closed", "resolution": "fixed"})),
            &key(),
            &wont_fix,
            now(),
        );
        assert_eq!(next.unwrap().quiet, None, "another resolution is an ordinary close");
    }

    #[test]
    fn a_person_s_reopen_is_remembered_as_theirs() {
        let closed = Stored { state: IncidentState::Closed, closed_at: Some(now()), ..open() };
        let (next, drift) = converge(&closed, &seen(json!({"status": "open"})), &key(), &[], now());
        let next = next.unwrap();
        assert_eq!((next.state, next.closed_at, next.reopened_by_person), (IncidentState::Open, None, true));
        assert_eq!(drift[0].kind, DriftKind::Reopened);
    }

    #[test]
    fn a_missing_or_someone_else_s_incident_drops_the_mapping() {
        let (next, drift) = converge(&open(), &Seen::Missing, &key(), &[], now());
        assert_eq!((next, drift[0].kind), (None, DriftKind::Deleted));
        let (next, drift) = converge(
            &open(),
            &seen(json!({"status": "open", "externalRef": "am:other"})),
            &key(),
            &[],
            now(),
        );
        assert_eq!((next, drift[0].kind), (None, DriftKind::NotOurs));
        assert_eq!(drift[0].found, "an incident for am:other");
    }

    #[test]
    fn a_handover_is_recorded_once() {
        let (next, drift) =
            converge(&open(), &seen(json!({"status": "open", "partnerId": "P-7"})), &key(), &[], now());
        let next = next.unwrap();
        assert_eq!(next.partner.as_deref(), Some("P-7"));
        assert_eq!((drift[0].kind, drift[0].expected.as_str()), (DriftKind::HandedOver, "no partner"));
        let (_, again) =
            converge(&next, &seen(json!({"status": "open", "partnerId": "P-7"})), &key(), &[], now());
        assert!(again.is_empty(), "the same partner is no news");
    }

    #[test]
    fn an_answer_without_a_known_status_proves_nothing() {
        assert_eq!(Observed::from_payload(&json!({"id": "IT-1"}), "externalRef"), None);
        assert_eq!(Observed::from_payload(&json!({"status": "archived"}), "externalRef"), None);
        let numeric =
            Observed::from_payload(&json!({"status": "OPEN", "externalRef": 42}), "externalRef").unwrap();
        assert_eq!((numeric.state, numeric.external_ref.as_deref()), (IncidentState::Open, Some("42")));
    }
}
