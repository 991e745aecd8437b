//! HTTP scenarios beyond the native `add`: signed Alertmanager webhooks with results on NATS,
//! overload at five times capacity, and start-up time with idle memory.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use base64::Engine;
use futures::StreamExt;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

use super::{
    Args, ProcStats, Report, Shot, classify, direct_shot, drive, natsrv, print_table, simulator, spawn_bridge,
};

/// The quickstart's local-trial secret; the load tool signs with it.
pub(super) const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub(super) fn source_config(store: &std::path::Path, nats_url: &str) -> String {
    format!(
        "[nats]\nurl = \"{nats_url}\"\nsubscriptions = []\n\
         [store]\npath = \"{}\"\n\
         [sources.signed]\nkind = \"alertmanager\"\n\
         [[sources.signed.auth]]\nscheme = \"standard-webhooks\"\nsecrets = [\"{SECRET}\"]\n\
         [sources.signed.limits]\nmax_body_bytes = 65536\n",
        store.display()
    )
}

/// One firing alert per request, each with its own fingerprint, so each opens one incident.
pub(super) fn alert_body(i: u64) -> String {
    json!({
        "receiver": "bridge", "status": "firing", "version": "4", "externalURL": "http://am",
        "groupKey": format!("{{}}:{{alertname=\"Load{i}\"}}"), "truncatedAlerts": 0,
        "groupLabels": {"alertname": format!("Load{i}")}, "commonLabels": {}, "commonAnnotations": {},
        "alerts": [{
            "status": "firing",
            "labels": {"alertname": format!("Load{i}"), "severity": "critical", "instance": format!("host-{i}")},
            "annotations": {"summary": format!("load alert {i}")},
            "startsAt": "2026-11-28T12:00:00Z", "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph", "fingerprint": format!("{i:016x}")
        }]
    })
    .to_string()
}

/// Standard Webhooks headers for `body`: HMAC-SHA256 over `id.timestamp.body`.
pub(super) fn sign(id: &str, body: &str) -> (String, String) {
    let key = base64::engine::general_purpose::STANDARD.decode(SECRET.trim_start_matches("whsec_")).unwrap();
    let ts = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (ts, format!("v1,{sig}"))
}

/// Requests whose numbers continue where an earlier run stopped, so every alert is new.
/// A signed webhook per request carrying alert `i` (the next of `offset`), under message id
/// `tag-i`: the same alerts sent again need ids of their own, or they are replays.
pub(super) fn webhook_shot(addr: &str, tag: &'static str, offset: Arc<AtomicU64>) -> Shot {
    let url = format!("http://{addr}/webhooks/signed");
    Arc::new(move |http, _| {
        let url = url.clone();
        let i = offset.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let body = alert_body(i);
            let id = format!("{tag}-{i}");
            let (ts, sig) = sign(&id, &body);
            let req = http
                .post(&url)
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts)
                .header("webhook-signature", sig)
                .body(body);
            classify(req.send().await)
        })
    })
}

/// Signed webhook → bridge → simulator → result event on NATS, beside the simulator alone.
pub async fn webhook(args: &Args) {
    let nats = natsrv::nats_server();
    let client = natsrv::connect(nats.port).await;
    let sim = simulator().await;
    let direct = drive("simulator direct", args, direct_shot(&sim)).await;
    sim.reset();

    let store = tempfile::tempdir().unwrap();
    let extra = source_config(&store.path().join("store.redb"), &nats.url());
    let (mut child, addr, _dir) = spawn_bridge(args, &sim, &extra).await;
    let mut results = client.subscribe("scwm.results.>").await.unwrap();
    client.flush().await.unwrap();
    let counted = tokio::spawn(async move {
        let mut n = 0u64;
        while tokio::time::timeout(Duration::from_secs(5), results.next()).await.ok().flatten().is_some() {
            n += 1;
        }
        n
    });
    let before = ProcStats::read(child.id().unwrap());
    let bridged =
        drive("bridge (signed webhook → result on NATS)", args, webhook_shot(&addr, "msg", Arc::default()))
            .await;
    let after = ProcStats::read(child.id().unwrap());
    let results = counted.await.unwrap();
    let at_rest = match args.idle {
        Some(idle) => {
            let rest = ProcStats::read(child.id().unwrap());
            tokio::time::sleep(idle).await;
            Some((idle, ProcStats::read(child.id().unwrap()).cpu.saturating_sub(rest.cpu)))
        }
        None => None,
    };
    child.kill().await.ok();
    print_table(&[&direct, &bridged]);
    println!(
        "\nSCWM calls seen by the simulator through the bridge: {}; result events on NATS: {results}",
        sim.request_count()
    );
    after.print_since(&before, bridged.latency.len());
    if let Some((idle, cpu)) = at_rest {
        println!(
            "bridge at rest with {} keys in its store: CPU {cpu:.2?} over {idle:.0?} ({:.2} % of a core)",
            bridged.latency.len(),
            100.0 * cpu.as_secs_f64() / idle.as_secs_f64()
        );
    }
}

/// Capacity, then 5× capacity for `--duration` (open loop), then capacity again.
pub async fn overload(args: &Args) {
    let nats = natsrv::nats_server();
    let sim = simulator().await;
    let store = tempfile::tempdir().unwrap();
    let extra = source_config(&store.path().join("store.redb"), &nats.url());
    let (mut child, addr, _dir) = spawn_bridge(args, &sim, &extra).await;
    let pid = child.id().unwrap();
    let offset = Arc::new(AtomicU64::new(0));

    let measure = Args {
        rate: 0,
        count: Some(args.count_or(super::DEFAULT_COUNT).min(10_000)),
        duration: Duration::from_secs(30),
        ..args.clone()
    };
    let first = drive("capacity before", &measure, webhook_shot(&addr, "msg", Arc::clone(&offset))).await;
    let capacity = (first.latency.len() as f64 / first.elapsed.as_secs_f64()).max(1.0);

    let offered = (capacity * 5.0) as u64;
    let overload_args = Args {
        rate: offered,
        count: Some(u64::MAX),
        concurrency: args.concurrency.max(4096),
        duration: args.duration,
        ..args.clone()
    };
    let sampler = tokio::spawn(async move {
        let (mut peak, mut samples) = (0u64, Vec::new());
        loop {
            let s = ProcStats::read(pid);
            if s.rss_kib == 0 {
                break (peak, samples);
            }
            peak = peak.max(s.rss_kib);
            samples.push(s.rss_kib);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let over = drive(
        &format!("offered {offered}/s (5× capacity)"),
        &overload_args,
        webhook_shot(&addr, "msg", Arc::clone(&offset)),
    )
    .await;
    let healthy =
        reqwest::get(format!("http://{addr}/healthz")).await.map(|r| r.status().as_u16()).unwrap_or(0);
    let after = drive("capacity after", &measure, webhook_shot(&addr, "msg", Arc::clone(&offset))).await;
    let stats = ProcStats::read(pid);
    child.kill().await.ok();
    let (peak_sampled, samples) = sampler.await.unwrap();
    print_table(&[&first, &over, &after]);
    let rps = |r: &Report| r.latency.len() as f64 / r.elapsed.as_secs_f64();
    println!(
        "\ncapacity {capacity:.0}/s; during overload {:.0}/s answered 2xx; after {:.0}/s ({:.0} % of before); /healthz after overload: {healthy}",
        rps(&over),
        rps(&after),
        100.0 * rps(&after) / capacity
    );
    println!(
        "bridge RSS: peak {} MiB (VmHWM), highest sample {} MiB over {} samples",
        stats.peak_rss_kib / 1024,
        peak_sampled / 1024,
        samples.len()
    );
}

/// Start-up to ready, and RSS once idle, over five starts.
pub async fn startup(args: &Args) {
    let sim = simulator().await;
    let mut times = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let (mut child, addr, _dir) = spawn_bridge(args, &sim, "").await;
        times.push(t0.elapsed());
        let _ = reqwest::get(format!("http://{addr}/readyz")).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        idle.push(ProcStats::read(child.id().unwrap()).rss_kib);
        child.kill().await.ok();
    }
    times.sort();
    println!(
        "start → ready (process spawn to the ready log line), 5 starts: min {:.1?}, median {:.1?}, max {:.1?}",
        times[0], times[2], times[4]
    );
    println!("RSS when idle after start: {:?} MiB", idle.iter().map(|k| k / 1024).collect::<Vec<_>>());
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// A long run at half capacity: RSS and open descriptors every 30 s must level off, not climb.
pub async fn soak(args: &Args) {
    let nats = natsrv::nats_server();
    let sim = simulator().await;
    let store = tempfile::tempdir().unwrap();
    let extra = source_config(&store.path().join("store.redb"), &nats.url());
    let (mut child, addr, _dir) = spawn_bridge(args, &sim, &extra).await;
    let pid = child.id().unwrap();
    let offset = Arc::new(AtomicU64::new(0));
    let rate = if args.rate > 0 {
        args.rate
    } else {
        let measure = Args { rate: 0, count: Some(5_000), duration: Duration::from_secs(20), ..args.clone() };
        let r = drive("capacity", &measure, webhook_shot(&addr, "msg", Arc::clone(&offset))).await;
        ((r.latency.len() as f64 / r.elapsed.as_secs_f64()) / 2.0).max(1.0) as u64
    };
    // Room for every plate the run will send, made before it starts: the simulator's map of
    // plates otherwise doubles under its lock at 7/8 of each power of two, and at millions of
    // plates that stalls every SCWM call for seconds, which would be measured as the bridge's.
    let plates = (rate as f64 * args.duration.as_secs_f64() * 1.05) as usize;
    sim.state().reserve_plates(plates);
    println!("soak at {rate}/s for {:?} (room for {plates} licensePlates made first)", args.duration);
    println!("| elapsed | RSS MiB | open fds | SCWM calls so far |");
    println!("|---|---|---|---|");
    let sampler = {
        let sim_state = sim.state();
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let s = ProcStats::read(pid);
                if s.rss_kib == 0 {
                    break;
                }
                println!(
                    "| {:>5.0?} | {} | {} | {} |",
                    started.elapsed(),
                    s.rss_kib / 1024,
                    open_fds(pid),
                    sim_state.request_count()
                );
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
    };
    let soak_args =
        Args { rate, count: Some(u64::MAX), concurrency: args.concurrency.max(1024), ..args.clone() };
    let report = drive("soak", &soak_args, webhook_shot(&addr, "msg", Arc::clone(&offset))).await;
    let stats = ProcStats::read(pid);
    child.kill().await.ok();
    sampler.abort();
    print_table(&[&report]);
    let calls = sim.request_count().max(1);
    println!(
        "bridge peak RSS {} MiB; CPU {:.1?} in all, {:.0} µs per SCWM call ({calls} calls)",
        stats.peak_rss_kib / 1024,
        stats.cpu,
        stats.cpu.as_secs_f64() * 1e6 / calls as f64
    );
}
