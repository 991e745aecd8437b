//! The governor in front of one SCWM endpoint: it keeps the bridge under the tenant's rate limit
//! (a token bucket), stops the whole endpoint for as long as SCWM asked when it answers 429 or
//! 503 with `Retry-After` (not just the one request that heard it), and decides who goes next
//! when requests wait: the urgent lane (add, close, reopen: what makes an incident exist or end)
//! before the routine one (edit, copy, submit, read), with one routine request let through after
//! every [`URGENT_STREAK`] urgent ones so that neither lane can starve the other.
//!
//! When the tenant's limit is not configured, the governor learns one from SCWM's pauses: each
//! pause halves the rate it saw going out (at most once a second), and every second without one
//! raises the learnt rate by a tenth, until it is far above anything sent and forgotten. So a
//! pause's end does not release everything that waited at once, into the next 429.
//!
//! It owns waiting and the bucket; it performs no I/O and does not decide what an answer means
//! (the client tells it to pause). Time is `tokio::time::Instant`, so tests use paused time.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use crate::{incident::Operation, observe};

/// The tenant's limit for one endpoint. `per_second = 0` means none is known: requests are not
/// metered, and only SCWM's own `Retry-After` pauses them.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second: the sustained request rate.
    pub per_second: f64,
    /// Tokens the bucket holds: how many requests may go at once after a quiet spell.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { per_second: 0.0, burst: 1 }
    }
}

impl RateLimit {
    pub fn is_limited(&self) -> bool {
        self.per_second > 0.0
    }
}

/// Which queue a request waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Opening, closing and reopening incidents.
    Urgent,
    /// Everything else: edits, copies, submits, reads.
    Routine,
}

impl Lane {
    pub fn of(op: Operation) -> Self {
        match op {
            Operation::Add | Operation::Close | Operation::Reopen => Lane::Urgent,
            Operation::Edit | Operation::Copy | Operation::Submit | Operation::Read => Lane::Routine,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Urgent => "urgent",
            Lane::Routine => "routine",
        }
    }

    fn index(self) -> usize {
        match self {
            Lane::Urgent => 0,
            Lane::Routine => 1,
        }
    }
}

/// Urgent requests served in a row, while routine ones wait, before one routine request goes.
pub const URGENT_STREAK: u32 = 4;

/// A learnt rate above this is forgotten: the endpoint is unmetered again.
const FORGET_ABOVE: f64 = 10_000.0;

#[derive(Debug)]
struct State {
    /// Tokens in the bucket, fractional between refills.
    tokens: f64,
    refilled: Instant,
    paused_until: Option<Instant>,
    /// Waiting requests, oldest first, per lane; each is woken through its own `Notify`, and only
    /// the heads of the lines ever are, so a long queue costs nothing per token.
    queues: [VecDeque<(u64, Arc<Notify>)>; 2],
    next_ticket: u64,
    /// Urgent requests served since a routine one last went (while routine ones waited).
    streak: u32,
    /// Without a configured limit: the rate learnt from SCWM's pauses, when one is in force.
    learnt: Option<f64>,
    /// When a pause last lowered the learnt rate: at most once a second.
    lowered_at: Instant,
    /// When the learnt rate was last raised (a tenth per quiet second since).
    learnt_at: Instant,
    /// Requests let through in the current second, and in the one before it.
    sent_this_second: u32,
    sent_last_second: u32,
    second_started: Instant,
    /// Pauses SCWM asked for since start.
    pauses: u64,
}

/// What a governor is doing now, for people (the console).
#[derive(Debug, Clone, PartialEq)]
pub struct GovernorView {
    pub endpoint: String,
    /// The rate in force (configured or learnt), per second; `None`: not metered.
    pub per_second: Option<f64>,
    /// Whether `per_second` was learnt from SCWM's pauses rather than configured.
    pub learnt: bool,
    /// Tokens in the bucket now (refilled to this instant); `None` when not metered.
    pub tokens: Option<f64>,
    pub paused_for: Option<Duration>,
    /// Pauses SCWM asked for since start.
    pub pauses: u64,
    /// Requests waiting for their turn: urgent, routine.
    pub queued: (usize, usize),
}

/// The governor of one endpoint, shared by every operation sent there.
#[derive(Debug)]
pub struct Governor {
    /// The endpoint's URL, for metrics and logs.
    endpoint: String,
    limit: RateLimit,
    state: Mutex<State>,
}

impl Governor {
    pub fn new(endpoint: impl Into<String>, limit: RateLimit) -> Self {
        let burst = f64::from(limit.burst.max(1));
        Self {
            endpoint: endpoint.into(),
            state: Mutex::new(State {
                tokens: burst,
                refilled: Instant::now(),
                paused_until: None,
                queues: [VecDeque::new(), VecDeque::new()],
                next_ticket: 0,
                streak: 0,
                learnt: None,
                lowered_at: Instant::now(),
                learnt_at: Instant::now(),
                sent_this_second: 0,
                sent_last_second: 0,
                second_started: Instant::now(),
                pauses: 0,
            }),
            limit,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data, never left half-written by a panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops every request to this endpoint for `d` from now (SCWM's `Retry-After`); a longer
    /// pause already in force stands.
    pub fn pause(&self, d: Duration) {
        let now = Instant::now();
        let until = now + d;
        let mut s = self.lock();
        s.pauses += 1;
        if !self.limit.is_limited() {
            self.learn_from_pause(&mut s, now);
        }
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
            wake_heads(&s);
            drop(s);
            observe::governor_pause(&self.endpoint);
            tracing::warn!(
                endpoint = %self.endpoint,
                pause_ms = d.as_millis() as u64,
                "SCWM asked the bridge to wait; pausing every request to this endpoint"
            );
        }
    }

    /// Halves the rate the endpoint saw (at most once a second: the calls in flight when SCWM
    /// started refusing all come back refused).
    fn learn_from_pause(&self, s: &mut State, now: Instant) {
        self.count_seconds(s, now);
        if s.learnt.is_some() && now.duration_since(s.lowered_at) < Duration::from_secs(1) {
            return;
        }
        // The rate in force now (raised since it was learnt), or what went out.
        let current = self.bucket(s, now).map(|(r, _)| r);
        let seen = f64::from(s.sent_last_second.max(s.sent_this_second));
        let rate = (current.unwrap_or(seen).min(seen.max(1.0)) / 2.0).max(1.0);
        s.learnt = Some(rate);
        s.lowered_at = now;
        s.learnt_at = now;
        s.tokens = 1.0;
        s.refilled = now;
        tracing::info!(endpoint = %self.endpoint, per_second = rate, "SCWM's limit is not configured; pacing requests at a rate learnt from its pauses");
    }

    fn count_seconds(&self, s: &mut State, now: Instant) {
        let since = now.duration_since(s.second_started);
        if since >= Duration::from_secs(2) {
            (s.sent_last_second, s.sent_this_second) = (0, 0);
            s.second_started = now;
        } else if since >= Duration::from_secs(1) {
            s.sent_last_second = s.sent_this_second;
            s.sent_this_second = 0;
            s.second_started += Duration::from_secs(1);
        }
    }

    /// The bucket in force: the configured limit, else the learnt one (raised by a tenth for
    /// every second since it last changed, and forgotten once far above what is sent).
    fn bucket(&self, s: &mut State, now: Instant) -> Option<(f64, f64)> {
        if self.limit.is_limited() {
            return Some((self.limit.per_second, f64::from(self.limit.burst.max(1))));
        }
        let rate = s.learnt?;
        let seconds = now.duration_since(s.learnt_at).as_secs();
        if seconds > 0 {
            let raised = rate * 1.1f64.powi(i32::try_from(seconds).unwrap_or(i32::MAX));
            s.learnt_at += Duration::from_secs(seconds);
            if raised > FORGET_ABOVE {
                s.learnt = None;
                return None;
            }
            s.learnt = Some(raised);
        }
        let rate = s.learnt?;
        // A small bucket: what was learnt is a rate, not how much may go at once.
        Some((rate, (rate / 10.0).max(1.0)))
    }

    /// The rate learnt from SCWM's pauses, when no limit is configured and one is in force.
    pub fn learnt_rate(&self) -> Option<f64> {
        let mut s = self.lock();
        self.bucket(&mut s, Instant::now()).filter(|_| !self.limit.is_limited()).map(|(r, _)| r)
    }

    /// What the governor is doing now. Reads the bucket as it would be refilled to now, takes
    /// nothing from it.
    pub fn view(&self) -> GovernorView {
        let now = Instant::now();
        let mut s = self.lock();
        let bucket = self.bucket(&mut s, now);
        let tokens = bucket.map(|(per_second, burst)| {
            (s.tokens + now.duration_since(s.refilled).as_secs_f64() * per_second).min(burst)
        });
        GovernorView {
            endpoint: self.endpoint.clone(),
            per_second: bucket.map(|(r, _)| r),
            learnt: !self.limit.is_limited() && bucket.is_some(),
            tokens,
            paused_for: s.paused_until.and_then(|p| p.checked_duration_since(now)).filter(|d| !d.is_zero()),
            pauses: s.pauses,
            queued: (s.queues[0].len(), s.queues[1].len()),
        }
    }

    /// How long the endpoint stays paused, if it is.
    pub fn paused_for(&self) -> Option<Duration> {
        let until = self.lock().paused_until?;
        until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero())
    }

    /// Waits until a request in `lane` may be sent, and takes its token. Cancel-safe: a waiter
    /// dropped while queued leaves the queue.
    pub async fn acquire(&self, lane: Lane) {
        let started = Instant::now();
        let me = Arc::new(Notify::new());
        let ticket = {
            let mut s = self.lock();
            if s.queues.iter().all(VecDeque::is_empty) && self.try_take(&mut s, started) {
                return;
            }
            let t = s.next_ticket;
            s.next_ticket += 1;
            s.queues[lane.index()].push_back((t, Arc::clone(&me)));
            t
        };
        let mut queued = Queued { governor: self, lane, ticket, served: false };
        self.queued_gauge();
        loop {
            let wake_at = {
                let mut s = self.lock();
                let now = Instant::now();
                let head = s.queues[lane.index()].front().map(|(t, _)| *t);
                if next_lane(&s) != Some(lane) || head != Some(ticket) {
                    None
                } else if self.try_take(&mut s, now) {
                    s.queues[lane.index()].pop_front();
                    s.streak = match lane {
                        Lane::Urgent if !s.queues[Lane::Routine.index()].is_empty() => s.streak + 1,
                        _ => 0,
                    };
                    queued.served = true;
                    // The next in line re-reads the bucket.
                    wake_heads(&s);
                    drop(s);
                    self.queued_gauge();
                    observe::governor_wait(&self.endpoint, lane.as_str(), started.elapsed());
                    return;
                } else {
                    Some(self.ready_at(&mut s, now))
                }
            };
            // `notify_one` keeps a permit for a waiter not yet waiting, so no wake-up is lost
            // between the check above and this wait.
            match wake_at {
                None => me.notified().await,
                Some(at) => tokio::select! {
                    () = me.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                },
            }
        }
    }

    /// Takes a token if the endpoint is not paused and the bucket has one.
    fn try_take(&self, s: &mut State, now: Instant) -> bool {
        if s.paused_until.is_some_and(|p| now < p) {
            return false;
        }
        s.paused_until = None;
        self.count_seconds(s, now);
        let Some((per_second, burst)) = self.bucket(s, now) else {
            s.sent_this_second += 1;
            return true;
        };
        s.tokens = (s.tokens + now.duration_since(s.refilled).as_secs_f64() * per_second).min(burst);
        s.refilled = now;
        let took = s.tokens >= 1.0;
        if took {
            s.tokens -= 1.0;
            s.sent_this_second += 1;
        }
        observe::governor_tokens(&self.endpoint, s.tokens);
        took
    }

    /// When the head of the line can go: the end of the pause, else the next token.
    fn ready_at(&self, s: &mut State, now: Instant) -> Instant {
        if let Some(p) = s.paused_until.filter(|p| now < *p) {
            return p;
        }
        let Some((per_second, _)) = self.bucket(s, now) else { return now };
        let missing = (1.0 - s.tokens).max(0.0);
        now + Duration::from_secs_f64(missing / per_second)
    }

    fn queued_gauge(&self) {
        let (urgent, routine) = {
            let s = self.lock();
            (s.queues[0].len(), s.queues[1].len())
        };
        observe::governor_queued(&self.endpoint, Lane::Urgent.as_str(), urgent);
        observe::governor_queued(&self.endpoint, Lane::Routine.as_str(), routine);
    }
}

/// Whose turn it is: urgent first, but a routine request after every [`URGENT_STREAK`] urgent
/// ones while both wait.
fn next_lane(s: &State) -> Option<Lane> {
    let urgent = !s.queues[Lane::Urgent.index()].is_empty();
    let routine = !s.queues[Lane::Routine.index()].is_empty();
    match (urgent, routine) {
        (true, true) if s.streak >= URGENT_STREAK => Some(Lane::Routine),
        (true, _) => Some(Lane::Urgent),
        (false, true) => Some(Lane::Routine),
        (false, false) => None,
    }
}

/// Wakes the head of each line: whichever's turn it is goes, the other goes back to sleep.
fn wake_heads(s: &State) {
    for queue in &s.queues {
        if let Some((_, notify)) = queue.front() {
            notify.notify_one();
        }
    }
}

/// A place in a lane; leaving it unserved (the caller gave up) hands the turn on.
struct Queued<'a> {
    governor: &'a Governor,
    lane: Lane,
    ticket: u64,
    served: bool,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self.served {
            return;
        }
        {
            let mut s = self.governor.lock();
            let queue = &mut s.queues[self.lane.index()];
            if let Some(at) = queue.iter().position(|(t, _)| *t == self.ticket) {
                queue.remove(at);
            }
            wake_heads(&s);
        }
        self.governor.queued_gauge();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex as StdMutex};

    use super::*;

    fn limited(per_second: f64, burst: u32) -> Arc<Governor> {
        Arc::new(Governor::new("http://scwm.test/api", RateLimit { per_second, burst }))
    }

    /// Starts `n` waiters in `lane`, each recording (its label, when it got through).
    fn spawn_waiters(
        g: &Arc<Governor>,
        lane: Lane,
        label: &'static str,
        n: usize,
        log: &Arc<StdMutex<Vec<(&'static str, Duration)>>>,
        start: Instant,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        (0..n)
            .map(|_| {
                let (g, log) = (Arc::clone(g), Arc::clone(log));
                tokio::spawn(async move {
                    g.acquire(lane).await;
                    log.lock().unwrap().push((label, start.elapsed()));
                })
            })
            .collect()
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_the_rate() {
        let g = limited(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            g.acquire(Lane::Urgent).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst goes at once");
        for _ in 0..10 {
            g.acquire(Lane::Urgent).await;
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(999) && took <= Duration::from_millis(1_010),
            "10 more at 10/s: {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_shows_the_bucket_refilled_to_now_the_pauses_and_the_lines() {
        let g = limited(10.0, 5);
        for _ in 0..5 {
            g.acquire(Lane::Urgent).await;
        }
        tokio::time::advance(Duration::from_millis(200)).await;
        let v = g.view();
        assert_eq!(v.per_second, Some(10.0));
        assert!(!v.learnt);
        let tokens = v.tokens.unwrap();
        assert!((tokens - 2.0).abs() < 0.01, "two tokens after 200 ms at 10/s: {tokens}");
        // Looking takes nothing.
        assert!((g.view().tokens.unwrap() - tokens).abs() < 0.01);
        g.pause(Duration::from_secs(2));
        let log = Arc::new(StdMutex::new(Vec::new()));
        let waiters = spawn_waiters(&g, Lane::Routine, "edit", 2, &log, Instant::now());
        settle().await;
        let v = g.view();
        assert_eq!((v.pauses, v.queued, v.paused_for), (1, (0, 2), Some(Duration::from_secs(2))));
        for w in waiters {
            w.await.unwrap();
        }
        let unmetered = Governor::new("http://scwm.test", RateLimit::default()).view();
        assert_eq!((unmetered.per_second, unmetered.tokens, unmetered.learnt), (None, None, false));
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_limit_nothing_waits() {
        let g = Arc::new(Governor::new("http://scwm.test", RateLimit::default()));
        let start = Instant::now();
        for _ in 0..1_000 {
            g.acquire(Lane::Routine).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_every_request_for_its_length() {
        // A generous configured limit: nothing is learnt, only the pause holds requests.
        let g = Arc::new(Governor::new("http://scwm.test", RateLimit { per_second: 1_000.0, burst: 100 }));
        g.pause(Duration::from_secs(3));
        assert_eq!(g.paused_for(), Some(Duration::from_secs(3)));
        // A shorter pause asked for later does not cut the longer one.
        g.pause(Duration::from_secs(1));
        let start = Instant::now();
        let log = Arc::new(StdMutex::new(Vec::new()));
        let mut tasks = spawn_waiters(&g, Lane::Urgent, "add", 3, &log, start);
        tasks.extend(spawn_waiters(&g, Lane::Routine, "edit", 3, &log, start));
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap();
        assert_eq!(log.len(), 6);
        assert!(log.iter().all(|(_, at)| *at == Duration::from_secs(3)), "{log:?}");
        assert_eq!(g.paused_for(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn urgent_requests_go_first_and_routine_ones_are_not_starved() {
        let g = limited(10.0, 1);
        // Empty the bucket so everything below waits its turn.
        g.acquire(Lane::Urgent).await;
        let start = Instant::now();
        let log = Arc::new(StdMutex::new(Vec::new()));
        let mut tasks = spawn_waiters(&g, Lane::Routine, "edit", 4, &log, start);
        settle().await;
        tasks.extend(spawn_waiters(&g, Lane::Urgent, "add", 12, &log, start));
        settle().await;
        for t in tasks {
            t.await.unwrap();
        }
        let order: String =
            log.lock().unwrap().iter().map(|(l, _)| if *l == "add" { 'A' } else { 'e' }).collect();
        // The edits were queued first, yet adds go first, with an edit after every four.
        assert_eq!(order, "AAAAeAAAAeAAAAee");
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_hands_the_turn_on() {
        let g = limited(1.0, 1);
        g.acquire(Lane::Urgent).await;
        let start = Instant::now();
        let first = {
            let g = Arc::clone(&g);
            tokio::spawn(async move { g.acquire(Lane::Urgent).await })
        };
        settle().await;
        let log = Arc::new(StdMutex::new(Vec::new()));
        let second = spawn_waiters(&g, Lane::Urgent, "next", 1, &log, start);
        settle().await;
        first.abort();
        for t in second {
            t.await.unwrap();
        }
        assert_eq!(log.lock().unwrap()[0].1, Duration::from_secs(1), "the next in line takes the token");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_configured_limit_a_pause_teaches_it_a_rate_that_rises_again() {
        let g = Arc::new(Governor::new("http://scwm.test", RateLimit::default()));
        for _ in 0..40 {
            g.acquire(Lane::Urgent).await;
        }
        assert_eq!(g.learnt_rate(), None, "unmetered until SCWM pushes back");
        // SCWM refuses: 40 went out this second, so 20/s from now; the 429s of the calls that
        // were in flight at the time do not halve it again.
        g.pause(Duration::from_secs(1));
        g.pause(Duration::from_secs(1));
        assert_eq!(g.learnt_rate(), Some(20.0));
        let start = Instant::now();
        for _ in 0..21 {
            g.acquire(Lane::Urgent).await;
        }
        // The pause, then 21 requests at about 20/s (a bucket of 2, the rate a tenth higher
        // after its first second): spread over most of a second, not all at once.
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(1_800), "{took:?}");
        // Quiet seconds raise it by a tenth each, until it is forgotten.
        tokio::time::advance(Duration::from_secs(10)).await;
        let raised = g.learnt_rate().expect("still learnt");
        assert!(raised > 50.0 && raised < 60.0, "{raised}");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(g.learnt_rate(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn every_pause_a_second_or_more_after_the_last_lowers_the_learnt_rate_again() {
        let g = Arc::new(Governor::new("http://scwm.test", RateLimit::default()));
        for _ in 0..64 {
            g.acquire(Lane::Urgent).await;
        }
        g.pause(Duration::from_millis(100));
        assert_eq!(g.learnt_rate(), Some(32.0));
        // Sending at the learnt pace for a few seconds, SCWM still refuses now and then: each
        // refusal a second or more after the last halves what goes out now.
        let mut rates = vec![];
        for _ in 0..3 {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(1_500) {
                g.acquire(Lane::Urgent).await;
            }
            g.pause(Duration::from_millis(100));
            rates.push(g.learnt_rate().expect("learnt"));
        }
        assert!(rates.windows(2).all(|w| w[1] < w[0]), "each pause lowers it: {rates:?}");
        assert!(rates[2] < 10.0, "{rates:?}");
    }

    #[test]
    fn lanes_of_the_operations() {
        for op in [Operation::Add, Operation::Close, Operation::Reopen] {
            assert_eq!(Lane::of(op), Lane::Urgent, "{op}");
        }
        for op in [Operation::Edit, Operation::Copy, Operation::Submit, Operation::Read] {
            assert_eq!(Lane::of(op), Lane::Routine, "{op}");
        }
    }
}
