//! The `[pipeline]` table: how much accepted work the queue holds and how many keys run at once.

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
