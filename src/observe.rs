//! Every metric the bridge records, in one place: names in Prometheus style (base units,
//! `_total` for counters, `_seconds` for durations) and labels of bounded cardinality only
//! (source names and operations come from the config, outcomes and reasons are fixed words,
//! errCodes are normalised to the contract's `<status>_<WORDS>` spelling).
//!
//! Call sites use these functions, never the `metrics` macros with literal names, so a name or
//! label cannot drift between the place that records it and the dashboard that reads it.

use std::time::Duration;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::incident::err_code_for;

pub const EVENTS_RECEIVED: &str = "incident_bridge_events_received_total";
pub const EVENTS_PROCESSED: &str = "incident_bridge_events_processed_total";
pub const AUTH_FAILURES: &str = "incident_bridge_auth_failures_total";
pub const DECISIONS: &str = "incident_bridge_lifecycle_decisions_total";
pub const SCWM_CALLS: &str = "incident_bridge_scwm_calls_total";
pub const SCWM_ATTEMPT_SECONDS: &str = "incident_bridge_scwm_request_duration_seconds";
pub const SCWM_RETRIES: &str = "incident_bridge_scwm_retries_total";
pub const CIRCUIT_STATE: &str = "incident_bridge_circuit_state";
pub const QUEUE_DEPTH: &str = "incident_bridge_queue_depth";
pub const QUEUE_CAPACITY: &str = "incident_bridge_queue_capacity";
pub const IN_FLIGHT: &str = "incident_bridge_in_flight";
pub const DEAD_LETTERS: &str = "incident_bridge_dead_letters_total";
pub const RESULTS_PUBLISHED: &str = "incident_bridge_results_published_total";
pub const STORE_SECONDS: &str = "incident_bridge_store_operation_duration_seconds";
pub const REDELIVERIES: &str = "incident_bridge_jetstream_redeliveries_total";
pub const BUILD_INFO: &str = "incident_bridge_build_info";
pub const HTTP_CONNECTIONS: &str = "incident_bridge_http_connections";
pub const OUTBOX_DEPTH: &str = "incident_bridge_outbox_depth";
pub const OUTBOX_OLDEST_AGE: &str = "incident_bridge_outbox_oldest_age_seconds";
pub const HTTP_CONNECTIONS_REFUSED: &str = "incident_bridge_http_connections_refused_total";
pub const DRIFT: &str = "incident_bridge_drift_total";
pub const ALERTS_RECEIVED: &str = "incident_bridge_alerts_received_total";
pub const HTTP_ANSWERS: &str = "incident_bridge_http_answers_total";
pub const NATS_CONNECTED: &str = "incident_bridge_nats_connected";
pub const TEMPLATE_FALLBACKS: &str = "incident_bridge_template_fallbacks_total";
pub const RECONCILE_READS: &str = "incident_bridge_reconcile_reads_total";
pub const GOVERNOR_TOKENS: &str = "incident_bridge_scwm_rate_tokens";
pub const GOVERNOR_WAIT_SECONDS: &str = "incident_bridge_scwm_rate_wait_seconds";
pub const GOVERNOR_QUEUED: &str = "incident_bridge_scwm_rate_queued";
pub const GOVERNOR_PAUSES: &str = "incident_bridge_scwm_pauses_total";
pub const COALESCED: &str = "incident_bridge_coalesced_total";
pub const FLAPS: &str = "incident_bridge_flaps_total";
pub const HELD: &str = "incident_bridge_held_total";
pub const STORE_ROLLBACKS: &str = "incident_bridge_store_rollbacks_total";

/// Help texts for `/metrics`, and the build info gauge.
pub fn describe() {
    describe_counter!(EVENTS_RECEIVED, "Messages received, by source and transport.");
    describe_counter!(EVENTS_PROCESSED, "Events finished by the pipeline, by source and outcome.");
    describe_counter!(AUTH_FAILURES, "Messages refused by authentication, by source and reason.");
    describe_counter!(DECISIONS, "Lifecycle decisions, by source and decision.");
    describe_counter!(
        SCWM_CALLS,
        "Logical SCWM requests (retries included), by operation, outcome and errCode."
    );
    describe_histogram!(
        SCWM_ATTEMPT_SECONDS,
        metrics::Unit::Seconds,
        "Duration of each HTTP attempt to SCWM."
    );
    describe_counter!(SCWM_RETRIES, "SCWM attempts that were retries of an earlier attempt, by operation.");
    describe_gauge!(CIRCUIT_STATE, "SCWM circuit breaker: 0 closed, 1 half-open, 2 open.");
    describe_gauge!(QUEUE_DEPTH, "Events accepted and not yet finished.");
    describe_gauge!(QUEUE_CAPACITY, "Events the queue holds before ingest pushes back.");
    describe_gauge!(IN_FLIGHT, "SCWM attempts in flight.");
    describe_counter!(DEAD_LETTERS, "Events dead-lettered, by source and reason.");
    describe_counter!(RESULTS_PUBLISHED, "Result events published, by source and operation.");
    describe_counter!(
        DRIFT,
        "Differences found between the store and SCWM, by kind (closed, reopened, deleted, not_ours, \
         handed_over) and what found them (check, reconciler)."
    );
    describe_counter!(
        TEMPLATE_FALLBACKS,
        "Templates that failed for an alert and were stood in for by the built-in default, by source and part."
    );
    describe_counter!(
        ALERTS_RECEIVED,
        "Alerts in the notifications received, by source (a message carries one or many; events_received counts messages)."
    );
    describe_counter!(HTTP_ANSWERS, "HTTP answers to webhooks and native commands, by source and status.");
    describe_gauge!(NATS_CONNECTED, "1 while the bridge is connected to NATS, 0 while it is not.");
    describe_counter!(RECONCILE_READS, "Incidents the reconciler read from SCWM, by outcome.");
    describe_gauge!(GOVERNOR_TOKENS, "Tokens left in an SCWM endpoint's rate bucket, by endpoint.");
    describe_histogram!(
        GOVERNOR_WAIT_SECONDS,
        metrics::Unit::Seconds,
        "How long requests that had to wait for their turn at an SCWM endpoint waited, by endpoint and lane."
    );
    describe_gauge!(
        GOVERNOR_QUEUED,
        "Requests waiting for their turn at an SCWM endpoint, by endpoint and lane."
    );
    describe_counter!(
        GOVERNOR_PAUSES,
        "Times SCWM's Retry-After paused every request to an endpoint, by endpoint."
    );
    describe_counter!(
        COALESCED,
        "Queued alert notifications replaced by a newer one for the same key before they ran, by source."
    );
    describe_counter!(
        STORE_ROLLBACKS,
        "Times the correlation store was found to have gone backwards (lost writes it had acknowledged), by backend."
    );
    describe_counter!(FLAPS, "Keys that started or stopped flapping, by source and event (start, end).");
    describe_counter!(
        HELD,
        "Alert transitions held back, by source and what (close, reopen, add) and how they ended (held, \
         applied, dropped)."
    );
    describe_histogram!(
        STORE_SECONDS,
        metrics::Unit::Seconds,
        "Correlation store operations, by backend and operation."
    );
    describe_counter!(REDELIVERIES, "JetStream messages delivered more than once, by stream.");
    describe_gauge!(BUILD_INFO, "Always 1; the version label says which build runs.");
    describe_gauge!(HTTP_CONNECTIONS, "HTTP connections open now.");
    describe_gauge!(OUTBOX_DEPTH, "Result events and dead letters in the outbox, waiting for NATS.");
    describe_gauge!(
        OUTBOX_OLDEST_AGE,
        metrics::Unit::Seconds,
        "How long the oldest outbox entry has waited for NATS; 0 when none waits."
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "HTTP connections closed at once because server.max_connections were open."
    );
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

pub fn event_received(source: &str, transport: &'static str) {
    counter!(EVENTS_RECEIVED, "source" => source.to_owned(), "transport" => transport).increment(1);
}

pub fn event_processed(source: &str, outcome: &'static str) {
    counter!(EVENTS_PROCESSED, "source" => source.to_owned(), "outcome" => outcome).increment(1);
}

pub fn auth_failure(source: &str, reason: &'static str) {
    counter!(AUTH_FAILURES, "source" => source.to_owned(), "reason" => reason).increment(1);
}

pub fn decision(source: &str, decision: &'static str) {
    counter!(DECISIONS, "source" => source.to_owned(), "decision" => decision).increment(1);
}

/// One logical SCWM request finished: `ok`, `rejected` (SCWM said no for good), or `failed`
/// (unreachable or unusable after the retries).
pub fn scwm_call(op: &'static str, outcome: &'static str, status: Option<u16>) {
    let err_code = status
        .and_then(|s| http::StatusCode::from_u16(s).ok())
        .map(err_code_for)
        .unwrap_or_else(|| "none".to_owned());
    counter!(SCWM_CALLS, "op" => op, "outcome" => outcome, "err_code" => err_code).increment(1);
}

pub fn scwm_attempt(op: &'static str, took: Duration, retry: bool) {
    histogram!(SCWM_ATTEMPT_SECONDS, "op" => op).record(took.as_secs_f64());
    if retry {
        counter!(SCWM_RETRIES, "op" => op).increment(1);
    }
}

/// The SCWM circuit breaker's state as the gauge reads it: 0 closed, 1 half-open, 2 open.
pub fn circuit(level: u8) {
    gauge!(CIRCUIT_STATE).set(f64::from(level));
}

pub fn queue(depth: usize, capacity: usize, in_flight: usize) {
    gauge!(QUEUE_DEPTH).set(depth as f64);
    gauge!(QUEUE_CAPACITY).set(capacity as f64);
    gauge!(IN_FLIGHT).set(in_flight as f64);
}

pub fn dead_letter(source: &str, reason: &'static str) {
    counter!(DEAD_LETTERS, "source" => source.to_owned(), "reason" => reason).increment(1);
}

pub fn alerts_received(source: &str, alerts: usize) {
    counter!(ALERTS_RECEIVED, "source" => source.to_owned()).increment(alerts as u64);
}

pub fn http_answer(source: &str, status: u16) {
    counter!(HTTP_ANSWERS, "source" => source.to_owned(), "status" => status.to_string()).increment(1);
}

pub fn nats_connected(connected: bool) {
    gauge!(NATS_CONNECTED).set(if connected { 1.0 } else { 0.0 });
}

/// Registers the series of every source at zero, so a rate over them exists before the first
/// event and an alert on "any dead letter" does not wait for a first one to have a baseline.
/// `auth_reasons` are the labels an authentication failure can have (the verifier's, passed in:
/// this module sits below it).
pub fn preregister<'a>(sources: impl IntoIterator<Item = &'a str>, auth_reasons: &[&'static str]) {
    for source in sources {
        let s = || source.to_owned();
        for transport in ["http", "nats", "jetstream"] {
            counter!(EVENTS_RECEIVED, "source" => s(), "transport" => transport).absolute(0);
        }
        for outcome in ["done", "duplicate", "retry", "reject"] {
            counter!(EVENTS_PROCESSED, "source" => s(), "outcome" => outcome).absolute(0);
        }
        for reason in auth_reasons.iter().copied() {
            counter!(AUTH_FAILURES, "source" => s(), "reason" => reason).absolute(0);
        }
        for reason in DEAD_LETTER_KINDS {
            counter!(DEAD_LETTERS, "source" => s(), "reason" => *reason).absolute(0);
        }
        counter!(ALERTS_RECEIVED, "source" => s()).absolute(0);
    }
}

/// Every `reason_kind` a dead letter can have (documented in the README).
pub const DEAD_LETTER_KINDS: &[&str] = &[
    "unauthenticated",
    "decode",
    "scwm_rejected",
    "retries_exhausted",
    "deliveries_exhausted",
    "template",
    "lifecycle",
    "store",
    "misconfigured",
    "interrupted",
];

pub fn drift(kind: &'static str, detected_by: &'static str) {
    counter!(DRIFT, "kind" => kind, "detected_by" => detected_by).increment(1);
}

pub fn template_fallback(source: &str, part: &str) {
    counter!(TEMPLATE_FALLBACKS, "source" => source.to_owned(), "part" => part.to_owned()).increment(1);
}

pub fn reconcile_read(outcome: &'static str) {
    counter!(RECONCILE_READS, "outcome" => outcome).increment(1);
}

pub fn result_published(source: &str, op: &'static str) {
    counter!(RESULTS_PUBLISHED, "source" => source.to_owned(), "op" => op).increment(1);
}

pub fn store_operation(backend: &'static str, operation: &'static str, took: Duration) {
    histogram!(STORE_SECONDS, "backend" => backend, "operation" => operation).record(took.as_secs_f64());
}

pub fn redelivery(stream: &str) {
    counter!(REDELIVERIES, "stream" => stream.to_owned()).increment(1);
}

pub fn http_connections(open: usize) {
    gauge!(HTTP_CONNECTIONS).set(open as f64);
}

pub fn http_connection_refused() {
    counter!(HTTP_CONNECTIONS_REFUSED).increment(1);
}

pub fn outbox(depth: usize, oldest_age_secs: f64) {
    gauge!(OUTBOX_DEPTH).set(depth as f64);
    gauge!(OUTBOX_OLDEST_AGE).set(oldest_age_secs);
}

pub fn governor_tokens(endpoint: &str, tokens: f64) {
    gauge!(GOVERNOR_TOKENS, "endpoint" => endpoint.to_owned()).set(tokens);
}

pub fn governor_wait(endpoint: &str, lane: &'static str, waited: Duration) {
    histogram!(GOVERNOR_WAIT_SECONDS, "endpoint" => endpoint.to_owned(), "lane" => lane)
        .record(waited.as_secs_f64());
}

pub fn governor_queued(endpoint: &str, lane: &'static str, queued: usize) {
    gauge!(GOVERNOR_QUEUED, "endpoint" => endpoint.to_owned(), "lane" => lane).set(queued as f64);
}

pub fn governor_pause(endpoint: &str) {
    counter!(GOVERNOR_PAUSES, "endpoint" => endpoint.to_owned()).increment(1);
}

pub fn coalesced(source: &str) {
    counter!(COALESCED, "source" => source.to_owned()).increment(1);
}

pub fn flap(source: &str, event: &'static str) {
    counter!(FLAPS, "source" => source.to_owned(), "event" => event).increment(1);
}

pub fn held(source: &str, what: &'static str, how: &'static str) {
    counter!(HELD, "source" => source.to_owned(), "what" => what, "how" => how).increment(1);
}

static STORE_ROLLBACKS_NOTICED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn store_rollback(backend: &'static str) {
    STORE_ROLLBACKS_NOTICED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    counter!(STORE_ROLLBACKS, "backend" => backend).increment(1);
}

/// Store rollbacks noticed by this process, for its own tests (the metric cannot be read back).
pub fn store_rollbacks_noticed() -> u64 {
    STORE_ROLLBACKS_NOTICED.load(std::sync::atomic::Ordering::Relaxed)
}
