//! The embedded store's one writer thread, which commits the writes waiting at the same time
//! together (group commit).
//!
//! redb runs one write transaction at a time and every commit waits for an fsync, so one
//! transaction per write caps the store at the disk's fsync rate however many events are in
//! flight. The writer takes every write waiting when it starts a transaction, applies them in
//! arrival order inside that one transaction, each compare-and-swap seeing the writes before
//! it exactly as if they had committed one by one, and commits once. A caller hears back only
//! after the commit that holds its write is durable, so a kill loses nothing that was answered.
//! Removals of published outbox entries, when nothing else waits, wait a moment for a write
//! to commit with rather than take a commit of their own.

use std::{
    sync::{Arc, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use bytes::Bytes;
use redb::{Database, ReadableTable};
use tokio::sync::oneshot;

use super::{KEPT, LAST_REVISION, META, OUTBOX, VALUES, map_err};
use crate::store::{Revision, StoreError};

/// Writes taken into one transaction at most, so a flood still gets answers in steady steps.
const MAX_BATCH: usize = 512;

/// How long removals of published outbox entries wait for another write to commit with when
/// they are all there is. A commit costs the writer about as much CPU whether it holds one
/// write or a dozen, and the relay's removals otherwise take a quarter of all commits, each
/// alone between the writes that matter; nobody waits on a removal but the relay, and a
/// removal lost to a crash only publishes its entry again.
const REMOVALS_WAIT: Duration = Duration::from_millis(5);

/// A change to one key: of a correlation key, made only when the key is at the expected
/// revision; of an outbox entry (the key is its id), made as asked.
enum Op {
    /// With outbox entries (id, entry) added in the same transaction, whether or not the
    /// compare-and-swap succeeds.
    Put {
        value: Bytes,
        expected: Option<Revision>,
        entries: Vec<(String, Bytes)>,
    },
    Delete {
        expected: Revision,
    },
    /// Adds an outbox entry.
    Push {
        entry: Bytes,
    },
    /// Removes an outbox entry, published.
    Remove,
    /// Moves an outbox entry to the kept entries (a dead letter too large to publish whole),
    /// as `entry`.
    Keep {
        entry: Bytes,
    },
}

/// What a write that took place did.
enum Written {
    Put(Revision),
    Deleted,
    Outbox,
}

struct Request {
    key: String,
    op: Op,
    reply: oneshot::Sender<Result<Written, StoreError>>,
}

/// The handle to the writer thread. Dropping it lets the thread finish the writes already sent
/// and waits for it, so the file is closed when the drop returns.
pub(super) struct Writer {
    queue: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>) -> Result<Self, StoreError> {
        let (queue, requests) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(&db, &requests))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the store writer: {e}")))?;
        Ok(Self { queue: Some(queue), thread: Some(thread) })
    }

    /// Sets `key` to `value` when it is at `expected` (`None`: absent); answers the new revision
    /// once the transaction holding the write is durable.
    pub(super) async fn put(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
    ) -> Result<Revision, StoreError> {
        self.put_with(key, value, expected, Vec::new()).await
    }

    /// [`Writer::put`] with outbox `entries` added in the same transaction.
    pub(super) async fn put_with(
        &self,
        key: &str,
        value: Bytes,
        expected: Option<Revision>,
        entries: Vec<(String, Bytes)>,
    ) -> Result<Revision, StoreError> {
        match self.write(key, Op::Put { value, expected, entries }).await? {
            Written::Put(revision) => Ok(revision),
            Written::Deleted | Written::Outbox => unreachable!("the writer answers a put with its revision"),
        }
    }

    /// Removes `key` when it is at `expected`, once the transaction holding it is durable.
    pub(super) async fn delete(&self, key: &str, expected: Revision) -> Result<(), StoreError> {
        self.write(key, Op::Delete { expected }).await.map(|_| ())
    }

    /// Adds, removes or keeps outbox entry `id`, once the transaction holding it is durable.
    pub(super) async fn push(&self, id: &str, entry: Bytes) -> Result<(), StoreError> {
        self.write(id, Op::Push { entry }).await.map(|_| ())
    }

    pub(super) async fn remove(&self, id: &str) -> Result<(), StoreError> {
        self.write(id, Op::Remove).await.map(|_| ())
    }

    pub(super) async fn keep(&self, id: &str, entry: Bytes) -> Result<(), StoreError> {
        self.write(id, Op::Keep { entry }).await.map(|_| ())
    }

    async fn write(&self, key: &str, op: Op) -> Result<Written, StoreError> {
        let stopped = || StoreError::Unavailable("the store writer has stopped".into());
        let (reply, answer) = oneshot::channel();
        let request = Request { key: key.to_owned(), op, reply };
        self.queue.as_ref().ok_or_else(stopped)?.send(request).map_err(|_| stopped())?;
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        drop(self.queue.take());
        if let Some(thread) = self.thread.take() {
            // A panic on the writer thread has already failed its callers; nothing is left to do.
            let _ = thread.join();
        }
    }
}

fn run(db: &Database, requests: &mpsc::Receiver<Request>) {
    while let Ok(first) = requests.recv() {
        let batch = gather(first, requests, REMOVALS_WAIT);
        match apply(db, &batch) {
            Ok(results) => {
                for (request, result) in batch.into_iter().zip(results) {
                    // A caller that stopped waiting still had its write made; nobody to tell.
                    let _ = request.reply.send(result);
                }
            }
            // A write redb refuses (a value too large) spoils the whole transaction: each write
            // then goes alone, so only the one at fault fails.
            Err(_) if batch.len() > 1 => {
                for request in batch {
                    let result = apply(db, std::slice::from_ref(&request))
                        .and_then(|mut one| one.pop().expect("one result per write"));
                    let _ = request.reply.send(result);
                }
            }
            Err(e) => {
                for request in batch {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Where the writer takes its writes from: the queue, or in tests a scripted one.
trait Queue {
    /// A write already waiting.
    fn waiting(&self) -> Option<Request>;
    /// The next write, if one comes within `wait`; `None` at once when the queue is closed.
    fn within(&self, wait: Duration) -> Option<Request>;
}

impl Queue for mpsc::Receiver<Request> {
    fn waiting(&self) -> Option<Request> {
        self.try_recv().ok()
    }

    fn within(&self, wait: Duration) -> Option<Request> {
        self.recv_timeout(wait).ok()
    }
}

/// The writes for one transaction: `first` and every write waiting behind it; when those are
/// only removals, what arrives within `removals_wait` as well, so that they commit with it.
fn gather(first: Request, requests: &impl Queue, removals_wait: Duration) -> Vec<Request> {
    let mut batch = vec![first];
    let take_waiting = |batch: &mut Vec<Request>| {
        while batch.len() < MAX_BATCH
            && let Some(next) = requests.waiting()
        {
            batch.push(next);
        }
    };
    take_waiting(&mut batch);
    let deadline = Instant::now() + removals_wait;
    while batch.len() < MAX_BATCH && only_removals(&batch) {
        // Closed (the store is closing) or nothing came in time: the removals commit alone.
        let Some(next) = requests.within(deadline.saturating_duration_since(Instant::now())) else {
            break;
        };
        batch.push(next);
        take_waiting(&mut batch);
    }
    batch
}

/// Whether `batch` only takes published entries out of the outbox: such a batch waits for
/// company and commits without waiting for the disk.
fn only_removals(batch: &[Request]) -> bool {
    batch.iter().all(|r| matches!(r.op, Op::Remove))
}

/// Applies `batch` in order in one transaction and commits it when anything was written. The
/// outer error fails the whole batch; the inner results are each write's own answer.
fn apply(db: &Database, batch: &[Request]) -> Result<Vec<Result<Written, StoreError>>, StoreError> {
    let mut txn = db.begin_write().map_err(map_err)?;
    // Taking published entries out of the outbox need not wait for the disk: a removal lost to
    // a crash only publishes the entry again, under the same message id (at least once), and
    // the next durable commit makes it durable too. It saves the relay one fsync per batch.
    if only_removals(batch) {
        txn.set_durability(redb::Durability::None).map_err(map_err)?;
    }
    let mut results = Vec::with_capacity(batch.len());
    let mut wrote = false;
    {
        let mut values = txn.open_table(VALUES).map_err(map_err)?;
        let mut meta = txn.open_table(META).map_err(map_err)?;
        let mut outbox = txn.open_table(OUTBOX).map_err(map_err)?;
        let mut kept = txn.open_table(KEPT).map_err(map_err)?;
        let mut last = meta.get(LAST_REVISION).map_err(map_err)?.map(|g| g.value()).unwrap_or(0);
        for request in batch {
            let key = request.key.as_str();
            match &request.op {
                Op::Push { entry } => {
                    outbox.insert(key, entry.as_ref()).map_err(map_err)?;
                    wrote = true;
                    results.push(Ok(Written::Outbox));
                    continue;
                }
                Op::Remove => {
                    wrote |= outbox.remove(key).map_err(map_err)?.is_some();
                    results.push(Ok(Written::Outbox));
                    continue;
                }
                Op::Keep { entry } => {
                    outbox.remove(key).map_err(map_err)?;
                    kept.insert(key, entry.as_ref()).map_err(map_err)?;
                    wrote = true;
                    results.push(Ok(Written::Outbox));
                    continue;
                }
                Op::Put { entries, .. } => {
                    for (id, entry) in entries {
                        outbox.insert(id.as_str(), entry.as_ref()).map_err(map_err)?;
                    }
                    wrote |= !entries.is_empty();
                }
                Op::Delete { .. } => {}
            }
            let current = values.get(key).map_err(map_err)?.map(|g| g.value().0);
            let result = match &request.op {
                Op::Put { value, expected, .. } => {
                    if current == *expected {
                        last = last
                            .checked_add(1)
                            .ok_or_else(|| StoreError::Corrupt("revision counter exhausted".into()))?;
                        values.insert(key, (last, value.as_ref())).map_err(map_err)?;
                        wrote = true;
                        Ok(Written::Put(last))
                    } else {
                        Err(StoreError::Conflict)
                    }
                }
                Op::Delete { expected } => {
                    if current == Some(*expected) {
                        values.remove(key).map_err(map_err)?;
                        wrote = true;
                        Ok(Written::Deleted)
                    } else {
                        Err(StoreError::Conflict)
                    }
                }
                Op::Push { .. } | Op::Remove | Op::Keep { .. } => unreachable!("handled above"),
            };
            results.push(result);
        }
        if wrote {
            meta.insert(LAST_REVISION, last).map_err(map_err)?;
        }
    }
    if wrote {
        txn.commit().map_err(map_err)?;
    } else {
        txn.abort().map_err(map_err)?;
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(key: &str, op: Op) -> (Request, oneshot::Receiver<Result<Written, StoreError>>) {
        let (reply, answer) = oneshot::channel();
        (Request { key: key.into(), op, reply }, answer)
    }

    fn put(value: &str, expected: Option<Revision>) -> Op {
        Op::Put { value: Bytes::copy_from_slice(value.as_bytes()), expected, entries: Vec::new() }
    }

    fn revision(result: &Result<Written, StoreError>) -> Option<Revision> {
        match result {
            Ok(Written::Put(r)) => Some(*r),
            _ => None,
        }
    }

    #[test]
    fn writes_in_one_transaction_see_the_writes_before_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("store.redb")).unwrap();
        super::super::init(&db).unwrap();
        let batch: Vec<_> = [
            request("a", put("1", None)),
            request("a", put("2", Some(1))),
            // Stale: `a` is at 2 by now, as it would be had each write committed alone.
            request("a", put("x", Some(1))),
            request("b", put("1", None)),
            request("a", Op::Delete { expected: 2 }),
            request("a", put("3", None)),
        ]
        .into_iter()
        .map(|(r, _)| r)
        .collect();
        let results = apply(&db, &batch).unwrap();
        let revisions: Vec<_> = results.iter().map(revision).collect();
        assert_eq!(revisions, [Some(1), Some(2), None, Some(3), None, Some(4)]);
        assert!(matches!(results[2], Err(StoreError::Conflict)));
        assert!(matches!(results[4], Ok(Written::Deleted)));

        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let values = txn.open_table(VALUES).unwrap();
        let a = values.get("a").unwrap().unwrap();
        assert_eq!(a.value(), (4, &b"3"[..]));
        let last = txn.open_table(META).unwrap().get(LAST_REVISION).unwrap().unwrap().value();
        assert_eq!(last, 4, "the revision counter is written once, at the batch's last revision");
    }

    #[test]
    fn a_put_with_outbox_entries_writes_them_in_its_transaction_even_when_its_swap_fails() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("store.redb")).unwrap();
        super::super::init(&db).unwrap();
        let with = |expected, id: &str| Op::Put {
            value: Bytes::from_static(b"record"),
            expected,
            entries: vec![(id.to_owned(), Bytes::from_static(b"result"))],
        };
        let batch: Vec<_> = [request("k", with(None, "01A")), request("k", with(Some(7), "01B"))]
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let results = apply(&db, &batch).unwrap();
        assert_eq!(revision(&results[0]), Some(1));
        assert!(matches!(results[1], Err(StoreError::Conflict)));
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        let outbox = txn.open_table(OUTBOX).unwrap();
        let ids: Vec<String> = outbox.iter().unwrap().map(|e| e.unwrap().0.value().to_owned()).collect();
        assert_eq!(ids, ["01A", "01B"], "what the entries report happened, the swap aside");
        assert_eq!(txn.open_table(VALUES).unwrap().get("k").unwrap().unwrap().value(), (1, &b"record"[..]));
    }

    #[test]
    fn a_batch_of_conflicts_commits_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("store.redb")).unwrap();
        super::super::init(&db).unwrap();
        let batch: Vec<_> = [request("a", put("1", Some(7))), request("a", Op::Delete { expected: 1 })]
            .into_iter()
            .map(|(r, _)| r)
            .collect();
        let results = apply(&db, &batch).unwrap();
        assert!(results.iter().all(|r| matches!(r, Err(StoreError::Conflict))));
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        assert!(txn.open_table(VALUES).unwrap().get("a").unwrap().is_none());
    }

    /// Writes waiting now, then one that comes only to a caller that waits for it.
    struct Scripted {
        waiting: std::cell::RefCell<std::collections::VecDeque<Request>>,
        later: std::cell::RefCell<Option<Request>>,
        waited: std::cell::Cell<Option<Duration>>,
    }

    impl Scripted {
        fn new(waiting: Vec<Request>, later: Option<Request>) -> Self {
            Self {
                waiting: std::cell::RefCell::new(waiting.into()),
                later: std::cell::RefCell::new(later),
                waited: std::cell::Cell::new(None),
            }
        }
    }

    impl Queue for Scripted {
        fn waiting(&self) -> Option<Request> {
            self.waiting.borrow_mut().pop_front()
        }

        fn within(&self, wait: Duration) -> Option<Request> {
            self.waited.set(Some(wait));
            self.later.borrow_mut().take()
        }
    }

    fn keys(batch: Vec<Request>) -> Vec<String> {
        batch.into_iter().map(|r| r.key).collect()
    }

    #[test]
    fn removals_wait_for_a_write_to_commit_with() {
        let (first, _a) = request("01A", Op::Remove);
        let (second, _b) = request("01B", Op::Remove);
        let (put, _k) = request("k", put("v", None));
        // The put comes only to a writer that waits for it.
        let queue = Scripted::new(vec![second], Some(put));
        let batch = gather(first, &queue, Duration::from_millis(5));
        assert_eq!(keys(batch), ["01A", "01B", "k"], "the removals go with the put that came later");
        assert!(queue.waited.get().is_some_and(|w| w <= Duration::from_millis(5)), "within the wait");
    }

    #[test]
    fn removals_commit_alone_when_nothing_comes_or_the_store_closes() {
        let (first, _a) = request("01A", Op::Remove);
        let queue = Scripted::new(Vec::new(), None);
        assert_eq!(keys(gather(first, &queue, Duration::from_millis(5))), ["01A"], "after the wait");

        // A closed queue answers at once: the store's close does not wait out a long wait.
        let (queue, requests) = mpsc::channel::<Request>();
        drop(queue);
        let (first, _a) = request("01A", Op::Remove);
        let (done, result) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(keys(gather(first, &requests, Duration::from_secs(3600))));
        });
        let batch = result.recv_timeout(Duration::from_secs(60)).expect("gather returns at once");
        assert_eq!(batch, ["01A"]);
    }

    #[test]
    fn other_writes_never_wait() {
        let (first, _k) = request("k", put("v", None));
        let (removal, _a) = request("01A", Op::Remove);
        let (later, _l) = request("l", put("v", None));
        let queue = Scripted::new(vec![removal], Some(later));
        assert_eq!(keys(gather(first, &queue, Duration::from_millis(5))), ["k", "01A"]);
        assert_eq!(queue.waited.get(), None, "what waits is taken, nothing more awaited");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_callers_at_once_each_get_their_own_answer() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("store.redb")).unwrap();
        super::super::init(&db).unwrap();
        let writer = Arc::new(Writer::start(Arc::new(db)).unwrap());
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let writer = writer.clone();
                // Half the callers race to create one shared key; the rest own a key each.
                let key = if i % 2 == 0 { "shared".to_owned() } else { format!("own-{i}") };
                tokio::spawn(async move { writer.put(&key, Bytes::from_static(b"v"), None).await })
            })
            .collect();
        let mut revisions = Vec::new();
        let mut conflicts = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(r) => revisions.push(r),
                Err(StoreError::Conflict) => conflicts += 1,
                Err(e) => panic!("unexpected store error: {e}"),
            }
        }
        assert_eq!(conflicts, 199, "exactly one creator of the shared key wins");
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=201).collect::<Vec<_>>(), "every revision is issued once");
    }
}
