//! The recent decisions, for the people on call: a bounded ring of what the pipeline decided
//! for each event it processed (and each message it refused), with each source's events and
//! each kind of decision per minute over the last hour. In memory and per replica: it is a
//! window onto the work, written after each decision; nothing reads it to decide anything, and
//! the log and the metrics remain the record.

use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;

/// Minutes the per-minute counts cover.
pub const MINUTES: usize = 60;

/// One decision as the console lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Grows by one per entry: a page asks for what came after the newest it shows.
    pub seq: u64,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    pub source: String,
    pub transport: &'static str,
    /// Empty for a message refused before it became an event.
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alertname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// The lifecycle decision (`add`, `close`, `nothing_unchanged`, ...), the operation of a
    /// native command, or `refused` for a message that never became an event.
    pub decision: String,
    /// Why, in the planner's words (or the refusal's).
    pub reason: String,
    /// How it ended: `done`, `duplicate`, `retry`, `reject` (dead-lettered), `refused`.
    pub outcome: &'static str,
    /// What went wrong, for a retry or a dead letter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(rename = "itemId", skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    #[serde(rename = "licensePlate", skip_serializing_if = "Option::is_none")]
    pub license_plate: Option<String>,
    #[serde(rename = "traceId", skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// 1 for the first delivery.
    pub attempt: u32,
}

fn rfc3339<S: serde::Serializer>(at: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_rfc3339_millis(*at))
}

impl Entry {
    /// Whether `text` occurs (case-insensitively, `needle` already lower-case) in what a person
    /// would search by: key, alertname, route, reason, detail, item id, licensePlate, trace id.
    fn mentions(&self, needle: &str) -> bool {
        [
            Some(self.key.as_str()),
            self.alertname.as_deref(),
            self.route.as_deref(),
            Some(self.reason.as_str()),
            self.detail.as_deref(),
            self.item_id.as_deref(),
            self.license_plate.as_deref(),
            self.trace_id.as_deref(),
        ]
        .into_iter()
        .flatten()
        .any(|field| contains_ignoring_case(field, needle))
    }
}

fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    if haystack.is_ascii() && needle.is_ascii() {
        let (h, n) = (haystack.as_bytes(), needle.as_bytes());
        return n.is_empty() || h.windows(n.len()).any(|w| w.eq_ignore_ascii_case(n));
    }
    haystack.to_lowercase().contains(needle)
}

/// Which entries a page shows.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub source: Option<String>,
    pub decision: Option<String>,
    pub outcome: Option<String>,
    pub key: Option<String>,
    /// Anywhere in the searchable fields, any case.
    pub text: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// Counts per minute, the newest minute last.
#[derive(Debug, Clone)]
struct Minutes {
    /// The minute (since the epoch) of `counts[newest]`.
    minute: u64,
    newest: usize,
    counts: [u32; MINUTES],
}

impl Default for Minutes {
    fn default() -> Self {
        Self { minute: 0, newest: 0, counts: [0; MINUTES] }
    }
}

impl Minutes {
    fn add(&mut self, minute: u64) {
        self.roll(minute);
        if minute + (MINUTES as u64) <= self.minute {
            return; // older than the window (a clock stepped back)
        }
        let back = (self.minute - minute.min(self.minute)) as usize;
        let slot = (self.newest + MINUTES - back) % MINUTES;
        self.counts[slot] = self.counts[slot].saturating_add(1);
    }

    /// Moves the window so its newest minute is `minute`, clearing the minutes it passes.
    fn roll(&mut self, minute: u64) {
        if minute <= self.minute {
            return;
        }
        let steps = (minute - self.minute).min(MINUTES as u64) as usize;
        for _ in 0..steps {
            self.newest = (self.newest + 1) % MINUTES;
            self.counts[self.newest] = 0;
        }
        self.minute = minute;
    }

    /// The counts of the hour up to `minute`, oldest first.
    fn hour(&self, minute: u64) -> [u32; MINUTES] {
        let mut rolled = self.clone();
        rolled.roll(minute);
        std::array::from_fn(|i| rolled.counts[(rolled.newest + 1 + i) % MINUTES])
    }
}

#[derive(Debug, Default)]
struct Inner {
    entries: VecDeque<Arc<Entry>>,
    next_seq: u64,
    per_source: BTreeMap<String, Minutes>,
    per_decision: BTreeMap<String, Minutes>,
}

/// The ring of recent decisions. `capacity` 0 keeps no entries but still counts.
#[derive(Debug)]
pub struct Journal {
    capacity: usize,
    inner: Mutex<Inner>,
}

/// The last hour in counts per minute, for a chart.
#[derive(Debug, Clone, Serialize)]
pub struct Hour {
    /// The minute (since the epoch) the last count belongs to.
    pub until_minute: u64,
    /// Per source, oldest minute first.
    pub sources: BTreeMap<String, Vec<u32>>,
    /// Per decision, summed over the hour.
    pub decisions: BTreeMap<String, u64>,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new(1000)
    }
}

impl Journal {
    pub fn new(capacity: usize) -> Self {
        Self { capacity, inner: Mutex::new(Inner::default()) }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data, never left half-written by a panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Keeps `entry` (its `seq` is set here), dropping the oldest past the capacity.
    pub fn record(&self, mut entry: Entry) {
        let minute = minute_of(entry.at);
        let mut inner = self.lock();
        entry.seq = inner.next_seq;
        inner.next_seq += 1;
        inner.per_source.entry(entry.source.clone()).or_default().add(minute);
        inner.per_decision.entry(entry.decision.clone()).or_default().add(minute);
        if self.capacity == 0 {
            return;
        }
        if inner.entries.len() == self.capacity {
            inner.entries.pop_front();
        }
        inner.entries.push_back(Arc::new(entry));
    }

    /// The entries `q` selects, newest first.
    pub fn select(&self, q: &Query) -> Vec<Arc<Entry>> {
        let needle = q.text.as_deref().map(str::trim).filter(|t| !t.is_empty()).map(str::to_lowercase);
        let is =
            |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w.is_empty() || w == have);
        // The filter runs on a copy of the ring's pointers, so a search through every entry
        // never holds up the pipeline recording its next decision.
        let entries: Vec<Arc<Entry>> = self.lock().entries.iter().rev().cloned().collect();
        entries
            .into_iter()
            .filter(|e| {
                is(&q.source, &e.source)
                    && is(&q.decision, &e.decision)
                    && is(&q.outcome, e.outcome)
                    && is(&q.key, &e.key)
                    && needle.as_deref().is_none_or(|n| e.mentions(n))
            })
            .take(q.limit)
            .collect()
    }

    /// Entries kept now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last hour up to `now`, per minute.
    pub fn hour(&self, now: SystemTime) -> Hour {
        let minute = minute_of(now);
        let inner = self.lock();
        Hour {
            until_minute: minute,
            sources: inner.per_source.iter().map(|(s, m)| (s.clone(), m.hour(minute).to_vec())).collect(),
            decisions: inner
                .per_decision
                .iter()
                .map(|(d, m)| (d.clone(), m.hour(minute).iter().map(|c| u64::from(*c)).sum::<u64>()))
                .filter(|(_, n)| *n > 0)
                .collect(),
        }
    }

    /// The sources and decisions seen since start, for a page's filter choices.
    pub fn names(&self) -> (Vec<String>, Vec<String>) {
        let inner = self.lock();
        (inner.per_source.keys().cloned().collect(), inner.per_decision.keys().cloned().collect())
    }
}

fn minute_of(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() / 60
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: &str, key: &str, decision: &str, at: SystemTime) -> Entry {
        Entry {
            seq: 0,
            at,
            source: source.into(),
            transport: "http",
            key: key.into(),
            alertname: Some("DiskFull".into()),
            route: Some("default".into()),
            decision: decision.into(),
            reason: "a new alert".into(),
            outcome: "done",
            detail: None,
            item_id: Some("INC-1".into()),
            license_plate: Some("lp-1".into()),
            trace_id: None,
            attempt: 1,
        }
    }

    fn at_minute(m: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(m * 60 + 7)
    }

    #[test]
    fn the_ring_keeps_the_newest_and_selects_by_every_filter() {
        let j = Journal::new(3);
        let now = at_minute(1000);
        for (i, d) in ["add", "close", "add", "nothing_unchanged"].iter().enumerate() {
            j.record(entry(if i % 2 == 0 { "am" } else { "grafana" }, &format!("k{i}"), d, now));
        }
        let all = j.select(&Query { limit: 10, ..Default::default() });
        assert_eq!(all.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["k3", "k2", "k1"]);
        assert_eq!(all.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 2, 1]);
        let adds = j.select(&Query { decision: Some("add".into()), limit: 10, ..Default::default() });
        assert_eq!(adds.len(), 1);
        let from_am = j.select(&Query { source: Some("am".into()), limit: 10, ..Default::default() });
        assert_eq!(from_am.iter().map(|e| e.key.as_str()).collect::<Vec<_>>(), ["k2"]);
        let text = j.select(&Query { text: Some(" diskFULL ".into()), limit: 1, ..Default::default() });
        assert_eq!(text.len(), 1, "text matches any case, trimmed; the limit holds");
        assert!(
            j.select(&Query { text: Some("nowhere".into()), limit: 10, ..Default::default() }).is_empty()
        );
    }

    #[test]
    fn the_hour_counts_per_minute_and_forgets_what_is_older() {
        let j = Journal::new(0);
        j.record(entry("am", "a", "add", at_minute(100)));
        j.record(entry("am", "a", "close", at_minute(130)));
        j.record(entry("am", "b", "add", at_minute(159)));
        j.record(entry("am", "b", "add", at_minute(159)));
        assert!(j.is_empty(), "capacity 0 keeps no entries");
        let h = j.hour(at_minute(159));
        let am = &h.sources["am"];
        assert_eq!(am.len(), MINUTES);
        assert_eq!((am[59], am[59 - 29], am.iter().sum::<u32>()), (2, 1, 4));
        assert_eq!(h.decisions["add"], 3);
        // An hour later, the first minutes have left the window.
        let later = j.hour(at_minute(190));
        assert_eq!(later.sources["am"].iter().sum::<u32>(), 2);
        assert_eq!(later.decisions.get("close"), None);
        assert_eq!(j.hour(at_minute(400)).sources["am"].iter().sum::<u32>(), 0);
    }

    #[test]
    fn an_entry_older_than_the_window_is_not_counted_in_a_wrong_minute() {
        let j = Journal::new(1);
        j.record(entry("am", "a", "add", at_minute(500)));
        j.record(entry("am", "a", "add", at_minute(100)));
        assert_eq!(j.hour(at_minute(500)).sources["am"].iter().sum::<u32>(), 1);
    }
}
