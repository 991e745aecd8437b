//! Routing: which route an alert (or a whole group) takes, and so what the bridge does with it.
//!
//! Routes are ordered; the first whose matchers all match wins, and [`Routes::default_route`]
//! (open, no overrides) takes what none matches. A route with no matchers matches everything,
//! so a last catch-all route replaces the default (for example to drop everything else).
//!
//! [`Routes::plan`] turns a notification into [`Target`]s: one per alert, or one for the group,
//! each with its correlation key, status and route. It owns no state and performs no I/O;
//! what to do on SCWM is the lifecycle's business, what to send the templates'.

mod config;
pub mod matcher;

use std::sync::Arc;

pub use config::{RawRoute, build_routes};
pub use matcher::{MatchOp, Matcher, MatcherError};

use crate::{
    alert::{self, Alert, AlertStatus, Grouping, Labels, Notification},
    ids::CorrelationKey,
    template::{Subject, TemplateSet},
};

/// What a route does with what it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Open, update and close incidents for it.
    Open,
    /// Do nothing (e.g. `severity="info"`); the caller logs the drop and acknowledges.
    Drop,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Open => "open",
            Action::Drop => "drop",
        }
    }
}

/// One route, built and validated from configuration.
#[derive(Debug)]
pub struct Route {
    /// Where it is configured (`sources.am.routes[2]`, or `default`), for logs.
    pub name: String,
    /// All must match; none means everything matches.
    pub matchers: Vec<Matcher>,
    pub action: Action,
    /// Overrides the owner of every SCWM request for what this route matches.
    pub owner_id: Option<String>,
    /// Submit every incident this route adds to this partner.
    pub partner: Option<String>,
    /// Overrides the source's grouping; also decides which labels this route is matched with.
    pub grouping: Option<Grouping>,
    /// Overrides of the source's templates, field by field.
    pub templates: Option<TemplateSet>,
}

impl Route {
    /// A route that opens incidents for everything, with no overrides.
    pub fn catch_all(name: impl Into<String>) -> Self {
        Route {
            name: name.into(),
            matchers: Vec::new(),
            action: Action::Open,
            owner_id: None,
            partner: None,
            grouping: None,
            templates: None,
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matchers.iter().all(|m| m.matches(labels))
    }

    /// The grouping in force for this route under a source whose grouping is `source_default`.
    pub fn grouping_or(&self, source_default: Grouping) -> Grouping {
        self.grouping.unwrap_or(source_default)
    }
}

/// The ordered routes of one source.
#[derive(Debug)]
pub struct Routes {
    routes: Vec<Arc<Route>>,
    default: Arc<Route>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new(Vec::new())
    }
}

/// What one incident is about: one alert, or the alerts of a group that took the same route.
#[derive(Debug, Clone)]
pub struct Target {
    pub key: CorrelationKey,
    pub grouping: Grouping,
    /// The alert's status; for a group, firing while any of its alerts fires.
    pub status: AlertStatus,
    pub route: Arc<Route>,
    /// Indices into the notification's `alerts`, in order; never empty.
    pub alerts: Vec<usize>,
}

impl Target {
    /// The target's alerts, looked up in the notification it was planned from.
    pub fn alerts<'n>(&self, notification: &'n Notification) -> impl Iterator<Item = &'n Alert> {
        self.alerts.iter().filter_map(|i| notification.alerts.get(*i))
    }

    /// What the templates render this target from.
    pub fn subject(&self) -> Subject<'_> {
        Subject {
            key: self.key.as_str(),
            grouping: self.grouping,
            status: self.status,
            alerts: &self.alerts,
            partner: self.route.partner.as_deref(),
            overrides: self.route.templates.as_ref(),
        }
    }
}

impl Routes {
    pub fn new(routes: Vec<Route>) -> Self {
        Routes {
            routes: routes.into_iter().map(Arc::new).collect(),
            default: Arc::new(Route::catch_all("default")),
        }
    }

    /// The configured routes, in order (without the default).
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.iter()
    }

    /// What takes everything no route matches: open, with the source's settings.
    pub fn default_route(&self) -> &Arc<Route> {
        &self.default
    }

    /// The first route matching `labels`, or the default.
    pub fn first_match(&self, labels: &Labels) -> &Arc<Route> {
        self.routes.iter().find(|r| r.matches(labels)).unwrap_or(&self.default)
    }

    /// Splits a notification into targets.
    ///
    /// Each alert walks the routes in order. A route whose grouping (its own, or the source's
    /// `source_grouping`) is `alert` is matched with the alert's labels; one whose grouping is
    /// `group` with the group's labels (common labels merged with group labels). An alert that
    /// lands on an `alert` route becomes its own target, keyed by fingerprint; alerts that land
    /// on a `group` route together become one target keyed by the groupKey. Group-route matching
    /// does not depend on the alert, so all of a notification's group-bound alerts land on the
    /// same route. Drop routes produce targets too, so the caller can log what it dropped.
    pub fn plan(&self, notification: &Notification, source: &str, source_grouping: Grouping) -> Vec<Target> {
        let group_labels = notification.group_match_labels();
        let mut targets: Vec<Target> = Vec::new();
        let mut group_target: Option<usize> = None;
        for (i, alert) in notification.alerts.iter().enumerate() {
            let route = self
                .routes
                .iter()
                .find(|r| match r.grouping_or(source_grouping) {
                    Grouping::Alert => r.matches(&alert.labels),
                    Grouping::Group => r.matches(&group_labels),
                })
                .unwrap_or(&self.default);
            match route.grouping_or(source_grouping) {
                Grouping::Alert => targets.push(Target {
                    key: alert::alert_key(source, &alert.fingerprint),
                    grouping: Grouping::Alert,
                    status: alert.status,
                    route: Arc::clone(route),
                    alerts: vec![i],
                }),
                Grouping::Group => match group_target.and_then(|t| targets.get_mut(t)) {
                    Some(t) => {
                        t.alerts.push(i);
                        if alert.status == AlertStatus::Firing {
                            t.status = AlertStatus::Firing;
                        }
                    }
                    None => {
                        group_target = Some(targets.len());
                        targets.push(Target {
                            key: alert::group_key(source, &notification.group_key),
                            grouping: Grouping::Group,
                            status: alert.status,
                            route: Arc::clone(route),
                            alerts: vec![i],
                        });
                    }
                },
            }
        }
        targets
    }
}

#[cfg(test)]
mod tests;
