//! Bad days for SCWM: a flaky minute (`bad-minute`), a rate-limited tenant under an alert storm
//! (`storm`) and an outage (`outage`). Each runs the bridge binary against the in-process
//! simulator with a fault plan and reports, from the simulator's request log and incidents and
//! from the JetStream server, what the bridge made of it: how soon work got through, how hard
//! SCWM was pushed, whether any key got two incidents or none, and what ended as a dead letter.

use std::{
    collections::{BTreeMap, HashMap},
    future::IntoFuture,
    sync::Arc,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use bytes::Bytes;
use incident_bridge::{
    secret::Secret,
    sim::{
        Failure, Faults, Incident, IncidentStatus, RateLimit, RecordedRequest, SimConfig, SimHandle,
        Simulator,
    },
};
use serde_json::{Value, json};

use super::{
    Args, TOKEN,
    http::{sign, source_config},
    natsrv::{self, NatsServer},
    spawn_bridge,
};

/// The alert source of the JetStream scenarios; correlation keys start with it.
const SOURCE: &str = "am";
const STREAM: &str = "ALERTS";
const SUBJECT: &str = "alerts.js.in";
/// The durable consumer name the bridge uses by default.
const DURABLE: &str = "incident-bridge";
/// Captures the bridge's dead letters (`scwm.dlq.<op>`), so they can be counted.
const DEAD_LETTERS: &str = "DEAD_LETTERS";

/// A simulator whose request log keeps every request: these runs make a few thousand.
async fn simulator_with(faults: Faults) -> SimHandle {
    Simulator::start(
        SimConfig {
            token: Some(Secret::new(TOKEN)),
            faults,
            request_log_limit: None,
            ..SimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn fingerprint(k: usize) -> String {
    format!("{:016x}", 0xbad0_0000_u64 + k as u64)
}

/// The correlation key the bridge gives key `k`'s alert from `source`; the incident's
/// `externalRef`.
fn correlation_key(source: &str, k: usize) -> String {
    format!("{source}:fp:{}", fingerprint(k))
}

/// A one-alert Alertmanager notification for key `k`: firing or resolved, with `summary`.
fn notification(k: usize, firing: bool, summary: &str) -> String {
    let (status, ends_at) =
        if firing { ("firing", "0001-01-01T00:00:00Z") } else { ("resolved", "2026-11-28T13:00:00Z") };
    let labels = json!({"alertname": "TenantStorm", "queue": format!("q{k:05}"), "severity": "warning"});
    json!({
        "receiver": "bridge", "status": status, "version": "4", "externalURL": "http://alertmanager",
        "groupKey": format!("{{}}:{{queue=\"q{k:05}\"}}"), "truncatedAlerts": 0,
        "groupLabels": {"alertname": "TenantStorm"}, "commonLabels": labels, "commonAnnotations": {},
        "alerts": [{
            "status": status, "labels": labels,
            "annotations": {"summary": format!("Queue q{k:05} {summary}")},
            "startsAt": "2026-11-28T12:00:00Z", "endsAt": ends_at,
            "generatorURL": "http://prometheus/graph", "fingerprint": fingerprint(k)
        }]
    })
    .to_string()
}

/// When the simulator received `r` (millisecond resolution).
fn received(r: &RecordedRequest) -> SystemTime {
    humantime::parse_rfc3339(&r.received_at).expect("the simulator writes RFC 3339")
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The most requests in any window of one second (`[t, t + 1 s)`), over arrival times, and
/// where the first such window starts (milliseconds since the epoch).
fn busiest_second(times: impl IntoIterator<Item = SystemTime>) -> (usize, i64) {
    let mut ms: Vec<i64> = times.into_iter().map(millis).collect();
    ms.sort_unstable();
    let (mut start, mut best, mut at) = (0, 0, 0);
    for end in 0..ms.len() {
        while ms[end] - ms[start] >= 1000 {
            start += 1;
        }
        if end - start + 1 > best {
            (best, at) = (end - start + 1, ms[start]);
        }
    }
    (best, at)
}

/// `b - a` in seconds, negative when `b` came first.
fn secs_between(a: SystemTime, b: SystemTime) -> f64 {
    (millis(b) - millis(a)) as f64 / 1000.0
}

/// The value at quantile `q` of `v` (sorted here); `NaN` for none.
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

fn spread(v: &mut [f64]) -> String {
    format!(
        "min {:.2} s, median {:.2} s, p90 {:.2} s, max {:.2} s",
        quantile(v, 0.0),
        quantile(v, 0.5),
        quantile(v, 0.9),
        quantile(v, 1.0)
    )
}

/// The operation a request's envelope names, from its `eventName`.
fn op_of(r: &RecordedRequest) -> &'static str {
    let name = r.body["header"]["eventName"].as_str().unwrap_or_default();
    ["add", "edit", "close", "reopen", "copy", "submit", "read"]
        .into_iter()
        .find(|op| name.contains(&format!(":{op}-")))
        .unwrap_or("other")
}

fn ok(r: &RecordedRequest) -> bool {
    matches!(r.status, Some(200..=299))
}

// ---------------------------------------------------------------------------------------------
// bad-minute

/// Sends key `k`'s firing alert as a signed webhook until the bridge answers 2xx, waiting what a
/// 503 or 429's `Retry-After` says, capped to 1 s (1 s without one), as Alertmanager would
/// retry. The same `webhook-id` each time: a retry of one delivery. Returns the sends and
/// every non-2xx answer.
async fn send_until_accepted(http: reqwest::Client, url: String, id: String, k: usize) -> (u32, Vec<String>) {
    let body = notification(k, true, "is backing up");
    let mut refusals = Vec::new();
    for attempt in 1..=60 {
        let (ts, sig) = sign(&id, &body);
        let sent = http
            .post(&url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", ts)
            .header("webhook-signature", sig)
            .body(body.clone())
            .send()
            .await;
        let wait = match sent {
            Ok(resp) if resp.status().is_success() => return (attempt, refusals),
            Ok(resp) => {
                refusals.push(resp.status().as_u16().to_string());
                resp.headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs)
            }
            Err(e) => {
                refusals.push(if e.is_timeout() { "timeout".into() } else { "transport".into() });
                Duration::from_secs(1)
            }
        };
        tokio::time::sleep(wait.min(Duration::from_secs(1))).await;
    }
    (60, refusals)
}

/// SCWM fails the next 5 requests with 503, then 30 % of them: 3 new alerts arrive as signed
/// webhooks. How long after SCWM became usable (the 5th failed request) do the first and the
/// last of their incidents exist? A fresh simulator and bridge for each of `--count` runs.
pub async fn bad_minute(args: &Args) {
    const ALERTS: usize = 3;
    let runs = args.count_or(20);
    let nats = natsrv::nats_server();
    let faults = Faults {
        fail_next: 5,
        fail_next_with: Failure::SERVICE_UNAVAILABLE,
        error_rate: 0.3,
        error: Failure::SERVICE_UNAVAILABLE,
        ..Faults::default()
    };
    println!(
        "simulator: fail_next = 5 (503), then error_rate = 0.3 (503); {ALERTS} new alerts per run as signed \
         webhooks, each resent on a non-2xx answer after min(Retry-After, 1 s); incidents polled every 10 ms"
    );
    println!("bridge: default [scwm.retry] and [scwm.breaker]\n");
    println!(
        "| run | first incident | last incident | webhook sends | non-2xx answers | SCWM requests (failed) |"
    );
    println!("|---|---|---|---|---|---|");
    let (mut firsts, mut lasts) = (Vec::new(), Vec::new());
    let mut missing = 0;
    for run in 0..runs {
        let sim = simulator_with(faults.clone()).await;
        let store = tempfile::tempdir().unwrap();
        let extra = source_config(&store.path().join("store.redb"), &nats.url());
        let (mut child, addr, _dir) = spawn_bridge(args, &sim, &extra).await;
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        let url = format!("http://{addr}/webhooks/signed");
        let senders: Vec<_> = (0..ALERTS)
            .map(|k| {
                let key = run as usize * ALERTS + k;
                tokio::spawn(send_until_accepted(http.clone(), url.clone(), format!("bad-minute-{key}"), key))
            })
            .collect();
        let state = sim.state();
        let (mut first, mut last) = (None, None);
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while Instant::now() < deadline {
            tick.tick().await;
            let n = state.incidents().len();
            let now = SystemTime::now();
            if n >= 1 && first.is_none() {
                first = Some(now);
            }
            if n >= ALERTS {
                last = Some(now);
                break;
            }
        }
        let (mut sends, mut refusals) = (0, Vec::new());
        for s in senders {
            let (n, r) = s.await.unwrap();
            sends += n;
            refusals.extend(r);
        }
        child.kill().await.ok();
        let requests = state.requests();
        let failed = requests.iter().filter(|r| r.fault.is_some()).count();
        // The first five requests are the ones `fail_next` failed; the fifth's answer (no
        // latency is injected, so it is answered when received) is when SCWM became usable.
        let usable = requests.get(4).map(received);
        let show = |t: Option<SystemTime>| match (usable, t) {
            (Some(u), Some(t)) => format!("{:.2} s", secs_between(u, t)),
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {} | {sends} | {} | {} ({failed}) |",
            run + 1,
            show(first),
            show(last),
            if refusals.is_empty() { "none".into() } else { refusals.join(", ") },
            requests.len()
        );
        match (usable, first, last) {
            (Some(u), Some(f), Some(l)) => {
                firsts.push(secs_between(u, f));
                lasts.push(secs_between(u, l));
            }
            _ => missing += 1,
        }
        sim.stop().await.ok();
    }
    let within = |v: &[f64], limit: f64| v.iter().filter(|s| **s <= limit).count();
    println!(
        "\n{runs} runs, from SCWM usable (the 5th failed request) to the incident existing in SCWM \
         (polled every 10 ms):"
    );
    println!("| incident | min | median | max | runs within the goal |");
    println!("|---|---|---|---|---|");
    for (name, v, goal) in [("first of 3", &mut firsts, 2.0), ("last of 3", &mut lasts, 5.0)] {
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.2} s | {} of {runs} within {goal:.0} s |",
            quantile(v, 0.0),
            quantile(v, 0.5),
            quantile(v, 1.0),
            within(v, goal)
        );
    }
    if missing > 0 {
        println!("{missing} runs did not get all {ALERTS} incidents within 30 s");
    }
}

// ---------------------------------------------------------------------------------------------
// JetStream scenarios

/// A nats-server with the alert stream and the dead-letter stream.
struct Rig {
    nats: NatsServer,
    js: jetstream::Context,
}

impl Rig {
    async fn start() -> Self {
        let nats = natsrv::nats_server();
        let js = jetstream::new(natsrv::connect(nats.port).await);
        for (name, subjects) in [(STREAM, "alerts.js.>"), (DEAD_LETTERS, "scwm.dlq.>")] {
            js.create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subjects.into()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        Self { nats, js }
    }

    /// The bridge's config beyond `spawn_bridge`'s: the alert source, the JetStream consumer
    /// with `consumer` settings, and `more` tables.
    fn config(&self, consumer: &str, more: &str) -> String {
        format!(
            "[nats]\nurl = \"{url}\"\nsubscriptions = []\n\
             [[nats.consumers]]\nstream = \"{STREAM}\"\ncreate = true\nstream_subjects = [\"alerts.js.>\"]\n\
             source = \"{SOURCE}\"\n{consumer}\n\
             [sources.{SOURCE}]\nkind = \"alertmanager\"\nreopen_window = \"1h\"\n\
             [[sources.{SOURCE}.auth]]\nscheme = \"bearer\"\ntokens = [\"unused-over-jetstream\"]\n{more}",
            url = self.nats.url()
        )
    }

    /// Publishes `bodies` in order, 500 acks awaited at a time; the time each was published
    /// and the last stream sequence.
    async fn publish(&self, bodies: Vec<String>) -> (Vec<SystemTime>, u64) {
        let mut at = Vec::with_capacity(bodies.len());
        let mut last = 0;
        for chunk in bodies.chunks(500) {
            let mut acks = Vec::with_capacity(chunk.len());
            for body in chunk {
                at.push(SystemTime::now());
                acks.push(self.js.publish(SUBJECT, Bytes::from(body.clone())).await.unwrap().into_future());
            }
            for ack in futures::future::join_all(acks).await {
                last = last.max(ack.unwrap().sequence);
            }
        }
        (at, last)
    }

    async fn consumer_info(&self) -> Option<jetstream::consumer::Info> {
        let mut consumer: PullConsumer =
            self.js.get_stream(STREAM).await.ok()?.get_consumer(DURABLE).await.ok()?;
        consumer.info().await.ok().cloned()
    }

    /// Whether every message up to `seq` is acknowledged (or terminated) and none is pending.
    async fn acked(&self, seq: u64) -> bool {
        self.consumer_info().await.is_some_and(|info| {
            info.ack_floor.stream_sequence >= seq && info.num_ack_pending == 0 && info.num_pending == 0
        })
    }

    async fn dead_letters(&self) -> u64 {
        let mut stream = self.js.get_stream(DEAD_LETTERS).await.unwrap();
        stream.info().await.unwrap().state.messages
    }
}

/// What SCWM holds per correlation key: how many keys of `0..n` have one incident, none, or
/// several, and how many incidents name a key outside them.
struct PerKey {
    one: usize,
    none: usize,
    several: usize,
    strangers: usize,
}

/// The table rows every JetStream scenario ends with: the incidents per key, and the dead letters.
fn print_incidents_and_dead_letters(incidents: &[Incident], keys: &PerKey, dead: impl std::fmt::Display) {
    println!(
        "| incidents | {} ({} keys with one, {} with several, {} with none, {} for no known key) |",
        incidents.len(),
        keys.one,
        keys.several,
        keys.none,
        keys.strangers
    );
    println!("| dead letters | {dead} |");
}

fn per_key(incidents: &[Incident], n: usize) -> PerKey {
    let mut by_key: HashMap<String, usize> = HashMap::new();
    for i in incidents {
        let key = i.fields.get("externalRef").and_then(Value::as_str).unwrap_or("<none>");
        *by_key.entry(key.to_owned()).or_default() += 1;
    }
    let mut counts = PerKey { one: 0, none: 0, several: 0, strangers: 0 };
    for k in 0..n {
        match by_key.remove(&correlation_key(SOURCE, k)).unwrap_or(0) {
            0 => counts.none += 1,
            1 => counts.one += 1,
            _ => counts.several += 1,
        }
    }
    counts.strangers = by_key.values().sum();
    counts
}

/// Key number by correlation key, for keys `0..n`.
fn key_numbers(n: usize) -> HashMap<String, usize> {
    (0..n).map(|k| (correlation_key(SOURCE, k), k)).collect()
}

/// The first 2xx request of operation `op` per key, and the first request of any answer,
/// with the key read by `key_of`.
fn first_requests(
    requests: &[RecordedRequest],
    op: &str,
    key_of: impl Fn(&RecordedRequest) -> Option<usize>,
) -> (HashMap<usize, SystemTime>, HashMap<usize, SystemTime>) {
    let (mut served, mut tried) = (HashMap::new(), HashMap::new());
    for r in requests.iter().filter(|r| op_of(r) == op) {
        let Some(k) = key_of(r) else { continue };
        tried.entry(k).or_insert_with(|| received(r));
        if ok(r) {
            served.entry(k).or_insert_with(|| received(r));
        }
    }
    (served, tried)
}

/// Seconds from each key's publish to `at`'s time for it.
fn waits(published: &HashMap<usize, SystemTime>, at: &HashMap<usize, SystemTime>) -> Vec<f64> {
    published.iter().filter_map(|(k, p)| at.get(k).map(|t| secs_between(*p, *t))).collect()
}

/// SCWM allows 50 requests/s (burst 50) and answers 429 with Retry-After beyond that. 5,000
/// new alerts arrive on JetStream at once; once 1,000 incidents exist, 200 of those keys fire
/// again with a changed summary (edits) and right after them 200 others resolve (closes). How
/// far do the closes (urgent) get ahead of the edits (routine) published in front of them?
pub async fn storm(args: &Args) {
    const WAIT_AT_MOST: Duration = Duration::from_secs(170);
    let n = args.count_or(5_000) as usize;
    let trigger = n / 5;
    let (closes, edits) = ((n / 25).min(200), (n / 25).min(200));
    let limit = RateLimit { per_second: 50.0, burst: 50 };
    let rig = Rig::start().await;
    let sim = simulator_with(Faults { rate_limit: Some(limit), ..Faults::default() }).await;
    let state = sim.state();
    let bridge_limit = if args.limit_unknown {
        String::new()
    } else {
        format!("[scwm.rate_limit]\nper_second = {}\nburst = {}\n", limit.per_second, limit.burst)
    };
    let config = rig.config("", &bridge_limit);
    let (mut child, _addr, _dir) = spawn_bridge(args, &sim, &config).await;
    println!(
        "simulator: rate_limit {} req/s, burst {} (429 + Retry-After beyond); bridge: {}; consumer defaults \
         (max_ack_pending 1000, ack_wait 30 s, max_deliver 10)",
        limit.per_second,
        limit.burst,
        if args.limit_unknown {
            "no [scwm.rate_limit] (limit unknown)".to_owned()
        } else {
            format!("[scwm.rate_limit] per_second = {}, burst = {}", limit.per_second, limit.burst)
        }
    );

    let started = Instant::now();
    let (add_at, mut last_seq) =
        rig.publish((0..n).map(|k| notification(k, true, "is backing up")).collect()).await;
    let add_published: HashMap<usize, SystemTime> = add_at.into_iter().enumerate().collect();
    let numbers = key_numbers(n);
    let mut close_published = HashMap::new();
    let mut edit_published = HashMap::new();
    let mut pending_adds_at_trigger = 0;
    let mut triggered_after = None;
    let mut drained = None;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while started.elapsed() < WAIT_AT_MOST {
        tick.tick().await;
        let incidents = state.incidents();
        if triggered_after.is_none() && incidents.len() >= trigger {
            triggered_after = Some(started.elapsed());
            pending_adds_at_trigger = n - incidents.len();
            let keys: Vec<usize> = incidents
                .iter()
                .filter_map(|i| numbers.get(i.fields.get("externalRef")?.as_str()?).copied())
                .take(closes + edits)
                .collect();
            // Keys taken alternately for the two kinds, but every edit published before the
            // first close: in stream order the closes stand behind the edits, so what the
            // bridge makes of them shows what its lanes do (closes urgent, edits routine).
            let (mut edit_keys, mut close_keys) = (Vec::new(), Vec::new());
            for (j, k) in keys.iter().enumerate() {
                if (j % 2 == 0 && close_keys.len() < closes) || edit_keys.len() >= edits {
                    close_keys.push(*k);
                } else {
                    edit_keys.push(*k);
                }
            }
            let mut bodies = Vec::new();
            let mut order = Vec::new();
            for k in &edit_keys {
                bodies.push(notification(*k, true, "is backing up (changed: still growing)"));
                order.push((false, *k));
            }
            for k in &close_keys {
                bodies.push(notification(*k, false, "is backing up"));
                order.push((true, *k));
            }
            let (at, seq) = rig.publish(bodies).await;
            last_seq = last_seq.max(seq);
            for ((close, k), t) in order.into_iter().zip(at) {
                if close {
                    close_published.insert(k, t);
                } else {
                    edit_published.insert(k, t);
                }
            }
        }
        if triggered_after.is_some() {
            let closed = incidents.iter().filter(|i| i.status == IncidentStatus::Closed).count();
            let edited = incidents
                .iter()
                .filter(|i| i.fields.values().any(|v| v.as_str().is_some_and(|s| s.contains("(changed:"))))
                .count();
            if incidents.len() >= n && closed >= close_published.len() && edited >= edit_published.len() {
                drained = Some(started.elapsed());
                break;
            }
        }
    }
    // What the consumer still holds; a moment for late acks first.
    let mut acked = false;
    for _ in 0..50 {
        if rig.acked(last_seq).await {
            acked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let info = rig.consumer_info().await;
    let dead = rig.dead_letters().await;
    child.kill().await.ok();

    let requests = state.requests();
    let incidents = state.incidents();
    let keys = per_key(&incidents, n);
    let too_many = requests.iter().filter(|r| r.status == Some(429)).count();
    let mut by_op: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for r in &requests {
        let e = by_op.entry(op_of(r)).or_default();
        e.0 += 1;
        if ok(r) {
            e.1 += 1;
        }
    }
    let (busiest, busiest_at) = busiest_second(requests.iter().map(received));
    let (busiest_ok, _) = busiest_second(requests.iter().filter(|r| ok(r)).map(received));
    let first_request = requests.iter().map(|r| millis(received(r))).min().unwrap_or(0);
    // How many requests of the busiest window were answered 2xx.
    let busiest_window_ok = requests
        .iter()
        .filter(|r| ok(r) && (busiest_at..busiest_at + 1000).contains(&millis(received(r))))
        .count();
    let key_of_add = |r: &RecordedRequest| numbers.get(r.body["payload"]["externalRef"].as_str()?).copied();
    let id_to_key: HashMap<String, usize> = incidents
        .iter()
        .filter_map(|i| Some((i.id.to_string(), *numbers.get(i.fields.get("externalRef")?.as_str()?)?)))
        .collect();
    let key_of_id = |r: &RecordedRequest| id_to_key.get(r.body["payload"]["id"].as_str()?).copied();
    let (adds_served, _) = first_requests(&requests, "add", key_of_add);
    let (closes_served, closes_tried) = first_requests(&requests, "close", key_of_id);
    let (edits_served, edits_tried) = first_requests(&requests, "edit", key_of_id);
    // Over how long the edits and resolves were published.
    let later: Vec<i64> =
        edit_published.values().chain(close_published.values()).map(|t| millis(*t)).collect();
    let span = later.iter().max().unwrap_or(&0) - later.iter().min().unwrap_or(&0);
    // The adds still waiting when the closes were published: the queue a close would stand in
    // if it were served in arrival order.
    let first_close = close_published.values().min().copied();
    let adds_after_closes = first_close.map_or(0, |c| adds_served.values().filter(|t| **t > c).count());
    let adds_after_last_close =
        closes_served.values().max().map_or(0, |last| adds_served.values().filter(|t| *t > last).count());

    // Closes against the edits published in front of them: how many were served before the
    // last (and the first) edit was, at the simulator's millisecond resolution.
    let last_edit = edits_served.values().max().copied();
    let first_edit = edits_served.values().min().copied();
    let closes_before =
        |edit: Option<SystemTime>| edit.map_or(0, |e| closes_served.values().filter(|t| **t < e).count());
    let (closes_before_last_edit, closes_before_first_edit) =
        (closes_before(last_edit), closes_before(first_edit));
    let edits_before_first_close =
        closes_served.values().min().map_or(0, |c| edits_served.values().filter(|t| *t < c).count());
    let close_median = quantile(&mut waits(&close_published, &closes_served), 0.5);
    let edit_median = quantile(&mut waits(&edit_published, &edits_served), 0.5);

    let work = n + close_published.len() + edit_published.len();
    let floor = (work as f64 - f64::from(limit.burst)).max(0.0) / limit.per_second;
    println!("\n| what | value |");
    println!("|---|---|");
    match drained {
        Some(d) => println!(
            "| time to drain ({n} incidents, {} closed, {} edited) | {:.1} s (floor {:.0} s: {work} requests at {} /s after a burst of {}) |",
            close_published.len(),
            edit_published.len(),
            d.as_secs_f64(),
            floor,
            limit.per_second,
            limit.burst
        ),
        None => println!("| time to drain | **not drained within {WAIT_AT_MOST:?}** |"),
    }
    println!(
        "| edits, then resolves, published | after {:.1} s, when {} incidents existed ({pending_adds_at_trigger} adds still to do); {} edits, then {} resolves, over {} ms |",
        triggered_after.unwrap_or_default().as_secs_f64(),
        n - pending_adds_at_trigger,
        edit_published.len(),
        close_published.len(),
        span
    );
    println!("| SCWM requests | {} ({}) |", requests.len(), {
        by_op.iter().map(|(op, (all, ok))| format!("{op} {all}, {ok} 2xx")).collect::<Vec<_>>().join("; ")
    });
    println!(
        "| most requests SCWM saw in any 1 s window | {busiest}, {:.1} s after the first request ({busiest_window_ok} of them answered 2xx); the most 2xx in any 1 s window: {busiest_ok}; the limit is {} /s + a burst of {} |",
        (busiest_at - first_request) as f64 / 1000.0,
        limit.per_second,
        limit.burst
    );
    println!("| 429 answers | {too_many} |");
    print_incidents_and_dead_letters(&incidents, &keys, dead);
    if let Some(info) = &info {
        println!(
            "| consumer at the end | {} redelivered, {} ack pending, {} pending, all acked: {acked} |",
            info.num_redelivered, info.num_ack_pending, info.num_pending
        );
    }
    println!(
        "| wait, publish → first 2xx SCWM request | adds: {} |",
        spread(&mut waits(&add_published, &adds_served))
    );
    println!("| | closes: {} |", spread(&mut waits(&close_published, &closes_served)));
    println!("| | edits: {} |", spread(&mut waits(&edit_published, &edits_served)));
    println!(
        "| wait, publish → first SCWM request (any answer) | closes: {}; edits: {} |",
        spread(&mut waits(&close_published, &closes_tried)),
        spread(&mut waits(&edit_published, &edits_tried))
    );
    println!(
        "| closes vs the edits published in front of them | median wait {close_median:.2} s vs {edit_median:.2} s; {closes_before_last_edit} of {} closes served before the last edit was ({closes_before_first_edit} before the first); {edits_before_first_close} of {} edits served before the first close |",
        closes_served.len(),
        edits_served.len()
    );
    println!(
        "| adds served after the resolves were published | {adds_after_closes} (of {pending_adds_at_trigger} then waiting); after the last close was served: {adds_after_last_close} |"
    );
    println!("| wall time | {:.1?} |", started.elapsed());
}

/// A consumer with `max_deliver = 3`; 1,000 alerts, half before and half during 30 s of SCWM
/// down (10 s of 503, then its port closed for 20 s), then SCWM back with the same state.
pub async fn outage(args: &Args) {
    const FAILING: Duration = Duration::from_secs(10);
    const REFUSING: Duration = Duration::from_secs(20);
    let n = args.count_or(1_000) as usize;
    let rig = Rig::start().await;
    let sim = simulator_with(Faults::default()).await;
    let (state, addr) = (sim.state(), sim.addr());
    let config = rig.config("max_deliver = 3\n", "");
    let (mut child, _addr, _dir) = spawn_bridge(args, &sim, &config).await;
    println!(
        "consumer: max_deliver = 3, ack_wait 30 s (default); bridge: default [scwm.retry] and [scwm.breaker]; \
         SCWM: {FAILING:?} of 503 for every request, then its HTTP listener stopped for {REFUSING:?} (connections \
         refused), then started again on the same port with the same incidents"
    );
    let started = Instant::now();
    rig.publish((0..n / 2).map(|k| notification(k, true, "is backing up")).collect()).await;
    let _ = state.wait_for_requests(n / 10, Duration::from_secs(30)).await;
    state.set_faults(Faults { error_rate: 1.0, error: Failure::SERVICE_UNAVAILABLE, ..Faults::default() });
    let down = Instant::now();
    let before = state.incidents().len();
    let (_, last) = rig.publish((n / 2..n).map(|k| notification(k, true, "is backing up")).collect()).await;
    tokio::time::sleep_until((down + FAILING).into()).await;
    let answered_503 = state.requests().iter().filter(|r| r.status == Some(503)).count();
    sim.stop().await.unwrap();
    let refused = tokio::net::TcpStream::connect(addr).await.is_err();
    tokio::time::sleep_until((down + FAILING + REFUSING).into()).await;
    let during = state.incidents().len();
    state.set_faults(Faults::default());
    let sim = Simulator::start_with_state(Arc::clone(&state), addr).await.unwrap();
    let back = Instant::now();
    let requests_at_back = state.request_count();

    let (mut all_exist, mut all_acked) = (None, None);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    while back.elapsed() < Duration::from_secs(120) {
        tick.tick().await;
        if all_exist.is_none() && state.incidents().len() >= n {
            all_exist = Some(back.elapsed());
        }
        if all_exist.is_some() && rig.acked(last).await {
            all_acked = Some(back.elapsed());
            break;
        }
    }
    let info = rig.consumer_info().await;
    let dead = rig.dead_letters().await;
    child.kill().await.ok();
    let requests = state.requests();
    let incidents = state.incidents();
    let keys = per_key(&incidents, n);
    let after_back = requests.len() - requests_at_back;

    let show = |d: Option<Duration>| {
        d.map_or("**not within 120 s**".to_owned(), |d| format!("{:.2} s", d.as_secs_f64()))
    };
    println!("\n| what | value |");
    println!("|---|---|");
    println!("| alerts | {n}: {} before the outage, {} during it |", n / 2, n - n / 2);
    println!("| incidents when SCWM went down | {before} |");
    println!(
        "| SCWM down | {:.0?} 503 ({answered_503} requests answered 503), then {:.0?} with the port closed (refused: {refused}); {during} incidents when it came back |",
        FAILING, REFUSING
    );
    println!("| SCWM back → all {n} incidents exist | {} |", show(all_exist));
    println!("| SCWM back → every message acknowledged | {} |", show(all_acked));
    print_incidents_and_dead_letters(&incidents, &keys, dead);
    if let Some(info) = &info {
        println!(
            "| JetStream redeliveries (num_redelivered) | {} (ack pending {}, pending {} at the end) |",
            info.num_redelivered, info.num_ack_pending, info.num_pending
        );
    }
    println!(
        "| SCWM requests | {} in all, {after_back} after it came back, {} 2xx |",
        requests.len(),
        requests.iter().filter(|r| ok(r)).count()
    );
    println!("| wall time | {:.1?} |", started.elapsed());
    sim.stop().await.ok();
}
