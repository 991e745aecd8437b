//! The outbox: every result event and dead letter bound for NATS is written to the store first
//! and published from there, in order, until NATS has it. A crash between SCWM's answer and the
//! publish, or NATS being away, loses nothing: the entry waits in the store and goes out when it
//! can, with the `Nats-Msg-Id` it was given, so a stream with a duplicate window keeps it once.
//!
//! [`Relay::enqueue`] makes an entry durable and wakes the relay; [`Relay::run`] publishes the
//! entries in id order (ids are monotonic ULIDs, so per key the order is the order they were
//! added), removing each once NATS has it and retrying with backoff when it does not. A dead
//! letter too large for the server's `max_payload` goes out cut to fit, marked with
//! `Incident-Bridge-Truncated` (its size) and `Incident-Bridge-Kept` (the id under which the
//! whole letter stays in the store). The outbox is bounded: at `limit` entries new work is
//! refused for later (503, a nak) before SCWM sees it, rather than lost or grown without end;
//! the results of work already under way still get in. It owns those rules; it does not render messages (the NATS sink does).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    PublishError,
    nats::{NatsSink, Outgoing, Pending, Rendered},
};
use crate::{
    health::Health,
    store::{Outbox, StoreError},
};

/// The longest header value a message cut to fit keeps, when its headers alone are too large.
const MAX_HEADER_VALUE: usize = 256;
/// The outbox's name in `/readyz`.
const COMPONENT: &str = "outbox";
/// How often the relay looks at the NATS connection while it is away.
const CONNECTION_POLL: Duration = Duration::from_millis(50);
/// Entries published per read of the store.
const BATCH: usize = 256;
/// How long the relay waits before trying NATS again after a failed publish, at most.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Entries kept as made for the relay, at most: about a batch, a few hundred KiB.
const MADE: usize = BATCH;

/// What an outbox entry holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// `result` or `dead_letter`: what may be cut to fit.
    kind: EntryKind,
    /// When it was added, in milliseconds since the Unix epoch, for the age metric.
    added_ms: u64,
    message: Rendered,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Result,
    DeadLetter,
    Drift,
    Flap,
}

/// An outbox entry ready to be written: its id and bytes.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub id: String,
    pub bytes: Bytes,
    added_ms: u64,
}

/// The outbox and the task that empties it.
pub struct Relay {
    outbox: Arc<dyn Outbox>,
    sink: Arc<NatsSink>,
    wake: Notify,
    /// Entries waiting, as counted here (read from the store at start).
    depth: AtomicUsize,
    /// When the oldest waiting entry was added (ms since the epoch), 0 when none wait.
    oldest_ms: AtomicU64,
    limit: usize,
    ids: Mutex<ulid::Generator>,
    /// The entries made here lately, as made, by id: the relay takes an entry from here rather
    /// than read it back from its bytes. The store stays what is published from (its order,
    /// what is there); this only spares the parse. The oldest go first when it is full (NATS
    /// away), and an entry whose write failed is never asked for and goes the same way.
    made: Made,
    /// Where readiness is reported: a full outbox cannot accept work durably.
    health: Option<Health>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("depth", &self.depth())
            .field("limit", &self.limit)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn store_error(e: StoreError) -> PublishError {
    PublishError { sink: "outbox", message: e.to_string() }
}

impl Relay {
    /// The relay for `outbox`, counting what already waits there (from an earlier run).
    pub async fn new(outbox: Arc<dyn Outbox>, sink: Arc<NatsSink>, limit: usize) -> Result<Self, StoreError> {
        let depth = outbox.len().await?;
        let relay = Self {
            outbox,
            sink,
            wake: Notify::new(),
            depth: AtomicUsize::new(depth),
            oldest_ms: AtomicU64::new(0),
            limit: limit.max(1),
            ids: Mutex::new(ulid::Generator::new()),
            made: Made::default(),
            health: None,
        };
        if depth > 0 {
            tracing::info!(
                entries = depth,
                "the outbox holds entries from an earlier run; publishing them first"
            );
        }
        relay.report();
        Ok(relay)
    }

    /// Reports the outbox as a component of `/readyz`: not ready, and the bridge with it, while
    /// it is full.
    pub fn with_health(mut self, health: Health) -> Self {
        health.register(COMPONENT, true);
        self.health = Some(health);
        self.report();
        self
    }

    pub fn sink(&self) -> &NatsSink {
        &self.sink
    }

    /// Entries waiting to be published.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Acquire)
    }

    fn report(&self) {
        let oldest = self.oldest_ms.load(Ordering::Acquire);
        let age = if oldest == 0 { 0.0 } else { now_ms().saturating_sub(oldest) as f64 / 1000.0 };
        crate::observe::outbox(self.depth(), age);
        if let Some(health) = &self.health {
            health.set_component(COMPONENT, self.depth() < self.limit);
        }
    }

    fn next_id(&self) -> String {
        let mut ids = self.ids.lock().unwrap_or_else(|e| e.into_inner());
        // Monotonic within a millisecond too; should the random part overflow, a fresh ULID
        // still sorts after (a later millisecond comes soon).
        ids.generate().unwrap_or_else(|_| ulid::Ulid::new()).to_string()
    }

    /// Whether another entry fits; checked before work starts too, so that work is refused for
    /// later before SCWM is called rather than after.
    pub fn room(&self) -> Result<(), PublishError> {
        if self.depth() >= self.limit {
            return Err(PublishError {
                sink: "outbox",
                message: format!("the outbox is full ({} entries waiting for NATS)", self.limit),
            });
        }
        Ok(())
    }

    /// Makes `message` durable in the outbox and wakes the relay. Fails when the store cannot
    /// take it: the caller must not move on as if it were published. The limit is not checked
    /// here: it refuses new work ([`Relay::room`]), while the results and dead letters of work
    /// already under way (SCWM may have acted on it) always get in, so the outbox overshoots
    /// its limit by at most the work in flight.
    pub async fn enqueue(&self, kind: EntryKind, message: Rendered) -> Result<(), PublishError> {
        self.write_prepared(self.prepare(kind, message)).await
    }

    /// For work its transport delivers again until it is acknowledged ([`super::KeptBy::Redelivery`]):
    /// publishes `message` at once, flushed or (for a stream) acknowledged, instead of a
    /// durable write, a publish and a removal. Only when nothing waits in the outbox, so that
    /// it cannot overtake an earlier entry; when something does, or NATS does not take it, or
    /// it is too large to go whole, `kept` (the same message as the outbox keeps it) is
    /// enqueued as any other.
    pub async fn publish_or_enqueue(
        &self,
        kind: EntryKind,
        message: Outgoing,
        kept: impl FnOnce() -> Rendered,
    ) -> Result<(), PublishError> {
        if self.depth() == 0 && message.header_len + message.body.len() <= self.sink.max_payload() {
            match self.publish_now(message).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::debug!(error = %e, "outbox: a result could not be published at once; it is enqueued")
                }
            }
        }
        self.enqueue(kind, kept()).await
    }

    async fn publish_now(&self, message: Outgoing) -> Result<(), PublishError> {
        match self.sink.start_outgoing(message).await? {
            // A stream's acknowledgement says it is kept; only a core publish needs the flush.
            Pending::Sent => self.sink.flush().await,
            ack => ack.settled().await,
        }
    }

    /// Writes a prepared entry on its own, durably, and wakes the relay.
    pub async fn write_prepared(&self, prepared: Prepared) -> Result<(), PublishError> {
        self.outbox.push(&prepared.id, prepared.bytes.clone()).await.map_err(store_error)?;
        self.pushed(&prepared);
        Ok(())
    }

    /// `message` as an outbox entry, its id given, not yet written: for a caller that writes
    /// it together with other state in one durable write ([`Relay::identity`]), then says so
    /// with [`Relay::pushed`].
    pub fn prepare(&self, kind: EntryKind, message: Rendered) -> Prepared {
        let id = self.next_id();
        let mut message = message;
        // Every message gets an id that stays with it across re-publishes (a crash between the
        // publish and the removal from the store sends it again), so a stream with a duplicate
        // window keeps it once; what has no id of its own (a dead letter of a message that never
        // became an event) takes the entry's.
        if !message.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("Nats-Msg-Id")) {
            message.headers.push(("Nats-Msg-Id".into(), format!("outbox-{id}")));
        }
        let added_ms = now_ms();
        let mut entry = Entry { kind, added_ms, message };
        let mut bytes = Bytes::from(serde_json::to_vec(&entry).expect("an outbox entry serialises"));
        let max = self.outbox.max_entry();
        if bytes.len() > max {
            // Nothing here can keep it whole (the store's values are bounded): it is kept cut,
            // saying so, rather than refused for ever.
            tracing::warn!(
                subject = %entry.message.subject,
                size = entry.message.body.len(),
                max_entry = max,
                "outbox: a message too large for the store is kept and published cut to fit"
            );
            entry.message = cut_for_store(&entry.message, bytes.len() - max);
            bytes = Bytes::from(serde_json::to_vec(&entry).expect("an outbox entry serialises"));
            if bytes.len() > max {
                // The headers alone were too large.
                shrink_headers(&mut entry.message, max / 4);
                bytes = Bytes::from(serde_json::to_vec(&entry).expect("an outbox entry serialises"));
            }
        }
        self.made.keep(id.clone(), entry);
        Prepared { id, bytes, added_ms }
    }

    /// The store this outbox is in, as [`crate::store::CorrelationStore::outbox_identity`]
    /// names it.
    pub fn identity(&self) -> Option<usize> {
        self.outbox.identity()
    }

    /// Counts a prepared entry written durably (by whoever wrote it) and wakes the relay.
    pub fn pushed(&self, prepared: &Prepared) {
        self.depth.fetch_add(1, Ordering::AcqRel);
        let _ = self.oldest_ms.compare_exchange(0, prepared.added_ms, Ordering::AcqRel, Ordering::Acquire);
        self.report();
        self.wake.notify_one();
    }

    /// Publishes what waits, in order, until `stop`; then once more for what is left, for up to
    /// `last_call`, and returns how many entries still wait.
    pub async fn run(&self, stop: CancellationToken, last_call: Duration) -> usize {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.publish_waiting().await {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) if !self.sink.connected() => {
                    tracing::warn!(error = %e, entries = self.depth(), "outbox: NATS is away; the entries wait in the store until it is back");
                    // The connection's state is a local read: watching it closely sends what
                    // waits as soon as NATS is back, not a backoff later.
                    while !self.sink.connected() {
                        tokio::select! {
                            () = stop.cancelled() => break,
                            () = tokio::time::sleep(CONNECTION_POLL) => {}
                        }
                    }
                    if stop.is_cancelled() {
                        break;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff, entries = self.depth(), "outbox: publishing failed; the entries wait in the store");
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.wake.notified() => {}
                // Entries another replica left (a shared KV bucket) are picked up too.
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        let _ = tokio::time::timeout(last_call, self.publish_waiting()).await;
        self.depth()
    }

    /// Publishes the waiting entries in order until none is left or one fails. A batch is sent
    /// whole, flushed once, its acknowledgements awaited together, and only then is what NATS
    /// has taken out of the store (in one commit, the removals arriving together).
    async fn publish_waiting(&self) -> Result<(), PublishError> {
        loop {
            let batch = self.outbox.peek(BATCH).await.map_err(store_error)?;
            if batch.is_empty() {
                self.depth.store(0, Ordering::Release);
                self.oldest_ms.store(0, Ordering::Release);
                self.report();
                return Ok(());
            }
            // Each entry sent: its id, its acknowledgement to await, and the whole entry when it
            // is to be kept (it went out cut, or did not read).
            let mut sent: Vec<(String, Option<Pending>, Option<Bytes>)> = Vec::with_capacity(batch.len());
            let mut failed = None;
            for (id, bytes) in batch {
                let entry: Entry = match self
                    .made
                    .take(&id)
                    .map_or_else(|| serde_json::from_slice(&bytes), Ok)
                {
                    Ok(entry) => entry,
                    Err(e) => {
                        // Not ours to read: kept aside rather than block the queue for ever.
                        tracing::error!(%id, error = %e, "outbox: an entry does not read; keeping it aside");
                        sent.push((id, None, Some(bytes)));
                        continue;
                    }
                };
                self.oldest_ms.store(entry.added_ms, Ordering::Release);
                match self.start_one(&id, &entry).await {
                    Ok((pending, cut)) => sent.push((id, Some(pending), cut.then_some(bytes))),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            self.sink.flush().await?;
            let (ids, pending): (Vec<_>, Vec<_>) =
                sent.into_iter().map(|(id, pending, keep)| ((id, keep), pending)).unzip();
            let settled = futures::future::join_all(
                pending
                    .into_iter()
                    .map(|p| async move { if let Some(p) = p { p.settled().await } else { Ok(()) } }),
            )
            .await;
            // Only the entries before the first that NATS did not take leave the store; any
            // after it go again, under the same message id, so a stream keeps them once.
            let taken = settled.iter().take_while(|r| r.is_ok()).count();
            if failed.is_none() {
                failed = settled.into_iter().find_map(Result::err);
            }
            let removals = ids.into_iter().take(taken).map(|(id, keep)| async move {
                match keep {
                    // The whole message stays in the store (under its id) for whoever reads the
                    // cut one, or the one that did not read.
                    Some(whole) => self.outbox.keep(&id, whole).await,
                    None => self.outbox.remove(&id).await,
                }
            });
            for removed in futures::future::join_all(removals).await {
                removed.map_err(store_error)?;
                self.taken();
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }

    fn taken(&self) {
        let _ = self.depth.fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| Some(d.saturating_sub(1)));
        self.report();
    }

    /// Sends one entry; with it, `true` when it went out cut to fit (and is to be kept whole).
    async fn start_one(&self, id: &str, entry: &Entry) -> Result<(Pending, bool), PublishError> {
        let max = self.sink.max_payload();
        // A client that has not heard from a server yet knows no limit (0): nothing can go out,
        // and nothing is to be cut to fit one.
        if max == 0 {
            return Err(PublishError { sink: "nats", message: "not connected to NATS yet".into() });
        }
        let message = &entry.message;
        if message.header_len() + message.body.len() <= max {
            return Ok((self.sink.start(message).await?, false));
        }
        tracing::warn!(
            %id,
            subject = %message.subject,
            size = message.body.len(),
            max_payload = max,
            "outbox: a message too large for NATS goes out cut to fit; the whole of it is kept in the store"
        );
        Ok((self.sink.start(&cut_to_fit(message, max, id)).await?, true))
    }
}

/// Entries as made, by id, at most [`MADE`]: the oldest (ids sort by time) leave first.
#[derive(Default)]
struct Made(Mutex<BTreeMap<String, Entry>>);

impl Made {
    fn keep(&self, id: String, entry: Entry) {
        let mut made = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if made.len() >= MADE {
            made.pop_first();
        }
        made.insert(id, entry);
    }

    fn take(&self, id: &str) -> Option<Entry> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(id)
    }
}

/// Cuts headers larger than `room`: the original sender's first, then every value to
/// [`MAX_HEADER_VALUE`].
fn shrink_headers(message: &mut Rendered, room: usize) {
    if message.header_len() > room {
        message.headers.retain(|(name, _)| name.starts_with("Incident-Bridge-") || name.starts_with("Nats-"));
    }
    if message.header_len() > room {
        for (_, value) in &mut message.headers {
            if value.len() > MAX_HEADER_VALUE {
                let mut end = MAX_HEADER_VALUE;
                while !value.is_char_boundary(end) {
                    end -= 1;
                }
                value.truncate(end);
            }
        }
    }
}

/// `message` with its body shorter by enough that its outbox entry (which holds the body in
/// base64, a third larger) sheds `excess` bytes, and a header saying how large it was.
fn cut_for_store(message: &Rendered, excess: usize) -> Rendered {
    let mut cut = message.clone();
    cut.headers.push(("Incident-Bridge-Truncated".into(), message.body.len().to_string()));
    // Base64 takes 4 bytes for 3; the margin covers the header just added.
    let shed = (excess + 256).div_ceil(4) * 3;
    cut.body = message.body.slice(..message.body.len().saturating_sub(shed));
    cut
}

/// `message` with its body cut so that the whole fits `max` bytes, and headers saying so.
/// Headers too large to leave room for a body of any use (half of `max`) are cut too: the
/// original sender's first, then every value to [`MAX_HEADER_VALUE`]; the whole message is kept.
fn cut_to_fit(message: &Rendered, max: usize, id: &str) -> Rendered {
    let mut cut = message.clone();
    shrink_headers(&mut cut, max / 2);
    cut.headers.push(("Incident-Bridge-Truncated".into(), message.body.len().to_string()));
    cut.headers.push(("Incident-Bridge-Kept".into(), id.to_owned()));
    let room = max.saturating_sub(cut.header_len() + 64);
    cut.body = message.body.slice(..room.min(message.body.len()));
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_as_made_are_taken_once_and_the_oldest_leave_when_full() {
        let made = Made::default();
        let entry = |n: usize| Entry {
            kind: EntryKind::Result,
            added_ms: n as u64,
            message: Rendered { subject: format!("s.{n}"), headers: Vec::new(), body: Bytes::new() },
        };
        for n in 0..MADE + 10 {
            made.keep(format!("{n:05}"), entry(n));
        }
        assert!(made.take("00000").is_none(), "the oldest left to make room");
        assert!(made.take("00009").is_none());
        assert_eq!(made.take("00010").map(|e| e.message.subject), Some("s.10".into()));
        assert!(made.take("00010").is_none(), "taken once");
        let newest = format!("{:05}", MADE + 9);
        assert_eq!(made.take(&newest).map(|e| e.added_ms), Some((MADE + 9) as u64));
    }

    #[test]
    fn a_cut_message_fits_and_says_how_large_it_was_and_where_it_is_kept() {
        let message = Rendered {
            subject: "scwm.dlq.add".into(),
            headers: vec![("Incident-Bridge-Error".into(), "404".into())],
            body: Bytes::from(vec![b'x'; 10_000]),
        };
        let cut = cut_to_fit(&message, 4_096, "01ABC");
        assert!(cut.header_len() + cut.body.len() <= 4_096);
        assert!(cut.headers.contains(&("Incident-Bridge-Truncated".into(), "10000".into())));
        assert!(cut.headers.contains(&("Incident-Bridge-Kept".into(), "01ABC".into())));
        assert!(message.body.starts_with(&cut.body));
    }

    #[test]
    fn a_message_cut_for_the_store_fits_it_and_says_how_large_it_was() {
        let message = Rendered {
            subject: "scwm.dlq.edit".into(),
            headers: vec![("Incident-Bridge-Error".into(), "404".into())],
            body: Bytes::from(vec![b'x'; 9_000]),
        };
        let entry = |message: Rendered| {
            serde_json::to_vec(&Entry { kind: EntryKind::DeadLetter, added_ms: 1, message }).unwrap().len()
        };
        let max = 4_000;
        let whole = entry(message.clone());
        let cut = cut_for_store(&message, whole - max);
        assert!(cut.headers.contains(&("Incident-Bridge-Truncated".into(), "9000".into())));
        assert!(message.body.starts_with(&cut.body));
        assert!(entry(cut) <= max);
    }

    #[test]
    fn headers_too_large_to_leave_room_are_cut_too_and_the_bridge_s_own_stay() {
        let message = Rendered {
            subject: "scwm.dlq.unknown".into(),
            headers: vec![
                ("X-Sender-Blob".into(), "y".repeat(3_000)),
                ("Incident-Bridge-Error".into(), "é".repeat(2_000)),
                ("Nats-Msg-Id".into(), "outbox-01ABC".into()),
            ],
            body: Bytes::from(vec![b'x'; 10_000]),
        };
        let cut = cut_to_fit(&message, 4_096, "01ABC");
        assert!(cut.header_len() + cut.body.len() <= 4_096, "{}", cut.header_len());
        assert!(!cut.body.is_empty(), "room is left for part of the body");
        let names: Vec<&str> = cut.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["Incident-Bridge-Error", "Nats-Msg-Id", "Incident-Bridge-Truncated", "Incident-Bridge-Kept"]
        );
    }
}
