//! The integration tests: one binary, one module per subject, sharing one kit ([`kit`]: a
//! nats-server per test, the SCWM simulator, the bridge in-process or as a child process,
//! fixtures and waiting helpers). Each test starts what it needs on random ports; nothing sleeps
//! to synchronise.
//!
//! Run one subject with its module path, e.g. `cargo test --test it chaos:: -- --nocapture`.

mod kit;

mod admin;
mod alertmanager_e2e;
mod alerts;
mod alerts_e2e;
mod alerts_fuzz;
mod architecture;
mod bad_days;
mod chaos;
mod cli;
mod console;
mod converge;

mod hostile;
mod http_native;
mod nats;
mod nats_auth;
mod observability;
mod outbox;
mod scwm_client;
mod signatures;
mod simulator;
mod store;
mod verify_properties;
