//! Offers keys' held notifications again when their holds end (a flapping alert's quiet period,
//! a new alert's `hold_add`): the pipeline reports each hold it records with its due time; this
//! task waits for it and hands the notification back to the intake, which queues it for its key
//! like any other. A sweep of the store at start and every [`SWEEP_EVERY`] finds holds no live
//! process is waiting for (recorded by a replica that died, or before a restart). A sweep walks
//! every key, so a store so large that one takes long is swept less often: the sweeps keep to
//! [`SWEEP_SHARE`] of the time.
//!
//! It owns only the timing. What a due notification leads to is the planner's to say; an offer
//! that comes too early, twice or after a newer notification is decided as such (nothing).

use std::{
    collections::{BTreeSet, HashMap},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Intake;
use crate::ids::CorrelationKey;

/// How often the store is swept for holds nobody waits for, at most.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// The share of the time sweeps may take (a walk of a million keys takes seconds).
const SWEEP_SHARE: u32 = 20;

/// Runs until `stop` fires.
pub async fn run(
    intake: Intake,
    mut reported: mpsc::UnboundedReceiver<(CorrelationKey, u64)>,
    stop: CancellationToken,
) {
    let mut due = Schedule::default();
    let mut next_sweep = tokio::time::Instant::now();
    loop {
        let wake = due.next().map_or(Duration::from_secs(3600), until);
        tokio::select! {
            () = stop.cancelled() => return,
            got = reported.recv() => match got {
                Some((key, at)) => due.insert(key, at),
                None => return,
            },
            () = tokio::time::sleep_until(next_sweep) => {
                let started = tokio::time::Instant::now();
                match intake.runner().pipeline().holds().await {
                    Ok(holds) => holds.into_iter().for_each(|(key, at)| due.insert(key, at)),
                    Err(e) => tracing::warn!(error = %e, "the store could not be swept for held notifications"),
                }
                next_sweep = tokio::time::Instant::now() + sweep_gap(started.elapsed());
            }
            () = tokio::time::sleep(wake) => {
                for key in due.take_due(now_ms()) {
                    offer(&intake, &key, &mut due).await;
                }
            }
        }
    }
}

async fn offer(intake: &Intake, key: &CorrelationKey, due: &mut Schedule) {
    match intake.runner().pipeline().held(key).await {
        Ok(Some((_, held))) if held.due_ms > now_ms() => due.insert(key.clone(), held.due_ms),
        Ok(Some((source, held))) => intake.recheck(key, &source, &held).await,
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(%key, error = %e, "a held notification could not be read; trying again later");
            due.insert(key.clone(), now_ms() + 5_000);
        }
    }
}

/// Keys by due time, one entry per key (the latest report wins).
#[derive(Debug, Default)]
struct Schedule {
    by_time: BTreeSet<(u64, CorrelationKey)>,
    by_key: HashMap<CorrelationKey, u64>,
}

impl Schedule {
    fn insert(&mut self, key: CorrelationKey, at: u64) {
        if let Some(old) = self.by_key.insert(key.clone(), at) {
            self.by_time.remove(&(old, key.clone()));
        }
        self.by_time.insert((at, key));
    }

    fn next(&self) -> Option<u64> {
        self.by_time.first().map(|(at, _)| *at)
    }

    fn take_due(&mut self, now: u64) -> Vec<CorrelationKey> {
        let mut keys = Vec::new();
        while let Some((at, _)) = self.by_time.first()
            && *at <= now
        {
            let (_, key) = self.by_time.pop_first().expect("just seen");
            self.by_key.remove(&key);
            keys.push(key);
        }
        keys
    }
}

/// The wait after a sweep that took `took`: [`SWEEP_EVERY`], or longer when that would let
/// sweeps take more than a [`SWEEP_SHARE`]th of the time.
fn sweep_gap(took: Duration) -> Duration {
    SWEEP_EVERY.max(took.saturating_mul(SWEEP_SHARE - 1))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn until(at_ms: u64) -> Duration {
    Duration::from_millis(at_ms.saturating_sub(now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> CorrelationKey {
        CorrelationKey::new(k)
    }

    #[test]
    fn the_latest_report_for_a_key_wins_and_due_keys_come_out_in_time_order() {
        let mut s = Schedule::default();
        s.insert(key("a"), 30);
        s.insert(key("b"), 10);
        s.insert(key("a"), 20);
        assert_eq!(s.next(), Some(10));
        assert_eq!(s.take_due(15), vec![key("b")]);
        assert_eq!(s.take_due(25), vec![key("a")]);
        assert_eq!(s.next(), None);
    }

    #[test]
    fn sweeps_come_every_thirty_seconds_unless_they_would_take_more_than_a_twentieth_of_the_time() {
        assert_eq!(sweep_gap(Duration::from_millis(150)), SWEEP_EVERY);
        assert_eq!(sweep_gap(Duration::from_secs(3)), Duration::from_secs(57));
        let (took, gap) = (Duration::from_secs(10), sweep_gap(Duration::from_secs(10)));
        assert_eq!(took * SWEEP_SHARE, took + gap, "a sweep and the wait after it: one twentieth sweeping");
    }
}
