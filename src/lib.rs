//! incident-bridge turns events from HTTP webhooks and NATS into SCWM incident operations and
//! publishes SCWM's answers as result events.
//!
//! # Layout
//! Data flows one way: ingest → decode → pipeline → scwm → publish.
//! - [`config`]: the TOML file and environment overrides, validated into typed values.
//! - [`ingest`]: transports events arrive on (HTTP, NATS core and JetStream); each maps outcomes
//!   to its own words.
//! - [`decode`]: bytes to one transport-neutral [`event::Event`] or [`alert::Notification`].
//! - [`alert`]: the alert model (alerts, notifications, correlation keys) decoders produce.
//! - [`route`]: label matchers and ordered routes: what to do with an alert or group.
//! - [`template`]: minijinja templates that turn alerts into SCWM payloads and content hashes.
//! - [`lifecycle`]: the pure state machine: (stored incident, alert status, content) → operations.
//! - [`pipeline`]: `process_one(event) -> Outcome`, and the keyed queue in front of it.
//! - [`scwm`]: the wire format, the client (retries, breaker) and the simulator.
//! - [`publish`]: result events and dead letters, and the sinks they go to.
//! - [`store`]: the correlation store (key → SCWM item), compare-and-swap; embedded or JetStream KV.
//! - [`app`]: wiring; [`health`]: liveness and readiness; [`telemetry`]: logs, traces and the
//!   metrics recorder; [`observe`]: every metric's name and labels.
//! - [`verify`]: authentication of inbound webhooks and NATS messages over the raw body, and
//!   limits for hostile input.
//! - [`ids`], [`secret`], [`trace_context`]: types shared by every stage; [`headers`]: one view
//!   of HTTP and NATS headers for verification and decoding alike.

pub mod alert;
pub mod app;
pub mod config;
pub mod decode;
pub mod event;
pub mod headers;
pub mod health;
pub mod ids;
pub mod incident;
pub mod ingest;
pub mod intake;
pub mod lenient;
pub mod lifecycle;
pub mod observe;
pub mod pipeline;
pub mod plan;
pub mod publish;
pub mod route;
pub mod scwm;
pub mod secret;
pub mod settings;
pub mod sim;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod template;
pub mod trace_context;
pub mod verify;
