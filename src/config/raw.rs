//! The configuration file's shape, as serde reads it: each table is the shape its component
//! owns. Every table refuses unknown keys so a typo is an error rather than a silently ignored
//! setting. Nothing here is checked beyond syntax.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{
    ingest::{
        http::config::{RawAdmin, RawServer},
        nats::config::RawNats,
    },
    pipeline::config::{RawPipeline, RawReconcile},
    publish::config::RawResults,
    scwm::config::RawScwm,
    sim::config::RawSimulator,
};

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub scwm: RawScwm,
    pub pipeline: RawPipeline,
    pub reconcile: RawReconcile,
    pub results: RawResults,
    pub simulator: RawSimulator,
    /// Absent: the bridge does not use NATS.
    pub nats: Option<RawNats>,
    pub sources: BTreeMap<String, crate::sources::RawSource>,
    pub store: crate::store::RawStore,
    /// Absent: no admin API.
    pub admin: Option<RawAdmin>,
}
