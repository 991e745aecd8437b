//! Wiring only: [`App::build`] turns a validated [`Config`] into running parts (listener,
//! optional in-process simulator, SCWM client, pipeline, queue); [`App::run`] serves until the
//! shutdown token fires and then drains in-flight work within the configured grace period.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    health::Health,
    ingest::{
        self,
        http::{self, HttpState},
    },
    intake::Intake,
    pipeline::{Pipeline, Runner},
    publish::{LogSink, Publisher, Sink, nats::NatsSink, outbox::Relay},
    scwm::ScwmClient,
    sim::{SimConfig, SimHandle, Simulator},
    store,
};

/// Parts a caller adds beyond what the config describes (tests, embedding applications).
#[derive(Default)]
pub struct Extras {
    pub sinks: Vec<Arc<dyn Sink>>,
}

pub struct App {
    config: Config,
    listener: TcpListener,
    simulator: Option<SimHandle>,
    runner: Runner,
    pipeline: Arc<Pipeline>,
    /// Fires a little before the shutdown grace ends.
    answer_deadline: CancellationToken,
    health: Health,
    nats: Option<async_nats::Client>,
    /// Publishes the outbox to NATS, when results go there.
    relay: Option<Arc<Relay>>,
    /// The holds the pipeline records, for the task that offers them again when due.
    holds: tokio::sync::mpsc::UnboundedReceiver<(crate::ids::CorrelationKey, u64)>,
}

impl App {
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Self::build_with(config, Extras::default()).await
    }

    pub async fn build_with(config: Config, extras: Extras) -> anyhow::Result<Self> {
        // Installed before anything records, so no count is lost before the first scrape.
        crate::telemetry::metrics();
        // The simulator starts first so that the SCWM URL already answers when work arrives.
        let simulator = match &config.simulator {
            Some(sim) => {
                let sim_config = SimConfig {
                    token: sim.token.clone(),
                    errors_in_http_200: sim.errors_in_http_200,
                    request_log_limit: Some(crate::sim::DEFAULT_REQUEST_LOG_LIMIT),
                    ..SimConfig::default()
                };
                let handle = Simulator::start(sim_config, sim.listen)
                    .await
                    .with_context(|| format!("starting the SCWM simulator on {}", sim.listen))?;
                tracing::info!(addr = %handle.addr(), "SCWM simulator listening");
                Some(handle)
            }
            None => None,
        };

        for name in &config.environment.ignored {
            tracing::debug!(variable = %name, "environment variable with the config prefix ignored: not a <SECTION>__<KEY> name (a Kubernetes service link, say)");
        }
        for source in config.sources.iter() {
            if source.auth.is_unauthenticated() {
                tracing::warn!(
                    source = %source.name,
                    kind = source.kind.as_str(),
                    "this source accepts HTTP requests from anyone: it has no authentication (scheme = \"none\", or the unconfigured native source)"
                );
            } else {
                tracing::info!(
                    source = %source.name,
                    kind = source.kind.as_str(),
                    schemes = ?source.auth.scheme_names(),
                    verify_nats = source.verify_nats,
                    "source authenticates its senders"
                );
            }
        }

        let health = Health::default();
        // Work is accepted durably without NATS unless the correlation store lives there.
        let store_in_nats = matches!(config.store.backend, store::BackendConfig::JetStreamKv { .. });
        let nats = match &config.nats {
            Some(n) => Some(
                ingest::nats::connect(n, &health, store_in_nats)
                    .await
                    .context("setting up the NATS connection")?,
            ),
            None => None,
        };

        crate::observe::preregister(config.sources.names(), &crate::verify::VerifyError::KINDS);
        let client = ScwmClient::new(config.scwm.clone()).context("building the SCWM client")?;
        let mut sinks: Vec<Arc<dyn Sink>> = Vec::new();
        if config.results.log {
            sinks.push(Arc::new(LogSink));
        }
        sinks.extend(extras.sinks);
        let nats_results = nats.as_ref().zip(config.nats.as_ref().and_then(|n| n.results.as_ref()));
        // Alerts need the correlation store; results bound for NATS need its outbox; kept dead
        // letters need its dead-letter table.
        let opened = if config.sources.iter().any(|s| s.kind.carries_alerts())
            || nats_results.is_some()
            || config.results.keep_dead_letters > 0
        {
            let opened = store::open_with_outbox(&config.store, nats.clone()).await.with_context(|| {
                format!("opening the correlation store ({})", config.store.backend.name())
            })?;
            Some(opened)
        } else {
            None
        };
        let mut publisher = Publisher::new(sinks);
        if let Some(opened) = &opened
            && config.results.keep_dead_letters > 0
        {
            publisher = publisher.with_kept(crate::publish::kept::Kept {
                store: Arc::clone(&opened.dead_letters),
                limit: config.results.keep_dead_letters,
            });
        }
        let mut relay = None;
        if let (Some((client, results)), Some(opened)) = (nats_results, &opened) {
            let sink = Arc::new(NatsSink::new(
                client.clone(),
                results.subject.clone(),
                results.dead_letter_subject.clone(),
            ));
            let r = Arc::new(
                Relay::new(Arc::clone(&opened.outbox), sink, results.outbox_limit)
                    .await
                    .context("reading the outbox")?
                    .with_health(health.clone()),
            );
            publisher = publisher.with_outbox(Arc::clone(&r));
            relay = Some(r);
        }
        let (holds_tx, holds) = tokio::sync::mpsc::unbounded_channel();
        let mut pipeline = Pipeline::new(client, publisher, config.scwm.retry.clone())
            .with_sources(config.sources.clone())
            .with_reconcile(config.reconcile.clone())
            .with_holds(holds_tx)
            // Decisions are kept only where someone can look at them.
            .with_journal(Arc::new(crate::pipeline::journal::Journal::new(
                config.admin.as_ref().map_or(0, |a| a.recent_decisions),
            )));
        if let Some(opened) = opened {
            let store = opened.store;
            tracing::info!(backend = store.backend(), "correlation store open");
            let scwm = scwm_identity(&config, simulator.as_ref().map(|s| s.addr()));
            match store::binding::bind(store.as_ref(), &scwm, config.store.on_scwm_change)
                .await
                .context("checking which SCWM the correlation store belongs to")?
            {
                store::binding::Bound::New => tracing::info!(%scwm, "correlation store bound to this SCWM"),
                store::binding::Bound::Same => {}
                store::binding::Bound::Adopted { previous } => tracing::warn!(
                    %previous, %scwm,
                    "correlation store adopted: it was written against another SCWM (store.on_scwm_change = \"adopt\")"
                ),
            }
            pipeline = pipeline.with_store(store, config.store.claim_ttl);
        }
        // Fires a little before the shutdown grace ends: every caller still waiting for an
        // outcome is answered then, so none has its connection cut when the process exits, and
        // commands SCWM has not answered are given up on the record.
        let answer_deadline = CancellationToken::new();
        let pipeline = Arc::new(pipeline.with_cutoff(answer_deadline.clone()));
        let runner =
            Runner::new(Arc::clone(&pipeline), config.pipeline.queue_capacity, config.pipeline.workers);

        let listener = TcpListener::bind(config.server.listen)
            .await
            .with_context(|| format!("binding {}", config.server.listen))?;
        Ok(Self {
            config,
            listener,
            simulator,
            runner,
            pipeline,
            answer_deadline,
            health,
            nats,
            relay,
            holds,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn simulator(&self) -> Option<&SimHandle> {
        self.simulator.as_ref()
    }

    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves until `shutdown` is cancelled, then: readiness goes 503, the listener stops
    /// accepting, open requests and queued work finish. Errors when the grace period ends with
    /// work still unfinished.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self {
            config,
            listener,
            simulator,
            runner,
            pipeline,
            answer_deadline,
            health,
            nats,
            relay,
            holds,
        } = self;
        let relay_stop = CancellationToken::new();
        let relay_task = relay.map(|relay| {
            let stop = relay_stop.clone();
            let last_call = config.server.shutdown_grace;
            tokio::spawn(async move { relay.run(stop, last_call).await })
        });
        let reconcile_stop = CancellationToken::new();
        let reconciler = config.reconcile.enabled.then(|| {
            tokio::spawn(crate::pipeline::reconcile::run(Arc::clone(&pipeline), reconcile_stop.clone()))
        });
        let intake = Intake::new(runner.clone(), config.sources.clone(), answer_deadline.clone());
        let holds_task =
            tokio::spawn(crate::intake::holds::run(intake.clone(), holds, reconcile_stop.clone()));
        let router = http::router(HttpState {
            intake: intake.clone(),
            health: health.clone(),
            body_limit: config.server.body_limit_bytes,
            sync_timeout: config.server.sync_timeout,
            body_read_timeout: config.server.body_read_timeout,
            admin: config.admin.as_ref().map(|a| Arc::clone(&a.auth)),
            max_replays: config.results.max_replays,
            console: config
                .admin
                .as_ref()
                .filter(|a| a.console)
                .map(|a| http::ConsoleSettings { trace_url: a.trace_url.clone() }),
        });
        let addr = listener.local_addr()?;
        let http_stop = CancellationToken::new();
        let limits = http::conn::Limits {
            first_byte: config.server.first_byte_timeout,
            idle: config.server.idle_timeout,
            headers: config.server.body_read_timeout,
        };
        let server = tokio::spawn(http::serve(
            listener,
            router,
            limits,
            config.server.max_connections,
            http_stop.clone(),
        ));
        let ingest_stop = CancellationToken::new();
        let ingest_tasks = TaskTracker::new();
        if let (Some(client), Some(nats_config)) = (&nats, &config.nats) {
            ingest::nats::start(client, nats_config, &intake, &ingest_stop, &ingest_tasks);
        }
        ingest_tasks.close();
        tracing::info!(%addr, "incident-bridge ready");

        shutdown.cancelled().await;
        tracing::info!(in_flight = runner.depth(), grace = ?config.server.shutdown_grace, "shutting down");
        health.set_draining();
        if !config.server.shutdown_delay.is_zero() {
            tracing::info!(delay = ?config.server.shutdown_delay, "not ready; still serving until load balancers notice");
            tokio::time::sleep(config.server.shutdown_delay).await;
        }
        // Stop taking work on every transport; what was accepted still finishes. The reconciler
        // stops too, handing its lease on to a replica that stays.
        reconcile_stop.cancel();
        ingest_stop.cancel();
        http_stop.cancel();
        runner.close();
        let grace = config.server.shutdown_grace;
        let margin = (grace / 10).min(Duration::from_secs(1));
        let deadline_timer = tokio::spawn({
            let deadline = answer_deadline.clone();
            async move {
                tokio::time::sleep(grace.saturating_sub(margin)).await;
                deadline.cancel();
            }
        });
        let drain = async {
            // Replies, acks and HTTP answers; each ends by the answer deadline at the latest.
            ingest_tasks.wait().await;
            match server.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "HTTP server failed"),
                Err(e) => tracing::error!(error = %e, "HTTP server task failed"),
            }
            runner.drained().await;
        };
        let started = tokio::time::Instant::now();
        let drained = tokio::time::timeout(grace, drain).await;
        deadline_timer.abort();
        holds_task.abort();
        if let Some(task) = reconciler {
            // A read under way finishes or is cut here; what it found is read again next time.
            if tokio::time::timeout(Duration::from_secs(1), task).await.is_err() {
                tracing::warn!("the reconciler did not stop in time; its lease runs out by itself");
            }
        }
        // What the outbox still holds goes out now if NATS takes it within what is left of the
        // grace; else it waits in the store for the next start.
        relay_stop.cancel();
        if let Some(task) = relay_task {
            let left = grace.saturating_sub(started.elapsed());
            match tokio::time::timeout(left.max(Duration::from_secs(1)), task).await {
                Ok(Ok(0)) => {}
                Ok(Ok(waiting)) => tracing::warn!(
                    entries = waiting,
                    "NATS did not take everything in time; the outbox keeps it for the next start"
                ),
                Ok(Err(e)) => tracing::error!(error = %e, "the outbox relay failed"),
                Err(_) => tracing::warn!(
                    "the outbox relay did not finish in time; what it holds waits for the next start"
                ),
            }
        }
        if let Some(client) = &nats {
            flush_nats(client, grace.saturating_sub(started.elapsed()).max(Duration::from_secs(1))).await;
        }
        if let Some(sim) = simulator
            && let Err(e) = sim.stop().await
        {
            tracing::warn!(error = %e, "the SCWM simulator did not stop cleanly");
        }
        match drained {
            Ok(()) if pipeline.interrupted() > 0 => anyhow::bail!(
                "shutdown grace period of {:?} ended with {} commands SCWM had not answered; each was \
                 dead-lettered (interrupted) and its caller told to retry",
                config.server.shutdown_grace,
                pipeline.interrupted()
            ),
            Ok(()) => {
                tracing::info!("shutdown complete");
                Ok(())
            }
            Err(_) => anyhow::bail!(
                "shutdown grace period of {:?} ended with {} events unfinished",
                config.server.shutdown_grace,
                runner.depth()
            ),
        }
    }
}

/// Sends what the NATS client holds (acks, replies, results) and closes it, within `within`. A
/// client that is not connected would wait for a connection for as long as it is given: what it
/// holds then is given up at once (the server redelivers unacknowledged JetStream messages).
async fn flush_nats(client: &async_nats::Client, within: Duration) {
    use async_nats::connection::State;
    if client.connection_state() != State::Connected {
        tracing::warn!(state = ?client.connection_state(), "not connected to NATS at shutdown; dropping what was queued for it");
        return;
    }
    match tokio::time::timeout(within, async {
        if let Err(e) = client.flush().await {
            tracing::warn!(error = %e, "flushing NATS failed");
        }
        if let Err(e) = client.drain().await {
            tracing::warn!(error = %e, "draining NATS failed");
        }
    })
    .await
    {
        Ok(()) => {}
        Err(_) => tracing::warn!(?within, "NATS did not take what was queued in time; dropping it"),
    }
}

/// The SCWM this configuration talks to, as the correlation store records it. The in-process
/// simulator (listening at `simulator`) is a new, empty SCWM on every start, so each run that
/// talks to it is an SCWM of its own.
fn scwm_identity(config: &Config, simulator: Option<SocketAddr>) -> store::binding::ScwmIdentity {
    let endpoints = || config.scwm.endpoints.values().map(|e| &e.url);
    let mut urls: Vec<String> = endpoints().map(|u| u.to_string()).collect();
    urls.sort();
    urls.dedup();
    let talks_to_simulator =
        simulator.is_some_and(|sim| endpoints().any(|u| u.port_or_known_default() == Some(sim.port())));
    store::binding::ScwmIdentity {
        urls,
        owner_id: config.scwm.owner_id.clone(),
        simulator_run: talks_to_simulator.then(|| crate::ids::LicensePlate::generate().to_string()),
    }
}
