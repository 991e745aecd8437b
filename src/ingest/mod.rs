//! Ingest: the transports events arrive on (HTTP, NATS core and JetStream). Each receives
//! messages in its own way, hands them to the [`crate::intake::Intake`], and turns the outcomes
//! into its own words (an HTTP status, a NATS reply, a JetStream ack). No transport decodes,
//! calls SCWM or publishes results itself.

pub mod http;
pub mod nats;
