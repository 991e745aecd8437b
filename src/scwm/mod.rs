//! Everything about speaking to SCWM: the envelope format, the client that calls it (retries,
//! circuit breaker, rate governor, concurrency limit) and the simulator that stands in for it.

pub mod breaker;
mod classify;
pub mod client;
pub mod config;
pub mod envelope;
pub mod error;
pub mod governor;
pub mod recent;
pub mod retry;

pub use breaker::{BreakerSettings, CircuitBreaker, CircuitState, Verdict};
pub use client::{
    ClientBuildError, ClientSettings, Endpoint, ScwmClient, ScwmFailure, ScwmRequest, ScwmSuccess,
};
pub use envelope::{Operation, Payload, RequestEnvelope, RequestHeader, ResponseEnvelope, ResponseHeader};
pub use error::ScwmError;
pub use governor::{Lane, RateLimit};
pub use retry::{RetryPolicy, Sleeper, TokioSleeper, parse_retry_after};
