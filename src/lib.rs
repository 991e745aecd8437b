//! incident-bridge turns events from HTTP webhooks and NATS into SCWM incident operations and
//! publishes SCWM's answers as result events.
//!
//! # Layout
//! The crate is built in layers, bottom up; a module imports only from its own layer and the
//! layers below, never in a circle (`tests/it/architecture.rs` holds the map and enforces it;
//! `ARCHITECTURE.md` walks one alert through it).
//!
//! 1. **Ground**, what every layer speaks: [`ids`], [`secret`], [`headers`] (one view of HTTP
//!    and NATS headers, their conversions, credential stripping), [`trace_context`],
//!    [`incident`] (the operations, the payload, a native command, errCodes), [`observe`]
//!    (every metric's name and labels), [`lenient`] and [`settings`] (what every component's
//!    config check shares), [`health`], [`telemetry`].
//! 2. **Model**: [`alert`], the alerts and notifications decoders produce.
//! 3. **Pure steps**, no I/O and no clock: [`decode`] (bytes to commands and notifications),
//!    [`verify`] (authentication over the raw body; limits), [`template`], [`route`],
//!    [`lifecycle`] (the state machine), [`event`] (the transport-neutral event), [`sources`]
//!    (each named input's settings), and [`plan`], the alert planner: the functional core.
//! 4. **Parts with I/O**, each speaking to one outside thing: [`scwm`] (the wire format and the
//!    client: request, retry loop, classification, breaker), [`sim`] (the SCWM simulator),
//!    [`store`] (the correlation store), [`publish`] (result events and dead letters).
//! 5. [`pipeline`]: the imperative shell that loads, plans, calls, saves and publishes, behind a
//!    keyed queue; it returns an `Outcome` and knows no transport.
//! 6. [`intake`]: the one way in, read → verify → decode → submit, with an outcome ticket per
//!    event.
//! 7. **Transports and wiring**: [`ingest`] (HTTP and NATS, each turning outcomes into its own
//!    words), [`config`] (loading, environment, gathering each component's settings), [`app`].
//!
//! Each component owns its configuration (`scwm::config`, `ingest::http::config`,
//! `ingest::nats::config`, `pipeline::config`, `publish::config`, `sim::config`,
//! `store::build`); `config` only gathers them.

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
pub mod operate;
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
