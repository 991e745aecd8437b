//! A random schedule of nemeses against three replicas sharing a consumer and a KV store: kill
//! a replica and start another, pause one (SIGSTOP) past its claims, pause the nats-server past
//! the ping interval, restart the nats-server. The schedule and the alert scripts come from one
//! seed, printed; `CHAOS_SEED` repeats them. Each nemesis strikes when SCWM has seen a further
//! share of the work, so every one meets work in progress. The history checker judges the end.

use std::time::Duration;

use rand::{Rng, seq::IndexedRandom};

use super::{
    Bridge, CONSUMER, KV_STORE, Rig, Scale, Step,
    history::{History, dead_letters},
    in_rounds, random_scripts, replays, seeded, signal,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nemesis {
    KillReplica,
    PauseReplica,
    PauseNats,
    RestartNats,
}

const ALL: [Nemesis; 4] =
    [Nemesis::KillReplica, Nemesis::PauseReplica, Nemesis::PauseNats, Nemesis::RestartNats];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_random_schedule_of_nemeses_keeps_every_invariant() {
    let scale = Scale::from_env();
    let mut rng = seeded("nemesis schedule");
    let keys = scale.pick(300, 1_500);
    let scripts = random_scripts(&mut rng, keys, 5);
    let schedule: Vec<Nemesis> =
        (0..scale.pick(4, 10)).map(|_| *ALL.choose(&mut rng).expect("nemeses")).collect();
    eprintln!("nemesis schedule: {schedule:?}");
    // Each key that fires at all takes at least one SCWM call: the work that paces the schedule.
    let calls = scripts.iter().filter(|s| s.contains(&Step::Fire)).count();

    let mut rig = Rig::start().await;
    let config = rig.config(CONSUMER, KV_STORE);
    let overrides = [("nats.ping_interval", "1s")];
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Bridge::spawn(&config, &rig.dir, &overrides).await);
    }
    rig.wait_pulling(3).await;
    let last = rig.publish(in_rounds(&scripts)).await;

    for (i, nemesis) in schedule.iter().enumerate() {
        let share = calls * (i + 1) / (schedule.len() + 1);
        rig.wait_scwm_requests(share, "the next share of the work", 120).await;
        let victim = rng.random_range(0..replicas.len());
        match nemesis {
            Nemesis::KillReplica => {
                replicas.remove(victim).kill().await;
                replicas.push(Bridge::spawn(&config, &rig.dir, &overrides).await);
            }
            Nemesis::PauseReplica => {
                let pid = replicas[victim].pid();
                signal(pid, "-STOP");
                // Past claim_ttl and ack_wait (2 s each): the fault itself.
                tokio::time::sleep(Duration::from_millis(rng.random_range(2_500..5_000))).await;
                signal(pid, "-CONT");
            }
            Nemesis::PauseNats => {
                signal(rig.nats.pid(), "-STOP");
                tokio::time::sleep(Duration::from_millis(rng.random_range(2_000..4_000))).await;
                signal(rig.nats.pid(), "-CONT");
            }
            Nemesis::RestartNats => {
                rig.nats.kill();
                rig.nats.start_again();
                rig.js = async_nats::jetstream::new(rig.nats.client().await);
            }
        }
    }

    rig.wait_acked(last, scale.pick(180, 900)).await;
    eprintln!(
        "nemesis schedule: {keys} keys, {} SCWM requests, {} repeats recognised",
        rig.scwm.requests().len(),
        replays(&rig.scwm)
    );
    History::of_scripts(&scripts).assert_kept(&rig.scwm, &dead_letters(&rig).await);
    for replica in replicas {
        replica.kill().await;
    }
}
