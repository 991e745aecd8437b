//! Process pauses (SIGSTOP, then SIGCONT), the fault that breaks systems that trust their own
//! sense of time: a replica paused while it holds claims, past `claim_ttl` and `ack_wait`, so
//! another takes its work over and the paused one resumes in the middle of steps it no longer
//! owns; and a nats-server paused past the clients' ping interval. The history checker judges
//! the end. The pause lengths are the faults themselves; every wait for progress is a poll.

use std::time::{Duration, Instant};

use super::{
    Bridge, CONSUMER, KV_STORE, Rig, Scale, embedded_store,
    history::{History, dead_letters},
    in_rounds, random_scripts, replays, seeded, signal,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_paused_past_its_claims_and_ack_wait_resumes_without_acting_on_stale_state() {
    let scale = Scale::from_env();
    let mut rng = seeded("pause a replica");
    let keys = scale.pick(200, 1_000);
    let scripts = random_scripts(&mut rng, keys, 6);
    let rig = Rig::start().await;
    let config = rig.config(CONSUMER, KV_STORE);
    let (paused, other) =
        (Bridge::spawn(&config, &rig.dir, &[]).await, Bridge::spawn(&config, &rig.dir, &[]).await);
    rig.wait_pulling(2).await;
    let started = Instant::now();
    let last = rig.publish(in_rounds(&scripts)).await;

    // Mid-run, with work in both replicas' hands, one of them stops dead.
    rig.wait_scwm_requests(keys / 4, "SCWM work to be under way", 60).await;
    signal(paused.pid(), "-STOP");
    let at_pause = rig.scwm.requests().len();
    // Longer than claim_ttl and ack_wait (2 s each): the other replica takes the paused one's
    // claims over and JetStream redelivers its messages. It must get on with them meanwhile.
    rig.wait_scwm_requests(at_pause + keys / 4, "the other replica to carry on", 60).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    signal(paused.pid(), "-CONT");

    rig.wait_acked(last, scale.pick(120, 600)).await;
    eprintln!(
        "paused replica: {keys} keys in {:.1?}, {} SCWM requests, {} repeats recognised",
        started.elapsed(),
        rig.scwm.requests().len(),
        replays(&rig.scwm)
    );
    History::of_scripts(&scripts).assert_kept(&rig.scwm, &dead_letters(&rig).await);
    paused.kill().await;
    other.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_paused_past_the_ping_interval_loses_nothing_and_doubles_nothing() {
    let scale = Scale::from_env();
    let mut rng = seeded("pause nats-server");
    let keys = scale.pick(300, 1_500);
    let scripts = random_scripts(&mut rng, keys, 6);
    let rig = Rig::start().await;
    let config = rig.config(CONSUMER, &embedded_store(&rig.dir));
    // Pings every second: two unanswered and the client gives the connection up.
    let bridge = Bridge::spawn(&config, &rig.dir, &[("nats.ping_interval", "1s")]).await;
    let last = rig.publish(in_rounds(&scripts)).await;
    rig.wait_scwm_requests(keys / 3, "SCWM work to be under way", 60).await;

    signal(rig.nats.pid(), "-STOP");
    // The bridge notices while the server is frozen: three pings unanswered.
    bridge.wait_nats(false, 30).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(rig.nats.pid(), "-CONT");
    bridge.wait_nats(true, 30).await;

    rig.wait_acked(last, scale.pick(120, 600)).await;
    History::of_scripts(&scripts).assert_kept(&rig.scwm, &dead_letters(&rig).await);
    bridge.kill().await;
}
