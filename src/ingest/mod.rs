//! Ingest: the transports events arrive on. Each turns bytes into [`crate::event::Event`]s,
//! submits them to the pipeline runner and maps the [`crate::pipeline::Outcome`] to its own
//! words. No transport calls SCWM or publishes results itself.

pub mod http;
