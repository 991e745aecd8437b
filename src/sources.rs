//! Sources: the named inputs of the bridge (`[sources.<name>]`). A source says how its messages
//! are read (native commands, Alertmanager, Grafana, CloudEvents carrying one of those), how
//! senders authenticate, what limits hold, and for alerts how they become incidents (grouping,
//! reopen window, owner, routes, templates). HTTP serves each at `POST /webhooks/<name>`; NATS
//! subscriptions and consumers name the source that decodes their messages.
//!
//! This module owns the configuration shape and its pure validation; it performs no I/O beyond
//! reading secret files through the reader it is given.

use std::{
    collections::BTreeMap,
    io,
    num::NonZeroU32,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::{
    alert::Grouping,
    decode::cloudevents::InnerKind,
    lenient,
    route::{RawRoute, Routes, build_routes},
    template::{RawTemplates, TemplateSet, build_templates},
    verify::{RawAuth, SourceAuth, build as build_auth, limits::RateLimiter},
};

/// The name of the built-in source for native commands.
pub const NATIVE: &str = "native";

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSource {
    /// `native`, `alertmanager`, `grafana` or `cloudevents`.
    #[schemars(extend("enum" = ["native", "alertmanager", "grafana", "cloudevents"]))]
    pub kind: String,
    /// For `cloudevents`: what the event's data holds (`alertmanager`, `grafana`, `native`).
    #[serde(default)]
    #[schemars(extend("enum" = ["alertmanager", "grafana", "native", null]))]
    pub payload: Option<String>,
    /// `alert` (one incident per alert fingerprint, the default) or `group` (per groupKey).
    #[serde(default)]
    #[schemars(extend("enum" = ["alert", "group", null]))]
    pub grouping: Option<String>,
    #[serde(default = "default_reopen_window", deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub reopen_window: Duration,
    /// The ownerId of this source's incidents; a route may override it; default `scwm.owner_id`.
    #[serde(default)]
    pub owner_id: Option<String>,
    /// Resolutions that mean "a person decided this needs no action" (compared without regard
    /// to case): an incident a person closed with one stays closed while its alert keeps
    /// firing, and the key starts afresh once the alert resolves.
    #[serde(default)]
    pub wont_fix_resolutions: Vec<String>,
    #[serde(default)]
    pub auth: Vec<RawAuth>,
    /// Verify NATS messages of this source too (signature in NATS headers). Off by default:
    /// NATS has its own authentication.
    #[serde(default, deserialize_with = "lenient::value")]
    pub verify_nats: bool,
    #[serde(default)]
    pub templates: RawTemplates,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub limits: RawLimits,
    /// Flap damping: a key whose alert keeps firing and resolving keeps its incident open.
    #[serde(default)]
    pub flap: RawFlap,
    /// A new alert opens an incident only if it still fires this long after it was first seen
    /// (`0s`, the default: at once). An alert that resolves within it opens nothing.
    #[serde(default, deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub hold_add: Duration,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawFlap {
    /// Fire → resolve → fire cycles within `window` after which the next resolve makes the key
    /// flapping; 0 (the default) turns flap damping off.
    #[serde(deserialize_with = "lenient::value")]
    pub cycles: u32,
    /// The span over which refires are counted.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub window: Duration,
    /// How long a flapping alert must keep one status before its end state is applied.
    #[serde(deserialize_with = "lenient::duration")]
    #[schemars(with = "lenient::DurationText")]
    pub quiet: Duration,
}

impl Default for RawFlap {
    fn default() -> Self {
        Self { cycles: 0, window: Duration::from_secs(600), quiet: Duration::from_secs(300) }
    }
}

fn default_reopen_window() -> Duration {
    Duration::from_secs(3600)
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    #[serde(deserialize_with = "lenient::value")]
    pub max_body_bytes: usize,
    #[serde(deserialize_with = "lenient::value")]
    pub max_depth: usize,
    #[serde(deserialize_with = "lenient::value")]
    pub max_alerts: usize,
    #[serde(deserialize_with = "lenient::value")]
    pub max_string_chars: usize,
    /// Requests per second over HTTP; 0 = unlimited.
    #[serde(deserialize_with = "lenient::value")]
    pub rate_per_second: f64,
    #[serde(deserialize_with = "lenient::value")]
    pub rate_burst: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_depth: 32,
            max_alerts: 1000,
            max_string_chars: 8192,
            rate_per_second: 0.0,
            rate_burst: 50,
        }
    }
}

/// How a source's messages are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Native,
    Alertmanager,
    Grafana,
    CloudEvents(InnerKind),
}

impl SourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Native => "native",
            SourceKind::Alertmanager => "alertmanager",
            SourceKind::Grafana => "grafana",
            SourceKind::CloudEvents(_) => "cloudevents",
        }
    }

    /// Whether messages hold alerts (and so go through routes, templates and the lifecycle).
    pub fn carries_alerts(self) -> bool {
        !matches!(self, SourceKind::Native | SourceKind::CloudEvents(InnerKind::Native))
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_depth: usize,
    pub max_alerts: usize,
    /// Every string sent on to SCWM is cut to this many characters, with a visible marker.
    pub max_string_chars: usize,
}

/// How alerts of a source become incidents.
#[derive(Debug)]
pub struct AlertSettings {
    pub grouping: Grouping,
    pub reopen_window: Duration,
    pub owner_id: Option<String>,
    /// Resolutions that keep a key quiet while its alert fires (see [`RawSource`]).
    pub wont_fix_resolutions: Vec<String>,
    pub routes: Routes,
    pub templates: TemplateSet,
    /// Flap damping and hold_add.
    pub damping: crate::plan::Damping,
}

#[derive(Debug)]
pub struct SourceSpec {
    pub name: String,
    pub kind: SourceKind,
    /// `none` for the built-in native source when it is not configured: `/v1/incidents` is then
    /// open, as in the quickstart.
    pub auth: SourceAuth,
    /// Whether NATS messages of this source are verified too.
    pub verify_nats: bool,
    pub limits: Limits,
    pub rate_limit: Option<RateLimiter>,
    pub alerts: Option<AlertSettings>,
}

impl SourceSpec {
    /// How messages of this source that arrive over NATS are authenticated.
    pub fn nats_auth(&self) -> &SourceAuth {
        static NONE: std::sync::LazyLock<SourceAuth> = std::sync::LazyLock::new(SourceAuth::none);
        if self.verify_nats { &self.auth } else { &NONE }
    }

    /// The built-in native source: no authentication, default limits.
    pub fn builtin_native() -> Self {
        let d = RawLimits::default();
        Self {
            name: NATIVE.into(),
            kind: SourceKind::Native,
            auth: SourceAuth::none(),
            verify_nats: false,
            limits: Limits {
                max_body_bytes: d.max_body_bytes,
                max_depth: d.max_depth,
                max_alerts: d.max_alerts,
                max_string_chars: d.max_string_chars,
            },
            rate_limit: None,
            alerts: None,
        }
    }
}

/// Every source by name; `native` is always present.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Shared: every HTTP request clones the state that holds it, several times over.
    by_name: Arc<BTreeMap<String, Arc<SourceSpec>>>,
}

impl Default for Sources {
    fn default() -> Self {
        let mut by_name = BTreeMap::new();
        by_name.insert(NATIVE.to_owned(), Arc::new(SourceSpec::builtin_native()));
        Self { by_name: Arc::new(by_name) }
    }
}

impl Sources {
    pub fn get(&self, name: &str) -> Option<&Arc<SourceSpec>> {
        self.by_name.get(name)
    }

    pub fn native(&self) -> &Arc<SourceSpec> {
        &self.by_name[NATIVE]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<SourceSpec>> {
        self.by_name.values()
    }

    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

/// Validates every `[sources.<name>]`, reporting every problem with its dotted key.
pub fn build(
    raw: BTreeMap<String, RawSource>,
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<Sources, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut by_name = Arc::unwrap_or_clone(Sources::default().by_name);
    for (name, raw) in raw {
        let key = format!("sources.{name}");
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            errors.push((key.clone(), "a source name may hold only letters, digits, `-` and `_`".into()));
        }
        match build_one(&name, raw, &key, read_file) {
            Ok(spec) => {
                by_name.insert(name, Arc::new(spec));
            }
            Err(mut e) => errors.append(&mut e),
        }
    }
    if errors.is_empty() { Ok(Sources { by_name: Arc::new(by_name) }) } else { Err(errors) }
}

fn build_one(
    name: &str,
    raw: RawSource,
    key: &str,
    read_file: &dyn Fn(&Path) -> io::Result<String>,
) -> Result<SourceSpec, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let kind = kind(&raw, key, &mut errors);
    if name == NATIVE && kind.is_some_and(|k| k != SourceKind::Native) {
        errors.push((format!("{key}.kind"), "the source named `native` must be of kind native".into()));
    }
    let auth =
        build_auth(&raw.auth, &format!("{key}.auth"), read_file).map_err(|mut e| errors.append(&mut e)).ok();
    let (limits, rate_limit) = limits(&raw.limits, key, &mut errors);
    let alerts = match kind {
        Some(k) if k.carries_alerts() => alert_settings(&raw, key, &mut errors),
        Some(_) => {
            for (field, set) in [
                ("grouping", raw.grouping.is_some()),
                ("routes", !raw.routes.is_empty()),
                ("templates", raw.templates != RawTemplates::default()),
            ] {
                if set {
                    errors.push((format!("{key}.{field}"), "only alert sources have this".into()));
                }
            }
            None
        }
        None => None,
    };
    match (kind, auth) {
        (Some(kind), Some(auth)) if errors.is_empty() => Ok(SourceSpec {
            name: name.to_owned(),
            kind,
            auth,
            verify_nats: raw.verify_nats,
            limits,
            rate_limit,
            alerts,
        }),
        _ => Err(errors),
    }
}

/// How the source's messages are read: `kind`, and for CloudEvents what their data holds.
fn kind(raw: &RawSource, key: &str, errors: &mut Vec<(String, String)>) -> Option<SourceKind> {
    match (raw.kind.as_str(), raw.payload.as_deref()) {
        ("native", None) => Some(SourceKind::Native),
        ("alertmanager", None) => Some(SourceKind::Alertmanager),
        ("grafana", None) => Some(SourceKind::Grafana),
        ("cloudevents", Some(p)) => match p.parse::<InnerKind>() {
            Ok(inner) => Some(SourceKind::CloudEvents(inner)),
            Err(_) => {
                errors.push((
                    format!("{key}.payload"),
                    format!("`{p}`: expected alertmanager, grafana or native"),
                ));
                None
            }
        },
        ("cloudevents", None) => {
            errors.push((
                format!("{key}.payload"),
                "required for cloudevents: alertmanager, grafana or native".into(),
            ));
            None
        }
        ("native" | "alertmanager" | "grafana", Some(_)) => {
            errors.push((format!("{key}.payload"), "only cloudevents sources take a payload kind".into()));
            None
        }
        (other, _) => {
            errors.push((
                format!("{key}.kind"),
                format!("`{other}`: expected native, alertmanager, grafana or cloudevents"),
            ));
            None
        }
    }
}

/// The source's limits, and its rate limiter when it has a rate.
fn limits(l: &RawLimits, key: &str, errors: &mut Vec<(String, String)>) -> (Limits, Option<RateLimiter>) {
    for (field, zero) in [
        ("max_body_bytes", l.max_body_bytes == 0),
        ("max_depth", l.max_depth == 0),
        ("max_alerts", l.max_alerts == 0),
        ("max_string_chars", l.max_string_chars < 32),
    ] {
        if zero {
            errors.push((format!("{key}.limits.{field}"), "too small".into()));
        }
    }
    let rate_limit = if l.rate_per_second > 0.0 {
        let limiter = NonZeroU32::new(l.rate_burst)
            .and_then(|b| RateLimiter::new(l.rate_per_second, b, Instant::now()));
        if limiter.is_none() {
            errors.push((format!("{key}.limits"), "rate_per_second and rate_burst must be positive".into()));
        }
        limiter
    } else {
        None
    };
    let limits = Limits {
        max_body_bytes: l.max_body_bytes,
        max_depth: l.max_depth,
        max_alerts: l.max_alerts,
        max_string_chars: l.max_string_chars,
    };
    (limits, rate_limit)
}

/// Grouping, reopen window, owner, routes and templates of an alert source.
fn alert_settings(raw: &RawSource, key: &str, errors: &mut Vec<(String, String)>) -> Option<AlertSettings> {
    let grouping = match raw.grouping.as_deref() {
        None => Some(Grouping::Alert),
        Some(g) => Grouping::parse(g).or_else(|| {
            errors.push((format!("{key}.grouping"), format!("`{g}`: expected alert or group")));
            None
        }),
    };
    let routes =
        build_routes(&raw.routes, &format!("{key}.routes")).map_err(|mut e| errors.append(&mut e)).ok();
    let templates = build_templates(&raw.templates, &format!("{key}.templates"))
        .map_err(|mut e| errors.append(&mut e))
        .ok();
    if raw.reopen_window.is_zero() {
        errors.push((format!("{key}.reopen_window"), "must be greater than zero".into()));
    }
    if let Some(i) = raw.wont_fix_resolutions.iter().position(|r| r.trim().is_empty()) {
        errors.push((format!("{key}.wont_fix_resolutions[{i}]"), "must not be empty".into()));
    }
    if raw.flap.cycles > 0 && raw.flap.window.is_zero() {
        errors.push((format!("{key}.flap.window"), "must be greater than zero".into()));
    }
    if raw.flap.cycles > 0 && raw.flap.quiet.is_zero() {
        errors.push((format!("{key}.flap.quiet"), "must be greater than zero".into()));
    }
    let damping = crate::plan::Damping {
        flap_cycles: raw.flap.cycles,
        flap_window: raw.flap.window,
        flap_quiet: raw.flap.quiet,
        hold_add: raw.hold_add,
    };
    Some(AlertSettings {
        damping,
        grouping: grouping?,
        reopen_window: raw.reopen_window,
        owner_id: raw.owner_id.clone(),
        wont_fix_resolutions: raw.wont_fix_resolutions.clone(),
        routes: routes?,
        templates: templates?,
    })
}
