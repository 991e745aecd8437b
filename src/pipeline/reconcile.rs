//! The reconciler: in the background, it reads the incidents of keys the store holds as open
//! (and, when configured, recently closed) from SCWM, oldest confirmation first, at a bounded
//! rate, and brings the store in line with what people did there. Each difference is a drift
//! event. The rules are the planner's ([`plan::converge`]); this module owns the choice of keys,
//! the pace and the lease that lets one replica at a time do it.
//!
//! It never touches a key with an intent under way (the pipeline is acting on it), writes only
//! with a compare-and-swap on the revision it read (alert work that changed the key meanwhile
//! wins), and makes one read at a time, so SCWM's capacity stays with alerts.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Pipeline, converge::read_request};
use crate::{
    ids::{CorrelationKey, ItemId},
    lifecycle::IncidentState,
    plan,
    store::{CorrelationStore, Revision, StoreError},
};

/// The store key of the lease; `~` keeps it apart from correlation keys, which name a source
/// kind first (`am:`, `ref:`, ...).
pub const LEASE_KEY: &str = "~bridge/reconciler";
/// How long a lease holds without renewal: a replica that dies hands over within this.
const LEASE_TTL: Duration = Duration::from_secs(30);
/// How long to wait after the store or the lease could not be read.
const TROUBLE_WAIT: Duration = Duration::from_secs(5);
/// The most keys one pass lists, whatever the settings: about 100 bytes each.
const MAX_DUE: usize = 100_000;
/// The shortest span of reads one pass lists keys for.
const MIN_PASS: Duration = Duration::from_secs(60);

/// Who reconciles, until when.
#[derive(Debug, Serialize, Deserialize)]
struct Lease {
    owner: String,
    until_ms: u64,
}

/// A key due for a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub key: CorrelationKey,
    pub item_id: ItemId,
    confirmed_ms: u64,
}

/// Runs until `stop` fires. Returns at once when the pipeline has no store.
pub async fn run(pipeline: Arc<Pipeline>, stop: CancellationToken) {
    let Some(store) = pipeline.store.clone() else { return };
    let settings = pipeline.reconcile.clone();
    let gap = Duration::from_secs_f64(1.0 / settings.reads_per_second);
    // With nothing due, look again after a while: a quarter of the interval, within bounds.
    let idle = (settings.interval / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut lease = Held::default();
    let mut next_read = Instant::now();
    tracing::info!(
        interval = %humantime::format_duration(settings.interval),
        reads_per_second = settings.reads_per_second,
        "reconciler started"
    );
    'pass: loop {
        match lease.hold(store.as_ref(), &pipeline.instance).await {
            Ok(true) => {}
            Ok(false) => {
                if pause(&stop, LEASE_TTL / 3).await {
                    break;
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciler: the lease could not be read");
                if pause(&stop, TROUBLE_WAIT).await {
                    break;
                }
                continue;
            }
        }
        let due = match due_keys(store.as_ref(), &settings, SystemTime::now()).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reconciler: the store could not be walked");
                if pause(&stop, TROUBLE_WAIT).await {
                    break;
                }
                continue;
            }
        };
        if due.is_empty() {
            if pause(&stop, idle).await {
                break;
            }
            continue;
        }
        for due in due {
            tokio::select! {
                () = stop.cancelled() => break 'pass,
                () = tokio::time::sleep_until(next_read) => {}
            }
            next_read = Instant::now().max(next_read) + gap;
            match lease.hold(store.as_ref(), &pipeline.instance).await {
                Ok(true) => {}
                // Another replica holds it now (this one was paused past its lease): start over.
                Ok(false) | Err(_) => continue 'pass,
            }
            pipeline.reconcile_key(store.as_ref(), &due).await;
        }
    }
    lease.release(store.as_ref()).await;
    tracing::info!("reconciler stopped");
}

/// Waits `d`; true when `stop` fired first.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => true,
        () = tokio::time::sleep(d) => false,
    }
}

/// The keys due for a read, oldest confirmation first: open ones (and closed ones within
/// `include_closed_for`) that SCWM has not confirmed for `interval`, with no intent under way;
/// the oldest [`pass_limit`] of them.
pub async fn due_keys(
    store: &dyn CorrelationStore,
    settings: &super::config::ReconcileSettings,
    now: SystemTime,
) -> Result<Vec<Due>, StoreError> {
    let limit = pass_limit(settings);
    let mut due: Vec<Due> = Vec::new();
    let keep_oldest = |due: &mut Vec<Due>| {
        due.sort_by_key(|d| d.confirmed_ms);
        due.truncate(limit);
    };
    // Read for what decides it only: an intent's steps, the flap history, a held notification
    // are skipped, not built, for every key of every pass.
    super::records::each_as(
        store,
        |_| true,
        |r: Watched, _| {
            due.extend(due_of(r, settings, now));
            // Held to twice the limit as the walk goes, so a store of millions of open keys costs
            // the pass a bounded list, not one entry per key.
            if due.len() >= 2 * limit {
                keep_oldest(&mut due);
            }
        },
    )
    .await?;
    keep_oldest(&mut due);
    Ok(due)
}

/// The most keys one pass takes: as many as it can read within `interval` (a minute at least,
/// so that a short interval does not walk the store for every read) at `reads_per_second`, at
/// most [`MAX_DUE`]. Keys further back in line wait for the next pass, which walks the store
/// again once these are read and finds them still the oldest.
fn pass_limit(settings: &super::config::ReconcileSettings) -> usize {
    let readable = settings.reads_per_second * settings.interval.max(MIN_PASS).as_secs_f64();
    // A float to usize cast saturates; the clamp keeps at least one key per pass.
    (readable.ceil() as usize).clamp(1, MAX_DUE)
}

/// The part of a record that says whether its key is due for a read.
#[derive(Deserialize)]
struct Watched {
    key: Option<CorrelationKey>,
    stored: Option<crate::lifecycle::Stored>,
    pending: Option<serde::de::IgnoredAny>,
}

/// The record's key when it is due for a read.
fn due_of(r: Watched, settings: &super::config::ReconcileSettings, now: SystemTime) -> Option<Due> {
    Some(r).filter(|r| r.pending.is_none()).and_then(|r| {
        let key = r.key?;
        let stored = r.stored?;
        let watched = match stored.state {
            IncidentState::Open => true,
            IncidentState::Closed => stored.closed_at.is_some_and(|at| {
                now.duration_since(at).unwrap_or(Duration::ZERO) < settings.include_closed_for
            }),
        };
        (watched && !key.as_str().starts_with('~') && plan::unconfirmed_for(&stored, now, settings.interval))
            .then(|| Due {
                key,
                item_id: stored.item_id.clone(),
                confirmed_ms: stored.confirmed_at.map_or(0, plan::unix_ms),
            })
    })
}

impl Pipeline {
    /// Reads one key's incident and converges its record, if the key is still as it was found.
    async fn reconcile_key(&self, store: &dyn CorrelationStore, due: &Due) {
        let (mut record, revision) = match super::records::read(store, &due.key).await {
            Ok(Some(found)) => found,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(key = %due.key, error = %e, "reconciler: the key could not be read");
                return;
            }
        };
        // The pipeline got there first: it is acting on the key, or already moved it on.
        if record.pending.is_some() || record.stored.as_ref().map(|s| &s.item_id) != Some(&due.item_id) {
            return;
        }
        let source = record.source.clone();
        let settings = source.as_deref().and_then(|s| self.sources.get(s)).and_then(|s| s.alerts.as_ref());
        let owner_id = settings.and_then(|a| a.owner_id.clone());
        let answer = self.scwm.call(&read_request(&due.item_id, owner_id)).await;
        let seen = match self.seen_in(&answer) {
            Ok(Some(seen)) => seen,
            Ok(None) => {
                crate::observe::reconcile_read("unreadable");
                tracing::warn!(key = %due.key, item_id = %due.item_id, "reconciler: SCWM's read names no status");
                return;
            }
            Err(failure) => {
                crate::observe::reconcile_read("failed");
                tracing::debug!(key = %due.key, error = %failure.error, "reconciler: reading the incident failed");
                return;
            }
        };
        let wont_fix = source.as_deref().map_or(&[][..], |s| self.wont_fix(s));
        let converged = plan::converge(&mut record, &seen, &due.key, wont_fix, SystemTime::now());
        let value = serde_json::to_vec(&record).expect("a record serialises");
        match store.put(&due.key, Bytes::from(value), Some(revision)).await {
            Ok(_) => {}
            // Alert work changed the key meanwhile; its own checks see SCWM from here on.
            Err(StoreError::Conflict) => {
                crate::observe::reconcile_read("conflict");
                return;
            }
            Err(e) => {
                crate::observe::reconcile_read("failed");
                tracing::warn!(key = %due.key, error = %e, "reconciler: the key could not be saved");
                return;
            }
        }
        crate::observe::reconcile_read(if converged.drift.is_empty() { "confirmed" } else { "drift" });
        if let Err(e) = self.report_drift(&due.key, source.as_deref(), &converged.drift, "reconciler").await {
            // The store already says what SCWM says; the event is what is lost, and said so.
            tracing::error!(key = %due.key, error = %e, "reconciler: a drift event could not be published");
        }
    }
}

/// The lease as this replica last wrote it.
#[derive(Debug, Default)]
struct Held {
    lease: Option<(Revision, u64)>,
}

impl Held {
    /// Whether this replica may reconcile now: it holds the lease with time to spare, or takes
    /// or renews it.
    async fn hold(&mut self, store: &dyn CorrelationStore, me: &str) -> Result<bool, StoreError> {
        let now = plan::unix_ms(SystemTime::now());
        let ttl = u64::try_from(LEASE_TTL.as_millis()).unwrap_or(u64::MAX);
        if let Some((_, until)) = self.lease
            && until > now + ttl / 2
        {
            return Ok(true);
        }
        let key = CorrelationKey::new(LEASE_KEY);
        let expected = match store.get(&key).await? {
            None => None,
            Some(v) => {
                let theirs = serde_json::from_slice::<Lease>(&v.value).ok();
                if let Some(l) = theirs
                    && l.owner != me
                    && l.until_ms > now
                {
                    self.lease = None;
                    return Ok(false);
                }
                Some(v.revision)
            }
        };
        let lease = Lease { owner: me.to_owned(), until_ms: now + ttl };
        let value = Bytes::from(serde_json::to_vec(&lease).expect("a lease serialises"));
        match store.put(&key, value, expected).await {
            Ok(revision) => {
                self.lease = Some((revision, lease.until_ms));
                Ok(true)
            }
            Err(StoreError::Conflict) => {
                self.lease = None;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up, so a replica that starts now (a rollout) takes over at once.
    async fn release(&mut self, store: &dyn CorrelationStore) {
        if let Some((revision, _)) = self.lease.take() {
            let _ = store.delete(&CorrelationKey::new(LEASE_KEY), revision).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        lifecycle::Stored,
        plan::{Pending, Record},
        store::EmbeddedStore,
    };

    #[tokio::test]
    async fn one_replica_holds_the_lease_until_it_lets_go() {
        let store = EmbeddedStore::open_temporary().unwrap();
        let (mut a, mut b) = (Held::default(), Held::default());
        assert!(a.hold(&store, "a").await.unwrap());
        assert!(!b.hold(&store, "b").await.unwrap(), "a holds it");
        assert!(a.hold(&store, "a").await.unwrap(), "and keeps it");
        a.release(&store).await;
        assert!(b.hold(&store, "b").await.unwrap(), "released, it is b's at once");
        assert!(!a.hold(&store, "a").await.unwrap());
    }

    #[tokio::test]
    async fn a_lease_that_ran_out_is_taken_over() {
        let store = EmbeddedStore::open_temporary().unwrap();
        let expired = Lease { owner: "gone".into(), until_ms: plan::unix_ms(SystemTime::now()) - 1 };
        let key = CorrelationKey::new(LEASE_KEY);
        store.put(&key, Bytes::from(serde_json::to_vec(&expired).unwrap()), None).await.unwrap();
        assert!(Held::default().hold(&store, "b").await.unwrap());
    }

    fn record(
        key: &str,
        item: &str,
        confirmed_s: u64,
        state: IncidentState,
        closed_s: Option<u64>,
    ) -> Record {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut stored =
            Stored::opened(ItemId::new(item), "h", at(confirmed_s), crate::ids::LicensePlate::generate());
        stored.state = state;
        stored.closed_at = closed_s.map(at);
        Record { stored: Some(stored), key: Some(CorrelationKey::new(key)), ..Record::default() }
    }

    #[tokio::test]
    async fn due_keys_are_the_watched_unconfirmed_ones_oldest_first() {
        let store = EmbeddedStore::open_temporary().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        let mut busy = record("busy", "IT-5", 100, IncidentState::Open, None);
        busy.pending = Some(Pending {
            owner: "me".into(),
            claimed_at_ms: 0,
            decision: "close".into(),
            content_hash: "h".into(),
            steps: vec![],
            progress: busy.stored.clone(),
        });
        let records = [
            record("newer", "IT-1", 5_000, IncidentState::Open, None),
            record("older", "IT-2", 1_000, IncidentState::Open, None),
            record("fresh", "IT-3", 9_900, IncidentState::Open, None),
            record("closed-long-ago", "IT-4", 100, IncidentState::Closed, Some(100)),
            record("closed-lately", "IT-6", 100, IncidentState::Closed, Some(9_000)),
            busy,
        ];
        for r in &records {
            let key = r.key.clone().unwrap();
            store.put(&key, Bytes::from(serde_json::to_vec(r).unwrap()), None).await.unwrap();
        }
        let mut settings = crate::pipeline::config::ReconcileSettings {
            interval: Duration::from_secs(600),
            include_closed_for: Duration::ZERO,
            ..Default::default()
        };
        let names = |due: Vec<Due>| due.into_iter().map(|d| d.key.to_string()).collect::<Vec<_>>();
        assert_eq!(names(due_keys(&store, &settings, now).await.unwrap()), ["older", "newer"]);
        settings.include_closed_for = Duration::from_secs(3600);
        assert_eq!(
            names(due_keys(&store, &settings, now).await.unwrap()),
            ["closed-lately", "older", "newer"],
            "closed within the hour is watched too; an intent under way never is"
        );
    }

    #[tokio::test]
    async fn a_pass_lists_only_as_many_keys_as_it_can_read_in_an_interval_the_oldest() {
        let store = EmbeddedStore::open_temporary().unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000);
        // Written in an order that is not their age, more than twice the limit of two.
        for (key, confirmed_s) in [("c", 3_000), ("e", 5_000), ("a", 1_000), ("d", 4_000), ("b", 2_000)] {
            let r = record(key, "IT-1", confirmed_s, IncidentState::Open, None);
            let key = r.key.clone().unwrap();
            store.put(&key, Bytes::from(serde_json::to_vec(&r).unwrap()), None).await.unwrap();
        }
        let settings = crate::pipeline::config::ReconcileSettings {
            interval: Duration::from_secs(600),
            // Two reads in an interval.
            reads_per_second: 2.0 / 600.0,
            include_closed_for: Duration::ZERO,
            ..Default::default()
        };
        let names: Vec<_> =
            due_keys(&store, &settings, now).await.unwrap().into_iter().map(|d| d.key.to_string()).collect();
        assert_eq!(names, ["a", "b"]);
        let defaults = crate::pipeline::config::ReconcileSettings::default();
        assert_eq!(pass_limit(&defaults), 1_200, "2 reads/s over 10 minutes");
        let eager = crate::pipeline::config::ReconcileSettings { reads_per_second: 1e9, ..defaults.clone() };
        assert_eq!(pass_limit(&eager), MAX_DUE);
        let constant = crate::pipeline::config::ReconcileSettings { interval: Duration::ZERO, ..defaults };
        assert_eq!(pass_limit(&constant), 120, "a minute's reads when every key is always due");
    }
}
