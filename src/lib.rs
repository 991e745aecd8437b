//! incident-bridge turns events from HTTP webhooks and NATS into SCWM incident operations.

pub mod ids;
pub mod scwm;
pub mod secret;
