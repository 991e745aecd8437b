//! Chaos: the bridge keeps its promises while what it depends on fails. Each scenario runs the
//! real `incident-bridge` binary as child processes against a nats-server, an SCWM simulator and
//! temp dirs of its own, breaks something on purpose while alerts flow, and then compares what
//! SCWM ended up with (the simulator's incidents and request log) with what the alerts asked for:
//!
//! 1. the bridge is SIGKILLed again and again during a JetStream run, each time a share of the
//!    work has reached SCWM, and started again each time;
//! 2. the nats-server is killed and started again mid-run, taking the KV store with it;
//! 3. SCWM answers 503, then refuses connections, then comes back with the same state, under a
//!    consumer with `max_deliver = 3`: the open circuit holds the messages, so the outage spends
//!    no delivery and leaves no dead letter; and when SCWM fails without ever opening the
//!    circuit (a bad minute that lasts), the alerts whose deliveries run out become dead letters;
//! 4. three replicas share one JetStream consumer and one KV store, one of them SIGKILLed and
//!    started again, and end in the state a sequential run gives;
//! 5. SCWM is slow (50 ms to 5 s per call) while five times the queue arrives at once over
//!    HTTP and as much again as a JetStream backlog: `/healthz` and `/readyz` answer within 1 s
//!    throughout, the bridge's resident memory stays under 128 MiB, the webhooks that do not fit
//!    are refused with 503 and `Retry-After`, and the JetStream messages wait their turn without
//!    the server delivering them twice;
//! 6. partitions (`partitions`): replicas cut off from NATS or from SCWM by the kit's fault
//!    proxy mid-run, one each or all at once, then healed;
//! 7. a clock step (`clocks`): a webhook receiver's wall clock jumps back past the signature
//!    tolerance, and the signed webhooks it refuses meanwhile are taken when resent.
//!
//! "Lost" means a key without the incident its alerts ask for (or with it in the wrong state);
//! a "duplicate effect" is a second incident for a key, a licensePlate that SCWM acted on twice,
//! or an operation SCWM refused because an earlier one had already done it (a 409, say).
//!
//! **Scale.** `CHAOS_SCALE=short` (the default, what CI runs: the whole file in about a minute
//! on two cores) or `CHAOS_SCALE=long` (by hand, about four minutes: five times the events and
//! keys, and so more kills, a 60 s SCWM outage, three nats-server restarts, five HTTP bursts):
//!
//! ```sh
//! CHAOS_SCALE=long cargo test --test it chaos:: -- --nocapture
//! ```
//!
//! Kill times and the replicas' event scripts are random; every test that draws them prints its
//! seed, and `CHAOS_SEED=<number>` makes the same draws again (what they meet still depends on
//! timing).
//!
//! Nothing sleeps to wait for something to happen: the tests await the simulator's request log
//! or the answers themselves, and poll what the servers offer no notification for (the bridge's
//! readiness, the consumer's ack floor and waiting pulls) every 50–100 ms, each wait with a
//! timeout. A bridge is killed when a share of the work has reached SCWM, never after a fixed
//! time, so every kill meets work in progress on a fast idle machine and a slow busy one alike.
//! The timers that remain are the chaos itself: how long SCWM stays down, and the `Retry-After`
//! a refused sender honours.

mod clocks;
mod history;
mod partitions;
mod pauses;
mod rollback;
mod schedule;

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use crate::kit::{
    alerts::{BEARER, Step, am_source, correlation_key, keyed_notification},
    nats::NatsServer,
    within,
};
use async_nats::jetstream::{self, consumer::PullConsumer, stream};
use bytes::Bytes;
use incident_bridge::sim::{Failure, Faults, IncidentStatus, Latency, SimHandle, SimState, Simulator};
use rand::{Rng, SeedableRng, rngs::StdRng};
use tempfile::TempDir;

/// The alert source every scenario sends to.
const SOURCE: &str = "am";
const STREAM: &str = "ALERTS";
const SUBJECT: &str = "alerts.js.in";
/// The durable consumer name the bridge uses by default.
const DURABLE: &str = "incident-bridge";
/// Captures every dead letter, so they are counted even when they are published while the
/// test's own connection is away.
const DEAD_LETTERS: &str = "DEAD_LETTERS";

/// How big a run is: `CHAOS_SCALE`.
#[derive(Debug, Clone, Copy)]
struct Scale {
    long: bool,
}

impl Scale {
    fn from_env() -> Self {
        match std::env::var("CHAOS_SCALE").as_deref() {
            Err(_) | Ok("" | "short") => Scale { long: false },
            Ok("long") => Scale { long: true },
            Ok(other) => panic!("CHAOS_SCALE must be `short` or `long`, not `{other}`"),
        }
    }

    fn pick<T>(self, short: T, long: T) -> T {
        if self.long { long } else { short }
    }
}

/// A random source for one test: from `CHAOS_SEED`, else fresh; printed either way.
fn seeded(test: &str) -> StdRng {
    let seed = match std::env::var("CHAOS_SEED") {
        Ok(s) => s.parse().unwrap_or_else(|_| panic!("CHAOS_SEED must be a number, not `{s}`")),
        Err(_) => rand::rng().random(),
    };
    eprintln!("{test}: CHAOS_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// Waits until `check` says yes, asking every `every`; fails the test after `secs`.
async fn poll_until<F, Fut>(secs: u64, what: &str, every: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    within(secs, what, async {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if check().await {
                break;
            }
        }
    })
    .await;
}

/// One bridge process: the real binary, SIGKILLed when dropped.
struct Bridge {
    child: tokio::process::Child,
    addr: String,
    http: reqwest::Client,
}

impl Bridge {
    /// Starts the binary with `config` and `overrides` (dotted key, value) set the way the
    /// environment sets them, and returns once it reports ready. It logs warnings only, and its
    /// ready line.
    async fn spawn(config: &str, dir: &TempDir, overrides: &[(&str, &str)]) -> Self {
        Self::spawn_with_env(config, dir, overrides, &[]).await
    }

    /// [`Bridge::spawn`] with more environment variables for the process (a preloaded library).
    async fn spawn_with_env(
        config: &str,
        dir: &TempDir,
        overrides: &[(&str, &str)],
        extra_env: &[(&str, &str)],
    ) -> Self {
        let mut env: Vec<(String, String)> = overrides
            .iter()
            .map(|(k, v)| {
                let name = k.replace('.', "__").to_ascii_uppercase();
                (format!("{}{name}", incident_bridge::config::ENV_PREFIX), (*v).to_owned())
            })
            .collect();
        let level =
            std::env::var("CHAOS_RUST_LOG").unwrap_or_else(|_| "warn,incident_bridge::app=info".into());
        env.push(("RUST_LOG".into(), level));
        env.extend(extra_env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let (child, addr) = crate::kit::spawn_bridge_with_env(config, dir, &env).await;
        Self { child, addr, http: reqwest::Client::new() }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("a running bridge has a pid")
    }

    /// SIGKILL: no drain, no acks, no flush; whatever was in flight is cut off.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL the bridge");
        self.child.wait().await.expect("reap the bridge");
    }

    /// Waits until the bridge's `incident_bridge_nats_connected` says `connected`: a frozen or
    /// partitioned server is noticed by its pings going unanswered.
    async fn wait_nats(&self, connected: bool, secs: u64) {
        let want = format!("incident_bridge_nats_connected {}", u8::from(connected));
        poll_until(secs, &want, Duration::from_millis(50), || async {
            let Ok(resp) = self.http.get(self.url("/metrics")).send().await else { return false };
            resp.text().await.is_ok_and(|m| m.lines().any(|l| l == want))
        })
        .await;
    }

    /// Waits until `/readyz` answers `status`.
    async fn wait_readiness(&self, status: u16, secs: u64) {
        poll_until(secs, &format!("/readyz to answer {status}"), Duration::from_millis(50), || async {
            matches!(self.http.get(self.url("/readyz")).send().await, Ok(r) if r.status() == status)
        })
        .await;
    }
}

/// The consumer settings of most scenarios: deliveries enough to outlast every fault here,
/// and an `ack_wait` short enough that a killed bridge's messages come back within seconds.
const CONSUMER: &str = r#"ack_wait = "2s"
max_deliver = 1000
"#;

/// The correlation store as a redb file in `dir`.
fn embedded_store(dir: &TempDir) -> String {
    format!("[store]\npath = \"{}\"\nclaim_ttl = \"2s\"\n", dir.path().join("correlation.redb").display())
}

/// The correlation store as a JetStream KV bucket on the bridge's NATS server.
const KV_STORE: &str = r#"[store]
backend = "jetstream-kv"
bucket = "chaos"
claim_ttl = "2s"
"#;

/// A nats-server with the alert stream and the dead-letter stream, and a simulator. The
/// simulator's state outlives its server, so SCWM can go away and come back as it was.
struct Rig {
    nats: NatsServer,
    js: jetstream::Context,
    sim: Option<SimHandle>,
    scwm: Arc<SimState>,
    scwm_addr: SocketAddr,
    dir: TempDir,
}

impl Rig {
    async fn start() -> Self {
        let nats = NatsServer::start();
        let js = jetstream::new(nats.client().await);
        for (name, subjects) in [(STREAM, "alerts.js.>"), (DEAD_LETTERS, "scwm.dlq.>")] {
            js.create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subjects.into()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("creating stream {name}: {e}"));
        }
        let sim = crate::kit::start_simulator().await;
        let (scwm, scwm_addr) = (sim.state(), sim.addr());
        Self { nats, js, sim: Some(sim), scwm, scwm_addr, dir: tempfile::tempdir().unwrap() }
    }

    fn scwm_url(&self) -> String {
        format!("http://{}/incident", self.scwm_addr)
    }

    /// A bridge config: the alert source, the JetStream consumer with `consumer` settings and
    /// the `store` table.
    fn config(&self, consumer: &str, store: &str) -> String {
        let extra = format!(
            r#"{source}
[nats]
url = "{url}"
subscriptions = []

[[nats.consumers]]
stream = "{STREAM}"
create = true
stream_subjects = ["alerts.js.>"]
source = "{SOURCE}"
{consumer}
{store}
"#,
            source = am_source(SOURCE, "reopen_window = \"1h\""),
            url = self.nats.url(),
        );
        crate::kit::config_text(&self.scwm_url(), &extra)
    }

    /// Publishes the bodies to the alert stream, in order; returns the last stream sequence.
    async fn publish(&self, bodies: impl IntoIterator<Item = Vec<u8>>) -> u64 {
        let bodies: Vec<Vec<u8>> = bodies.into_iter().collect();
        let mut last = 0;
        for chunk in bodies.chunks(500) {
            let mut acks = Vec::with_capacity(chunk.len());
            for body in chunk {
                acks.push(self.js.publish(SUBJECT, Bytes::from(body.clone())).await.expect("publish"));
            }
            for ack in
                futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await
            {
                last = last.max(ack.expect("stream ack").sequence);
            }
        }
        last
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

    async fn wait_acked(&self, seq: u64, secs: u64) {
        poll_until(secs, "the bridge to acknowledge every message", Duration::from_millis(100), || {
            self.acked(seq)
        })
        .await;
    }

    /// Waits until `n` bridges have a pull request waiting on the consumer.
    async fn wait_pulling(&self, n: usize) {
        poll_until(20, &format!("{n} bridges to pull"), Duration::from_millis(50), || async {
            self.consumer_info().await.is_some_and(|info| info.num_waiting >= n)
        })
        .await;
    }

    async fn dead_letter_count(&self) -> u64 {
        let mut stream = self.js.get_stream(DEAD_LETTERS).await.expect("the dead-letter stream");
        stream.info().await.expect("dead-letter stream info").state.messages
    }

    /// Every dead letter so far, in order.
    async fn dead_letters(&self) -> Vec<jetstream::message::StreamMessage> {
        let stream = self.js.get_stream(DEAD_LETTERS).await.expect("the dead-letter stream");
        let mut out = Vec::new();
        for seq in 1..=self.dead_letter_count().await {
            out.push(stream.get_raw_message(seq).await.expect("a dead letter"));
        }
        out
    }

    /// The `Nats-Msg-Id` of every result the results stream holds, in stream order, each
    /// message's headers passed to `check` first.
    async fn result_ids(&self, check: impl Fn(&async_nats::HeaderMap)) -> Vec<String> {
        let mut results = self.js.get_stream(RESULTS).await.expect("the results stream");
        let stored = results.info().await.expect("results stream info").state.messages;
        let mut ids = Vec::new();
        for seq in 1..=stored {
            let m = results.get_raw_message(seq).await.expect("a result");
            check(&m.headers);
            ids.push(m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_owned()).unwrap_or_default());
        }
        ids
    }

    /// Waits until SCWM has seen `n` requests in all, for at most `secs`.
    async fn wait_scwm_requests(&self, n: usize, what: &str, secs: u64) {
        within(secs, what, self.scwm.wait_for_requests(n, Duration::from_secs(secs))).await.unwrap();
    }

    /// Stops SCWM: the port refuses connections until [`Rig::scwm_back`].
    async fn scwm_down(&mut self) {
        self.sim.take().expect("SCWM is up").stop().await.expect("the simulator stops");
    }

    /// SCWM again, on the same port with the same incidents and remembered answers.
    async fn scwm_back(&mut self) {
        let sim = Simulator::start_with_state(Arc::clone(&self.scwm), self.scwm_addr)
            .await
            .expect("the simulator binds its old port again");
        self.sim = Some(sim);
    }
}

/// Random scripts: one to `longest` steps per key, firing more often than resolving, so there
/// are repeats, resolutions of alerts that never fired, and reopenings.
fn random_scripts(rng: &mut impl Rng, keys: usize, longest: usize) -> Vec<Vec<Step>> {
    (0..keys)
        .map(|_| {
            let len = rng.random_range(1..=longest);
            (0..len).map(|_| if rng.random_bool(0.6) { Step::Fire } else { Step::Resolve }).collect()
        })
        .collect()
}

/// Round r holds every key's r-th step, so one key's steps are far apart in the stream and land
/// in different pulls, on different replicas, out of order when one is put back.
fn in_rounds(scripts: &[Vec<Step>]) -> Vec<Vec<u8>> {
    let rounds = scripts.iter().map(Vec::len).max().unwrap_or(0);
    (0..rounds)
        .flat_map(|r| {
            scripts
                .iter()
                .enumerate()
                .filter_map(move |(k, s)| s.get(r).map(|step| keyed_notification(k, *step)))
        })
        .collect()
}

/// Every licensePlate SCWM answered with success.
fn answered_plates(scwm: &SimState) -> std::collections::BTreeSet<String> {
    scwm.requests()
        .iter()
        .filter(|r| r.status == Some(200))
        .map(|r| r.body["header"]["licensePlate"].as_str().expect("a licensePlate").to_owned())
        .collect()
}

/// Sends `sig` (`-STOP`, `-CONT`) to process `pid`.
fn signal(pid: u32, sig: &str) {
    let status =
        std::process::Command::new("kill").args([sig, &pid.to_string()]).status().expect("kill runs");
    assert!(status.success(), "kill {sig} {pid}");
}

/// What a sequential run of `scripts` (key `k`'s steps at `k`) leaves for every key.
fn sequential(scripts: &[Vec<Step>]) -> BTreeMap<String, Option<IncidentStatus>> {
    scripts.iter().enumerate().map(|(k, s)| (correlation_key(SOURCE, k), final_state(s))).collect()
}

/// What a sequential run leaves for one key: `None` when no incident should exist.
fn final_state(steps: &[Step]) -> Option<IncidentStatus> {
    let fired = steps.iter().position(|s| *s == Step::Fire)?;
    Some(match steps[fired..].last() {
        Some(Step::Fire) => IncidentStatus::Open,
        _ => IncidentStatus::Closed,
    })
}

/// Checks SCWM against `want` (correlation key → the state its incident must be in, `None` for
/// no incident): exactly one incident per key that needs one, in that state, none for any other
/// key; no licensePlate acted on twice; no operation refused (a 4xx not injected by the test).
fn assert_scwm_is(scwm: &SimState, want: &BTreeMap<String, Option<IncidentStatus>>) {
    let mut by_key: HashMap<String, Vec<(String, IncidentStatus)>> = HashMap::new();
    for i in scwm.incidents() {
        let key = i.fields.get("externalRef").and_then(|v| v.as_str()).unwrap_or("<none>").to_owned();
        by_key.entry(key).or_default().push((i.id.to_string(), i.status));
    }
    let mut problems = Vec::new();
    let (mut lost, mut doubled, mut wrong) = (0, 0, 0);
    for (key, state) in want {
        let found = by_key.remove(key).unwrap_or_default();
        match (state, found.as_slice()) {
            (None, []) => {}
            (Some(s), [(_, got)]) if s == got => {}
            (Some(_), []) => {
                lost += 1;
                problems.push(format!("{key}: lost, no incident (want {state:?})"));
            }
            (_, [_, _, ..]) => {
                doubled += 1;
                problems.push(format!("{key}: {} incidents {found:?} (want {state:?})", found.len()));
            }
            _ => {
                wrong += 1;
                problems.push(format!("{key}: {found:?}, want {state:?}"));
            }
        }
    }
    for (key, found) in by_key {
        problems.push(format!("{key}: incidents for a key no alert named: {found:?}"));
    }

    let mut effects: HashMap<String, u32> = HashMap::new();
    let mut refused = Vec::new();
    for r in scwm.requests() {
        let plate = r.body["header"]["licensePlate"].as_str().unwrap_or_default().to_owned();
        match r.status {
            Some(200..=299) if !r.duplicate => *effects.entry(plate).or_default() += 1,
            Some(s @ 400..=499) if r.fault.is_none() => {
                refused.push(format!("{} {plate} -> {s}", r.body["header"]["eventName"]))
            }
            _ => {}
        }
    }
    let twice: Vec<_> = effects.iter().filter(|(_, n)| **n > 1).collect();
    for (plate, n) in &twice {
        problems.push(format!("licensePlate {plate} took effect {n} times"));
    }
    for r in &refused {
        problems.push(format!("SCWM refused {r}"));
    }
    let shown: Vec<_> = problems.iter().take(30).cloned().collect();
    assert!(
        problems.is_empty(),
        "{} problems ({lost} keys lost, {doubled} with several incidents, {wrong} in the wrong state, \
         {} plates twice, {} refusals), first {}:\n{}",
        problems.len(),
        twice.len(),
        refused.len(),
        shown.len(),
        shown.join("\n")
    );
}

/// Keys `0..n` that fired once each and must each have one open incident.
fn all_open(n: usize) -> BTreeMap<String, Option<IncidentStatus>> {
    (0..n).map(|k| (correlation_key(SOURCE, k), Some(IncidentStatus::Open))).collect()
}

/// SCWM requests answered from the simulator's record of a licensePlate: work that a killed or
/// interrupted bridge had already sent, sent again, and not done twice.
fn replays(scwm: &SimState) -> usize {
    scwm.requests().iter().filter(|r| r.duplicate).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_sigkilled_repeatedly_mid_run_loses_no_alert_and_acts_on_none_twice() {
    let scale = Scale::from_env();
    let mut rng = seeded("kill -9");
    let n = scale.pick(2_000, 10_000);
    let kills = scale.pick(3, 8);
    let rig = Rig::start().await;
    let last = rig.publish((0..n).map(|k| keyed_notification(k, Step::Fire))).await;
    let config = rig.config(CONSUMER, &embedded_store(&rig.dir));

    // Paced by progress, not by the clock: each bridge lives until SCWM has seen a share of the
    // work (a random share around 1 / (kills + 1) of it), and is killed then, while work remains
    // however fast or slow the machine is.
    let started = Instant::now();
    let mut kills_mid_run = 0;
    let share = n / (kills + 1);
    for _ in 0..kills {
        let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
        let target = rig.scwm.request_count() + rng.random_range(share * 3 / 4..=share);
        rig.wait_scwm_requests(target, "SCWM work to be under way", 120).await;
        bridge.kill().await;
        if rig.scwm.incidents().len() < n {
            kills_mid_run += 1;
        }
    }
    let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
    rig.wait_acked(last, scale.pick(150, 900)).await;
    bridge.kill().await;
    let replayed = replays(&rig.scwm);
    eprintln!(
        "kill -9: {n} alerts in {:.1?}, {kills_mid_run} kills while SCWM work remained, {} SCWM requests, \
         {replayed} of them repeats of a licensePlate",
        started.elapsed(),
        rig.scwm.requests().len(),
    );
    assert_eq!(kills_mid_run, kills, "every kill came while SCWM work remained");
    assert_scwm_is(&rig.scwm, &all_open(n));
    assert_eq!(rig.dead_letter_count().await, 0, "no dead letters");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restarted_mid_run_loses_no_alert_and_acts_on_none_twice() {
    let scale = Scale::from_env();
    let n = scale.pick(1_500, 7_500);
    let restarts = scale.pick(1, 3);
    let mut rig = Rig::start().await;
    let last = rig.publish((0..n).map(|k| keyed_notification(k, Step::Fire))).await;
    // The store is a KV bucket on the same server, so the restart takes it away too.
    let config = rig.config(CONSUMER, KV_STORE);
    let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;

    let started = Instant::now();
    for i in 1..=restarts {
        let progress = n * i / (restarts + 1);
        rig.wait_scwm_requests(progress, "SCWM work to be under way", 120).await;
        rig.nats.kill();
        bridge.wait_readiness(503, 20).await;
        rig.nats.start_again();
        bridge.wait_readiness(200, 30).await;
    }
    rig.wait_acked(last, scale.pick(120, 600)).await;
    eprintln!(
        "nats restart: {n} alerts in {:.1?} across {restarts} restarts, {} SCWM requests, {} repeats",
        started.elapsed(),
        rig.scwm.requests().len(),
        replays(&rig.scwm)
    );
    assert_scwm_is(&rig.scwm, &all_open(n));
    assert_eq!(rig.dead_letter_count().await, 0, "no dead letters");
    bridge.kill().await;
}

/// SCWM's retry schedule for the outage scenarios: few attempts per delivery, a breaker that
/// opens quickly and probes every second, redelivery delays up to 2 s.
const OUTAGE_RETRY: [(&str, &str); 5] = [
    ("scwm.retry.max_attempts", "3"),
    ("scwm.retry.initial_backoff", "100ms"),
    ("scwm.retry.max_backoff", "2s"),
    ("scwm.breaker.minimum_calls", "5"),
    ("scwm.breaker.open_for", "1s"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_wait_out_an_scwm_that_fails_then_refuses_connections_and_complete_when_it_returns() {
    let scale = Scale::from_env();
    let n = scale.pick(300, 1_500);
    let outage = scale.pick(Duration::from_secs(5), Duration::from_secs(60));
    let mut rig = Rig::start().await;
    // Three deliveries: an outage must not spend them. While the circuit is open no message is
    // handed on and the events under way wait for it, their messages kept in progress.
    let config = rig.config("ack_wait = \"5s\"\nmax_deliver = 3\n", &embedded_store(&rig.dir));
    let bridge = Bridge::spawn(&config, &rig.dir, &OUTAGE_RETRY).await;

    // Half the alerts before the outage, half during it.
    rig.publish((0..n / 2).map(|k| keyed_notification(k, Step::Fire))).await;
    rig.wait_scwm_requests(n / 10, "SCWM work to be under way", 60).await;
    rig.scwm.set_faults(Faults { error_rate: 1.0, error: Failure::SERVICE_UNAVAILABLE, ..Faults::default() });
    let last = rig.publish((n / 2..n).map(|k| keyed_notification(k, Step::Fire))).await;
    tokio::time::sleep(outage / 2).await;
    let answered_503 = rig.scwm.requests().iter().filter(|r| r.status == Some(503)).count();
    rig.scwm_down().await;
    assert!(tokio::net::TcpStream::connect(rig.scwm_addr).await.is_err(), "SCWM's port refuses connections");
    tokio::time::sleep(outage / 2).await;
    let before = rig.scwm.incidents().len();
    rig.scwm.set_faults(Faults::default());
    rig.scwm_back().await;
    let back = Instant::now();

    rig.wait_acked(last, scale.pick(120, 600)).await;
    eprintln!(
        "SCWM outage: {n} alerts, {before} done before a {outage:?} outage ({answered_503} answered 503), \
         the rest {:.1?} after SCWM returned",
        back.elapsed()
    );
    assert!(before < n && answered_503 > 0, "the outage hit work in progress");
    assert_scwm_is(&rig.scwm, &all_open(n));
    assert_eq!(rig.dead_letter_count().await, 0, "no delivery ran out, so no dead letters");
    bridge.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_whose_deliveries_run_out_while_scwm_fails_below_the_breaker_become_dead_letters_that_replay_later()
 {
    const N: usize = 5;
    let rig = Rig::start().await;
    rig.scwm.set_faults(Faults { error_rate: 1.0, error: Failure::SERVICE_UNAVAILABLE, ..Faults::default() });
    let config = rig.config("ack_wait = \"2s\"\nmax_deliver = 2\n", &embedded_store(&rig.dir));
    // A breaker that never judges: every delivery meets SCWM's 503s and spends itself, as in a
    // bad minute that lasts. (An open circuit would hold the messages instead.)
    let mut retry = OUTAGE_RETRY.to_vec();
    retry.retain(|(k, _)| *k != "scwm.breaker.minimum_calls");
    retry.push(("scwm.breaker.minimum_calls", "1000000"));
    let bridge = Bridge::spawn(&config, &rig.dir, &retry).await;
    let last = rig.publish((0..N).map(|k| keyed_notification(k, Step::Fire))).await;
    rig.wait_acked(last, 60).await;
    // A message is acknowledged once its dead letter is in the outbox; NATS has it a moment later.
    poll_until(30, "every dead letter on NATS", Duration::from_millis(50), || async {
        rig.dead_letter_count().await >= N as u64
    })
    .await;

    let letters = rig.dead_letters().await;
    assert_eq!(letters.len(), N, "one dead letter per alert");
    let header = |m: &jetstream::message::StreamMessage, name: &str| {
        m.headers.get(name).map(|v| v.as_str().to_owned()).unwrap_or_default()
    };
    let mut keys: Vec<String> = Vec::new();
    for letter in &letters {
        let reason = header(letter, "Incident-Bridge-Error");
        // Every delivery met the outage: the deliveries ran out, and the letter says how many
        // there were and what the last one tried.
        assert_eq!(header(letter, "Incident-Bridge-Error-Kind"), "deliveries_exhausted", "{reason}");
        assert_eq!(header(letter, "Incident-Bridge-Deliveries"), "2", "{reason}");
        assert!(
            reason.starts_with("gave up after 2 deliveries") || reason.starts_with("last delivery"),
            "{reason}"
        );
        if header(letter, "Incident-Bridge-Op") == "add" {
            assert_eq!(letter.subject.as_str(), "scwm.dlq.add", "{reason}");
            let attempts = header(letter, "Incident-Bridge-Attempts");
            let plural = if attempts == "1" { "" } else { "s" };
            assert!(
                reason.contains(&format!("the last with {attempts} SCWM attempt{plural}")),
                "{attempts}: {reason}"
            );
            let scwm_header = header(letter, "Incident-Bridge-Scwm-Header");
            if !scwm_header.is_empty() {
                let scwm: serde_json::Value = serde_json::from_str(&scwm_header).unwrap();
                assert_eq!(scwm["licensePlate"], header(letter, "Incident-Bridge-License-Plate"));
            }
        }
        assert_eq!(header(letter, "Incident-Bridge-Source-Stream"), STREAM);
        let key = header(letter, "Incident-Bridge-Key");
        let k = (0..N).find(|k| correlation_key(SOURCE, *k) == key).expect("a key that was sent");
        assert_eq!(&letter.payload[..], &keyed_notification(k, Step::Fire)[..], "the original body");
        keys.push(key);
    }
    keys.sort();
    let mut want: Vec<String> = (0..N).map(|k| correlation_key(SOURCE, k)).collect();
    want.sort();
    assert_eq!(keys, want, "each alert dead-lettered once");
    assert!(rig.scwm.incidents().is_empty());

    // Once SCWM is back, the dead letters' bodies published again open the incidents: the
    // first alone, so that it is the breaker's probe and closes the circuit (a message that
    // met the open circuit on its last delivery would be dead-lettered again), then the rest.
    rig.scwm.set_faults(Faults::default());
    let first = rig.publish([letters[0].payload.to_vec()]).await;
    rig.wait_acked(first, 30).await;
    let last = rig.publish(letters[1..].iter().map(|m| m.payload.to_vec())).await;
    rig.wait_acked(last, 30).await;
    assert_scwm_is(&rig.scwm, &all_open(N));
    assert_eq!(rig.dead_letter_count().await, N as u64, "no further dead letters");
    bridge.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_sharing_a_consumer_and_a_kv_store_end_where_a_sequential_run_ends() {
    let scale = Scale::from_env();
    let mut rng = seeded("three replicas");
    let keys = scale.pick(200, 1_000);
    let scripts = random_scripts(&mut rng, keys, 6);
    let rig = Rig::start().await;
    let config = rig.config(CONSUMER, KV_STORE);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Bridge::spawn(&config, &rig.dir, &[]).await);
    }
    rig.wait_pulling(3).await;

    let bodies = in_rounds(&scripts);
    let events = bodies.len();
    let started = Instant::now();
    let last = rig.publish(bodies).await;

    // One replica dies mid-run with its claims held, and starts again.
    rig.wait_scwm_requests(keys / 3, "SCWM work to be under way", 60).await;
    let victim = rng.random_range(0..replicas.len());
    replicas.remove(victim).kill().await;
    replicas.push(Bridge::spawn(&config, &rig.dir, &[]).await);

    rig.wait_acked(last, scale.pick(120, 600)).await;
    eprintln!(
        "three replicas: {keys} keys, {events} events in {:.1?}, {} SCWM requests, {} repeats",
        started.elapsed(),
        rig.scwm.requests().len(),
        replays(&rig.scwm)
    );
    assert_scwm_is(&rig.scwm, &sequential(&scripts));
    assert_eq!(rig.dead_letter_count().await, 0, "no dead letters");
    for replica in replicas {
        replica.kill().await;
    }
}

/// The resident set of process `pid`, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the bridge's /proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line");
    kib * 1024
}

/// What the watcher saw while the burst ran.
#[derive(Debug, Default)]
struct Watched {
    probes: usize,
    slowest_probe: Duration,
    failed_probes: Vec<String>,
    max_rss: u64,
    max_queue_depth: u64,
}

/// Probes `/healthz` and `/readyz`, reads the queue depth from `/metrics` and the bridge's
/// resident memory, every 100 ms until `stop`.
async fn watch(bridge: &Bridge, stop: &AtomicBool) -> Watched {
    let mut seen = Watched::default();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let probe = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        for path in ["/healthz", "/readyz"] {
            let asked = Instant::now();
            let status = probe.get(bridge.url(path)).send().await.map(|r| r.status().as_u16());
            seen.slowest_probe = seen.slowest_probe.max(asked.elapsed());
            seen.probes += 1;
            if !matches!(status, Ok(200)) {
                seen.failed_probes.push(format!("{path} after {:.1?}: {status:?}", started.elapsed()));
            }
        }
        if let Ok(r) = probe.get(bridge.url("/metrics")).send().await
            && let Ok(text) = r.text().await
            && let Some(depth) = text
                .lines()
                .find_map(|l| l.strip_prefix("incident_bridge_queue_depth "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        {
            seen.max_queue_depth = seen.max_queue_depth.max(depth as u64);
        }
        seen.max_rss = seen.max_rss.max(rss_bytes(bridge.pid()));
    }
    seen
}

/// One webhook delivery as the sender saw it.
struct Sent {
    status: u16,
    /// Why the bridge did not take it, for a 503: the event's outcome detail.
    detail: String,
    retry_after: Option<u64>,
    took: Duration,
}

async fn send_webhook(http: &reqwest::Client, bridge: &Bridge, key: usize) -> Sent {
    let asked = Instant::now();
    let resp = http
        .post(bridge.url(&format!("/webhooks/{SOURCE}")))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {BEARER}"))
        .body(keyed_notification(key, Step::Fire))
        .send()
        .await
        .expect("the bridge answers");
    let status = resp.status().as_u16();
    let retry_after =
        resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let took = asked.elapsed();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let detail = body["outcomes"][0]["detail"].as_str().unwrap_or_default().to_owned();
    Sent { status, detail, retry_after, took }
}

/// Sends key `key`'s alert until the bridge takes it, waiting out each refusal's
/// `Retry-After`; returns the first answer and the number of sends.
async fn deliver(http: &reqwest::Client, bridge: &Bridge, key: usize) -> (Sent, u32) {
    let first = send_webhook(http, bridge, key).await;
    let (mut last, mut sends) = ((first.status, first.retry_after), 1);
    loop {
        match last {
            (200, _) => return (first, sends),
            (503, Some(secs)) if sends < 300 => tokio::time::sleep(Duration::from_secs(secs)).await,
            other => panic!("key {key}: answer {other:?} after {sends} sends"),
        }
        let again = send_webhook(http, bridge, key).await;
        (last, sends) = ((again.status, again.retry_after), sends + 1);
    }
}

/// The value of counter `name` (summed over its labels) in Prometheus text; 0 when absent.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_scwm_under_a_burst_keeps_probes_prompt_memory_bounded_and_refuses_the_excess() {
    /// Accepted, unfinished events the bridge holds at most.
    const CAPACITY: u64 = 40;
    /// The bound on the bridge's resident memory (a debug build; a release build needs less).
    const MAX_RSS: u64 = 128 * 1024 * 1024;
    /// The bound on every health probe's answer time.
    const PROBE_BOUND: Duration = Duration::from_secs(1);
    /// Alerts in one HTTP burst, all sent at once, and in the JetStream backlog: five times the
    /// queue each.
    const BURST: usize = 200;
    let scale = Scale::from_env();
    // The long form sends more bursts, 15 s apart, rather than a bigger one: the load lasts
    // longer without the first second's thousand connections measuring the test's own machine.
    let bursts = scale.pick(1, 5);
    let webhooks = BURST * bursts;
    let rig = Rig::start().await;
    // Uniform over 50 ms to 5 s: the 99th percentile is about 5 s.
    rig.scwm.set_faults(Faults {
        latency: Some(Latency::Range { min_ms: 50, max_ms: 5_000 }),
        ..Faults::default()
    });
    let config = rig.config(CONSUMER, &embedded_store(&rig.dir));
    let config = format!("{config}\n[pipeline]\nqueue_capacity = {CAPACITY}\n");
    let bridge =
        Bridge::spawn(&config, &rig.dir, &[("scwm.request_timeout", "10s"), ("server.sync_timeout", "60s")])
            .await;
    // Ready once its NATS connection is up.
    bridge.wait_readiness(200, 20).await;
    let rss_idle = rss_bytes(bridge.pid());

    let stop = AtomicBool::new(false);
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (watched, delivered) = tokio::join!(watch(&bridge, &stop), async {
        // A JetStream backlog and HTTP bursts at once. The consumer waits for room in the queue
        // (it is first in line for what frees up), keeping its messages in progress meanwhile;
        // each webhook refused for want of room is sent again after its Retry-After, the way
        // Alertmanager resends, until the bridge takes it.
        let last = rig.publish((webhooks..webhooks + BURST).map(|k| keyed_notification(k, Step::Fire))).await;
        let burst = |b: usize| {
            let http = &http;
            let bridge = &bridge;
            async move {
                tokio::time::sleep(Duration::from_secs(15) * b as u32).await;
                futures::future::join_all((b * BURST..(b + 1) * BURST).map(|k| deliver(http, bridge, k)))
                    .await
            }
        };
        let delivered: Vec<(Sent, u32)> =
            futures::future::join_all((0..bursts).map(burst)).await.into_iter().flatten().collect();
        rig.wait_acked(last, 120).await;
        stop.store(true, Ordering::Relaxed);
        delivered
    });
    let first_wave: Vec<&Sent> = delivered.iter().map(|(first, _)| first).collect();
    let most_sends = delivered.iter().map(|(_, sends)| *sends).max().unwrap_or(0);
    let refused: Vec<&&Sent> = first_wave.iter().filter(|s| s.status == 503).collect();
    let metrics = reqwest::get(bridge.url("/metrics")).await.unwrap().text().await.unwrap();
    let redelivered = counter(&metrics, "incident_bridge_jetstream_redeliveries_total");
    eprintln!(
        "slow SCWM: {BURST} alerts on JetStream and {bursts} burst(s) of {BURST} webhooks at once, {} webhooks \
         refused at first, all in within {:.1?} (at most {most_sends} sends for one webhook, {redelivered} \
         JetStream redeliveries); {} probes, slowest {:.0?}; RSS {} MiB idle, {} MiB at most; queue depth at \
         most {}",
        refused.len(),
        started.elapsed(),
        watched.probes,
        watched.slowest_probe,
        rss_idle >> 20,
        watched.max_rss >> 20,
        watched.max_queue_depth,
    );
    assert!(!refused.is_empty(), "a burst of {BURST} over a queue of {CAPACITY} is partly refused");
    for s in &refused {
        assert!(s.retry_after.is_some_and(|secs| secs >= 1), "a 503 carries Retry-After");
        assert!(s.took < PROBE_BOUND, "a refusal is prompt, not queued: {:?}", s.took);
        assert_eq!(s.detail, "too much work queued");
    }
    assert!(watched.failed_probes.is_empty(), "probes failed: {:?}", watched.failed_probes);
    assert!(watched.probes >= 20, "the probes ran throughout ({})", watched.probes);
    assert!(watched.slowest_probe < PROBE_BOUND, "slowest probe {:?}", watched.slowest_probe);
    assert!(watched.max_rss < MAX_RSS, "resident memory reached {} MiB", watched.max_rss >> 20);
    assert!(watched.max_queue_depth <= CAPACITY, "queue depth {}", watched.max_queue_depth);
    assert_eq!(redelivered, 0, "a JetStream message waiting for room is not delivered again");
    assert_eq!(replays(&rig.scwm), 0, "no SCWM request was sent twice");
    assert_scwm_is(&rig.scwm, &all_open(webhooks + BURST));
    assert_eq!(rig.dead_letter_count().await, 0, "no dead letters");
    bridge.kill().await;
}

/// Captures every result event, with a duplicate window longer than any run here.
/// Native commands over JetStream publish their result at once and acknowledge the message
/// after, with no outbox write between: the redelivery is what keeps a result a kill cut off.
/// Bridges killed while commands run, wherever the kill lands (before SCWM's answer, between it
/// and the publish, between the publish and the ack), leave every command's result in the
/// stream once and no command acted on twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_killed_while_jetstream_commands_run_leave_every_result_in_the_stream_once() {
    const COMMANDS: &str = "COMMANDS";
    let scale = Scale::from_env();
    let mut rng = seeded("kill while jetstream commands run");
    let n = scale.pick(1_000, 5_000);
    let kills = scale.pick(3, 8);
    let rig = Rig::start().await;
    for (name, subject) in [(RESULTS, "scwm.results.>"), (COMMANDS, "commands.js.>")] {
        rig.js
            .create_stream(stream::Config {
                name: name.into(),
                subjects: vec![subject.into()],
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(3600),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("creating stream {name}: {e}"));
    }
    let mut last = 0;
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for k in chunk {
            let body = serde_json::json!({"title": format!("command {k}"), "externalRef": format!("c{k}")});
            acks.push(rig.js.publish("commands.js.add", body.to_string().into()).await.expect("publish"));
        }
        for ack in futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await
        {
            last = last.max(ack.expect("stream ack").sequence);
        }
    }
    let extra = format!(
        "[nats]\nurl = \"{url}\"\nsubscriptions = []\n\n[[nats.consumers]]\nstream = \"{COMMANDS}\"\n\
         create = true\nstream_subjects = [\"commands.js.>\"]\ndurable = \"{DURABLE}\"\n{CONSUMER}\n{store}\n",
        url = rig.nats.url(),
        store = embedded_store(&rig.dir),
    );
    let config = crate::kit::config_text(&rig.scwm_url(), &extra);
    let acked = || async {
        let Ok(stream) = rig.js.get_stream(COMMANDS).await else { return false };
        let Ok(mut consumer) = stream.get_consumer::<jetstream::consumer::pull::Config>(DURABLE).await else {
            return false;
        };
        let Ok(info) = consumer.info().await else { return false };
        info.ack_floor.stream_sequence >= last && info.num_ack_pending == 0 && info.num_pending == 0
    };

    let started = Instant::now();
    let share = n / (kills + 1);
    let mut kills_mid_run = 0;
    for _ in 0..kills {
        let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
        let target = rig.scwm.request_count() + rng.random_range(share * 3 / 4..=share);
        rig.wait_scwm_requests(target, "SCWM work to be under way", 120).await;
        bridge.kill().await;
        if !acked().await {
            kills_mid_run += 1;
        }
    }
    let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
    poll_until(scale.pick(150, 900), "every command to be acknowledged", Duration::from_millis(100), acked)
        .await;
    let waiting = outbox_depth(&bridge).await;
    bridge.kill().await;

    let ids = rig.result_ids(|_| {}).await;
    let stored = ids.len();
    let distinct: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
    let answered = answered_plates(&rig.scwm);
    eprintln!(
        "kill while jetstream commands run: {n} commands in {:.1?}, {kills_mid_run} kills mid-run; {} SCWM \
         requests, {} repeats of a licensePlate; {stored} results",
        started.elapsed(),
        rig.scwm.requests().len(),
        replays(&rig.scwm),
    );
    assert_eq!(kills_mid_run, kills, "every kill came while commands remained");
    assert_eq!(rig.scwm.incidents().len(), n, "one incident per command, none twice");
    assert_eq!(answered.len(), n, "one licensePlate per command");
    assert_eq!(distinct.len(), ids.len(), "no result is in the stream twice");
    assert_eq!(distinct, answered, "every licensePlate SCWM answered has its result in the stream");
    assert_eq!(waiting, Some(0), "nothing waits in the outbox");
    assert_eq!(rig.dead_letter_count().await, 0, "no dead letters");
}

const RESULTS: &str = "RESULTS";

/// A bridge config for alerts over HTTP, results to NATS, and the `store` table.
fn webhook_config(rig: &Rig, store: &str) -> String {
    let extra = format!(
        "{source}\n[nats]\nurl = \"{url}\"\nsubscriptions = []\n{store}\n",
        source = am_source(SOURCE, "reopen_window = \"1h\""),
        url = rig.nats.url(),
    );
    crate::kit::config_text(&rig.scwm_url(), &extra)
}

/// Sends key `key`'s alert to whichever bridge runs (the address in `bridge`) until one answers
/// 200, the way Alertmanager resends: again after a `Retry-After`, or after a cut connection
/// once another bridge is up. Returns the sends it took.
async fn resend_until_taken(
    http: reqwest::Client,
    mut bridge: tokio::sync::watch::Receiver<Option<String>>,
    key: usize,
) -> u32 {
    let mut sends = 0;
    loop {
        let addr = bridge.wait_for(Option::is_some).await.expect("the test holds the sender").clone();
        let addr = addr.expect("waited for an address");
        sends += 1;
        let sent = http
            .post(format!("http://{addr}/webhooks/{SOURCE}"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {BEARER}"))
            .body(keyed_notification(key, Step::Fire))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 200 => return sends,
            Ok(r) if r.status() == 503 => {
                let secs = r.headers().get("retry-after").and_then(|v| v.to_str().ok()?.parse().ok());
                tokio::time::sleep(Duration::from_secs(secs.unwrap_or(1))).await;
            }
            Ok(r) => panic!("key {key}: answer {} after {sends} sends", r.status()),
            // The bridge was killed under the request: send again once the next one is up (or
            // after a second, should this one still be it).
            Err(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(1), bridge.changed()).await;
            }
        }
        assert!(sends < 500, "key {key}: not taken after {sends} sends");
    }
}

/// Entries in the outbox of the redb store at `path`, read while no bridge has it open.
async fn outbox_entries(path: &std::path::Path) -> usize {
    use incident_bridge::store::Outbox;
    let store = incident_bridge::store::EmbeddedStore::open(path).expect("the store opens after the kill");
    store.len().await.expect("the outbox reads")
}

async fn outbox_depth(bridge: &Bridge) -> Option<u64> {
    let metrics = bridge.http.get(bridge.url("/metrics")).send().await.ok()?.text().await.ok()?;
    Some(counter(&metrics, "incident_bridge_outbox_depth"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_killed_between_scwm_s_answer_and_the_publish_leave_every_result_in_the_stream_once() {
    let scale = Scale::from_env();
    let mut rng = seeded("kill between answer and publish");
    let n = scale.pick(400, 2_000);
    let kills = scale.pick(4, 10);
    let mut rig = Rig::start().await;
    rig.js
        .create_stream(stream::Config {
            name: RESULTS.into(),
            subjects: vec!["scwm.results.>".into()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(3600),
            ..Default::default()
        })
        .await
        .expect("creating the results stream");
    let config = webhook_config(&rig, &embedded_store(&rig.dir));
    let store_path = rig.dir.path().join("correlation.redb");

    // Sixteen senders share the keys and resend until a bridge takes each.
    let (address, watched) = tokio::sync::watch::channel(None::<String>);
    let keys = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..16)
        .map(|_| {
            let (http, watched, keys) = (reqwest::Client::new(), watched.clone(), Arc::clone(&keys));
            tokio::spawn(async move {
                let mut sends = 0;
                loop {
                    let key = keys.fetch_add(1, Ordering::Relaxed);
                    if key >= n {
                        return sends;
                    }
                    sends += resend_until_taken(http.clone(), watched.clone(), key).await;
                }
            })
        })
        .collect();

    // Every other bridge is killed with NATS away, once SCWM has answered requests whose
    // results could only wait in the outbox: killed between SCWM's answer and the publish. The
    // others are killed with NATS up, wherever the kill lands (before the outbox write, between
    // the publish and the removal, ...).
    let started = Instant::now();
    let share = n / (kills + 1);
    let mut left_waiting = Vec::new();
    for round in 0..kills {
        let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
        // Connected first, so the relay is at work when this bridge dies.
        poll_until(30, "the bridge to connect to NATS", Duration::from_millis(20), || async {
            let readyz = bridge.http.get(bridge.url("/readyz")).send().await;
            let body: serde_json::Value = match readyz {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => return false,
            };
            body["components"]["nats"] == "ready"
        })
        .await;
        address.send_replace(Some(bridge.addr.clone()));
        let target = rig.scwm.request_count() + rng.random_range(share / 2..=share);
        rig.wait_scwm_requests(target, "SCWM work to be under way", 120).await;
        let nats_away = round % 2 == 0;
        if nats_away {
            rig.nats.kill();
            let more = rig.scwm.request_count() + 5;
            rig.wait_scwm_requests(more, "SCWM to answer with NATS away", 60).await;
            poll_until(30, "results to wait in the outbox", Duration::from_millis(20), || async {
                outbox_depth(&bridge).await.is_some_and(|d| d > 0)
            })
            .await;
        }
        address.send_replace(None);
        bridge.kill().await;
        let waiting = outbox_entries(&store_path).await;
        if nats_away {
            assert!(waiting > 0, "round {round}: the kill left results waiting in the outbox");
            rig.nats.start_again();
        }
        left_waiting.push(waiting);
    }
    let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
    address.send_replace(Some(bridge.addr.clone()));
    let mut sends = 0;
    for sender in senders {
        sends += within(scale.pick(180, 900), "every alert to be taken", sender).await.unwrap();
    }
    poll_until(60, "the outbox to empty", Duration::from_millis(50), || async {
        outbox_depth(&bridge).await == Some(0)
    })
    .await;
    bridge.kill().await;

    let ids = rig
        .result_ids(|h| {
            let last = h.get("Incident-Bridge-Final").map(|v| v.as_str());
            assert_eq!(last, Some("true"), "SCWM never failed, so every result is final");
        })
        .await;
    let stored = ids.len();
    let distinct: std::collections::BTreeSet<String> = ids.iter().cloned().collect();
    let answered = answered_plates(&rig.scwm);
    eprintln!(
        "kill between answer and publish: {n} alerts, {sends} sends, in {:.1?}; {kills} kills leaving \
         {left_waiting:?} results in the outbox; {} SCWM requests, {} repeats of a licensePlate; {stored} results",
        started.elapsed(),
        rig.scwm.requests().len(),
        replays(&rig.scwm),
    );
    assert_scwm_is(&rig.scwm, &all_open(n));
    assert_eq!(distinct.len(), ids.len(), "no outcome is in the stream twice");
    assert_eq!(distinct, answered, "every licensePlate SCWM answered has its result in the stream");
    assert_eq!(rig.dead_letter_count().await, 0, "no dead letters");
}
