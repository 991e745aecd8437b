//! The `[simulator]` table: run the SCWM simulator inside the bridge (local trials).

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use crate::{lenient, secret::Secret, settings::Problems};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawSimulator {
    #[serde(deserialize_with = "lenient::value")]
    pub enabled: bool,
    pub listen: String,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    #[serde(deserialize_with = "lenient::value")]
    pub errors_in_http_200: bool,
}

impl Default for RawSimulator {
    fn default() -> Self {
        Self {
            enabled: false,
            listen: "127.0.0.1:8090".into(),
            token: None,
            token_file: None,
            errors_in_http_200: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct SimulatorSettings {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    pub errors_in_http_200: bool,
}

/// `None` unless the simulator is enabled (its keys are checked either way).
pub fn build(raw: RawSimulator, p: &mut Problems<'_>) -> Option<SimulatorSettings> {
    let token = p.secret("simulator.token", raw.token, raw.token_file.as_deref());
    let listen = p.socket_addr("simulator.listen", &raw.listen);
    if !raw.enabled {
        return None;
    }
    Some(SimulatorSettings { listen: listen?, token, errors_in_http_200: raw.errors_in_http_200 })
}
