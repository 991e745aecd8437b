//! The circuit breaker in front of SCWM: it tells an outage from a bad minute. It opens when the
//! share of failed calls over a sliding window passes a threshold (once the window holds enough
//! calls to judge), or at once on a run of calls that got no answer at all; after `open_for` it
//! lets a few probes through, and if they mostly succeed it closes gradually, letting more calls
//! in flight with every success, so a recovering SCWM is not hit by the whole backlog at once.
//!
//! It owns only the state machine (Closed → Open → Trial → Closed/Open) and its clock. It does not
//! decide what counts as a failure (the caller reports a [`Verdict`]) and performs no I/O. Time
//! comes from `tokio::time::Instant`, so tests drive it with `tokio::time::pause()`.
//!
//! # Why these defaults
//! - `window = 30s`, `minimum_calls = 20`, `failure_rate = 0.5`: a tenant that fails 30 % of its
//!   calls for a minute is having a bad minute; retries get through it, and refusing everything
//!   would only make it worse for the alerts. Half of at least 20 calls failing is an outage.
//! - `consecutive_failures = 5`: five calls in a row without any answer (connection refused,
//!   timed out) is a dead SCWM or network whatever the window says; waiting for twenty would
//!   spend the callers' timeouts for nothing.
//! - `open_for = 5s`: long enough that callers stop hammering, short enough that a recovered SCWM
//!   sees work within seconds.
//! - `probes = 3`: one probe decides on a coin flip when SCWM is flaky; three judge by majority.
//! - `recovery_calls = 20`: the trial admits `probes` calls in flight plus one per success
//!   (doubling per round trip, like TCP slow start) and closes after that many successes.

use std::{
    collections::VecDeque,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// When the breaker trips, for how long it stays open and how it closes again.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerSettings {
    /// The span of recent calls whose failure rate decides.
    pub window: Duration,
    /// Calls the window must hold before its failure rate can open the circuit.
    pub minimum_calls: u32,
    /// Share of failed calls in the window, in `(0, 1]`, that opens the circuit.
    pub failure_rate: f64,
    /// Calls in a row that got no answer at all (connect, transport, timeout) that open the
    /// circuit whatever the window says. 0 is treated as 1.
    pub consecutive_failures: u32,
    /// How long an open circuit refuses calls before the trial begins.
    pub open_for: Duration,
    /// Calls let through at once when the trial begins; their majority decides. 0 is treated as 1.
    pub probes: u32,
    /// Successful calls in the trial after which the circuit is closed again.
    pub recovery_calls: u32,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            minimum_calls: 20,
            failure_rate: 0.5,
            consecutive_failures: 5,
            open_for: Duration::from_secs(5),
            probes: 3,
            recovery_calls: 20,
        }
    }
}

/// What one call's outcome says about SCWM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// SCWM answered something other than a 5xx: it is up, whatever it thought of the request.
    Up,
    /// SCWM (or what stands in front of it) answered 5xx.
    Failed,
    /// No answer at all: the connection failed or timed out.
    Unreachable,
}

/// What the breaker currently does with a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast without a request.
    Open,
    /// The open period is over: a limited number of calls goes through, growing with successes.
    HalfOpen,
}

impl CircuitState {
    /// The value of the `incident_bridge_circuit_state` gauge: 0 closed, 1 half-open, 2 open.
    pub fn level(self) -> u8 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::HalfOpen => 1,
            CircuitState::Open => 2,
        }
    }
}

/// Why a call was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The circuit is open for this much longer: fail fast and say when to come back.
    Open { remaining: Duration },
    /// The trial has as many calls in flight as it allows now: wait for one of them to end
    /// ([`CircuitBreaker::changed`]) and ask again.
    Full,
}

/// Buckets the window is cut into: outcomes age out a tenth of a window at a time.
const BUCKETS: u32 = 10;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    start: Instant,
    calls: u32,
    failures: u32,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed,
    Open { until: Instant },
    Trial(Trial),
}

#[derive(Debug, Clone, Copy, Default)]
struct Trial {
    in_flight: u32,
    ok: u32,
    failed: u32,
}

#[derive(Debug)]
struct Inner {
    state: State,
    /// Outcomes of calls admitted while closed, newest bucket last.
    window: VecDeque<Bucket>,
    /// Calls in a row without an answer, while closed.
    unreachable_run: u32,
    /// Bumped on every change of state: an outcome of a call admitted under an earlier one says
    /// nothing about the current state.
    epoch: u64,
}

/// A circuit breaker shared by every call of one client.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    // Held only for a few instructions, never across an await.
    inner: Mutex<Inner>,
    changed: Notify,
}

/// Leave to make one attempt. Report its outcome with [`BreakerPermit::record`]; dropping the
/// permit unreported (the caller's future was cancelled) frees its trial slot.
#[derive(Debug)]
#[must_use = "report the attempt's outcome with `record`"]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    epoch: u64,
    trial: bool,
    recorded: bool,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            inner: Mutex::new(Inner {
                state: State::Closed,
                window: VecDeque::new(),
                unreachable_run: 0,
                epoch: 0,
            }),
            changed: Notify::new(),
        }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding this lock cannot leave the plain-data state
        // half-written, so the poisoned value is still good.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn probes(&self) -> u32 {
        self.settings.probes.max(1)
    }

    /// The state a new call would meet now. An open circuit whose time is up reports
    /// `HalfOpen`: the next call starts the trial.
    pub fn state(&self) -> CircuitState {
        match self.lock().state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if Instant::now() < until => CircuitState::Open,
            State::Open { .. } | State::Trial(_) => CircuitState::HalfOpen,
        }
    }

    /// Whether the circuit refuses calls now, and for how much longer. A trial that is full is
    /// not refusing: its calls end soon. Lets a caller fail fast before queueing for a slot.
    pub fn check(&self) -> Result<(), Duration> {
        match self.lock().state {
            State::Open { until } => match until.checked_duration_since(Instant::now()) {
                Some(remaining) if !remaining.is_zero() => Err(remaining),
                _ => Ok(()),
            },
            State::Closed | State::Trial(_) => Ok(()),
        }
    }

    /// Waits until the breaker's state or its trial's room changed; with [`CircuitBreaker::admit`]
    /// refusing [`Refusal::Full`], the caller waits on this and asks again.
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Asks to make one attempt now.
    pub fn admit(&self) -> Result<BreakerPermit<'_>, Refusal> {
        let now = Instant::now();
        let mut inner = self.lock();
        let trial = match inner.state {
            State::Closed => false,
            State::Open { until } if now < until => return Err(Refusal::Open { remaining: until - now }),
            State::Open { .. } => {
                inner.state = State::Trial(Trial { in_flight: 1, ..Trial::default() });
                inner.epoch += 1;
                true
            }
            State::Trial(ref mut t) => {
                // Probes at first, one more for every success since: the room doubles with each
                // round trip that goes well.
                if t.in_flight >= self.probes() + t.ok {
                    return Err(Refusal::Full);
                }
                t.in_flight += 1;
                true
            }
        };
        Ok(BreakerPermit { breaker: self, epoch: inner.epoch, trial, recorded: false })
    }

    fn on_outcome(&self, epoch: u64, trial: bool, verdict: Verdict) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.epoch != epoch {
            // Admitted under an earlier state (a slow call that started before the circuit
            // opened): the trial's own calls will say it better.
            return;
        }
        let failed = verdict != Verdict::Up;
        match (inner.state, trial) {
            (State::Closed, false) => {
                inner.unreachable_run =
                    if verdict == Verdict::Unreachable { inner.unreachable_run + 1 } else { 0 };
                self.tally(&mut inner, now, failed);
                if inner.unreachable_run >= self.settings.consecutive_failures.max(1)
                    || self.window_says_open(&inner)
                {
                    self.open(&mut inner, now);
                }
            }
            (State::Trial(mut t), true) => {
                t.in_flight = t.in_flight.saturating_sub(1);
                if failed {
                    t.failed += 1;
                } else {
                    t.ok += 1;
                }
                let judged = t.ok + t.failed;
                let too_many = f64::from(t.failed) > f64::from(judged) * self.settings.failure_rate;
                if verdict == Verdict::Unreachable && t.ok == 0 || judged >= self.probes() && too_many {
                    self.open(&mut inner, now);
                } else if t.ok >= self.settings.recovery_calls.max(1) {
                    inner.state = State::Closed;
                    inner.window.clear();
                    inner.unreachable_run = 0;
                    inner.epoch += 1;
                } else {
                    inner.state = State::Trial(t);
                }
                drop(inner);
                self.changed.notify_waiters();
            }
            _ => {}
        }
    }

    fn open(&self, inner: &mut Inner, now: Instant) {
        inner.state = State::Open { until: now + self.settings.open_for };
        inner.window.clear();
        inner.unreachable_run = 0;
        inner.epoch += 1;
        self.changed.notify_waiters();
    }

    /// Counts one outcome in the window, dropping buckets that have aged out.
    fn tally(&self, inner: &mut Inner, now: Instant, failed: bool) {
        let width = (self.settings.window / BUCKETS).max(Duration::from_millis(1));
        while inner.window.front().is_some_and(|b| now.duration_since(b.start) >= self.settings.window) {
            inner.window.pop_front();
        }
        let fresh = inner.window.back().is_none_or(|b| now.duration_since(b.start) >= width);
        if fresh {
            inner.window.push_back(Bucket { start: now, calls: 0, failures: 0 });
        }
        let bucket = inner.window.back_mut().expect("a bucket was just ensured");
        bucket.calls += 1;
        bucket.failures += u32::from(failed);
    }

    fn window_says_open(&self, inner: &Inner) -> bool {
        let (calls, failures) =
            inner.window.iter().fold((0u32, 0u32), |(c, f), b| (c + b.calls, f + b.failures));
        calls >= self.settings.minimum_calls.max(1)
            && f64::from(failures) >= f64::from(calls) * self.settings.failure_rate
    }

    fn on_abandoned(&self, epoch: u64) {
        let mut inner = self.lock();
        if inner.epoch == epoch
            && let State::Trial(ref mut t) = inner.state
        {
            t.in_flight = t.in_flight.saturating_sub(1);
            drop(inner);
            self.changed.notify_waiters();
        }
    }
}

impl BreakerPermit<'_> {
    /// Whether this attempt belongs to the trial after an open period.
    pub fn is_probe(&self) -> bool {
        self.trial
    }

    /// Reports the attempt's outcome.
    pub fn record(mut self, verdict: Verdict) {
        self.recorded = true;
        self.breaker.on_outcome(self.epoch, self.trial, verdict);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if self.trial && !self.recorded {
            self.breaker.on_abandoned(self.epoch);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(5);

    fn settings() -> BreakerSettings {
        BreakerSettings {
            window: Duration::from_secs(30),
            minimum_calls: 10,
            failure_rate: 0.5,
            consecutive_failures: 5,
            open_for: OPEN_FOR,
            probes: 3,
            recovery_calls: 6,
        }
    }

    fn breaker() -> CircuitBreaker {
        CircuitBreaker::new(settings())
    }

    fn call(b: &CircuitBreaker, v: Verdict) {
        b.admit().expect("admitted").record(v);
    }

    fn open_it(b: &CircuitBreaker) {
        for _ in 0..5 {
            call(b, Verdict::Unreachable);
        }
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_minute_does_not_open_it() {
        let b = breaker();
        // 30 % of calls fail, answered 503: the window's rate stays under half.
        for i in 0..200 {
            call(&b, if i % 10 < 3 { Verdict::Failed } else { Verdict::Up });
            tokio::time::advance(Duration::from_millis(100)).await;
        }
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_few_failures_alone_are_not_enough_to_judge() {
        let b = breaker();
        for _ in 0..9 {
            call(&b, Verdict::Failed);
        }
        assert_eq!(b.state(), CircuitState::Closed, "9 calls are under the minimum of 10");
        call(&b, Verdict::Failed);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.check(), Err(OPEN_FOR));
        assert_eq!(b.admit().map(|_| ()), Err(Refusal::Open { remaining: OPEN_FOR }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_over_the_window_only() {
        let b = breaker();
        for _ in 0..8 {
            call(&b, Verdict::Failed);
        }
        // Those failures age out; what counts now is the last 30 s.
        tokio::time::advance(Duration::from_secs(31)).await;
        for _ in 0..6 {
            call(&b, Verdict::Up);
        }
        for _ in 0..4 {
            call(&b, Verdict::Failed);
        }
        assert_eq!(b.state(), CircuitState::Closed, "4 of 10 in the window");
        call(&b, Verdict::Failed);
        call(&b, Verdict::Failed);
        assert_eq!(b.state(), CircuitState::Open, "6 of 12 in the window");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_of_unanswered_calls_opens_it_at_once() {
        let b = breaker();
        for _ in 0..4 {
            call(&b, Verdict::Unreachable);
        }
        call(&b, Verdict::Up);
        for _ in 0..4 {
            call(&b, Verdict::Unreachable);
        }
        assert_eq!(b.state(), CircuitState::Closed, "an answer breaks the run");
        call(&b, Verdict::Unreachable);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_reports_the_time_remaining() {
        let b = breaker();
        open_it(&b);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.check(), Err(Duration::from_secs(3)));
        assert_eq!(b.admit().map(|_| ()), Err(Refusal::Open { remaining: Duration::from_secs(3) }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_trial_lets_several_probes_through_then_grows_with_successes() {
        let b = breaker();
        open_it(&b);
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.check(), Ok(()));
        let probes: Vec<_> = (0..3).map(|_| b.admit().expect("a probe")).collect();
        assert!(probes.iter().all(BreakerPermit::is_probe));
        assert_eq!(b.admit().map(|_| ()), Err(Refusal::Full));
        assert_eq!(b.check(), Ok(()), "a full trial is not refusing");
        let mut probes = probes.into_iter();
        probes.next().unwrap().record(Verdict::Up);
        // One success: room for probes + 1 = 4 in flight, 2 are out.
        let more: Vec<_> = (0..2).map(|_| b.admit().expect("room after a success")).collect();
        assert_eq!(b.admit().map(|_| ()), Err(Refusal::Full));
        for p in probes.chain(more) {
            p.record(Verdict::Up);
        }
        assert_eq!(b.state(), CircuitState::HalfOpen, "5 successes, 6 close it");
        call(&b, Verdict::Up);
        assert_eq!(b.state(), CircuitState::Closed);
        let next = b.admit().expect("closed");
        assert!(!next.is_probe());
        next.record(Verdict::Up);
    }

    #[tokio::test(start_paused = true)]
    async fn one_failed_probe_of_three_does_not_reopen_it() {
        let b = breaker();
        open_it(&b);
        tokio::time::advance(OPEN_FOR).await;
        call(&b, Verdict::Failed);
        call(&b, Verdict::Up);
        call(&b, Verdict::Up);
        assert_eq!(b.state(), CircuitState::HalfOpen);
    }

    #[tokio::test(start_paused = true)]
    async fn a_majority_of_failed_probes_reopens_it_for_the_full_period() {
        let b = breaker();
        open_it(&b);
        tokio::time::advance(OPEN_FOR + Duration::from_secs(1)).await;
        call(&b, Verdict::Failed);
        call(&b, Verdict::Up);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        call(&b, Verdict::Failed);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.check(), Err(OPEN_FOR));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_first_probe_reopens_it_at_once() {
        let b = breaker();
        open_it(&b);
        tokio::time::advance(OPEN_FOR).await;
        let a = b.admit().expect("probe");
        let c = b.admit().expect("probe");
        a.record(Verdict::Unreachable);
        assert_eq!(b.state(), CircuitState::Open);
        // The other probe's late outcome belongs to the trial that is over.
        c.record(Verdict::Up);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_its_slot() {
        let b = breaker();
        open_it(&b);
        tokio::time::advance(OPEN_FOR).await;
        let held: Vec<_> = (0..3).map(|_| b.admit().expect("probe")).collect();
        assert_eq!(b.admit().map(|_| ()), Err(Refusal::Full));
        drop(held);
        let again: Vec<_> = (0..3).map(|_| b.admit().expect("the slots are free")).collect();
        assert_eq!(again.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_hears_of_room_in_the_trial() {
        let b = std::sync::Arc::new(breaker());
        open_it(&b);
        tokio::time::advance(OPEN_FOR).await;
        let held: Vec<_> = (0..3).map(|_| b.admit().expect("probe")).collect();
        let waiter = {
            let b = std::sync::Arc::clone(&b);
            tokio::spawn(async move {
                loop {
                    let changed = b.changed();
                    tokio::pin!(changed);
                    changed.as_mut().enable();
                    match b.admit() {
                        Ok(p) => break p.is_probe(),
                        Err(Refusal::Full) => changed.await,
                        Err(r) => panic!("{r:?}"),
                    }
                }
            })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        held.into_iter().next().unwrap().record(Verdict::Up);
        assert!(tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").expect("ran"));
    }

    #[tokio::test(start_paused = true)]
    async fn late_outcomes_of_calls_admitted_while_closed_do_not_move_an_open_circuit() {
        let b = breaker();
        let slow_ok = b.admit().expect("admitted");
        let slow_fail = b.admit().expect("admitted");
        open_it(&b);
        slow_ok.record(Verdict::Up);
        slow_fail.record(Verdict::Unreachable);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.check(), Err(OPEN_FOR));
    }
}
