//! The correlation store against its contract: one conformance suite and one set of races run
//! against both backends (the embedded redb file and JetStream KV on a real nats-server), then
//! what each backend adds: the embedded file across reopen and a killed process, the KV bucket
//! across a server restart and while the server is down.

use std::{
    io::{BufRead, BufReader},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::kit::{nats::NatsServer, within};
use bytes::Bytes;
use incident_bridge::{
    ids::CorrelationKey,
    store::{
        self, BackendConfig, CorrelationStore, Durability, EmbeddedOptions, EmbeddedStore, JetStreamKvStore,
        OnScwmChange, Revision, StoreConfig, StoreError, Versioned,
    },
};
use tokio::sync::{Barrier, mpsc};

const TIMEOUT: Duration = Duration::from_secs(5);

fn key(s: &str) -> CorrelationKey {
    CorrelationKey::new(s)
}

fn val(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

/// Deterministic, incompressible-looking bytes.
fn pattern(len: usize) -> Bytes {
    let mut x: u32 = 0x9e37_79b9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

/// Keys that must not be confused with each other by any encoding.
fn tricky_keys() -> Vec<CorrelationKey> {
    let mut keys: Vec<String> = [
        "am:{}:{alertname=\"Disk\"}",
        "am/{}/{alertname=\"Disk\"}",
        "with space",
        "with  space",
        "ünïcødé ✓ 事件",
        "",
        "=",
        ".",
        "a.b",
        "*",
        ">",
        "$KV.x",
        // The encoding of "am:group/1": a key that looks encoded must not meet the encoded one.
        "YW06Z3JvdXAvMQ",
        "am:group/1",
    ]
    .map(String::from)
    .to_vec();
    // Over 200 characters, differing only in the last one; then far longer than a NATS subject.
    let long = format!("grafana:{}", "long-label-value/".repeat(13));
    assert!(long.len() > 200);
    keys.push(long.clone());
    keys.push(long + "x");
    keys.push("k".repeat(5000));
    keys.push("k".repeat(5001));
    keys.into_iter().map(CorrelationKey::new).collect()
}

/// The contract every backend must meet. `store` must be empty.
async fn conformance(store: &dyn CorrelationStore) {
    let mut issued: Vec<Revision> = Vec::new();
    let k = key("conformance:lifecycle");

    // A missing key.
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.put(&k, val("x"), Some(1)).await, Err(StoreError::Conflict), "update of a missing key");
    assert_eq!(store.delete(&k, 1).await, Err(StoreError::Conflict), "delete of a missing key");

    // Create, then create again.
    let r1 = store.put(&k, val("one"), None).await.unwrap();
    issued.push(r1);
    assert!(r1 > 0);
    assert_eq!(store.get(&k).await.unwrap(), Some(Versioned { value: val("one"), revision: r1 }));
    assert_eq!(store.put(&k, val("again"), None).await, Err(StoreError::Conflict));

    // Update with the right revision, then a stale one.
    let r2 = store.put(&k, val("two"), Some(r1)).await.unwrap();
    issued.push(r2);
    assert!(r2 > r1);
    assert_eq!(store.put(&k, val("stale"), Some(r1)).await, Err(StoreError::Conflict));
    assert_eq!(store.put(&k, val("zero"), Some(0)).await, Err(StoreError::Conflict));
    assert_eq!(store.get(&k).await.unwrap(), Some(Versioned { value: val("two"), revision: r2 }));

    // Delete with a wrong revision, then the right one.
    assert_eq!(store.delete(&k, r1).await, Err(StoreError::Conflict));
    assert_eq!(store.delete(&k, 0).await, Err(StoreError::Conflict));
    assert_eq!(store.get(&k).await.unwrap().map(|v| v.revision), Some(r2), "a failed delete changes nothing");
    store.delete(&k, r2).await.unwrap();
    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.delete(&k, r2).await, Err(StoreError::Conflict), "a deleted key has no revision");
    assert_eq!(store.put(&k, val("late"), Some(r2)).await, Err(StoreError::Conflict));

    // Create after delete, twice: revisions keep growing.
    let r3 = store.put(&k, val("three"), None).await.unwrap();
    issued.push(r3);
    assert_eq!(store.put(&k, val("again"), None).await, Err(StoreError::Conflict));
    store.delete(&k, r3).await.unwrap();
    let r4 = store.put(&k, val("four"), None).await.unwrap();
    issued.push(r4);
    assert_eq!(store.get(&k).await.unwrap(), Some(Versioned { value: val("four"), revision: r4 }));

    // Values round-trip byte for byte: empty, every byte value, about 1 MB (under the KV
    // default limit of 1 MiB per message).
    let all_bytes: Bytes = (0..=255u8).collect::<Vec<u8>>().into();
    let big = pattern(1_000_000);
    for (name, value) in [("empty", Bytes::new()), ("all-bytes", all_bytes), ("big", big.clone())] {
        let k = key(&format!("conformance:value:{name}"));
        let r = store.put(&k, value.clone(), None).await.unwrap();
        issued.push(r);
        let got = store.get(&k).await.unwrap().unwrap();
        assert_eq!(got.revision, r);
        assert!(got.value == value, "{name} value differs after a round trip");
        // Replacing a big value with a small one and back.
        let r = store.put(&k, val("small"), Some(r)).await.unwrap();
        issued.push(r);
        let r = store.put(&k, value.clone(), Some(r)).await.unwrap();
        issued.push(r);
        assert!(store.get(&k).await.unwrap().unwrap().value == value);
    }
    assert_eq!(big, pattern(1_000_000));

    // Keys are independent of each other, however they are spelled.
    let keys = tricky_keys();
    let mut revisions = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let r = store.put(k, val(&format!("value {i}")), None).await.unwrap();
        issued.push(r);
        revisions.push(r);
    }
    for (i, k) in keys.iter().enumerate() {
        let got = store.get(k).await.unwrap().unwrap_or_else(|| panic!("key {i} lost"));
        assert_eq!(got, Versioned { value: val(&format!("value {i}")), revision: revisions[i] }, "key {i}");
    }
    let r = store.put(&keys[0], val("changed"), Some(revisions[0])).await.unwrap();
    issued.push(r);
    store.delete(&keys[1], revisions[1]).await.unwrap();
    assert_eq!(store.get(&keys[1]).await.unwrap(), None);
    for (i, k) in keys.iter().enumerate().skip(2) {
        assert_eq!(store.get(k).await.unwrap().unwrap().revision, revisions[i], "key {i} was touched");
    }

    // Every revision is larger than all issued before it, across keys too.
    assert!(issued.windows(2).all(|w| w[0] < w[1]), "revisions not increasing: {issued:?}");
}

/// 16 tasks race to create `k`: exactly one wins. Tasks take the stores in turn, so with two
/// stores on two connections the race is between "replicas".
async fn race_creates(stores: &[Arc<dyn CorrelationStore>], k: &CorrelationKey) {
    let results = race(stores, k, None).await;
    let winners: Vec<_> = results.iter().filter_map(|(i, r)| r.as_ref().ok().map(|rev| (*i, *rev))).collect();
    assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
    assert!(results.iter().all(|(_, r)| matches!(r, Ok(_) | Err(StoreError::Conflict))), "{results:?}");
    let (i, rev) = winners[0];
    let stored = stores[0].get(k).await.unwrap().unwrap();
    assert_eq!(stored, Versioned { value: val(&format!("writer {i}")), revision: rev });
}

/// 16 tasks race to update `k` from the same revision: exactly one wins.
async fn race_updates(stores: &[Arc<dyn CorrelationStore>], k: &CorrelationKey) {
    let base = stores[0].put(k, val("base"), None).await.unwrap();
    let results = race(stores, k, Some(base)).await;
    let winners: Vec<_> = results.iter().filter_map(|(i, r)| r.as_ref().ok().map(|rev| (*i, *rev))).collect();
    assert_eq!(winners.len(), 1, "exactly one update wins: {results:?}");
    assert!(results.iter().all(|(_, r)| matches!(r, Ok(_) | Err(StoreError::Conflict))), "{results:?}");
    let (i, rev) = winners[0];
    assert!(rev > base);
    let stored = stores[1 % stores.len()].get(k).await.unwrap().unwrap();
    assert_eq!(stored, Versioned { value: val(&format!("writer {i}")), revision: rev });
}

async fn race(
    stores: &[Arc<dyn CorrelationStore>],
    k: &CorrelationKey,
    expected: Option<Revision>,
) -> Vec<(usize, Result<Revision, StoreError>)> {
    const WRITERS: usize = 16;
    let start = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let store = stores[i % stores.len()].clone();
            let start = start.clone();
            let k = k.clone();
            tokio::spawn(async move {
                start.wait().await;
                (i, store.put(&k, val(&format!("writer {i}")), expected).await)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(within(30, "a racing writer", t).await.unwrap());
    }
    results
}

// ----------------------------------------------------------------------------------------------
// Embedded

fn embedded_in(dir: &tempfile::TempDir) -> EmbeddedStore {
    EmbeddedStore::open(dir.path().join("store.redb")).expect("embedded store opens")
}

#[tokio::test]
async fn embedded_store_meets_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = embedded_in(&dir);
    assert_eq!(store.backend(), "embedded");
    within(60, "the conformance suite", conformance(&store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_racing_writers_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn CorrelationStore> = Arc::new(embedded_in(&dir));
    let stores = [store];
    race_creates(&stores, &key("race:create")).await;
    race_updates(&stores, &key("race:update")).await;
}

#[tokio::test]
async fn embedded_values_and_revisions_survive_closing_and_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let (r1, r2) = {
        let store = embedded_in(&dir);
        let r1 = store.put(&key("kept"), val("v1"), None).await.unwrap();
        let gone = store.put(&key("gone"), val("x"), None).await.unwrap();
        store.delete(&key("gone"), gone).await.unwrap();
        let r2 = store.put(&key("kept"), val("v2"), Some(r1)).await.unwrap();
        (r1, r2)
    };
    let store = embedded_in(&dir);
    assert_eq!(store.get(&key("kept")).await.unwrap(), Some(Versioned { value: val("v2"), revision: r2 }));
    assert_eq!(store.get(&key("gone")).await.unwrap(), None);
    assert_eq!(store.put(&key("kept"), val("stale"), Some(r1)).await, Err(StoreError::Conflict));
    // The revision counter was kept too: nothing issued before the reopen is issued again.
    let r3 = store.put(&key("gone"), val("back"), None).await.unwrap();
    assert!(r3 > r2, "{r3} after {r2}");
}

#[tokio::test]
async fn a_second_open_of_an_open_embedded_file_fails_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let first = EmbeddedStore::open(&path).unwrap();
    let err = EmbeddedStore::open(&path).unwrap_err();
    assert_eq!(err.kind(), "unavailable", "{err}");
    let text = err.to_string();
    assert!(text.contains(&path.display().to_string()) && text.contains("already open"), "{text}");
    drop(first);
    EmbeddedStore::open(&path).expect("the file opens again once the first store is closed");
}

/// Set in the child process of the kill test: the store file it writes to.
const KILL_TEST_PATH: &str = "INCIDENT_BRIDGE_STORE_KILL_TEST_PATH";

/// Set in the child process of the kill test when its store syncs only for a process crash.
const KILL_TEST_PROCESS_CRASH: &str = "INCIDENT_BRIDGE_STORE_KILL_TEST_PROCESS_CRASH";
/// Writes the child makes, each its own commit.
const KILL_TEST_WRITES: usize = 50;

/// Not a test on its own: the child process of the kill test below. It writes
/// `KILL_TEST_WRITES` values one after another, reports the last revision once its `put` has
/// returned, and waits to be killed.
#[test]
fn helper_process_that_writes_and_waits_to_be_killed() {
    let Some(path) = std::env::var_os(KILL_TEST_PATH) else { return };
    let options = match std::env::var_os(KILL_TEST_PROCESS_CRASH) {
        // An hour: no commit of the child's reaches the disk before the kill.
        Some(_) => EmbeddedOptions {
            durability: Durability::ProcessCrash { sync_interval: Duration::from_secs(3600) },
            ..EmbeddedOptions::default()
        },
        None => EmbeddedOptions::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let revision = rt.block_on(async {
        let store = EmbeddedStore::open_with(path, options).unwrap();
        let mut last = 0;
        for i in 0..KILL_TEST_WRITES {
            last = store
                .put(&key(&format!("survivor-{i}")), val("committed before the kill"), None)
                .await
                .unwrap();
        }
        std::mem::forget(store); // never closed cleanly
        last
    });
    println!("committed {revision}");
    loop {
        std::thread::park();
    }
}

#[tokio::test]
async fn an_embedded_write_survives_the_writer_being_killed() {
    killed_writer(false).await;
}

#[tokio::test]
async fn an_embedded_write_survives_the_writer_being_killed_with_process_crash_durability() {
    killed_writer(true).await;
}

/// Every write answered before a SIGKILL reads back after it, synced to the disk or not.
async fn killed_writer(process_crash: bool) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "store::helper_process_that_writes_and_waits_to_be_killed",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(KILL_TEST_PATH, &path)
        .envs(process_crash.then_some((KILL_TEST_PROCESS_CRASH, "1")))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // libtest prints the test's name on the same line first.
            if let Some(r) = line.split("committed ").nth(1) {
                let _ = tx.send(r.trim().parse::<Revision>().unwrap());
            }
        }
    });
    let revision = within(30, "the child's write", rx.recv()).await.expect("the child reports its write");
    child.kill().unwrap(); // SIGKILL: no destructor, no clean close
    child.wait().unwrap();

    let store = EmbeddedStore::open(&path).expect("the file opens after the kill");
    let last = KILL_TEST_WRITES - 1;
    assert_eq!(
        store.get(&key(&format!("survivor-{last}"))).await.unwrap(),
        Some(Versioned { value: val("committed before the kill"), revision })
    );
    for i in 0..KILL_TEST_WRITES {
        assert!(store.get(&key(&format!("survivor-{i}"))).await.unwrap().is_some(), "write {i} survives");
    }
}

#[tokio::test]
async fn the_configured_embedded_backend_opens_without_nats() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        backend: BackendConfig::Embedded {
            path: dir.path().join("configured.redb"),
            temporary: false,
            options: EmbeddedOptions::default(),
        },
        timeout: TIMEOUT,
        claim_ttl: Duration::from_secs(30),
        on_scwm_change: OnScwmChange::Refuse,
    };
    let store = store::open(&config, None).await.unwrap();
    assert_eq!(store.backend(), "embedded");
    store.put(&key("k"), val("v"), None).await.unwrap();
}

#[tokio::test]
async fn a_temporary_store_starts_empty_each_time_and_is_removed_when_closed() {
    let config = StoreConfig {
        backend: BackendConfig::Embedded {
            path: "ignored.redb".into(),
            temporary: true,
            options: EmbeddedOptions::default(),
        },
        timeout: TIMEOUT,
        claim_ttl: Duration::from_secs(30),
        on_scwm_change: OnScwmChange::Refuse,
    };
    let first = store::open(&config, None).await.unwrap();
    first.put(&key("k"), val("v"), None).await.unwrap();
    let second = store::open(&config, None).await.unwrap();
    assert_eq!(second.get(&key("k")).await.unwrap(), None, "a second temporary store is another file");
    drop(second);

    let file = EmbeddedStore::open_temporary().unwrap();
    let dir = file.path().parent().unwrap().to_owned();
    assert!(file.path().is_file());
    assert!(!std::path::Path::new("ignored.redb").exists(), "the configured path is not used");
    drop(file);
    assert!(!dir.exists(), "the temporary store's directory is removed with it");
}

// ----------------------------------------------------------------------------------------------
// JetStream KV

async fn kv_store(client: async_nats::Client, bucket: &str, timeout: Duration) -> JetStreamKvStore {
    within(20, "the KV store to open", JetStreamKvStore::open(client, bucket, true, 1, timeout))
        .await
        .expect("KV store opens")
}

/// A client whose connection events arrive on a channel, to await a reconnect.
async fn client_with_events(
    nats: &NatsServer,
) -> (async_nats::Client, mpsc::UnboundedReceiver<async_nats::Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
            }
        })
        .connect(nats.url())
        .await
        .expect("test client connects");
    (client, rx)
}

async fn next_event(events: &mut mpsc::UnboundedReceiver<async_nats::Event>, wanted: async_nats::Event) {
    within(30, &format!("NATS event {wanted}"), async {
        while let Some(e) = events.recv().await {
            if e == wanted {
                return;
            }
        }
        panic!("event channel closed");
    })
    .await
}

#[tokio::test]
async fn kv_store_meets_the_contract() {
    let nats = NatsServer::start();
    let store = kv_store(nats.client().await, "conformance", TIMEOUT).await;
    assert_eq!(store.backend(), "jetstream-kv");
    assert_eq!(store.bucket(), "conformance");
    within(60, "the conformance suite", conformance(&store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_racing_writers_on_two_connections_have_exactly_one_winner() {
    let nats = NatsServer::start();
    let a: Arc<dyn CorrelationStore> = Arc::new(kv_store(nats.client().await, "race", TIMEOUT).await);
    let b: Arc<dyn CorrelationStore> = Arc::new(kv_store(nats.client().await, "race", TIMEOUT).await);
    let stores = [a, b];
    race_creates(&stores, &key("race:create")).await;
    race_updates(&stores, &key("race:update")).await;
    // Racing to re-create a deleted key goes through the delete marker: still one winner.
    let k = key("race:recreate");
    let r = stores[0].put(&k, val("first life"), None).await.unwrap();
    stores[1].delete(&k, r).await.unwrap();
    race_creates(&stores, &k).await;
}

#[tokio::test]
async fn kv_values_and_revisions_survive_a_server_restart() {
    let mut nats = NatsServer::start();
    let (client, mut events) = client_with_events(&nats).await;
    let store = kv_store(client, "restart", TIMEOUT).await;
    let r1 = store.put(&key("kept"), val("v1"), None).await.unwrap();
    let gone = store.put(&key("gone"), val("x"), None).await.unwrap();
    store.delete(&key("gone"), gone).await.unwrap();

    nats.kill();
    next_event(&mut events, async_nats::Event::Disconnected).await;
    nats.start_again();
    next_event(&mut events, async_nats::Event::Connected).await;

    // The server may take a moment after accepting connections before JetStream answers.
    let got = within(30, "the value after the restart", async {
        loop {
            match store.get(&key("kept")).await {
                Ok(v) => return v,
                Err(e) => assert!(e.is_retryable(), "{e}"),
            }
        }
    })
    .await;
    assert_eq!(got, Some(Versioned { value: val("v1"), revision: r1 }));
    assert_eq!(store.get(&key("gone")).await.unwrap(), None);
    let r2 = store.put(&key("kept"), val("v2"), Some(r1)).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(store.put(&key("gone"), val("back"), None).await.map(|r| r > r2), Ok(true));
}

#[tokio::test]
async fn kv_calls_fail_as_unavailable_within_the_timeout_while_the_server_is_down() {
    let mut nats = NatsServer::start();
    let (client, mut events) = client_with_events(&nats).await;
    let timeout = Duration::from_millis(500);
    let store = kv_store(client, "outage", timeout).await;
    let r = store.put(&key("k"), val("v"), None).await.unwrap();

    nats.kill();
    next_event(&mut events, async_nats::Event::Disconnected).await;

    let k = key("k");
    let calls: [(&str, futures::future::BoxFuture<'_, Result<(), StoreError>>); 4] = [
        ("get", Box::pin(async { store.get(&k).await.map(drop) })),
        ("create", Box::pin(async { store.put(&key("new"), val("v"), None).await.map(drop) })),
        ("update", Box::pin(async { store.put(&k, val("v2"), Some(r)).await.map(drop) })),
        ("delete", store.delete(&k, r)),
    ];
    for (name, call) in calls {
        let started = Instant::now();
        let result = within(10, name, call).await;
        let took = started.elapsed();
        match result {
            Err(StoreError::Unavailable(_)) => {}
            other => panic!("{name} while NATS is down: {other:?}"),
        }
        assert!(took < timeout + Duration::from_secs(1), "{name} took {took:?}");
    }
}

#[tokio::test]
async fn kv_reads_an_operator_purge_as_no_value_and_creates_after_it() {
    let nats = NatsServer::start();
    let client = nats.client().await;
    let store = kv_store(client.clone(), "purged", TIMEOUT).await;
    let k = key("am:purged");
    let r1 = store.put(&k, val("v"), None).await.unwrap();

    // What `nats kv purge` does, on the encoded key.
    let raw = async_nats::jetstream::new(client).get_key_value("purged").await.unwrap();
    raw.purge(store::kv_key(&k)).await.unwrap();

    assert_eq!(store.get(&k).await.unwrap(), None);
    assert_eq!(store.put(&k, val("stale"), Some(r1)).await, Err(StoreError::Conflict));
    let r2 = store.put(&k, val("after purge"), None).await.unwrap();
    assert!(r2 > r1);
    assert_eq!(store.get(&k).await.unwrap(), Some(Versioned { value: val("after purge"), revision: r2 }));
}

#[tokio::test]
async fn kv_refuses_a_missing_bucket_unless_asked_to_create_it() {
    let nats = NatsServer::start();
    let err = within(20, "open", JetStreamKvStore::open(nats.client().await, "absent", false, 1, TIMEOUT))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "invalid", "{err}");
    assert!(err.to_string().contains("`absent` does not exist"), "{err}");

    // Once created (here by a store that may), a store that may not create opens it.
    let creator = kv_store(nats.client().await, "absent", TIMEOUT).await;
    let r = creator.put(&key("k"), val("v"), None).await.unwrap();
    let opener = within(20, "open", JetStreamKvStore::open(nats.client().await, "absent", false, 1, TIMEOUT))
        .await
        .unwrap();
    assert_eq!(opener.get(&key("k")).await.unwrap().map(|v| v.revision), Some(r));
}

#[tokio::test]
async fn kv_refuses_values_over_the_server_limit_and_takes_one_at_it() {
    let nats = NatsServer::start();
    let store = kv_store(nats.client().await, "limits", TIMEOUT).await;
    let max = store.max_value_len();
    assert!(max > 1_000_000 && max < 1024 * 1024, "{max}");
    let err = store.put(&key("too-big"), pattern(max + 1), None).await.unwrap_err();
    assert_eq!(err.kind(), "invalid", "{err}");
    assert_eq!(store.get(&key("too-big")).await.unwrap(), None);
    let r = store.put(&key("at-limit"), pattern(max), None).await.unwrap();
    assert_eq!(
        store.get(&key("at-limit")).await.unwrap().map(|v| (v.value.len(), v.revision)),
        Some((max, r))
    );
}

#[tokio::test]
async fn jetstream_kv_without_nats_is_a_configuration_error() {
    let config = StoreConfig {
        backend: BackendConfig::JetStreamKv { bucket: "b".into(), create_bucket: true, replicas: 1 },
        timeout: TIMEOUT,
        claim_ttl: Duration::from_secs(30),
        on_scwm_change: OnScwmChange::Refuse,
    };
    let err = store::open(&config, None).await.err().expect("no NATS, no store");
    assert_eq!(err.kind(), "invalid");
    assert!(err.to_string().contains("[nats]"), "{err}");
}

#[tokio::test]
async fn the_configured_kv_backend_opens_on_the_given_connection() {
    let nats = NatsServer::start();
    let config = StoreConfig {
        backend: BackendConfig::JetStreamKv { bucket: "configured".into(), create_bucket: true, replicas: 1 },
        timeout: TIMEOUT,
        claim_ttl: Duration::from_secs(30),
        on_scwm_change: OnScwmChange::Refuse,
    };
    let store = within(20, "open", store::open(&config, Some(nats.client().await))).await.unwrap();
    assert_eq!(store.backend(), "jetstream-kv");
    let r = store.put(&key("k"), val("v"), None).await.unwrap();
    assert_eq!(store.get(&key("k")).await.unwrap().map(|v| v.revision), Some(r));
}

/// What both backends promise of kept dead letters: written again under an id, an entry
/// replaces itself; past the limit, the ones written longest ago go; remove is idempotent.
async fn dead_letters_behave(store: &dyn store::DeadLetterStore) {
    let b = |s: &str| Bytes::from(s.to_owned());
    for id in ["a", "b", "c"] {
        store.put_letter(id, b(id), 3).await.unwrap();
    }
    store.put_letter("a", b("a again"), 3).await.unwrap();
    assert_eq!(store.letter("a").await.unwrap(), Some(b("a again")));
    store.put_letter("d", b("d"), 3).await.unwrap();
    let mut ids: Vec<String> = store.letters().await.unwrap().into_iter().map(|(id, _)| id).collect();
    ids.sort();
    assert_eq!(ids, ["a", "c", "d"], "b was written longest ago (a was written again since)");
    store.remove_letter("c").await.unwrap();
    store.remove_letter("c").await.unwrap();
    assert_eq!(store.letter("c").await.unwrap(), None);
    assert_eq!(store.letters().await.unwrap().len(), 2);
}

#[tokio::test]
async fn both_backends_keep_dead_letters_bounded_and_by_id() {
    let dir = tempfile::tempdir().unwrap();
    dead_letters_behave(&embedded_in(&dir)).await;
    let nats = NatsServer::start();
    let kv = kv_store(nats.client().await, "letters", TIMEOUT).await;
    within(30, "the KV dead letters", dead_letters_behave(&kv)).await;
}
