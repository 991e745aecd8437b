//! The JetStream scenario: how fast events go JetStream → bridge → simulator → result event,
//! next to what async-nats alone does on the same server (publish with acks, consume + ack).

use std::{
    collections::HashMap,
    future::IntoFuture,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::StreamExt;
use hdrhistogram::Histogram;
use incident_bridge::{
    secret::Secret,
    sim::{SimConfig, Simulator},
};

use super::{
    Args, ProcStats, TOKEN,
    natsrv::{connect, nats_server},
    spawn_bridge,
};

/// Publish acks awaited at once; async-nats blocks past 5,000 outstanding.
const ACK_WINDOW: usize = 2000;

async fn publish_all(
    js: &jetstream::Context,
    subject: &str,
    bodies: impl Iterator<Item = Bytes>,
) -> Duration {
    let started = Instant::now();
    let mut acks = Vec::with_capacity(ACK_WINDOW);
    for body in bodies {
        acks.push(js.publish(subject.to_owned(), body).await.unwrap().into_future());
        if acks.len() == ACK_WINDOW {
            for a in futures::future::join_all(acks.drain(..)).await {
                a.unwrap();
            }
        }
    }
    for a in futures::future::join_all(acks).await {
        a.unwrap();
    }
    started.elapsed()
}

fn rate(n: usize, d: Duration) -> String {
    format!("{:.0}", n as f64 / d.as_secs_f64())
}

pub async fn run(args: &Args) {
    let n = usize::try_from(args.count_or(super::DEFAULT_COUNT)).unwrap();
    let server = nats_server();
    let client = connect(server.port).await;
    let js = jetstream::new(client.clone());
    let payload = Bytes::from(vec![b'x'; 256]);

    // Limit 1: publish with acks, 256-byte messages.
    js.create_stream(stream::Config {
        name: "RAW".into(),
        subjects: vec!["raw.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let publish_time = publish_all(&js, "raw.x", (0..n).map(|_| payload.clone())).await;

    // Limit 2: pull consume + ack of the same messages.
    let raw = js.get_stream("RAW").await.unwrap();
    let consumer = raw
        .create_consumer(pull::Config { durable_name: Some("raw".into()), ..Default::default() })
        .await
        .unwrap();
    let started = Instant::now();
    let mut messages = consumer.stream().max_messages_per_batch(256).messages().await.unwrap();
    for _ in 0..n {
        messages.next().await.unwrap().unwrap().ack().await.unwrap();
    }
    let consume_time = started.elapsed();

    // End to end through the bridge.
    let sim = Simulator::start(
        SimConfig { token: Some(Secret::new(TOKEN)), ..SimConfig::default() },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let extra = format!(
        "[nats]\nurl = \"nats://127.0.0.1:{}\"\nsubscriptions = []\n[[nats.consumers]]\nstream = \"INCIDENTS\"\n\
         create = true\nstream_subjects = [\"incidents.js.>\"]\nmax_ack_pending = 10000\n",
        server.port
    );
    let (mut child, _addr, _dir) = spawn_bridge(args, &sim, &extra).await;
    let pid = child.id().unwrap();
    for _ in 0..200 {
        if js.get_stream("INCIDENTS").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut results = client.subscribe("scwm.results.>").await.unwrap();
    client.flush().await.unwrap();
    let before = ProcStats::read(pid);
    let started = Instant::now();
    let publisher = {
        let js = js.clone();
        tokio::spawn(async move {
            let mut sent = HashMap::with_capacity(n);
            let mut acks = Vec::new();
            for i in 0..n {
                let body = Bytes::from(format!("{{\"title\":\"load {i}\",\"externalRef\":\"k{i}\"}}"));
                acks.push((
                    Instant::now(),
                    js.publish("incidents.js.commands.add", body).await.unwrap().into_future(),
                ));
                if acks.len() == ACK_WINDOW {
                    for (at, a) in acks.drain(..) {
                        sent.insert(a.await.unwrap().sequence, at);
                    }
                }
            }
            for (at, a) in acks {
                sent.insert(a.await.unwrap().sequence, at);
            }
            sent
        })
    };
    let mut arrived = HashMap::with_capacity(n);
    while arrived.len() < n {
        let msg = tokio::time::timeout(Duration::from_secs(60), results.next())
            .await
            .expect("results keep coming")
            .unwrap();
        let seq: u64 = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Incident-Bridge-Source-Sequence"))
            .and_then(|v| v.as_str().parse().ok())
            .unwrap();
        arrived.entry(seq).or_insert_with(Instant::now);
    }
    let e2e_time = started.elapsed();
    let after = ProcStats::read(pid);
    let sent = publisher.await.unwrap();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).unwrap();
    for (seq, at) in &arrived {
        if let Some(sent_at) = sent.get(seq) {
            latency.record(at.saturating_duration_since(*sent_at).as_micros().max(1) as u64).unwrap();
        }
    }
    child.kill().await.ok();

    let q = |p: f64| Duration::from_micros(latency.value_at_quantile(p));
    println!("| what | messages | msg/s |");
    println!("|---|---|---|");
    println!(
        "| raw: JetStream publish, acks awaited ({ACK_WINDOW} in flight) | {n} | {} |",
        rate(n, publish_time)
    );
    println!("| raw: JetStream pull consume + ack | {n} | {} |", rate(n, consume_time));
    println!("| bridge: JetStream → SCWM simulator → result event | {n} | {} |", rate(n, e2e_time));
    println!(
        "\nend-to-end latency (publish → result event): p50 {:.2?}, p90 {:.2?}, p99 {:.2?}, max {:.2?}",
        q(0.5),
        q(0.9),
        q(0.99),
        Duration::from_micros(latency.max())
    );
    println!("SCWM calls seen by the simulator: {}", sim.request_count());
    after.print_since(&before, n as u64);
}
