//! The NATS connection: options from the config (servers, auth, TLS, name), reconnecting
//! forever with capped backoff, and readiness that follows the connection state.

use std::time::Duration;

use async_nats::{ConnectOptions, Event};
use rand::Rng;

use super::config::{NatsAuth, NatsConfig};
use crate::health::Health;

/// The readiness component name.
pub const COMPONENT: &str = "nats";

/// Connects in the background: the returned client queues work until the first connection is
/// up, and reconnects by itself after any loss. `/readyz` reports NATS not ready meanwhile, and
/// is 503 then when `needed` (the correlation store lives in NATS).
pub async fn connect(
    config: &NatsConfig,
    health: &Health,
    needed: bool,
) -> Result<async_nats::Client, async_nats::ConnectError> {
    health.register(COMPONENT, needed);
    let mut options = match &config.auth {
        NatsAuth::None => ConnectOptions::new(),
        NatsAuth::UserPassword { user, password } => {
            ConnectOptions::with_user_and_password(user.clone(), password.expose().to_owned())
        }
        NatsAuth::Token(token) => ConnectOptions::with_token(token.expose().to_owned()),
        NatsAuth::NkeySeed(seed) => ConnectOptions::with_nkey(seed.expose().to_owned()),
        // Parsed once already when the config was validated.
        NatsAuth::Credentials(creds) => ConnectOptions::with_credentials(creds.expose())?,
    };
    if config.tls.required {
        options = options.require_tls(true);
    }
    if let Some(ca) = &config.tls.ca_file {
        options = options.add_root_certificates(ca.clone());
    }
    if let Some((cert, key)) = &config.tls.client_cert {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    let events_health = health.clone();
    options = options
        .name(&config.name)
        .connection_timeout(config.connect_timeout)
        .ping_interval(config.ping_interval)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| {
            let health = events_health.clone();
            async move {
                match event {
                    Event::Connected => {
                        tracing::info!("connected to NATS");
                        health.set_component(COMPONENT, true);
                        crate::observe::nats_connected(true);
                    }
                    Event::Disconnected => {
                        tracing::warn!("disconnected from NATS; reconnecting");
                        health.set_component(COMPONENT, false);
                        crate::observe::nats_connected(false);
                    }
                    Event::Closed => {
                        health.set_component(COMPONENT, false);
                        crate::observe::nats_connected(false);
                    }
                    Event::LameDuckMode => tracing::warn!("NATS server entered lame duck mode"),
                    other => tracing::warn!(event = %other, "NATS event"),
                }
            }
        });
    options.connect(config.servers.clone()).await
}

/// Exponential from 100 ms to 5 s, with jitter so replicas do not reconnect in lockstep.
fn reconnect_delay(attempts: usize) -> Duration {
    let exp = 100u64.saturating_mul(1u64 << attempts.min(6)).min(5_000);
    Duration::from_millis(rand::rng().random_range(exp / 2..=exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delay_grows_and_is_capped() {
        assert!(reconnect_delay(0) <= Duration::from_millis(100));
        for n in 0..100 {
            assert!(reconnect_delay(n) <= Duration::from_secs(5));
            assert!(reconnect_delay(n) >= Duration::from_millis(50));
        }
    }
}
