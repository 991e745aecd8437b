//! The `[pipeline]` table (how much accepted work the queue holds and how many keys run at
//! once) and the `[reconcile]` table (how the pipeline and the reconciler converge with SCWM).

use std::time::Duration;

use serde::Deserialize;

use crate::{lenient, settings::Problems};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPipeline {
    #[serde(deserialize_with = "lenient::value")]
    pub queue_capacity: usize,
    #[serde(deserialize_with = "lenient::value")]
    pub workers: usize,
}

impl Default for RawPipeline {
    fn default() -> Self {
        Self { queue_capacity: 1_000, workers: 64 }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct PipelineSettings {
    /// Events accepted but not yet finished, across all keys. When full, ingest pushes back.
    pub queue_capacity: usize,
    /// Keys processed at the same time.
    pub workers: usize,
}

pub fn build(raw: RawPipeline, p: &mut Problems<'_>) -> PipelineSettings {
    PipelineSettings {
        queue_capacity: p.positive("pipeline.queue_capacity", raw.queue_capacity),
        workers: p.positive("pipeline.workers", raw.workers),
    }
}

/// The `[reconcile]` table: how the bridge keeps its store in line with SCWM, where people
/// close, reopen and hand over incidents too.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawReconcile {
    /// Run the reconciler, which reads the incidents of open keys from SCWM in the background.
    #[serde(deserialize_with = "lenient::value")]
    pub enabled: bool,
    /// A key's incident is read again once this long has passed since SCWM last confirmed it.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub interval: Duration,
    /// Reads the reconciler makes at most, one at a time: SCWM's capacity belongs to alerts.
    #[serde(deserialize_with = "lenient::value")]
    pub reads_per_second: f64,
    /// Keys closed less than this long ago are read too (a person may reopen them); `0s`: only
    /// open keys.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub include_closed_for: Duration,
    /// Before closing, reopening, editing or submitting an incident SCWM has not confirmed for
    /// this long, the pipeline reads it first (is it still open, still the key's?); `0s` reads
    /// before every such operation.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub ownership_check_after: Duration,
    /// The incident field the templates fill with the correlation key: a read whose field names
    /// another key shows the id now belongs to another incident.
    pub external_ref_field: String,
}

impl Default for RawReconcile {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: Duration::from_secs(600),
            reads_per_second: 2.0,
            include_closed_for: Duration::ZERO,
            ownership_check_after: Duration::from_secs(900),
            external_ref_field: "externalRef".into(),
        }
    }
}

/// How the bridge converges with SCWM: the pipeline's checks and the reconciler.
#[derive(Debug, Clone)]
pub struct ReconcileSettings {
    pub enabled: bool,
    pub interval: Duration,
    pub reads_per_second: f64,
    pub include_closed_for: Duration,
    pub ownership_check_after: Duration,
    pub external_ref_field: String,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        RawReconcile::default().into()
    }
}

/// Unchecked: [`build_reconcile`] checks first.
impl From<RawReconcile> for ReconcileSettings {
    fn from(raw: RawReconcile) -> Self {
        Self {
            enabled: raw.enabled,
            interval: raw.interval,
            reads_per_second: raw.reads_per_second,
            include_closed_for: raw.include_closed_for,
            ownership_check_after: raw.ownership_check_after,
            external_ref_field: raw.external_ref_field,
        }
    }
}

pub fn build_reconcile(raw: RawReconcile, p: &mut Problems<'_>) -> ReconcileSettings {
    if !(raw.reads_per_second.is_finite() && raw.reads_per_second > 0.0) {
        p.error("reconcile.reads_per_second", "must be a number greater than zero");
    }
    if raw.external_ref_field.trim().is_empty() {
        p.error("reconcile.external_ref_field", "must not be empty");
    }
    raw.into()
}
