//! Load generator: drives a bridge (a child process running the release binary) and, for
//! comparison, the SCWM simulator directly, with the same load loop, and reports throughput,
//! latency percentiles (HDR histogram), errors by kind and the SCWM calls the simulator saw.
//!
//! Run with `cargo bench --bench loadgen -- <scenario> [options]`; `--help` lists them.
//! Everything runs on loopback; the simulator runs inside this process.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use incident_bridge::{
    ids::LicensePlate,
    secret::Secret,
    sim::{SimConfig, SimHandle, Simulator},
};
use serde_json::json;

const TOKEN: &str = "bG9hZDpsb2Fk";

#[path = "loadgen/bad_days.rs"]
mod bad_days;
#[path = "loadgen/console.rs"]
mod console;
#[path = "loadgen/http.rs"]
mod http;
#[path = "loadgen/jetstream.rs"]
mod jetstream;
#[path = "loadgen/natsrv.rs"]
mod natsrv;
#[path = "loadgen/ratios.rs"]
mod ratios;

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for incident-bridge")]
struct Args {
    /// What to drive.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Stop after this many requests (per target; default 20,000)... For bad-minute: the number
    /// of runs (default 20); storm: the alerts (default 5,000); outage: the alerts (default
    /// 1,000).
    #[arg(long)]
    count: Option<u64>,
    /// ...or after this long, whichever comes first.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    duration: Duration,
    /// Target rate in requests/s across all workers; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The bridge binary to run.
    #[arg(long, default_value = "target/release/incident-bridge")]
    bridge_bin: PathBuf,
    /// storm: leave `[scwm.rate_limit]` out of the bridge's config, so it learns the limit only
    /// from SCWM's 429s and their `Retry-After`.
    #[arg(long)]
    limit_unknown: bool,
    /// The embedded store's `[store] durability` in every bridge started: `power-loss` (the
    /// default) or `process-crash`.
    #[arg(long)]
    durability: Option<String>,
    /// http-webhook: after the run, the bridge's CPU at rest over this long, with every alert's
    /// key in its store (what its periodic sweeps of the store cost).
    #[arg(long, value_parser = humantime::parse_duration)]
    idle: Option<Duration>,
    /// Ignored (cargo bench passes it).
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Scenario {
    /// Synchronous native `add` through the bridge vs the simulator called directly.
    HttpAdd,
    /// Signed Alertmanager webhooks (Standard Webhooks) → bridge → simulator → result event on
    /// NATS, vs the simulator called directly.
    HttpWebhook,
    /// Native commands as NATS requests (core, request/reply).
    NatsCore,
    /// JetStream → bridge → simulator → result events, vs raw async-nats publish-with-ack and
    /// consume+ack on the same server.
    Jetstream,
    /// Measure capacity, offer 5× that for `--duration`, then measure again: answers, memory,
    /// recovery.
    Overload,
    /// Time from start to ready, and memory when idle, over several starts.
    Startup,
    /// Half of the measured capacity (or `--rate`) for `--duration`, reporting RSS and open file
    /// descriptors of the bridge over time.
    Soak,
    /// SCWM fails 5 requests, then 30 % of them: how long after SCWM is usable 3 new alerts
    /// (signed webhooks, resent on 503 as Alertmanager would) have their incidents; `--count`
    /// runs.
    BadMinute,
    /// SCWM rate-limited to 50 requests/s: 5,000 new alerts on JetStream, then 200 resolves and
    /// 200 edits; drain time, the busiest second SCWM saw, 429s, duplicates, dead letters, and
    /// whether the closes waited behind the adds. `--limit-unknown`: the bridge is not told the
    /// limit.
    Storm,
    /// SCWM down for 30 s (503s, then its port closed) under a consumer with `max_deliver = 3`:
    /// dead letters, duplicates, time from SCWM's return to drained, redeliveries.
    Outage,
    /// One bridge, every path in turn (native add over HTTP, new signed alerts, repeats,
    /// JetStream), each path's CPU per event as a ratio to the native add's; the simulator
    /// called directly is the limit.
    Ratios,
    /// The console's pages with 10,000 decisions kept, one request at a time, vs `/healthz`;
    /// `--count` requests per page (default 500).
    Console,
}

impl Args {
    /// `--count`, or `default` when it was not given.
    fn count_or(&self, default: u64) -> u64 {
        self.count.unwrap_or(default)
    }
}

/// The number of requests when `--count` is not given.
const DEFAULT_COUNT: u64 = 20_000;

struct Report {
    name: String,
    sent: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Report {
    fn print(&self) {
        let ok = self.latency.len();
        let rps = ok as f64 / self.elapsed.as_secs_f64();
        let q = |p: f64| Duration::from_micros(self.latency.value_at_quantile(p));
        println!(
            "| {} | {} | {} | {:.0} | {:.2?} | {:.2?} | {:.2?} | {:.2?} | {:?} |",
            self.name,
            self.sent,
            ok,
            rps,
            q(0.50),
            q(0.90),
            q(0.99),
            Duration::from_micros(self.latency.max()),
            self.errors
        );
    }
}

/// One request of the load; returns Ok on a 2xx answer or a short error kind.
type Shot = Arc<
    dyn Fn(reqwest::Client, u64) -> futures::future::BoxFuture<'static, Result<(), String>> + Send + Sync,
>;

/// Runs the load: closed loop (`concurrency` workers back to back) when no rate is set; open
/// loop at `rate` otherwise, with at most `concurrency` requests outstanding (a request that
/// finds no free slot counts as `loadgen_saturated`, so an overloaded target shows up as errors
/// rather than a slower offered rate).
async fn drive(name: &str, args: &Args, shot: Shot) -> Report {
    if args.rate > 0 {
        return drive_open(name, args, shot).await;
    }
    let http = http_client(args);
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (http, next, shot, count) =
            (http.clone(), Arc::clone(&next), Arc::clone(&shot), args.count_or(DEFAULT_COUNT));
        workers.push(tokio::spawn(async move {
            let mut hist = histogram();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count || Instant::now() >= deadline {
                    break;
                }
                let t0 = Instant::now();
                match shot(http.clone(), i).await {
                    Ok(()) => hist.record(t0.elapsed().as_micros().max(1) as u64).unwrap(),
                    Err(kind) => *errors.entry(kind).or_default() += 1,
                }
            }
            (hist, errors)
        }));
    }
    let mut latency = histogram();
    let mut errors = BTreeMap::new();
    for w in workers {
        let (h, e) = w.await.unwrap();
        latency.add(h).unwrap();
        merge(&mut errors, e);
    }
    let elapsed = started.elapsed();
    let sent = next.load(Ordering::Relaxed).min(args.count_or(DEFAULT_COUNT));
    Report { name: name.to_owned(), sent, elapsed, latency, errors }
}

async fn drive_open(name: &str, args: &Args, shot: Shot) -> Report {
    let http = http_client(args);
    let slots = Arc::new(tokio::sync::Semaphore::new(args.concurrency));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Duration, String>>();
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    while sent < args.count_or(DEFAULT_COUNT) && Instant::now() < deadline {
        ticker.tick().await;
        sent += 1;
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            let _ = tx.send(Err("loadgen_saturated".into()));
            continue;
        };
        let (http, shot, tx) = (http.clone(), Arc::clone(&shot), tx.clone());
        let i = sent;
        tokio::spawn(async move {
            let t0 = Instant::now();
            let r = shot(http, i).await.map(|()| t0.elapsed());
            drop(slot);
            let _ = tx.send(r);
        });
    }
    drop(tx);
    let mut latency = histogram();
    let mut errors = BTreeMap::new();
    while let Some(r) = rx.recv().await {
        match r {
            Ok(d) => latency.record(d.as_micros().max(1) as u64).unwrap(),
            Err(kind) => *errors.entry(kind).or_default() += 1,
        }
    }
    Report { name: name.to_owned(), sent, elapsed: started.elapsed(), latency, errors }
}

fn http_client(args: &Args) -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap()
}

fn merge(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (k, v) in from {
        *into.entry(k).or_default() += v;
    }
}

/// The simulator, in this process, on a free port.
async fn simulator() -> SimHandle {
    Simulator::start(
        // Counts only: a log of every request of a long run would outgrow the machine.
        SimConfig { token: Some(Secret::new(TOKEN)), request_log_limit: Some(1_000), ..SimConfig::default() },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

/// One request straight to the simulator: the limit every HTTP scenario is compared with.
fn direct_shot(sim: &SimHandle) -> Shot {
    let sim_url = sim.url();
    Arc::new(move |http, i| {
        let url = sim_url.clone();
        Box::pin(async move {
            let body = json!({
                "header": {"headerVersion": 1, "eventName": "agile-process-teams:add-incident:v3",
                           "ownerId": "LOAD", "licensePlate": LicensePlate::generate()},
                "payload": {"title": format!("load {i}")},
            });
            classify(
                http.post(&url).header("authorization", format!("Basic {TOKEN}")).json(&body).send().await,
            )
        })
    })
}

fn print_table(reports: &[&Report]) {
    println!("| target | sent | ok | req/s | p50 | p90 | p99 | max | errors |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in reports {
        r.print();
    }
}

fn classify(r: Result<reqwest::Response, reqwest::Error>) -> Result<(), String> {
    match r {
        Ok(resp) if resp.status().is_success() => Ok(()),
        Ok(resp) => Err(format!("http_{}", resp.status().as_u16())),
        Err(e) if e.is_timeout() => Err("timeout".into()),
        Err(e) if e.is_connect() => Err("connect".into()),
        Err(_) => Err("transport".into()),
    }
}

/// The bridge binary as a child process, configured against `sim`; returns it and its address.
async fn spawn_bridge(
    args: &Args,
    sim: &SimHandle,
    extra: &str,
) -> (tokio::process::Child, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bridge.toml");
    // The store (alerts' correlation, the outbox of results bound for NATS) lives with the run.
    let store = if extra.contains("[store]") {
        String::new()
    } else {
        format!("\n[store]\npath = \"{}\"\n", dir.path().join("store.redb").display())
    };
    // Whichever table names the store gets the durability asked for.
    let durable = |text: String| match &args.durability {
        Some(d) => text.replace("[store]\n", &format!("[store]\ndurability = \"{d}\"\n")),
        None => text,
    };
    let (extra, store) = (durable(extra.to_owned()), durable(store));
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[scwm]\nurl = \"{}\"\ntoken = \"{TOKEN}\"\nowner_id = \"LOAD\"\n\
             max_concurrency = 256\n[results]\nlog = false\n[pipeline]\nworkers = 256\n{extra}{store}",
            sim.url()
        ),
    )
    .unwrap();
    let mut child = tokio::process::Command::new(&args.bridge_bin)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,incident_bridge::app=info")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {}: {e} (build it with cargo build --release)", args.bridge_bin.display())
        });
    let stdout = child.stdout.take().unwrap().into_owned_fd().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(std::fs::File::from(stdout)).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "incident-bridge ready"
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), rx).await.expect("bridge ready").unwrap();
    (child, addr, dir)
}

async fn http_add(args: &Args) {
    let sim = simulator().await;
    let direct_report = drive("simulator direct", args, direct_shot(&sim)).await;
    let direct_calls = sim.request_count();
    sim.reset();

    let (mut child, addr, _dir) = spawn_bridge(args, &sim, "").await;
    let url = format!("http://{addr}/v1/incidents/add");
    let bridged: Shot = Arc::new(move |http, i| {
        let url = url.clone();
        Box::pin(async move {
            classify(http.post(&url).json(&json!({"title": format!("load {i}")})).send().await)
        })
    });
    let before = ProcStats::read(child.id().unwrap());
    let bridge_report = drive("bridge (sync add)", args, bridged).await;
    let after = ProcStats::read(child.id().unwrap());
    let bridge_calls = sim.request_count();
    child.kill().await.ok();

    print_table(&[&direct_report, &bridge_report]);
    println!("\nSCWM calls seen by the simulator: direct {direct_calls}, through the bridge {bridge_calls}");
    after.print_since(&before, bridge_report.latency.len());
}

/// CPU time and memory of a process, from /proc.
struct ProcStats {
    cpu: Duration,
    rss_kib: u64,
    peak_rss_kib: u64,
}

impl ProcStats {
    fn read(pid: u32) -> Self {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kib = |key: &str| {
            status
                .lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        // Linux reports these in clock ticks of 1/100 s on every platform we run on.
        Self { cpu: Duration::from_millis(ticks * 10), rss_kib: kib("VmRSS:"), peak_rss_kib: kib("VmHWM:") }
    }

    fn print_since(&self, before: &ProcStats, events: u64) {
        let cpu = self.cpu.saturating_sub(before.cpu);
        println!(
            "bridge process: CPU {:.2?} for {events} events = {:.0} µs/event; RSS before {} MiB, after {} MiB, peak {} MiB",
            cpu,
            cpu.as_micros() as f64 / events.max(1) as f64,
            before.rss_kib / 1024,
            self.rss_kib / 1024,
            self.peak_rss_kib / 1024
        );
    }
}

#[tokio::main]
async fn main() {
    // `cargo test --all-targets` runs every bench once without arguments: nothing to measure.
    if std::env::args().len() <= 1 {
        println!("loadgen: no scenario given; see `cargo bench --bench loadgen -- --help`");
        return;
    }
    let args = Args::parse();
    println!(
        "loadgen {:?}: concurrency {}, count {}, duration {:?}, rate {}",
        args.scenario,
        args.concurrency,
        args.count.map_or("default".to_owned(), |c| c.to_string()),
        args.duration,
        if args.rate == 0 { "max".to_owned() } else { args.rate.to_string() }
    );
    match args.scenario {
        Scenario::HttpAdd => http_add(&args).await,
        Scenario::HttpWebhook => http::webhook(&args).await,
        Scenario::NatsCore => natsrv::core(&args).await,
        Scenario::Jetstream => jetstream::run(&args).await,
        Scenario::Overload => http::overload(&args).await,
        Scenario::Startup => http::startup(&args).await,
        Scenario::Soak => http::soak(&args).await,
        Scenario::BadMinute => bad_days::bad_minute(&args).await,
        Scenario::Storm => bad_days::storm(&args).await,
        Scenario::Outage => bad_days::outage(&args).await,
        Scenario::Console => console::run(&args).await,
        Scenario::Ratios => ratios::run(&args).await,
    }
}
