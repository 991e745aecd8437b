//! Ingest: the transports events arrive on. Each turns bytes into [`crate::event::Event`]s
//! through a [`source::Decoder`], submits them to the pipeline runner and maps the
//! [`crate::pipeline::Outcome`]s to its own words. No transport calls SCWM or publishes results
//! itself.

pub mod batch;
pub mod http;
pub mod nats;
pub mod source;
