//! The cost of each path, in one run, as ratios to the native `add`: what the performance goals
//! are stated in. The native path is measured on a bridge of its own with nothing else
//! configured (what forwarding a command costs: one SCWM call, no store write, no result on
//! NATS); then one bridge with a signed Alertmanager source, a JetStream consumer, the
//! embedded store and results on NATS takes, one path after another, closed loop: native `add`
//! over HTTP (now with its result through the outbox), new alerts as signed webhooks, the same
//! alerts again (repeats: nothing to do), native `add`s from JetStream. The simulator called
//! directly is the limit. For each: events/s, the bridge's CPU per event (from /proc) and that
//! over the plain native path's, which is measured again at the end on a fresh bridge: the
//! ratios are to the mean of the two, and both are printed, so a run on a machine whose speed
//! moved shows it.

use std::{
    future::IntoFuture,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;

use super::{
    Args, ProcStats, Report, Shot, classify, direct_shot, drive,
    http::{source_config, webhook_shot},
    natsrv, print_table, simulator, spawn_bridge,
};

struct Row {
    path: &'static str,
    events: u64,
    elapsed: Duration,
    cpu: Duration,
}

impl Row {
    fn cpu_per_event(&self) -> f64 {
        self.cpu.as_micros() as f64 / self.events.max(1) as f64
    }
}

/// Runs `shot` through `drive`, measuring the bridge's CPU over it.
async fn measured(path: &'static str, args: &Args, pid: u32, shot: Shot) -> (Row, Report) {
    let before = ProcStats::read(pid);
    let report = drive(path, args, shot).await;
    let after = ProcStats::read(pid);
    let row = Row {
        path,
        events: report.latency.len(),
        elapsed: report.elapsed,
        cpu: after.cpu.saturating_sub(before.cpu),
    };
    (row, report)
}

pub(super) async fn run(args: &Args) {
    let nats = natsrv::nats_server();
    let client = natsrv::connect(nats.port).await;
    let js = jetstream::new(client.clone());
    let sim = simulator().await;
    let limit = drive("simulator direct (the limit)", args, direct_shot(&sim)).await;
    sim.reset();

    let native_shot = |addr: &str| -> Shot {
        let url = format!("http://{addr}/v1/incidents/add");
        Arc::new(move |http, i| {
            let url = url.clone();
            Box::pin(async move {
                classify(http.post(&url).json(&json!({"title": format!("load {i}")})).send().await)
            })
        })
    };
    // The base on a bridge of its own, once before the other paths and once after them: the
    // machine's speed moves within minutes, and a ratio to one measurement moves with it.
    let plain_path = |path: &'static str| {
        let (args, sim, native_shot) = (args, &sim, &native_shot);
        async move {
            let (mut plain, plain_addr, _plain_dir) = spawn_bridge(args, sim, "").await;
            let measured = measured(path, args, plain.id().unwrap(), native_shot(&plain_addr)).await;
            plain.kill().await.ok();
            measured
        }
    };
    let (plain_row, plain_report) = plain_path("native add over HTTP (sync), nothing else configured").await;

    let store = tempfile::tempdir().unwrap();
    let extra = format!(
        "{}[[nats.consumers]]\nstream = \"INCIDENTS\"\ncreate = true\nstream_subjects = [\"incidents.js.>\"]\n\
         max_ack_pending = 10000\n",
        source_config(&store.path().join("store.redb"), &nats.url())
    );
    let (mut child, addr, _dir) = spawn_bridge(args, &sim, &extra).await;
    let pid = child.id().unwrap();
    let n = args.count_or(super::DEFAULT_COUNT);

    let (native_row, native_report) =
        measured("native add over HTTP (sync), result through the outbox", args, pid, native_shot(&addr))
            .await;
    let (new_row, new_report) =
        measured("signed webhook, a new alert", args, pid, webhook_shot(&addr, "new", Arc::default())).await;
    let repeats = Args { count: Some(new_row.events), ..args.clone() };
    let (repeat_row, repeat_report) = measured(
        "signed webhook, a repeat (nothing to do)",
        &repeats,
        pid,
        webhook_shot(&addr, "again", Arc::default()),
    )
    .await;

    // Added latency at half capacity: new alerts paced at half the rate just measured, and the
    // simulator called directly at the same rate, each for as many requests.
    let half = ((new_row.events as f64 / new_row.elapsed.as_secs_f64()) / 2.0).max(1.0) as u64;
    let paced = Args { rate: half, count: Some(n.min(half * 10).max(1000)), ..args.clone() };
    let paced_offset = Arc::new(std::sync::atomic::AtomicU64::new(10 * n));
    let paced_report = drive(
        "signed webhook, new alerts at half capacity",
        &paced,
        webhook_shot(&addr, "paced", paced_offset),
    )
    .await;
    let paced_limit = drive("simulator direct at the same rate", &paced, direct_shot(&sim)).await;

    // JetStream: publish n native adds, wait for their n results.
    let mut results = client.subscribe("scwm.results.>").await.unwrap();
    client.flush().await.unwrap();
    for _ in 0..200 {
        if js.get_stream("INCIDENTS").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let before = ProcStats::read(pid);
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..n {
                let body = Bytes::from(format!("{{\"title\":\"js {i}\"}}"));
                acks.push(js.publish("incidents.js.commands.add", body).await.unwrap().into_future());
                if acks.len() == 2000 {
                    futures::future::join_all(acks.drain(..)).await;
                }
            }
            futures::future::join_all(acks).await;
        })
    };
    let mut seen = 0u64;
    while seen < n {
        match tokio::time::timeout(Duration::from_secs(60), results.next()).await {
            Ok(Some(m))
                if m.headers.as_ref().and_then(|h| h.get("Incident-Bridge-Source-Sequence")).is_some() =>
            {
                seen += 1
            }
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let js_row = Row {
        path: "JetStream native add → result",
        events: seen,
        elapsed: started.elapsed(),
        cpu: ProcStats::read(pid).cpu.saturating_sub(before.cpu),
    };
    publisher.await.unwrap();
    let end = ProcStats::read(pid);
    child.kill().await.ok();
    let (plain_after_row, plain_after_report) =
        plain_path("native add over HTTP (sync), nothing else configured, again at the end").await;

    print_table(&[
        &limit,
        &plain_report,
        &native_report,
        &new_report,
        &repeat_report,
        &paced_limit,
        &paced_report,
        &plain_after_report,
    ]);
    let base = (plain_row.cpu_per_event() + plain_after_row.cpu_per_event()) / 2.0;
    println!(
        "\nbase (the plain native add): {:.0} µs before the other paths, {:.0} µs after them; the ratios are to their mean, {base:.0} µs",
        plain_row.cpu_per_event(),
        plain_after_row.cpu_per_event()
    );
    println!("\n| path | events | events/s | bridge CPU per event | × native add |");
    println!("|---|---|---|---|---|");
    for r in [&plain_row, &native_row, &new_row, &repeat_row, &js_row, &plain_after_row] {
        println!(
            "| {} | {} | {:.0} | {:.0} µs | {:.2} |",
            r.path,
            r.events,
            r.events as f64 / r.elapsed.as_secs_f64(),
            r.cpu_per_event(),
            r.cpu_per_event() / base.max(1.0)
        );
    }
    let p99 = |r: &Report| r.latency.value_at_quantile(0.99) as f64 / 1000.0;
    println!(
        "\nadded p99 latency at half capacity ({half}/s): {:.2} ms ({:.2} ms through the bridge, {:.2} ms the simulator directly); durability {}",
        p99(&paced_report) - p99(&paced_limit),
        p99(&paced_report),
        p99(&paced_limit),
        args.durability.as_deref().unwrap_or("power-loss")
    );
    let rps = |r: &Report| r.latency.len() as f64 / r.elapsed.as_secs_f64();
    println!(
        "\nlimit: the simulator called directly, {:.0} req/s; bridge RSS at the end {} MiB (peak {} MiB) after {} distinct alerts",
        rps(&limit),
        end.rss_kib / 1024,
        end.peak_rss_kib / 1024,
        new_row.events
    );
}
