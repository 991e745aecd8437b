//! The licensePlates of an intent's steps: each a pure function of what the operation is for,
//! never of the delivery that asked for it, so deciding the same notification again (a
//! redelivery, a retry, a store lost and started afresh) sends the same plates and SCWM, which
//! treats a repeated plate as the same request, acts once.

use crate::{ids::LicensePlate, incident::Operation};

/// What an alert operation is for, which its licensePlate is derived from.
pub struct StepIdentity<'a> {
    pub source: &'a str,
    pub key: &'a str,
    /// When the alert episode began ([`crate::alert::episode_start`]); `None` when no
    /// `startsAt` parses.
    pub episode: Option<u64>,
    /// The event's own plate, the seed when there is no episode to go by.
    pub fallback: &'a LicensePlate,
    /// The plate of the last operation SCWM accepted for the key's incident, when the store
    /// remembers one: each operation follows on from the one before.
    pub previous: Option<&'a LicensePlate>,
    pub content_hash: &'a str,
    pub ops: &'a [Operation],
}

/// One licensePlate per operation, each a pure function of what the operation is for: the
/// source, the correlation key, the episode, the operation before it (the stored one for the
/// first, then the previous step's), its place and kind, and for an edit the content it sends.
///
/// So an add for a key the store does not know (or no longer knows: a lost store) carries the
/// same plate as the add that first opened the episode's incident, and SCWM, which treats a
/// repeated plate within its dedup window (24 h) as the same request, answers with that
/// incident instead of opening a second one. Chaining on the previous operation keeps a later
/// operation of the same kind distinct (an edit back to content sent before, a reopen after a
/// second close), and a new episode (a new `startsAt`) gets new plates. The time part of each
/// plate is the episode start, so plates still sort by it.
pub fn step_plates(id: &StepIdentity<'_>) -> Vec<LicensePlate> {
    let (time_ms, episode) = match id.episode {
        Some(ms) => (ms, format!("episode:{ms}")),
        None => (id.fallback.timestamp_ms(), format!("event:{}", id.fallback)),
    };
    let mut previous = id.previous.map(|p| p.to_string()).unwrap_or_default();
    id.ops
        .iter()
        .enumerate()
        .map(|(i, op)| {
            let content = match op {
                Operation::Edit => id.content_hash,
                _ => "",
            };
            let seed =
                format!("alert/v1\n{}\n{}\n{episode}\n{previous}\n{i}\n{op}\n{content}", id.source, id.key);
            let plate = LicensePlate::derived(time_ms, seed.as_bytes());
            previous = plate.to_string();
            plate
        })
        .collect()
}
