//! incident-bridge turns events from HTTP webhooks and NATS into SCWM incident operations and
//! publishes SCWM's answers as result events.
//!
//! # Layout
//! Data flows one way: ingest → decode → pipeline → scwm → publish.
//! - [`config`]: the TOML file and environment overrides, validated into typed values.
//! - [`ingest`]: transports events arrive on (HTTP today); map outcomes to their own words.
//! - [`decode`]: bytes to one transport-neutral [`event::Event`].
//! - [`pipeline`]: `process_one(event) -> Outcome`, and the keyed queue in front of it.
//! - [`scwm`]: the wire format, the client (retries, breaker) and the simulator.
//! - [`publish`]: result events and dead letters, and the sinks they go to.
//! - [`store`]: the correlation store (key → SCWM item), compare-and-swap; embedded or JetStream KV.
//! - [`app`]: wiring; [`health`]: liveness and readiness; [`telemetry`]: logging.
//! - [`ids`], [`secret`]: newtypes shared by every stage.

pub mod app;
pub mod config;
pub mod decode;
pub mod event;
pub mod health;
pub mod ids;
pub mod ingest;
pub mod pipeline;
pub mod publish;
pub mod scwm;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod trace_context;
