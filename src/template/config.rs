//! Templates as configured: the serde shape of a `templates` table (of a source or a route) and
//! the pure step that compiles it, reporting every template that does not compile with its
//! dotted key.

use serde::Deserialize;

use super::{Field, TemplateSet};
use crate::incident::Operation;

/// Field templates and whole-payload templates; every one optional. An empty string is a valid
/// template: it renders to nothing, which leaves that field out of the payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawTemplates {
    pub title: Option<String>,
    pub description: Option<String>,
    pub severity: Option<String>,
    pub priority: Option<String>,
    pub category: Option<String>,
    pub service: Option<String>,
    /// Close: `resolution`.
    pub resolution: Option<String>,
    /// Close: `closeNotes`.
    pub close_notes: Option<String>,
    /// Reopen: `reason`.
    pub reason: Option<String>,
    /// Submit to partner: `note`.
    pub note: Option<String>,
    /// Whole-payload templates, one per operation, each rendering a JSON object.
    pub payload: Option<RawPayloadTemplates>,
}

/// `[... .templates.payload]`: replaces the payload built from field templates for that
/// operation. Inside these templates every `{{ ... }}` prints JSON (minijinja's JSON
/// auto-escaping), so `{"title": {{ fields.title }}}` is valid JSON whatever the title holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RawPayloadTemplates {
    pub add: Option<String>,
    pub edit: Option<String>,
    pub close: Option<String>,
    pub reopen: Option<String>,
    pub submit: Option<String>,
}

/// Compiles `raw`. `key_prefix` is the dotted key of the `templates` table (e.g.
/// `sources.alertmanager.templates`); a template that does not compile is reported as
/// `<key_prefix>.<field>` or `<key_prefix>.payload.<operation>`, and renders later report the
/// same name.
pub fn build_templates(raw: &RawTemplates, key_prefix: &str) -> Result<TemplateSet, Vec<(String, String)>> {
    let fields = [
        (Field::Title, &raw.title),
        (Field::Description, &raw.description),
        (Field::Severity, &raw.severity),
        (Field::Priority, &raw.priority),
        (Field::Category, &raw.category),
        (Field::Service, &raw.service),
        (Field::Resolution, &raw.resolution),
        (Field::CloseNotes, &raw.close_notes),
        (Field::Reason, &raw.reason),
        (Field::Note, &raw.note),
    ]
    .into_iter()
    .filter_map(|(f, src)| src.clone().map(|s| (f, s)))
    .collect();
    let payloads = match &raw.payload {
        None => Vec::new(),
        Some(p) => [
            (Operation::Add, &p.add),
            (Operation::Edit, &p.edit),
            (Operation::Close, &p.close),
            (Operation::Reopen, &p.reopen),
            (Operation::Submit, &p.submit),
        ]
        .into_iter()
        .filter_map(|(op, src)| src.clone().map(|s| (op, s)))
        .collect(),
    };
    let set = TemplateSet::compile(key_prefix, fields, payloads)?;
    // A filter, test or function that does not exist compiles, and fails every render: find it
    // now, on a sample alert, rather than when an alert comes.
    let problems = set.lint();
    if problems.is_empty() { Ok(set) } else { Err(problems) }
}
