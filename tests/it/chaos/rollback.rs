//! A store that rolls back: what JetStream can do after an OS crash or a power failure (it
//! flushes to disk lazily by default, Jepsen's NATS 2.12.1 analysis), and what an embedded store
//! file restored from an older copy does. The nats-server's whole data directory (the alert
//! stream, the consumer, the KV bucket) and, separately, the redb file are put back as they were
//! earlier in the run. The senders then resend what the rollback took back (Alertmanager repeats
//! its notifications), and the bridge must converge without a second incident anywhere: the
//! identity licensePlates make SCWM recognise work it already did. It must also say that the
//! store went backwards, in `incident_bridge_store_rollbacks_total`.

use std::path::Path;

use super::{
    Bridge, CONSUMER, KV_STORE, Rig, Step, embedded_store,
    history::{History, dead_letters},
    keyed_notification, poll_until,
};
use std::time::Duration;

/// Copies directory `from` to `to` (which must not exist), files and subdirectories.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

async fn rollbacks_reported(bridge: &Bridge) -> u64 {
    let Ok(resp) = bridge.http.get(bridge.url("/metrics")).send().await else { return 0 };
    let text = resp.text().await.unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("incident_bridge_store_rollbacks_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Steps of keys, in the order they are sent.
type Steps = Vec<(usize, Step)>;

/// Phase one fires keys `0..n`; phase two resolves the first half of them and fires `n..n+n/2`.
fn phases(n: usize) -> (Steps, Steps) {
    let one = (0..n).map(|k| (k, Step::Fire)).collect();
    let two = (0..n / 2).map(|k| (k, Step::Resolve)).chain((n..n + n / 2).map(|k| (k, Step::Fire))).collect();
    (one, two)
}

fn bodies(steps: &[(usize, Step)]) -> Vec<Vec<u8>> {
    steps.iter().map(|(k, s)| keyed_notification(*k, *s)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_server_that_loses_acknowledged_writes_is_noticed_and_converged_without_duplicates() {
    const N: usize = 60;
    let (one, two) = phases(N);
    let mut rig = Rig::start().await;
    let config = rig.config(CONSUMER, KV_STORE);
    let bridge = Bridge::spawn(&config, &rig.dir, &[("nats.ping_interval", "1s")]).await;
    let last = rig.publish(bodies(&one)).await;
    rig.wait_acked(last, 60).await;

    // What a lazy fsync would have left on disk at this point.
    let snapshot = rig.dir.path().join("jetstream-then");
    rig.nats.kill();
    copy_dir(&rig.nats.dir().join("jetstream"), &snapshot);
    rig.nats.start_again();
    bridge.wait_readiness(200, 60).await;

    let mut history = History::default();
    for (k, s) in one.iter().chain(&two) {
        history.sent(*k, *s);
    }
    let last = rig.publish(bodies(&two)).await;
    rig.wait_acked(last, 60).await;
    let incidents_before = rig.scwm.incidents().len();
    assert_eq!(incidents_before, N + N / 2);

    // Power failure: the server comes back with the older data.
    rig.nats.kill();
    std::fs::remove_dir_all(rig.nats.dir().join("jetstream")).unwrap();
    copy_dir(&snapshot, &rig.nats.dir().join("jetstream"));
    rig.nats.start_again();
    rig.js = async_nats::jetstream::new(rig.nats.client().await);
    bridge.wait_readiness(200, 60).await;

    // The senders resend what the rollback took back (the stream lost it too).
    let last = rig.publish(bodies(&two)).await;
    rig.wait_acked(last, 60).await;
    history.assert_kept(&rig.scwm, &dead_letters(&rig).await);
    assert_eq!(rig.scwm.incidents().len(), incidents_before, "no second incident for any key");
    poll_until(20, "the bridge to report the rollback", Duration::from_millis(100), || async {
        rollbacks_reported(&bridge).await >= 1
    })
    .await;
    bridge.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_store_restored_from_an_older_copy_is_noticed_and_converged_without_duplicates() {
    const N: usize = 60;
    let (one, two) = phases(N);
    let rig = Rig::start().await;
    let store = embedded_store(&rig.dir);
    let config = rig.config(CONSUMER, &store);
    let file = rig.dir.path().join("correlation.redb");
    let witness = incident_bridge::store::witness::file_beside(&file);
    let read_witness = || std::fs::read_to_string(&witness).ok().and_then(|t| t.trim().parse::<u64>().ok());

    let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
    let last = rig.publish(bodies(&one)).await;
    rig.wait_acked(last, 60).await;
    bridge.kill().await;
    let older = rig.dir.path().join("correlation-then.redb");
    std::fs::copy(&file, &older).unwrap();

    let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
    // Opening writes the file's last revision beside it: phase one's end.
    let mut then = 0;
    poll_until(10, "the witness of phase one", Duration::from_millis(50), || {
        then = read_witness().unwrap_or(0);
        async move { then > 0 }
    })
    .await;
    let last = rig.publish(bodies(&two)).await;
    rig.wait_acked(last, 60).await;
    // The witness beside the file is at most a second behind the store.
    poll_until(10, "the witness to record phase two", Duration::from_millis(50), || async {
        read_witness().is_some_and(|w| w > then)
    })
    .await;
    bridge.kill().await;
    let incidents_before = rig.scwm.incidents().len();

    // The file goes back to the older copy; the witness beside it remembers more.
    std::fs::copy(&older, &file).unwrap();
    let bridge = Bridge::spawn(&config, &rig.dir, &[]).await;
    assert_eq!(rollbacks_reported(&bridge).await, 1, "noticed as the store opened");

    let mut history = History::default();
    for (k, s) in one.iter().chain(&two) {
        history.sent(*k, *s);
    }
    let last = rig.publish(bodies(&two)).await;
    rig.wait_acked(last, 60).await;
    history.assert_kept(&rig.scwm, &dead_letters(&rig).await);
    assert_eq!(rig.scwm.incidents().len(), incidents_before, "no second incident for any key");
    bridge.kill().await;
}
