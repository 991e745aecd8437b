//! Everything about speaking to SCWM: the envelope format, the client that calls it (retries,
//! circuit breaker, concurrency limit) and the simulator that stands in for it.

pub mod envelope;
pub mod sim;

pub use envelope::{Operation, Payload, RequestEnvelope, RequestHeader, ResponseEnvelope, ResponseHeader};
