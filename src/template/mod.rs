//! Templates: how an alert (or a group) becomes the payload of each SCWM operation, and the
//! content hash the lifecycle compares to tell a repeat from a change.
//!
//! Templates are minijinja, compiled when configuration is built (a template that does not
//! compile, or names a filter, test or function that does not exist, is a config error with its
//! dotted key) and rendered per target. They come in layers, most specific first: the route's
//! overrides, the source's, then [`TemplateSet::defaults`] for the source kind. Each field
//! renders from the first layer that defines it; when that fails at run time (an alert without
//! the label a template reads), the next layer stands in, in the end the built-in default, and
//! the failure is noted ([`Renderer::take_fallbacks`]) and said in the incident's description.
//! A payload template that fails gives way to the built-in payload. Only when even the defaults
//! cannot render is it a typed [`RenderError`], which the caller dead-letters the event with.
//!
//! # What templates see
//! - `alert`: status, labels, annotations, startsAt, endsAt, generatorURL, fingerprint, extra.
//!   For a group: its first alert.
//! - `alerts`: the target's alerts (one for per-alert grouping).
//! - `group`: receiver, status, groupKey, groupLabels, commonLabels, commonAnnotations,
//!   externalURL, truncatedAlerts, version, extra.
//! - `source`: name, kind; `key`: the correlation key; `grouping`; `status` (the target's);
//!   `partner` when the route names one.
//! - `labels`, `annotations`: the alert's, or for a group the common ones (common labels with
//!   the group labels).
//! - Payload templates also see `fields`: the incident fields as the field templates rendered
//!   them (title, description, severity, priority, category, service, source, externalRef,
//!   labels, occurredAt).
//!
//! Undefined variables are errors (`UndefinedBehavior::Strict`); write `x | default('...')` or
//! test `x is defined` for what may be missing. Besides minijinja's builtins (`default`, `join`,
//! `upper`, `lower`, `replace`, `tojson`, `urlencode`, ...) there is `truncate(length=255,
//! killwords=false, end='...', leeway=0)`, Jinja's, with no leeway by default so a limit is a
//! limit.
//!
//! # What is sent
//! Field values are trimmed; a field that renders empty is left out. Payloads per operation:
//! - add: title, description, severity, priority, category, service, `source`
//!   (`incident-bridge/<source>`), `externalRef` (the correlation key), `labels`, `occurredAt`
//!   (the first alert's startsAt).
//! - edit: `id` + the add fields except `source` and `externalRef`, which never change for a key.
//! - close: `id`, `resolution`, `closeNotes`; reopen: `id`, `reason`; submit: `id`, `partnerId`,
//!   `note`.
//!
//! A payload template replaces that payload; `id` (and for submit `partnerId`, unless the
//! template set it) is added by the bridge, since it is a decision, not content. The content
//! hash is the SHA-256 of the add payload as canonical JSON (keys sorted): byte-identical repeat
//! notifications hash the same.
//!
//! Nothing here performs I/O or reads a clock.

mod config;
mod context;
mod defaults;

use std::{collections::BTreeSet, fmt, sync::OnceLock};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, value::Kwargs};
use serde_json::Value;

pub use config::{RawPayloadTemplates, RawTemplates, build_templates};

use crate::{
    alert::{AlertStatus, Grouping, Notification, NotificationKind},
    ids::ItemId,
    incident::{Operation, Payload},
};

/// A templated field of an SCWM payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    Title,
    Description,
    Severity,
    Priority,
    Category,
    Service,
    /// Close.
    Resolution,
    /// Close.
    CloseNotes,
    /// Reopen.
    Reason,
    /// Submit.
    Note,
}

impl Field {
    pub const ALL: [Field; 10] = [
        Field::Title,
        Field::Description,
        Field::Severity,
        Field::Priority,
        Field::Category,
        Field::Service,
        Field::Resolution,
        Field::CloseNotes,
        Field::Reason,
        Field::Note,
    ];

    /// The incident fields of add (and edit), in payload order.
    pub const CONTENT: [Field; 6] =
        [Field::Title, Field::Description, Field::Severity, Field::Priority, Field::Category, Field::Service];

    /// The key in configuration.
    pub fn key(self) -> &'static str {
        match self {
            Field::Title => "title",
            Field::Description => "description",
            Field::Severity => "severity",
            Field::Priority => "priority",
            Field::Category => "category",
            Field::Service => "service",
            Field::Resolution => "resolution",
            Field::CloseNotes => "close_notes",
            Field::Reason => "reason",
            Field::Note => "note",
        }
    }

    /// The key in the SCWM payload.
    pub fn payload_key(self) -> &'static str {
        match self {
            Field::CloseNotes => "closeNotes",
            other => other.key(),
        }
    }
}

/// One compiled layer of templates (a source's, a route's, or the defaults).
pub struct TemplateSet {
    /// The dotted config key of the layer; names a failing template in a [`RenderError`].
    origin: String,
    env: Environment<'static>,
    fields: BTreeSet<Field>,
    payloads: BTreeSet<Operation>,
    /// A digest of the layer's origin and every template's name and source: what a
    /// [`Renderer::inputs`] digest knows the layer by.
    fingerprint: [u8; 32],
}

impl fmt::Debug for TemplateSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TemplateSet")
            .field("origin", &self.origin)
            .field("fields", &self.fields)
            .field("payloads", &self.payloads)
            .finish_non_exhaustive()
    }
}

impl TemplateSet {
    /// A layer that overrides nothing.
    pub fn empty(origin: impl Into<String>) -> Self {
        let origin = origin.into();
        let fingerprint = fingerprint(&origin, &[]);
        TemplateSet {
            origin,
            env: environment(),
            fields: BTreeSet::new(),
            payloads: BTreeSet::new(),
            fingerprint,
        }
    }

    /// The built-in templates for `kind`, below every configured layer.
    pub fn defaults(kind: NotificationKind) -> &'static TemplateSet {
        static ALERTMANAGER: OnceLock<TemplateSet> = OnceLock::new();
        static GRAFANA: OnceLock<TemplateSet> = OnceLock::new();
        let cell = match kind {
            NotificationKind::Alertmanager => &ALERTMANAGER,
            NotificationKind::Grafana => &GRAFANA,
        };
        cell.get_or_init(|| {
            let fields = Field::ALL.iter().map(|f| (*f, defaults::source(kind, *f).to_owned())).collect();
            // The built-in templates are constants, not input; a unit test compiles them for
            // both kinds, so this cannot fail in a build that passed its tests.
            match TemplateSet::compile(&format!("(default {}).templates", kind.as_str()), fields, Vec::new())
            {
                Ok(set) => set,
                Err(errors) => panic!("built-in templates do not compile: {errors:?}"),
            }
        })
    }

    /// Where this layer is configured.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn has_field(&self, field: Field) -> bool {
        self.fields.contains(&field)
    }

    pub fn has_payload(&self, op: Operation) -> bool {
        self.payloads.contains(&op)
    }

    pub(crate) fn compile(
        origin: &str,
        fields: Vec<(Field, String)>,
        payloads: Vec<(Operation, String)>,
    ) -> Result<Self, Vec<(String, String)>> {
        let mut set = TemplateSet::empty(origin);
        let named: Vec<(String, &str)> = fields
            .iter()
            .map(|(f, source)| (f.key().to_owned(), source.as_str()))
            .chain(payloads.iter().map(|(op, source)| (payload_name(*op), source.as_str())))
            .collect();
        set.fingerprint = fingerprint(origin, &named);
        let mut errors = Vec::new();
        for (field, source) in fields {
            match set.env.add_template_owned(field.key(), source) {
                Ok(()) => {
                    set.fields.insert(field);
                }
                Err(e) => errors.push((format!("{origin}.{}", field.key()), compile_error(&e))),
            }
        }
        for (op, source) in payloads {
            match set.env.add_template_owned(payload_name(op), source) {
                Ok(()) => {
                    set.payloads.insert(op);
                }
                Err(e) => errors.push((format!("{origin}.{}", payload_name(op)), compile_error(&e))),
            }
        }
        if errors.is_empty() { Ok(set) } else { Err(errors) }
    }

    /// Renders every template of this layer against a sample alert, with undefined values
    /// allowed (a real alert may well lack what the sample lacks), and reports each one that
    /// names a filter, test, function or method that does not exist: `(dotted key, message)`.
    pub(crate) fn lint(&self) -> Vec<(String, String)> {
        let mut lenient = environment();
        lenient.set_undefined_behavior(UndefinedBehavior::Chainable);
        let ctx = sample_context();
        let names = self
            .fields
            .iter()
            .map(|f| f.key().to_owned())
            .chain(self.payloads.iter().map(|op| payload_name(*op)));
        let mut problems = Vec::new();
        for name in names {
            let Ok(source) = self.env.get_template(&name).map(|t| t.source().to_owned()) else { continue };
            let rendered = lenient
                .add_template_owned(name.clone(), source)
                .and_then(|()| lenient.get_template(&name)?.render(&ctx));
            if let Err(e) = rendered
                && matches!(
                    e.kind(),
                    minijinja::ErrorKind::UnknownFilter
                        | minijinja::ErrorKind::UnknownTest
                        | minijinja::ErrorKind::UnknownFunction
                        | minijinja::ErrorKind::UnknownMethod
                        | minijinja::ErrorKind::SyntaxError
                )
            {
                problems.push((format!("{}.{name}", self.origin), describe(&e)));
            }
        }
        problems
    }

    fn render(&self, name: &str, ctx: &minijinja::Value) -> Result<String, RenderError> {
        // The template's full name is only needed to report a failure.
        let failed = |e: minijinja::Error| RenderError::Template {
            template: format!("{}.{name}", self.origin),
            message: describe(&e),
        };
        self.env.get_template(name).map_err(failed)?.render(ctx).map_err(failed)
    }
}

/// The context of a sample firing alert, for [`TemplateSet::lint`]: every variable templates
/// see, so only names that exist nowhere stay undefined.
fn sample_context() -> minijinja::Value {
    let labels: crate::alert::Labels =
        [("alertname", "SampleAlert"), ("severity", "warning"), ("instance", "host:9100"), ("job", "node")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let annotations: crate::alert::Labels =
        [("summary", "A sample alert"), ("description", "What check-config renders templates with")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    let notification = Notification {
        kind: NotificationKind::Alertmanager,
        receiver: "incident-bridge".into(),
        status: AlertStatus::Firing,
        group_key: "{}:{alertname=\"SampleAlert\"}".into(),
        group_labels: [("alertname".to_owned(), "SampleAlert".to_owned())].into_iter().collect(),
        common_labels: labels.clone(),
        common_annotations: annotations.clone(),
        external_url: "http://alertmanager.example".into(),
        truncated_alerts: 0,
        version: "4".into(),
        extra: serde_json::Map::new(),
        alerts: vec![crate::alert::Alert {
            status: AlertStatus::Firing,
            labels,
            annotations,
            starts_at: Some("2026-01-01T00:00:00Z".into()),
            ends_at: Some("2026-01-01T01:00:00Z".into()),
            generator_url: Some("http://prometheus.example/graph".into()),
            fingerprint: "0123456789abcdef".into(),
            extra: serde_json::Map::new(),
        }],
    };
    let subject = Subject {
        key: "sample:fp:0123456789abcdef",
        grouping: Grouping::Alert,
        status: AlertStatus::Firing,
        alerts: &[0],
        partner: Some("SAMPLE-PARTNER"),
        overrides: None,
    };
    let ctx = context::value("sample", &notification, &subject);
    let fields = serde_json::json!({"title": "SampleAlert: A sample alert"});
    context::with_fields(&ctx, fields.as_object().expect("an object"))
}

fn payload_name(op: Operation) -> String {
    format!("payload.{op}")
}

/// The environment every layer compiles in: strict undefined, JSON auto-escaping for payload
/// templates only, and the helpers the builtins lack.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_auto_escape_callback(|name| {
        if name.starts_with("payload.") { AutoEscape::Json } else { AutoEscape::None }
    });
    env.add_filter("truncate", truncate);
    env
}

fn compile_error(e: &minijinja::Error) -> String {
    format!("not a valid template: {}", describe(e))
}

/// `kind: detail (line n)`, without minijinja's own template name, which the caller replaces
/// with the config key.
fn describe(e: &minijinja::Error) -> String {
    let mut s = e.kind().to_string();
    if let Some(d) = e.detail() {
        s.push_str(": ");
        s.push_str(d);
    }
    // The expression that failed, e.g. `labels.team` for an undefined value: what the person
    // fixing the template needs to see.
    if let (Some(source), Some(range)) = (e.template_source(), e.range())
        && let Some(expr) = source.get(range)
        && !expr.trim().is_empty()
        && !s.contains(expr.trim())
    {
        s.push_str(&format!(" in `{}`", expr.trim()));
    }
    if let Some(line) = e.line() {
        s.push_str(&format!(" (line {line})"));
    }
    s
}

/// A template that failed at run time, and the layer below it that stood in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The dotted config key of the template that failed (`sources.am.templates.title`).
    pub template: String,
    /// What it renders: a field's key (`title`) or a payload (`payload.close`).
    pub part: String,
    /// Why it failed, with the expression that did.
    pub message: String,
}

/// Jinja's `truncate`: at most `length` characters including `end`; unless `killwords`, cut at
/// the last space. `leeway` lets a string that far over the limit through untouched.
fn truncate(
    s: &str,
    length: Option<usize>,
    killwords: Option<bool>,
    end: Option<String>,
    kwargs: Kwargs,
) -> Result<String, minijinja::Error> {
    let length = match length {
        Some(l) => l,
        None => kwargs.get::<Option<usize>>("length")?.unwrap_or(255),
    };
    let killwords = match killwords {
        Some(k) => k,
        None => kwargs.get::<Option<bool>>("killwords")?.unwrap_or(false),
    };
    let end = match end {
        Some(e) => e,
        None => kwargs.get::<Option<String>>("end")?.unwrap_or_else(|| "...".to_owned()),
    };
    let leeway = kwargs.get::<Option<usize>>("leeway")?.unwrap_or(0);
    kwargs.assert_all_used()?;
    let count = s.chars().count();
    if count <= length.saturating_add(leeway) {
        return Ok(s.to_owned());
    }
    let keep = length.saturating_sub(end.chars().count());
    let head: String = s.chars().take(keep).collect();
    let head = if killwords {
        head
    } else {
        match head.rfind(' ') {
            Some(i) => head[..i].to_owned(),
            None => head,
        }
    };
    Ok(head + &end)
}

/// Why a template could not produce what was asked. The event is dead-lettered with this as
/// its reason; retrying would fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// `template` is the dotted config key (`sources.am.templates.title`).
    #[error("template `{template}` failed: {message}")]
    Template { template: String, message: String },
    #[error("template `{template}` must render JSON: {message}")]
    NotJson { template: String, message: String },
    #[error("template `{template}` must render a JSON object, not {found}")]
    NotAnObject { template: String, found: &'static str },
    #[error("submit needs a partner, and the route names none")]
    NoPartner,
    #[error("{0} is not an alert lifecycle operation; it has no payload here")]
    UnsupportedOperation(Operation),
}

impl RenderError {
    /// A bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RenderError::Template { .. } => "template",
            RenderError::NotJson { .. } => "not_json",
            RenderError::NotAnObject { .. } => "not_an_object",
            RenderError::NoPartner => "no_partner",
            RenderError::UnsupportedOperation(_) => "unsupported_operation",
        }
    }
}

/// What an incident would contain now.
#[derive(Debug, Clone, PartialEq)]
pub struct Content {
    /// The add payload, exactly as it would be sent.
    pub add: Payload,
    /// The incident fields as the field templates rendered them (payload templates see these as
    /// `fields`); equal to `add` unless an add payload template is configured.
    pub fields: Payload,
    /// Hex SHA-256 of `add` as canonical JSON: what the lifecycle compares.
    pub hash: String,
}

/// What one incident's payloads are rendered from, besides the notification: the caller builds
/// it from the route's target (`route::Target::subject`), so templates need not know routes.
#[derive(Debug, Clone, Copy)]
pub struct Subject<'a> {
    /// The correlation key: `externalRef`, and `key` in templates.
    pub key: &'a str,
    pub grouping: Grouping,
    /// The alert's status, or the group's.
    pub status: AlertStatus,
    /// Indices into the notification's `alerts`, in order; never empty.
    pub alerts: &'a [usize],
    /// The partner a new incident is submitted to, when the route names one.
    pub partner: Option<&'a str>,
    /// The route's own templates: the most specific layer.
    pub overrides: Option<&'a TemplateSet>,
}

impl<'a> Subject<'a> {
    /// The subject's alerts, looked up in the notification it was planned from.
    pub fn alerts<'n>(
        &self,
        notification: &'n Notification,
    ) -> impl Iterator<Item = &'n crate::alert::Alert> + use<'a, 'n> {
        let indices = self.alerts;
        indices.iter().filter_map(|i| notification.alerts.get(*i))
    }
}

/// A layer's fingerprint: its origin, then each template's name and source, each length-prefixed
/// so no two layers run together into the same bytes.
fn fingerprint(origin: &str, templates: &[(String, &str)]) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in std::iter::once(origin).chain(templates.iter().flat_map(|(n, s)| [n.as_str(), *s])) {
        h.update((part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().into()
}

/// Renders one target's payloads through its template layers.
pub struct Renderer<'a> {
    /// Most specific first; the defaults last.
    layers: Vec<&'a TemplateSet>,
    notification: &'a Notification,
    subject: Subject<'a>,
    /// The template context, made the first time something is rendered: a repeat whose
    /// content the record knows by [`Renderer::inputs`] renders nothing.
    ctx: OnceLock<minijinja::Value>,
    /// What the content is rendered from, as a digest ([`Renderer::inputs`]).
    inputs: String,
    source_name: String,
    facts: context::Facts,
    /// Templates that failed and were stood in for since the last [`Renderer::take_fallbacks`].
    fallbacks: std::sync::Mutex<Vec<Fallback>>,
}

impl<'a> Renderer<'a> {
    /// Layers: the subject's overrides (the route's templates), then `source_templates`, then
    /// the defaults of the notification's kind.
    pub fn new(
        source_name: &str,
        source_templates: &'a TemplateSet,
        notification: &'a Notification,
        subject: Subject<'a>,
    ) -> Self {
        let (facts, ctx_digest) = context::facts_and_digest(source_name, notification, &subject);
        let layers: Vec<&TemplateSet> = subject
            .overrides
            .into_iter()
            .chain([source_templates, TemplateSet::defaults(notification.kind)])
            .collect();
        let inputs = {
            use sha2::Digest;
            let mut h = sha2::Sha256::new();
            // A new version may render the same inputs differently.
            h.update(env!("CARGO_PKG_VERSION").as_bytes());
            for layer in &layers {
                h.update(layer.fingerprint);
            }
            h.update(ctx_digest);
            crate::ids::lower_hex(&h.finalize())
        };
        Renderer {
            layers,
            notification,
            subject,
            ctx: OnceLock::new(),
            inputs,
            source_name: source_name.to_owned(),
            facts,
            fallbacks: std::sync::Mutex::new(Vec::new()),
        }
    }

    fn ctx(&self) -> &minijinja::Value {
        self.ctx.get_or_init(|| context::value(&self.source_name, self.notification, &self.subject))
    }

    /// A digest of everything the content ([`Renderer::content`]) is rendered from: the bridge's
    /// version, each layer's templates, and the template context (which holds the source, the
    /// key, the partner and everything of the notification the target sees). Rendering is a
    /// pure function of these (no clock, no randomness among the functions templates can call),
    /// so equal inputs render to equal content, and a hash remembered for them
    /// ([`crate::plan::ContentMemo`]) stands for rendering again.
    pub fn inputs(&self) -> &str {
        &self.inputs
    }

    /// The templates that failed since the last call, each stood in for by the layer below it
    /// (in the end the built-in default): for the caller to log and count. Rendering itself
    /// stays free of I/O.
    pub fn take_fallbacks(&self) -> Vec<Fallback> {
        std::mem::take(&mut *self.fallbacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    fn fell_back(&self, part: &str, error: RenderError) {
        let (template, message) = match error {
            RenderError::Template { template, message } | RenderError::NotJson { template, message } => {
                (template, message)
            }
            RenderError::NotAnObject { template, found } => {
                (template, format!("rendered {found}, not an object"))
            }
            other => (String::new(), other.to_string()),
        };
        let fallback = Fallback { template, part: part.to_owned(), message };
        self.fallbacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(fallback);
    }

    /// The add payload and its hash. Render this first: the lifecycle needs the hash to decide.
    pub fn content(&self) -> Result<Content, RenderError> {
        let mut fields = Payload::new();
        let before = self.fallbacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len();
        for f in Field::CONTENT {
            if let Some(v) = self.field(f)? {
                fields.insert(f.payload_key().into(), Value::String(v));
            }
        }
        // Said in the incident too, so whoever reads it knows a field is not what was meant.
        let failed: Vec<String> = self.fallbacks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
            [before..]
            .iter()
            .map(|f| format!("`{}` ({}: {})", f.part, f.template, f.message))
            .collect();
        if !failed.is_empty() {
            let note = format!(
                "[incident-bridge] the template of {} failed; the built-in default stands in.",
                failed.join(", ")
            );
            let description = match fields.get(Field::Description.payload_key()).and_then(Value::as_str) {
                Some(d) => format!("{d}\n\n{note}"),
                None => note,
            };
            fields.insert(Field::Description.payload_key().into(), Value::String(description));
        }
        fields.insert("source".into(), Value::String(format!("incident-bridge/{}", self.source_name)));
        fields.insert("externalRef".into(), Value::String(self.subject.key.to_owned()));
        fields.insert("labels".into(), serde_json::json!(self.facts.labels));
        if let Some(t) = &self.facts.occurred_at {
            fields.insert("occurredAt".into(), Value::String(t.clone()));
        }
        let add = self.layered_payload(Operation::Add, &fields).unwrap_or_else(|| fields.clone());
        let hash = content_hash(&add);
        Ok(Content { add, fields, hash })
    }

    /// The payload of `op` for this target. `item_id` is inserted as `id` for every operation
    /// but add; pass `None` to render ahead of an add whose id is not known yet, and insert `id`
    /// once it is. Rendering everything a decision needs before calling SCWM means a template
    /// error cannot leave a decision half done.
    pub fn payload(
        &self,
        op: Operation,
        content: &Content,
        item_id: Option<&ItemId>,
    ) -> Result<Payload, RenderError> {
        let layered = match op {
            Operation::Add => return Ok(content.add.clone()),
            Operation::Copy | Operation::Read => return Err(RenderError::UnsupportedOperation(op)),
            _ => self.layered_payload(op, &content.fields),
        };
        let mut payload = match (op, layered) {
            (_, Some(payload)) => payload,
            (Operation::Add | Operation::Copy | Operation::Read, None) => unreachable!("returned above"),
            (Operation::Edit, None) => {
                let mut p = content.add.clone();
                p.remove("source");
                p.remove("externalRef");
                p
            }
            (Operation::Close, None) => self.fields_payload(&[Field::Resolution, Field::CloseNotes])?,
            (Operation::Reopen, None) => self.fields_payload(&[Field::Reason])?,
            (Operation::Submit, None) => self.fields_payload(&[Field::Note])?,
        };
        if op == Operation::Submit && !payload.contains_key("partnerId") {
            let partner = self.subject.partner.ok_or(RenderError::NoPartner)?;
            payload.insert("partnerId".into(), Value::String(partner.to_owned()));
        }
        if let Some(id) = item_id {
            payload.insert("id".into(), Value::String(id.as_str().to_owned()));
        }
        Ok(payload)
    }

    fn fields_payload(&self, fields: &[Field]) -> Result<Payload, RenderError> {
        let mut p = Payload::new();
        for f in fields {
            if let Some(v) = self.field(*f)? {
                p.insert(f.payload_key().into(), Value::String(v));
            }
        }
        Ok(p)
    }

    /// One field from the first layer that defines it and renders; trimmed; `None` when it
    /// renders empty. A layer that fails is stood in for by the next (in the end the built-in
    /// default) and noted; only when the last fails too is it an error.
    fn field(&self, field: Field) -> Result<Option<String>, RenderError> {
        let mut layers = self.layers.iter().filter(|l| l.has_field(field)).peekable();
        while let Some(layer) = layers.next() {
            match layer.render(field.key(), self.ctx()) {
                Ok(text) => {
                    let text = text.trim();
                    return Ok((!text.is_empty()).then(|| text.to_owned()));
                }
                Err(e) if layers.peek().is_some() => self.fell_back(field.key(), e),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The payload of `op` from the first payload template that renders a JSON object; `None`
    /// when there is none (or every one failed, each noted): the built-in payload then.
    fn layered_payload(&self, op: Operation, fields: &Payload) -> Option<Payload> {
        for layer in self.layers.iter().filter(|l| l.has_payload(op)) {
            match self.render_payload(layer, op, fields) {
                Ok(payload) => return Some(payload),
                Err(e) => self.fell_back(&payload_name(op), e),
            }
        }
        None
    }

    fn render_payload(
        &self,
        layer: &TemplateSet,
        op: Operation,
        fields: &Payload,
    ) -> Result<Payload, RenderError> {
        let ctx = context::with_fields(self.ctx(), fields);
        let name = payload_name(op);
        let text = layer.render(&name, &ctx)?;
        let template = format!("{}.{name}", layer.origin);
        match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(other) => Err(RenderError::NotAnObject { template, found: json_type(&other) }),
            Err(e) => Err(RenderError::NotJson { template, message: e.to_string() }),
        }
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Hex SHA-256 of `payload` as canonical JSON (object keys sorted at every level, no spaces).
pub fn content_hash(payload: &Payload) -> String {
    // serde_json's map is ordered by key (the crate is built without `preserve_order`), so its
    // compact encoding is canonical: keys sorted at every level, strings escaped one way. It
    // streams into the digest instead of being built as a string first.
    let mut digest = DigestWriter::default();
    serde_json::to_writer(&mut digest, payload).expect("a JSON map serialises");
    crate::ids::lower_hex(&digest.finish())
}

/// SHA-256 as a writer, so JSON streams into it.
#[derive(Default)]
struct DigestWriter(sha2::Sha256);

impl DigestWriter {
    fn finish(self) -> [u8; 32] {
        sha2::Digest::finalize(self.0).into()
    }
}

impl std::io::Write for DigestWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        sha2::Digest::update(&mut self.0, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests;
