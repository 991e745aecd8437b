//! The simulator's fault plan: how slow it answers, how often and in what way it fails, and the
//! rate limit a tenant's gateway would enforce. This module owns the plan's JSON shape, its
//! validation and the draw that decides the fate of one request; it never touches HTTP, the
//! clock or the incident store (the rate limit's token bucket, which needs the time, lives in
//! `throttle`).

use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// What the simulator does to operation requests before answering them. The default injects
/// nothing.
///
/// Deserializing validates the plan, so a plan that arrives as JSON is known to make sense. A
/// plan built in code is not checked; the simulator clamps what it cannot use instead of
/// failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct Faults {
    /// Delay before every operation answer, injected failures included, so clients can exercise
    /// their timeouts.
    pub latency: Option<Latency>,
    /// Probability in `[0, 1]` that a request fails with `error`.
    pub error_rate: f64,
    pub error: Failure,
    /// The next this many operation requests fail with `fail_next_with`, before `error_rate`
    /// is consulted; it counts down as they arrive. Retry tests use it for "fail twice, then
    /// succeed".
    pub fail_next: u32,
    pub fail_next_with: Failure,
    /// A token bucket over operation requests, as a tenant's gateway enforces it: a request
    /// that finds no token is answered 429 with `Retry-After` (the whole seconds until the next
    /// token, at least 1), as [`Failure::RateLimited`] answers, before `fail_next` and
    /// `error_rate` are consulted (it counts neither down nor draws). `None`: no limit.
    pub rate_limit: Option<RateLimit>,
}

/// The rate a tenant may call at: `per_second` tokens a second, at most `burst` saved up. The
/// bucket starts full whenever a plan with a limit is put in force.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: u32,
}

impl RateLimit {
    fn validate(&self) -> Result<(), InvalidFaults> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return Err(InvalidFaults(format!(
                "rate_limit.per_second must be a positive number, got {}",
                self.per_second
            )));
        }
        if self.burst == 0 {
            return Err(InvalidFaults("rate_limit.burst must be at least 1".into()));
        }
        Ok(())
    }
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            latency: None,
            error_rate: 0.0,
            error: Failure::SERVICE_UNAVAILABLE,
            fail_next: 0,
            fail_next_with: Failure::SERVICE_UNAVAILABLE,
            rate_limit: None,
        }
    }
}

/// How long to wait before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Latency {
    Fixed {
        fixed_ms: u64,
    },
    /// Uniform over `min_ms..=max_ms`.
    Range {
        min_ms: u64,
        max_ms: u64,
    },
}

/// One way an answer can go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Failure {
    /// That HTTP status with an `isErr` envelope.
    Status { status: u16 },
    /// HTTP 200 with an `isErr` envelope whose errCode carries `status`: the contract allows
    /// SCWM to report errors this way.
    #[serde(rename = "status_in_200")]
    StatusIn200 { status: u16 },
    /// 429 with `Retry-After` and a `429_TOO_MANY_REQUESTS` envelope.
    RateLimited { retry_after_secs: u64 },
    /// An HTML page, as a proxy in front of SCWM would send, with that status.
    NotJson { status: u16 },
    /// The response starts and then the connection breaks, so the client sees a body error.
    DropConnection,
}

impl Failure {
    pub const SERVICE_UNAVAILABLE: Failure = Failure::Status { status: 503 };

    /// The `kind` tag, which the request log uses to say which fault was injected.
    pub fn name(&self) -> &'static str {
        match self {
            Failure::Status { .. } => "status",
            Failure::StatusIn200 { .. } => "status_in_200",
            Failure::RateLimited { .. } => "rate_limited",
            Failure::NotJson { .. } => "not_json",
            Failure::DropConnection => "drop_connection",
        }
    }

    fn validate(&self, field: &'static str) -> Result<(), InvalidFaults> {
        let ok = match *self {
            Failure::Status { status } | Failure::StatusIn200 { status } => (400..=599).contains(&status),
            Failure::NotJson { status } => (200..=599).contains(&status),
            Failure::RateLimited { .. } | Failure::DropConnection => true,
        };
        if ok {
            Ok(())
        } else {
            Err(InvalidFaults(format!(
                "{field}: status must be 400..=599 for status and status_in_200, 200..=599 for not_json"
            )))
        }
    }
}

/// Why a fault plan was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid fault plan: {0}")]
pub struct InvalidFaults(pub String);

/// The fate of one request under a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Draw {
    pub latency: Duration,
    pub failure: Option<Failure>,
}

impl Faults {
    /// Checks what deserializing checks, for plans built in code.
    pub fn validate(&self) -> Result<(), InvalidFaults> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(InvalidFaults(format!(
                "error_rate must be within 0.0..=1.0, got {}",
                self.error_rate
            )));
        }
        if let Some(Latency::Range { min_ms, max_ms }) = self.latency
            && min_ms > max_ms
        {
            return Err(InvalidFaults(format!(
                "latency: min_ms ({min_ms}) is greater than max_ms ({max_ms})"
            )));
        }
        if let Some(limit) = &self.rate_limit {
            limit.validate()?;
        }
        self.error.validate("error")?;
        self.fail_next_with.validate("fail_next_with")
    }

    /// Decides latency and failure for one operation request. `fail_next` counts down here,
    /// which is why this takes `&mut self`.
    pub(crate) fn draw(&mut self, rng: &mut impl Rng) -> Draw {
        let latency = self.latency.map_or(Duration::ZERO, |l| l.sample(rng));
        let failure = if self.fail_next > 0 {
            self.fail_next -= 1;
            Some(self.fail_next_with)
        } else if rng.random::<f64>() < self.error_rate {
            // `random` is in [0, 1), so 0.0 never fails and 1.0 always does; NaN never fails.
            Some(self.error)
        } else {
            None
        };
        Draw { latency, failure }
    }

    /// The fate of a request the rate limit refused: the plan's latency, then 429 with
    /// `retry_after_secs`; `fail_next` is not counted down and `error_rate` not drawn.
    pub(crate) fn throttled(&self, retry_after_secs: u64, rng: &mut impl Rng) -> Draw {
        let latency = self.latency.map_or(Duration::ZERO, |l| l.sample(rng));
        Draw { latency, failure: Some(Failure::RateLimited { retry_after_secs }) }
    }
}

impl Latency {
    fn sample(self, rng: &mut impl Rng) -> Duration {
        let ms = match self {
            Latency::Fixed { fixed_ms } => fixed_ms,
            Latency::Range { min_ms, max_ms } => {
                // An unchecked plan may have the bounds swapped; a range must not panic.
                rng.random_range(min_ms.min(max_ms)..=max_ms.max(min_ms))
            }
        };
        Duration::from_millis(ms)
    }
}

/// The JSON shape, before validation. Only reached from a JSON object, so that an array is not
/// taken for a plan by position.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FaultsWire {
    latency: Option<Latency>,
    error_rate: f64,
    error: Failure,
    fail_next: u32,
    fail_next_with: Failure,
    rate_limit: Option<RateLimit>,
}

impl Default for FaultsWire {
    fn default() -> Self {
        let Faults { latency, error_rate, error, fail_next, fail_next_with, rate_limit } = Faults::default();
        Self { latency, error_rate, error, fail_next, fail_next_with, rate_limit }
    }
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for Faults {
    type Error = InvalidFaults;

    fn try_from(object: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        let w: FaultsWire = serde_json::from_value(serde_json::Value::Object(object))
            .map_err(|e| InvalidFaults(e.to_string()))?;
        let faults = Faults {
            latency: w.latency,
            error_rate: w.error_rate,
            error: w.error,
            fail_next: w.fail_next,
            fail_next_with: w.fail_next_with,
            rate_limit: w.rate_limit,
        };
        faults.validate()?;
        Ok(faults)
    }
}

#[cfg(test)]
mod tests {
    use rand::{SeedableRng, rngs::StdRng};
    use serde_json::json;

    use super::*;

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    fn parse(v: serde_json::Value) -> Result<Faults, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn the_default_plan_injects_nothing() {
        let mut faults = Faults::default();
        for _ in 0..1000 {
            assert_eq!(faults.draw(&mut rng()), Draw { latency: Duration::ZERO, failure: None });
        }
    }

    #[test]
    fn an_empty_object_is_the_default_plan() {
        assert_eq!(parse(json!({})).unwrap(), Faults::default());
    }

    #[test]
    fn both_failures_default_to_503() {
        let faults = Faults::default();
        assert_eq!(faults.error, Failure::Status { status: 503 });
        assert_eq!(faults.fail_next_with, Failure::Status { status: 503 });
    }

    #[test]
    fn the_full_plan_round_trips_through_json() {
        let text = json!({
            "latency": {"min_ms": 10, "max_ms": 5000},
            "error_rate": 0.25,
            "error": {"kind": "rate_limited", "retry_after_secs": 1},
            "fail_next": 2,
            "fail_next_with": {"kind": "drop_connection"},
            "rate_limit": {"per_second": 50.0, "burst": 50}
        });
        let faults = parse(text.clone()).unwrap();
        assert_eq!(
            faults,
            Faults {
                latency: Some(Latency::Range { min_ms: 10, max_ms: 5000 }),
                error_rate: 0.25,
                error: Failure::RateLimited { retry_after_secs: 1 },
                fail_next: 2,
                fail_next_with: Failure::DropConnection,
                rate_limit: Some(RateLimit { per_second: 50.0, burst: 50 }),
            }
        );
        assert_eq!(serde_json::to_value(&faults).unwrap(), text);
    }

    #[test]
    fn every_failure_kind_parses_from_its_documented_form() {
        let cases = [
            (json!({"kind":"status","status":503}), Failure::Status { status: 503 }),
            (json!({"kind":"status_in_200","status":503}), Failure::StatusIn200 { status: 503 }),
            (
                json!({"kind":"rate_limited","retry_after_secs":1}),
                Failure::RateLimited { retry_after_secs: 1 },
            ),
            (json!({"kind":"not_json","status":502}), Failure::NotJson { status: 502 }),
            (json!({"kind":"drop_connection"}), Failure::DropConnection),
        ];
        for (text, failure) in cases {
            let parsed: Failure = serde_json::from_value(text.clone()).unwrap();
            assert_eq!(parsed, failure);
            assert_eq!(parsed.name(), text["kind"]);
        }
    }

    #[test]
    fn fixed_latency_parses_and_is_applied_exactly() {
        let mut faults = parse(json!({"latency": {"fixed_ms": 100}})).unwrap();
        assert_eq!(faults.latency, Some(Latency::Fixed { fixed_ms: 100 }));
        assert_eq!(faults.draw(&mut rng()).latency, Duration::from_millis(100));
    }

    #[test]
    fn ranged_latency_stays_within_its_bounds() {
        let mut faults = parse(json!({"latency": {"min_ms": 10, "max_ms": 20}})).unwrap();
        let mut rng = rng();
        for _ in 0..1000 {
            let d = faults.draw(&mut rng).latency;
            assert!((Duration::from_millis(10)..=Duration::from_millis(20)).contains(&d));
        }
    }

    #[test]
    fn fail_next_fails_that_many_requests_then_succeeds() {
        let mut faults =
            Faults { fail_next: 2, fail_next_with: Failure::NotJson { status: 502 }, ..Faults::default() };
        let mut rng = rng();
        assert_eq!(faults.draw(&mut rng).failure, Some(Failure::NotJson { status: 502 }));
        assert_eq!(faults.fail_next, 1);
        assert_eq!(faults.draw(&mut rng).failure, Some(Failure::NotJson { status: 502 }));
        assert_eq!(faults.draw(&mut rng).failure, None);
        assert_eq!(faults.fail_next, 0);
    }

    #[test]
    fn fail_next_takes_precedence_over_error_rate() {
        let mut faults =
            Faults { error_rate: 1.0, error: Failure::DropConnection, fail_next: 1, ..Faults::default() };
        let mut rng = rng();
        assert_eq!(faults.draw(&mut rng).failure, Some(Failure::SERVICE_UNAVAILABLE));
        assert_eq!(faults.draw(&mut rng).failure, Some(Failure::DropConnection));
    }

    #[test]
    fn error_rate_one_always_fails_and_zero_never_does() {
        let mut always = Faults { error_rate: 1.0, ..Faults::default() };
        let mut never = Faults::default();
        let mut rng = rng();
        for _ in 0..1000 {
            assert_eq!(always.draw(&mut rng).failure, Some(Failure::SERVICE_UNAVAILABLE));
            assert_eq!(never.draw(&mut rng).failure, None);
        }
    }

    #[test]
    fn error_rate_fails_about_that_share_of_requests() {
        let mut faults = Faults { error_rate: 0.3, ..Faults::default() };
        let mut rng = rng();
        let failed = (0..10_000).filter(|_| faults.draw(&mut rng).failure.is_some()).count();
        assert!((2_500..3_500).contains(&failed), "{failed} of 10000 failed");
    }

    #[test]
    fn an_unchecked_plan_with_swapped_bounds_or_nan_rate_does_not_panic() {
        let mut faults = Faults {
            latency: Some(Latency::Range { min_ms: 20, max_ms: 10 }),
            error_rate: f64::NAN,
            ..Faults::default()
        };
        let draw = faults.draw(&mut rng());
        assert!((Duration::from_millis(10)..=Duration::from_millis(20)).contains(&draw.latency));
        assert_eq!(draw.failure, None);
    }

    #[test]
    fn invalid_plans_are_refused_when_parsed() {
        let bad = [
            json!({"error_rate": 1.5}),
            json!({"error_rate": -0.1}),
            json!({"latency": {"min_ms": 20, "max_ms": 10}}),
            json!({"latency": {"fixed_ms": 1, "max_ms": 10}}),
            json!({"latency": {"slow": true}}),
            json!({"error": {"kind": "status", "status": 200}}),
            json!({"error": {"kind": "status_in_200", "status": 99}}),
            json!({"fail_next_with": {"kind": "not_json", "status": 600}}),
            json!({"error": {"kind": "teapot"}}),
            json!({"error": {"kind": "status"}}),
            json!({"fail_next": -1}),
            json!({"surprise": 1}),
            json!([]),
            json!({"rate_limit": {"per_second": 0, "burst": 50}}),
            json!({"rate_limit": {"per_second": -1, "burst": 50}}),
            json!({"rate_limit": {"per_second": 50, "burst": 0}}),
            json!({"rate_limit": {"per_second": 50}}),
            json!({"rate_limit": {"burst": 50}}),
            json!({"rate_limit": {"per_second": 50, "burst": 50, "window": 1}}),
            json!({"rate_limit": {"per_second": "50", "burst": 50}}),
            json!({"rate_limit": {"per_second": 50, "burst": -1}}),
            json!({"rate_limit": 50}),
        ];
        for plan in bad {
            assert!(parse(plan.clone()).is_err(), "accepted {plan}");
        }
    }

    #[test]
    fn a_rate_limit_parses_from_its_documented_form_and_is_off_by_default() {
        assert_eq!(Faults::default().rate_limit, None);
        assert_eq!(parse(json!({"rate_limit": null})).unwrap(), Faults::default());
        let faults = parse(json!({"rate_limit": {"per_second": 50, "burst": 50}})).unwrap();
        assert_eq!(faults.rate_limit, Some(RateLimit { per_second: 50.0, burst: 50 }));
        let faults = parse(json!({"rate_limit": {"per_second": 0.5, "burst": 1}})).unwrap();
        assert_eq!(faults.rate_limit, Some(RateLimit { per_second: 0.5, burst: 1 }));
    }

    #[test]
    fn validate_names_the_rate_limit_field_that_is_wrong() {
        let zero_rate =
            Faults { rate_limit: Some(RateLimit { per_second: 0.0, burst: 5 }), ..Faults::default() };
        assert!(zero_rate.validate().unwrap_err().to_string().contains("rate_limit.per_second"));
        let nan_rate =
            Faults { rate_limit: Some(RateLimit { per_second: f64::NAN, burst: 5 }), ..Faults::default() };
        assert!(nan_rate.validate().unwrap_err().to_string().contains("rate_limit.per_second"));
        let no_burst =
            Faults { rate_limit: Some(RateLimit { per_second: 5.0, burst: 0 }), ..Faults::default() };
        assert!(no_burst.validate().unwrap_err().to_string().contains("rate_limit.burst"));
    }

    #[test]
    fn a_throttled_draw_is_a_429_that_spends_no_fail_next() {
        let mut faults =
            Faults { fail_next: 1, latency: Some(Latency::Fixed { fixed_ms: 5 }), ..Faults::default() };
        let draw = faults.throttled(3, &mut rng());
        assert_eq!(
            draw,
            Draw {
                latency: Duration::from_millis(5),
                failure: Some(Failure::RateLimited { retry_after_secs: 3 })
            }
        );
        assert_eq!(faults.fail_next, 1);
        assert_eq!(faults.draw(&mut rng()).failure, Some(Failure::SERVICE_UNAVAILABLE));
    }

    #[test]
    fn validate_explains_what_is_wrong() {
        let faults = Faults { error_rate: 2.0, ..Faults::default() };
        let err = faults.validate().unwrap_err();
        assert!(err.to_string().contains("error_rate"), "{err}");
        assert!(Faults::default().validate().is_ok());
    }
}
