//! Where results go: the `[results]` table (the log) and `[nats.results]` (the NATS subjects of
//! result events and dead letters).

use serde::Deserialize;

use super::SubjectTemplate;
use crate::{lenient, settings::Problems};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawResults {
    #[serde(deserialize_with = "lenient::value")]
    pub log: bool,
    /// Dead letters kept in the store for `incident-bridge dlq` (list, show, replay, purge); the
    /// oldest go first past this many; 0 keeps none (and a bridge with neither alert sources nor
    /// results on NATS then opens no store).
    #[serde(deserialize_with = "lenient::value")]
    pub keep_dead_letters: usize,
    /// How often one dead letter may be replayed; past it, a replay is refused.
    #[serde(deserialize_with = "lenient::value")]
    pub max_replays: u32,
}

impl Default for RawResults {
    fn default() -> Self {
        Self { log: true, keep_dead_letters: 10_000, max_replays: 3 }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawNatsResults {
    #[serde(deserialize_with = "lenient::value")]
    pub enabled: bool,
    pub subject: String,
    pub dead_letter_subject: String,
    /// Entries the outbox holds at most while NATS does not take them (each a rendered message,
    /// about 2 KiB for a result); past it, work is refused for later rather than lost.
    #[serde(deserialize_with = "lenient::value")]
    pub outbox_limit: usize,
}

impl Default for RawNatsResults {
    fn default() -> Self {
        Self {
            enabled: true,
            subject: "scwm.results.{op}".into(),
            dead_letter_subject: "scwm.dlq.{op}".into(),
            outbox_limit: 100_000,
        }
    }
}

/// Whether result events and dead letters are written to the log.
#[derive(Debug, Clone, Copy)]
pub struct ResultsSettings {
    /// Write every result event and dead letter to the log as a JSON line.
    pub log: bool,
    pub keep_dead_letters: usize,
    pub max_replays: u32,
}

pub fn build(raw: RawResults) -> ResultsSettings {
    ResultsSettings { log: raw.log, keep_dead_letters: raw.keep_dead_letters, max_replays: raw.max_replays }
}

#[derive(Debug, Clone)]
pub struct NatsResultsConfig {
    pub subject: SubjectTemplate,
    pub dead_letter_subject: SubjectTemplate,
    /// Entries the outbox holds at most while NATS does not take them; past it, work is refused
    /// for later (503, a nak) rather than lost.
    pub outbox_limit: usize,
}

/// `None` when results are not published to NATS (or a subject does not parse: reported).
pub fn build_nats(raw: RawNatsResults, p: &mut Problems<'_>) -> Option<NatsResultsConfig> {
    if !raw.enabled {
        return None;
    }
    let subject = template(p, "nats.results.subject", &raw.subject);
    let dead_letter_subject = template(p, "nats.results.dead_letter_subject", &raw.dead_letter_subject);
    let outbox_limit = p.positive("nats.results.outbox_limit", raw.outbox_limit);
    Some(NatsResultsConfig { subject: subject?, dead_letter_subject: dead_letter_subject?, outbox_limit })
}

fn template(p: &mut Problems<'_>, key: &str, text: &str) -> Option<SubjectTemplate> {
    match SubjectTemplate::parse(text) {
        Ok(t) => Some(t),
        Err(e) => {
            p.error(key, e);
            None
        }
    }
}
