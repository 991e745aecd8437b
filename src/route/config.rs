//! Routes as configured: the serde shape of one `[[sources.<name>.routes]]` entry and the pure
//! step that validates a list of them into [`Routes`], reporting every problem with its dotted key.

use serde::Deserialize;

use super::{Action, Matcher, Route, Routes};
use crate::{
    alert::Grouping,
    template::{RawTemplates, build_templates},
};

/// One route as written in TOML. Strings stay strings here so that validation can report every
/// bad value at once, each with its key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Alertmanager matchers, all of which must match; each entry may hold one matcher or a
    /// comma-separated list. Absent or empty: the route matches everything.
    #[serde(default)]
    pub matchers: Vec<String>,
    /// `open` (the default) or `drop`.
    #[serde(default)]
    #[schemars(extend("enum" = ["open", "drop", null]))]
    pub action: Option<String>,
    #[serde(default)]
    pub owner_id: Option<String>,
    #[serde(default)]
    pub partner: Option<String>,
    /// `alert` or `group`; absent: the source's grouping.
    #[serde(default)]
    #[schemars(extend("enum" = ["alert", "group", null]))]
    pub grouping: Option<String>,
    #[serde(default)]
    pub templates: Option<RawTemplates>,
}

/// Validates `raw` into [`Routes`]. `key_prefix` is the dotted key of the list itself (e.g.
/// `sources.alertmanager.routes`); problems are reported as `<key_prefix>[i].<field>`.
pub fn build_routes(raw: &[RawRoute], key_prefix: &str) -> Result<Routes, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let mut routes = Vec::with_capacity(raw.len());
    for (i, r) in raw.iter().enumerate() {
        let key = format!("{key_prefix}[{i}]");
        if let Some(route) = build_route(r, &key, &mut errors) {
            routes.push(route);
        }
    }
    if errors.is_empty() { Ok(Routes::new(routes)) } else { Err(errors) }
}

fn build_route(r: &RawRoute, key: &str, errors: &mut Vec<(String, String)>) -> Option<Route> {
    let before = errors.len();
    let mut matchers = Vec::new();
    for (j, m) in r.matchers.iter().enumerate() {
        match Matcher::parse_list(m) {
            Ok(list) if list.is_empty() => errors.push((
                format!("{key}.matchers[{j}]"),
                "is empty; leave `matchers` out (or empty) to match everything".into(),
            )),
            Ok(list) => matchers.extend(list),
            Err(e) => errors.push((format!("{key}.matchers[{j}]"), format!("`{m}`: {e}"))),
        }
    }
    let action = match r.action.as_deref() {
        None | Some("open") => Action::Open,
        Some("drop") => Action::Drop,
        Some(other) => {
            errors.push((
                format!("{key}.action"),
                format!("`{other}` is not an action (expected open or drop)"),
            ));
            Action::Open
        }
    };
    let grouping = match r.grouping.as_deref() {
        None => None,
        Some(g) => match Grouping::parse(g) {
            Some(g) => Some(g),
            None => {
                errors.push((
                    format!("{key}.grouping"),
                    format!("`{g}` is not a grouping (expected alert or group)"),
                ));
                None
            }
        },
    };
    let mut non_empty = |field: &str, value: &Option<String>| -> Option<String> {
        match value {
            Some(v) if v.trim().is_empty() => {
                errors.push((format!("{key}.{field}"), "must not be empty".into()));
                None
            }
            other => other.clone(),
        }
    };
    let owner_id = non_empty("owner_id", &r.owner_id);
    let partner = non_empty("partner", &r.partner);
    if action == Action::Drop {
        // Settings on a drop route would silently do nothing: a sign the route is not what
        // its author meant.
        for (field, set) in [
            ("owner_id", r.owner_id.is_some()),
            ("partner", r.partner.is_some()),
            ("grouping", r.grouping.is_some()),
            ("templates", r.templates.is_some()),
        ] {
            if set {
                errors
                    .push((format!("{key}.{field}"), "has no effect on a route whose action is drop".into()));
            }
        }
    }
    let templates = match &r.templates {
        Some(t) if action == Action::Open => match build_templates(t, &format!("{key}.templates")) {
            Ok(set) => Some(set),
            Err(mut e) => {
                errors.append(&mut e);
                None
            }
        },
        _ => None,
    };
    if errors.len() > before {
        return None;
    }
    Some(Route { name: key.to_owned(), matchers, action, owner_id, partner, grouping, templates })
}
