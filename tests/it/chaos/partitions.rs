//! Partitions: replicas cut off from NATS or from SCWM by the kit's fault proxy (a blackhole:
//! nothing forwarded, nothing read, the connections left open), mid-run, then healed. It owns
//! the scenarios only; the rig, the bridges and the end check are the parent's, and it must not
//! judge the end state any other way than [`assert_scwm_is`] against a [`sequential`] run.
//!
//! A partition starts once SCWM has seen a share of the work (never after a fixed time) and is
//! held for a set time, which is the fault itself: longer than the NATS ping interval (1 s here,
//! so a partitioned connection is noticed), `ack_wait` and `claim_ttl` (2 s), so the other
//! replicas take over the partitioned one's messages and claims while it may still act.

use super::*;
use crate::kit::proxy::{Fault, Proxy};

/// What the partition scenarios set on every replica: a partitioned NATS connection is noticed
/// within a few seconds.
const PING: (&str, &str) = ("nats.ping_interval", "1s");

/// How long each partition lasts: past ping interval, `ack_wait` and `claim_ttl`.
const PARTITION: Duration = Duration::from_secs(4);

fn scwm_url_via(proxy: &Proxy) -> String {
    format!("http://{}/incident", proxy.addr())
}

fn nats_url_via(proxy: &Proxy) -> String {
    format!("nats://{}", proxy.addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_cut_from_nats_and_another_from_scwm_mid_run_end_where_a_sequential_run_ends() {
    let scale = Scale::from_env();
    let mut rng = seeded("partitions, one each");
    let keys = scale.pick(200, 1_000);
    let scripts = random_scripts(&mut rng, keys, 6);
    let bodies = in_rounds(&scripts);
    let rig = Rig::start().await;
    let config = rig.config(CONSUMER, KV_STORE);
    let nats_proxy = Proxy::start(format!("127.0.0.1:{}", rig.nats.port).parse().unwrap()).await;
    let scwm_proxy = Proxy::start(rig.scwm_addr).await;
    let (nats_via, scwm_via) = (nats_url_via(&nats_proxy), scwm_url_via(&scwm_proxy));
    let cut_from_nats = Bridge::spawn(&config, &rig.dir, &[PING, ("nats.url", &nats_via)]).await;
    let untouched = Bridge::spawn(&config, &rig.dir, &[PING]).await;
    // The shared store records the SCWM URL it was written against and refuses another one at
    // start: the proxy is the same SCWM under a new address, which `adopt` says. Started last,
    // as the binding is checked only at start.
    let cut_from_scwm =
        Bridge::spawn(&config, &rig.dir, &[PING, ("scwm.url", &scwm_via), ("store.on_scwm_change", "adopt")])
            .await;
    rig.wait_pulling(3).await;

    let events = bodies.len();
    let started = Instant::now();
    let last = rig.publish(bodies).await;
    rig.wait_scwm_requests(keys / 4, "SCWM work to be under way", 60).await;
    assert!(!rig.acked(last).await, "the partitions meet work in progress");
    let before = rig.scwm.request_count();
    nats_proxy.set(Fault::Blackhole);
    scwm_proxy.set(Fault::Blackhole);
    // The cut connection is noticed by its pings going unanswered.
    cut_from_nats.wait_nats(false, 15).await;
    tokio::time::sleep(PARTITION).await;
    let during = rig.scwm.request_count() - before;
    nats_proxy.set(Fault::Pass);
    scwm_proxy.set(Fault::Pass);
    cut_from_nats.wait_nats(true, 30).await;

    rig.wait_acked(last, scale.pick(120, 600)).await;
    eprintln!(
        "partitions, one each: {keys} keys, {events} events in {:.1?}, {during} SCWM requests during the \
         partitions, {} in all, {} repeats",
        started.elapsed(),
        rig.scwm.requests().len(),
        replays(&rig.scwm)
    );
    assert!(during > 0, "the third replica kept working while the others were cut off");
    assert!(scwm_proxy.accepted() > 0 && nats_proxy.accepted() > 0, "the proxies carried the bridges");
    assert_scwm_is(&rig.scwm, &sequential(&scripts));
    assert_eq!(rig.dead_letter_count().await, 0, "no dead letters");
    for bridge in [cut_from_nats, cut_from_scwm, untouched] {
        bridge.kill().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_replica_cut_from_scwm_then_from_nats_ends_where_a_sequential_run_ends() {
    let scale = Scale::from_env();
    let mut rng = seeded("partitions, all");
    let keys = scale.pick(200, 1_000);
    let scripts = random_scripts(&mut rng, keys, 6);
    let bodies = in_rounds(&scripts);
    let rig = Rig::start().await;
    let config = rig.config(CONSUMER, KV_STORE);
    // One proxy per upstream, shared by every replica: cutting it cuts them all, while the
    // test's own NATS connection (the rig's) stays up to watch the consumer.
    let nats_proxy = Proxy::start(format!("127.0.0.1:{}", rig.nats.port).parse().unwrap()).await;
    let scwm_proxy = Proxy::start(rig.scwm_addr).await;
    let (nats_via, scwm_via) = (nats_url_via(&nats_proxy), scwm_url_via(&scwm_proxy));
    let overrides = [PING, ("nats.url", nats_via.as_str()), ("scwm.url", scwm_via.as_str())];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Bridge::spawn(&config, &rig.dir, &overrides).await);
    }
    rig.wait_pulling(3).await;

    let events = bodies.len();
    let started = Instant::now();
    let last = rig.publish(bodies).await;

    rig.wait_scwm_requests(keys / 4, "SCWM work to be under way", 60).await;
    assert!(!rig.acked(last).await, "the SCWM partition meets work in progress");
    scwm_proxy.set(Fault::Blackhole);
    tokio::time::sleep(PARTITION).await;
    scwm_proxy.set(Fault::Pass);

    let more = rig.scwm.request_count() + keys / 4;
    rig.wait_scwm_requests(more, "SCWM work to go on after the SCWM partition", 60).await;
    assert!(!rig.acked(last).await, "the NATS partition meets work in progress");
    nats_proxy.set(Fault::Blackhole);
    for replica in &replicas {
        replica.wait_nats(false, 15).await;
    }
    tokio::time::sleep(PARTITION).await;
    nats_proxy.set(Fault::Pass);
    for replica in &replicas {
        replica.wait_nats(true, 30).await;
    }

    rig.wait_acked(last, scale.pick(120, 600)).await;
    eprintln!(
        "partitions, all: {keys} keys, {events} events in {:.1?}, {} SCWM requests, {} repeats",
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
