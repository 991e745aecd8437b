//! Telemetry set-up: logs, traces and the metrics recorder, configured from the environment.
//!
//! - Logs: JSON lines with every field at the top level ([`flat`]) when stdout is not a
//!   terminal (containers, CI), text on a terminal, or as `LOG_FORMAT=json|text` says; the
//!   level from `RUST_LOG` (default `info`).
//! - Traces: OpenTelemetry through `tracing-opentelemetry`. Spans always carry W3C trace
//!   context (so `traceparent` flows from inbound to SCWM and to result events); they are
//!   exported over OTLP only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or the traces-specific
//!   variable) is set, by gRPC or HTTP/protobuf per `OTEL_EXPORTER_OTLP_PROTOCOL`, batched and
//!   flushed at shutdown. `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` and
//!   `OTEL_TRACES_SAMPLER(_ARG)` are honoured by the SDK.
//! - Metrics: one process-wide Prometheus recorder, rendered at `GET /metrics`.

mod flat;

use std::{io::IsTerminal, sync::OnceLock};

use anyhow::Context as _;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::{global, trace::TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Crates whose own logs and spans would trace the exporter's traffic, or flood debug logs.
const QUIET: [&str; 7] = ["h2", "hyper", "hyper_util", "reqwest", "tonic", "tower", "opentelemetry"];

/// Latency buckets (seconds) for every histogram: from a fast loopback call to a slow SCWM.
const BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Keeps the tracer provider so shutdown can flush what is batched.
pub struct Telemetry {
    provider: SdkTracerProvider,
    exporting: bool,
}

impl Telemetry {
    /// Installs logging and tracing for the process. Call once, inside the tokio runtime (the
    /// gRPC exporter needs it).
    pub fn init() -> anyhow::Result<Self> {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let mut provider = SdkTracerProvider::builder().with_resource(resource());
        let exporting = exporter_configured();
        if exporting {
            provider = provider.with_batch_exporter(span_exporter()?);
        }
        let provider = provider.build();
        global::set_tracer_provider(provider.clone());
        let tracer = provider.tracer("incident-bridge");

        let registry = tracing_subscriber::registry()
            .with(filter())
            .with(tracing_opentelemetry::layer().with_tracer(tracer).with_error_records_to_exceptions(true));
        if log_as_json() {
            registry
                .with(fmt::layer().fmt_fields(fmt::format::JsonFields::new()).event_format(flat::FlatJson))
                .try_init()?;
        } else {
            registry.with(fmt::layer()).try_init()?;
        }
        if exporting {
            tracing::info!("exporting traces over OTLP");
        }
        Ok(Self { provider, exporting })
    }

    /// Flushes batched spans. Errors are logged: telemetry must not fail a clean shutdown.
    pub async fn shutdown(self) {
        if !self.exporting {
            return;
        }
        // The SDK's shutdown blocks until the exporter thread is done; keep it off the runtime.
        let provider = self.provider;
        match tokio::task::spawn_blocking(move || provider.shutdown()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "flushing traces failed"),
            Err(e) => tracing::warn!(error = %e, "flushing traces failed"),
        }
    }
}

/// `LOG_FORMAT=json` or `text`; unset: text on a terminal, JSON lines elsewhere.
pub fn log_as_json() -> bool {
    match std::env::var("LOG_FORMAT").as_deref().map(str::to_ascii_lowercase).as_deref() {
        Ok("json") => true,
        Ok("text") => false,
        _ => !std::io::stdout().is_terminal(),
    }
}

fn filter() -> EnvFilter {
    let configured = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut directives = configured.clone();
    for target in QUIET {
        if !configured.contains(target) {
            directives.push_str(&format!(",{target}=off"));
        }
    }
    EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new("info"))
}

fn exporter_configured() -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    let disabled = std::env::var("OTEL_TRACES_EXPORTER").is_ok_and(|v| v.trim() == "none");
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

/// gRPC or HTTP/protobuf per `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`; HTTP/protobuf by default,
/// as the OTLP specification recommends. Endpoints, headers and timeouts come from the standard
/// variables, read by the exporter itself.
fn span_exporter() -> anyhow::Result<opentelemetry_otlp::SpanExporter> {
    let protocol = std::env::var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        .or_else(|_| std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|_| "http/protobuf".into());
    let exporter = match protocol.trim() {
        "grpc" => opentelemetry_otlp::SpanExporter::builder().with_tonic().build(),
        "http/protobuf" => opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .build(),
        other => anyhow::bail!(
            "OTEL_EXPORTER_OTLP_PROTOCOL `{other}` is not supported (use grpc or http/protobuf)"
        ),
    };
    exporter.context("building the OTLP span exporter")
}

/// The SDK's resource (which reads `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`), named
/// `incident-bridge` unless the environment names it otherwise.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let builder = Resource::builder();
    let builder = if named { builder } else { builder.with_service_name("incident-bridge") };
    builder.with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))).build()
}

/// The process-wide metrics recorder, installed on first use. Histograms get buckets (not
/// summaries) so they aggregate across replicas.
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
            .expect("static buckets are valid")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (a host embedding the bridge); the handle
        // still renders what this recorder sees, which is then nothing.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        crate::observe::describe();
        // The recorder keeps every histogram sample until something drains it, which a scrape of
        // /metrics does; with nobody scraping, memory grew with every event (a soak found it).
        // One thread per process drains them on the recorder's own schedule instead.
        let upkeep = handle.clone();
        let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                upkeep.run_upkeep();
            }
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start the metrics upkeep thread; histograms drain only when /metrics is scraped");
        }
        handle
    })
}

/// How often histogram samples are folded into their buckets (the exporter's own default).
const UPKEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
