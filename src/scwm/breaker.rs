//! The circuit breaker in front of SCWM: after enough consecutive availability failures it stops
//! sending for a while, then lets exactly one probe through to find out whether SCWM is back.
//!
//! It owns only the state machine (Closed → Open → HalfOpen → Closed/Open) and its clock. It does
//! not decide what counts as a failure (the caller reports that, see
//! [`super::error::ScwmError::is_availability_failure`]) and performs no I/O. Time comes from
//! `tokio::time::Instant`, so tests drive it with `tokio::time::pause()`.

use std::{
    sync::{Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use tokio::time::Instant;

/// When the breaker trips and for how long it stays open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive availability failures that open the circuit. 0 is treated as 1.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls before letting one probe through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self { failure_threshold: 5, open_for: Duration::from_secs(10) }
    }
}

/// What the breaker currently does with a new call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through.
    Closed,
    /// Calls fail fast without a request.
    Open,
    /// The open period is over: the next call is the probe, others fail fast meanwhile.
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

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { consecutive_failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_in_flight: bool },
}

/// A circuit breaker shared by every call of one client.
#[derive(Debug)]
pub struct CircuitBreaker {
    settings: BreakerSettings,
    // Held only for a few instructions, never across an await.
    state: Mutex<State>,
}

/// Leave to make one attempt. Report its outcome with [`BreakerPermit::record`]; dropping the
/// permit unreported (the caller's future was cancelled) frees the probe slot so the next call
/// can probe instead of the circuit staying half-open forever.
#[derive(Debug)]
#[must_use = "report the attempt's outcome with `record`"]
pub struct BreakerPermit<'a> {
    breaker: &'a CircuitBreaker,
    probe: bool,
    recorded: bool,
}

impl CircuitBreaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self { settings, state: Mutex::new(State::Closed { consecutive_failures: 0 }) }
    }

    pub fn settings(&self) -> &BreakerSettings {
        &self.settings
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding this lock cannot leave the plain-data state
        // half-written, so the poisoned value is still good.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The state a new call would meet now. An open circuit whose time is up reports
    /// `HalfOpen`: the next call will be the probe.
    pub fn state(&self) -> CircuitState {
        match *self.lock() {
            State::Closed { .. } => CircuitState::Closed,
            State::Open { until } if Instant::now() < until => CircuitState::Open,
            State::Open { .. } | State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a call would be let through now, without taking the probe slot. `Err` carries
    /// how long until it is worth asking again. Lets a caller fail fast before queueing for a
    /// connection slot.
    pub fn check(&self) -> Result<(), Duration> {
        let now = Instant::now();
        match *self.lock() {
            State::Closed { .. } | State::HalfOpen { probe_in_flight: false } => Ok(()),
            State::Open { until } if now < until => Err(until - now),
            State::Open { .. } => Ok(()),
            State::HalfOpen { probe_in_flight: true } => Err(self.settings.open_for),
        }
    }

    /// Asks to make one attempt now. `Err` carries how long until it is worth asking again:
    /// the rest of the open period, or (while another caller's probe is out) a whole
    /// `open_for`, because if that probe fails the circuit reopens for that long.
    pub fn admit(&self) -> Result<BreakerPermit<'_>, Duration> {
        let now = Instant::now();
        let mut state = self.lock();
        let probe = match *state {
            State::Closed { .. } => false,
            State::Open { until } if now < until => return Err(until - now),
            State::Open { .. } | State::HalfOpen { probe_in_flight: false } => {
                *state = State::HalfOpen { probe_in_flight: true };
                true
            }
            State::HalfOpen { probe_in_flight: true } => return Err(self.settings.open_for),
        };
        Ok(BreakerPermit { breaker: self, probe, recorded: false })
    }

    fn on_outcome(&self, probe: bool, availability_failure: bool) {
        let now = Instant::now();
        let mut state = self.lock();
        match (*state, probe) {
            (State::Closed { consecutive_failures }, false) => {
                *state = if !availability_failure {
                    State::Closed { consecutive_failures: 0 }
                } else if consecutive_failures.saturating_add(1) >= self.settings.failure_threshold.max(1) {
                    State::Open { until: now + self.settings.open_for }
                } else {
                    State::Closed { consecutive_failures: consecutive_failures + 1 }
                };
            }
            (State::HalfOpen { .. }, true) => {
                *state = if availability_failure {
                    State::Open { until: now + self.settings.open_for }
                } else {
                    State::Closed { consecutive_failures: 0 }
                };
            }
            // An attempt admitted while closed that finishes after the circuit opened says
            // nothing the probe will not say better; ignore it.
            _ => {}
        }
    }

    fn on_abandoned_probe(&self) {
        let mut state = self.lock();
        if let State::HalfOpen { probe_in_flight: true } = *state {
            *state = State::HalfOpen { probe_in_flight: false };
        }
    }
}

impl BreakerPermit<'_> {
    /// Whether this attempt is the half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// Reports the attempt's outcome: `availability_failure` is true when SCWM was unreachable
    /// or answered 5xx; any other answer, error or not, proves it is up.
    pub fn record(mut self, availability_failure: bool) {
        self.recorded = true;
        self.breaker.on_outcome(self.probe, availability_failure);
    }
}

impl Drop for BreakerPermit<'_> {
    fn drop(&mut self) {
        if self.probe && !self.recorded {
            self.breaker.on_abandoned_probe();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPEN_FOR: Duration = Duration::from_secs(10);

    fn breaker(threshold: u32) -> CircuitBreaker {
        CircuitBreaker::new(BreakerSettings { failure_threshold: threshold, open_for: OPEN_FOR })
    }

    fn fail(b: &CircuitBreaker) {
        b.admit().expect("admitted").record(true);
    }

    fn succeed(b: &CircuitBreaker) {
        b.admit().expect("admitted").record(false);
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_of_consecutive_failures() {
        let b = breaker(3);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit().map(|_| ()), Err(OPEN_FOR));
        assert_eq!(b.check(), Err(OPEN_FOR));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let b = breaker(3);
        fail(&b);
        fail(&b);
        succeed(&b);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_circuit_reports_the_time_remaining() {
        let b = breaker(1);
        fail(&b);
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_eq!(b.admit().map(|_| ()), Err(Duration::from_secs(6)));
        assert_eq!(b.check(), Err(Duration::from_secs(6)));
    }

    #[tokio::test(start_paused = true)]
    async fn exactly_one_probe_goes_through_after_the_open_period() {
        let b = breaker(1);
        fail(&b);
        tokio::time::advance(OPEN_FOR).await;
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.check(), Ok(()));
        let probe = b.admit().expect("the probe");
        assert!(probe.is_probe());
        // Concurrent callers fail fast while the probe is out.
        assert_eq!(b.admit().map(|_| ()), Err(OPEN_FOR));
        assert_eq!(b.check(), Err(OPEN_FOR));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        probe.record(false);
        assert_eq!(b.state(), CircuitState::Closed);
        let next = b.admit().expect("closed again");
        assert!(!next.is_probe());
        next.record(false);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_reopens_for_the_full_period() {
        let b = breaker(2);
        fail(&b);
        fail(&b);
        tokio::time::advance(OPEN_FOR + Duration::from_secs(1)).await;
        b.admit().expect("the probe").record(true);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit().map(|_| ()), Err(OPEN_FOR));
        tokio::time::advance(OPEN_FOR).await;
        let probe = b.admit().expect("the next probe");
        assert!(probe.is_probe());
        probe.record(false);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_probe_frees_the_slot_for_the_next_caller() {
        let b = breaker(1);
        fail(&b);
        tokio::time::advance(OPEN_FOR).await;
        drop(b.admit().expect("the probe"));
        assert_eq!(b.state(), CircuitState::HalfOpen);
        let probe = b.admit().expect("a new probe");
        assert!(probe.is_probe());
        probe.record(false);
        assert_eq!(b.state(), CircuitState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn late_outcomes_of_calls_admitted_while_closed_do_not_move_an_open_circuit() {
        let b = breaker(1);
        let slow_ok = b.admit().expect("admitted");
        let slow_fail = b.admit().expect("admitted");
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
        slow_ok.record(false);
        slow_fail.record(true);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit().map(|_| ()), Err(OPEN_FOR));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_threshold_behaves_like_one() {
        let b = breaker(0);
        assert_eq!(b.state(), CircuitState::Closed);
        fail(&b);
        assert_eq!(b.state(), CircuitState::Open);
    }
}
