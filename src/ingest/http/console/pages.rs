//! The console's pages as HTML (maud: compiled, every value escaped). Each function turns what a
//! handler gathered into markup; none reads state or acts. No inline script or style: the
//! Content-Security-Policy allows neither.

use std::{collections::BTreeMap, sync::Arc, time::SystemTime};

use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use super::chart;
use crate::{
    ingest::http::admin::{DecisionQuery, LetterQuery},
    pipeline::{
        inspect::{Filter, KeyRecord, Page},
        journal::{Entry, Hour},
    },
    publish::kept::KeptLetter,
    scwm::{CircuitState, client::ScwmHealth},
};

/// What every page's frame needs.
pub struct Chrome<'a> {
    pub csrf: &'a str,
    pub signed_in_with_form: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Nav {
    Overview,
    Decisions,
    Keys,
    DeadLetters,
    Explain,
    None,
}

const ASSETS_VERSION: &str = env!("CARGO_PKG_VERSION");

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · incident-bridge" }
            link rel="stylesheet" href=(format!("/ui/assets/console.css?v={ASSETS_VERSION}"));
            script src=(format!("/ui/assets/console.js?v={ASSETS_VERSION}")) defer {}
        }
    }
}

fn page(chrome: &Chrome<'_>, here: Nav, title: &str, content: Markup) -> Markup {
    let item = |nav: Nav, href: &str, label: &str| {
        html! { a.here[nav == here] href=(href) { (label) } }
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header {
                    span.brand { "incident-bridge" }
                    nav {
                        (item(Nav::Overview, "/ui", "Overview"))
                        (item(Nav::Decisions, "/ui/decisions", "Decisions"))
                        (item(Nav::Keys, "/ui/keys", "Keys"))
                        (item(Nav::DeadLetters, "/ui/dlq", "Dead letters"))
                        (item(Nav::Explain, "/ui/explain", "Explain"))
                    }
                    @if chrome.signed_in_with_form {
                        form method="post" action="/ui/logout" {
                            (csrf(chrome))
                            button.quiet type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (content) }
            }
        }
    }
}

fn csrf(chrome: &Chrome<'_>) -> Markup {
    html! { input type="hidden" name="csrf" value=(chrome.csrf); }
}

/// The sign-in page, for a browser without credentials.
pub fn sign_in(message: Option<&str>, basic: bool, next: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Sign in"))
            body {
                main.login {
                    h1 { "incident-bridge console" }
                    @if let Some(m) = message { p.notice.bad { (m) } }
                    @if basic {
                        p { "Sign in with the admin credentials your browser asks for; reload the page if it did not ask." }
                    } @else {
                        form method="post" action="/ui/login" {
                            input type="hidden" name="next" value=(next);
                            label for="token" { "Admin token" }
                            input #token type="password" name="token" autocomplete="current-password" required autofocus;
                            button type="submit" { "Sign in" }
                        }
                        p.muted { "The token of " code { "[admin] auth" } ". It is kept in a cookie for this console only, for 12 hours." }
                    }
                }
            }
        }
    }
}

/// A page that says one thing (an action's outcome).
pub fn message(chrome: &Chrome<'_>, title: &str, text: &str, ok: bool) -> Markup {
    page(
        chrome,
        Nav::None,
        title,
        html! {
            p.notice.bad[!ok] { (text) }
            p { a href="/ui" { "Back to the overview" } }
        },
    )
}

fn time_of(at: SystemTime) -> (String, String) {
    let full = humantime::format_rfc3339_seconds(at).to_string();
    let clock = full.get(11..19).unwrap_or(&full).to_owned();
    (clock, full)
}

fn ms(d: Option<std::time::Duration>) -> String {
    d.map_or_else(|| "–".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0))
}

pub struct OverviewView {
    pub hour: Hour,
    pub scwm: ScwmHealth,
    pub queue: (usize, usize),
    pub outbox: Option<usize>,
    pub components: BTreeMap<&'static str, &'static str>,
    pub draining: bool,
    pub dead_letters: Result<usize, String>,
}

pub fn overview(chrome: &Chrome<'_>, v: &OverviewView) -> Markup {
    let circuit = match v.scwm.circuit {
        CircuitState::Closed => ("closed", "ok"),
        CircuitState::HalfOpen => ("half-open (trying)", "warn"),
        CircuitState::Open => ("open (failing fast)", "bad"),
    };
    let calls = &v.scwm.calls;
    page(
        chrome,
        Nav::Overview,
        "Overview",
        html! {
            div.grid {
                section.panel #scwm {
                    h2 { "SCWM" }
                    dl.facts {
                        dt { "Circuit" }
                        dd { span.tag.(circuit.1) #circuit { (circuit.0) }
                            @if let Some(d) = v.scwm.circuit_open_for { " for " (format!("{:.1}", d.as_secs_f64())) " s more" } }
                        dt { "Error rate" }
                        dd #error-rate { (format!("{:.1} %", calls.error_rate() * 100.0)) " of " (calls.attempts) " attempts in the last " (calls.window.as_secs() / 60) " min" }
                        dt { "Latency" }
                        dd { "p50 " (ms(calls.p50)) ", p99 " (ms(calls.p99)) }
                        dt { "In flight" }
                        dd { (v.scwm.in_flight) " of " (v.scwm.max_concurrency) }
                    }
                    div.scroll {
                        table {
                            thead { tr { th { "Endpoint" } th.num { "Rate" } th.num { "Tokens" } th { "Paused" } th.num { "Pauses" } th.num { "Waiting (urgent/routine)" } } }
                            tbody {
                                @for g in &v.scwm.governors {
                                    tr {
                                        td.mono { (g.endpoint) }
                                        td.num { @match g.per_second { Some(r) => { (format!("{r:.1}/s")) @if g.learnt { " learnt" } }, None => "unmetered" } }
                                        td.num { @match g.tokens { Some(t) => (format!("{t:.1}")), None => "–" } }
                                        td { @match g.paused_for { Some(d) => span.warn { (format!("{:.1} s", d.as_secs_f64())) }, None => "no" } }
                                        td.num { (g.pauses) }
                                        td.num { (g.queued.0) " / " (g.queued.1) }
                                    }
                                }
                            }
                        }
                    }
                }
                section.panel #work {
                    h2 { "Work" }
                    dl.facts {
                        dt { "Queue" } dd #queue { (v.queue.0) " of " (v.queue.1) }
                        dt { "Outbox" } dd { @match v.outbox { Some(n) => (n), None => "none (no NATS results)" } }
                        dt { "Dead letters kept" }
                        dd { @match &v.dead_letters { Ok(n) => a href="/ui/dlq" { (n) }, Err(e) => span.muted { (e) } } }
                        @if v.draining { dt { "State" } dd.warn { "draining: shutting down" } }
                        @for (name, state) in &v.components {
                            dt { (name) }
                            dd.ok[*state == "ready"].bad[*state != "ready"] { (state) }
                        }
                    }
                }
            }
            section.panel #sources {
                h2 { "Events per minute, last hour" }
                @if v.hour.sources.is_empty() { p.muted { "Nothing has come in since the bridge started." } }
                div.scroll {
                    table {
                        tbody {
                            @for (source, counts) in &v.hour.sources {
                                tr {
                                    th { a href=(format!("/ui/decisions?source={}", urlencode(source))) { (source) } }
                                    td.num { (counts.iter().map(|c| u64::from(*c)).sum::<u64>()) }
                                    td { (chart::per_minute(source, counts)) }
                                }
                            }
                        }
                    }
                }
            }
            section.panel #decision-kinds {
                h2 { "Decisions, last hour" }
                @if v.hour.decisions.is_empty() { p.muted { "None." } }
                table {
                    tbody {
                        @for (kind, n) in &v.hour.decisions {
                            tr { td { a href=(format!("/ui/decisions?decision={}", urlencode(kind))) { (kind) } } td.num { (n) } }
                        }
                    }
                }
            }
        },
    )
}

pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn key_link(key: &str) -> Markup {
    html! {
        @if key.is_empty() { span.muted { "–" } }
        @else { a.mono href=(format!("/ui/key?key={}", urlencode(key))) { (key) } }
    }
}

/// A long id's first characters, the whole of it on hover.
fn short(id: Option<&str>) -> Markup {
    html! {
        @match id {
            Some(id) if id.len() > 12 => span.mono title=(id) { (id.get(..10).unwrap_or(id)) "…" },
            Some(id) => span.mono { (id) },
            None => span.muted { "–" },
        }
    }
}

fn trace_link(trace_id: Option<&str>, trace_url: Option<&str>) -> Markup {
    html! {
        @match (trace_id, trace_url) {
            (Some(id), Some(url)) => a.mono href=(url.replace("{trace_id}", id)) rel="noopener" { (id.get(..8).unwrap_or(id)) "…" },
            (Some(id), None) => span.mono title=(id) { (id.get(..8).unwrap_or(id)) "…" },
            (None, _) => span.muted { "–" },
        }
    }
}

fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "done" => "ok",
        "duplicate" => "",
        "retry" => "warn",
        _ => "bad",
    }
}

pub struct DecisionsView<'a> {
    pub entries: &'a [Arc<Entry>],
    pub kept: usize,
    pub capacity: usize,
    pub query: &'a DecisionQuery,
    pub sources: &'a [String],
    pub decisions: &'a [String],
    pub trace_url: Option<&'a str>,
}

fn select(name: &str, label: &str, options: &[String], chosen: Option<&str>) -> Markup {
    html! {
        label { (label)
            select name=(name) {
                option value="" { "any" }
                @for o in options { option value=(o) selected[chosen == Some(o.as_str())] { (o) } }
            }
        }
    }
}

pub fn decisions(chrome: &Chrome<'_>, v: &DecisionsView<'_>) -> Markup {
    let q = v.query;
    let outcomes: Vec<String> =
        ["done", "duplicate", "retry", "reject"].iter().map(|s| (*s).to_owned()).collect();
    let live = format!(
        "/ui/decisions/rows?source={}&decision={}&outcome={}&text={}&key={}",
        urlencode(q.source.as_deref().unwrap_or("")),
        urlencode(q.decision.as_deref().unwrap_or("")),
        urlencode(q.outcome.as_deref().unwrap_or("")),
        urlencode(q.text.as_deref().unwrap_or("")),
        urlencode(q.key.as_deref().unwrap_or("")),
    );
    page(
        chrome,
        Nav::Decisions,
        "Decisions",
        html! {
            form.filters method="get" action="/ui/decisions" {
                (select("source", "Source", v.sources, q.source.as_deref()))
                (select("decision", "Decision", v.decisions, q.decision.as_deref()))
                (select("outcome", "Outcome", &outcomes, q.outcome.as_deref()))
                label { "Text" input type="text" name="text" value=(q.text.as_deref().unwrap_or("")) placeholder="key, alert, id, reason"; }
                @if let Some(key) = &q.key { input type="hidden" name="key" value=(key); }
                button type="submit" { "Filter" }
                label { "Live" input #live type="checkbox" checked; }
            }
            p.muted { "Newest first, at most 200, of the last " (v.capacity) " decisions this replica keeps ("
                code { "[admin] recent_decisions" } "; " (v.kept) " when the page was drawn). Each replica keeps its own." }
            div.scroll {
                table #decisions data-live=(live) {
                    thead { tr {
                        th { "Time" } th { "Source" } th { "Alert" } th { "Key" } th.wide { "Route" }
                        th { "Decision" } th { "Outcome" } th { "Why" } th { "Incident" } th.wide { "licensePlate" } th.wide { "Trace" }
                    } }
                    tbody { (decision_rows(v.entries, v.trace_url)) }
                }
            }
        },
    )
}

/// The rows of the decisions table (also what the live refresh fetches).
pub fn decision_rows(entries: &[Arc<Entry>], trace_url: Option<&str>) -> Markup {
    html! {
        @if entries.is_empty() { tr { td colspan="11" .muted { "No decisions match." } } }
        @for e in entries {
            @let (clock, full) = time_of(e.at);
            tr data-seq=(e.seq) {
                td title=(full) { (clock) }
                td { (e.source) }
                td { (e.alertname.as_deref().unwrap_or("–")) }
                // Only alerts' keys are in the store; a command's key names its licensePlate.
                td { @if e.route.is_some() { (key_link(&e.key)) } @else { span.mono { (e.key) } } }
                td.wide { (e.route.as_deref().unwrap_or("–")) }
                td { span.tag { (e.decision) } }
                td { span.tag.(outcome_class(e.outcome)) { (e.outcome) } @if e.attempt > 1 { " #" (e.attempt) } }
                td { (e.reason) @if let Some(d) = &e.detail { @if !e.reason.is_empty() { br; } span.bad { (d) } } }
                td.mono { (e.item_id.as_deref().unwrap_or("–")) }
                td.wide { (short(e.license_plate.as_deref())) }
                td.wide { (trace_link(e.trace_id.as_deref(), trace_url)) }
            }
        }
    }
}

pub fn keys(chrome: &Chrome<'_>, filter: &Filter, page_of: &Result<Page, String>) -> Markup {
    let states: Vec<String> = ["open", "closed", "none", "pending"].iter().map(|s| (*s).to_owned()).collect();
    page(
        chrome,
        Nav::Keys,
        "Keys",
        html! {
            form.filters method="get" action="/ui/keys" {
                label { "Key starts with" input type="text" name="prefix" value=(filter.prefix.as_deref().unwrap_or("")); }
                (select("state", "State", &states, filter.state.as_deref()))
                button type="submit" { "Filter" }
            }
            @match page_of {
                Err(e) => p.notice.bad { (e) },
                Ok(p) => {
                    div.scroll { table {
                        thead { tr { th { "Key" } th { "State" } th { "Incident" } th { "Source" } th { "Intent under way" } th.wide { "Confirmed" } } }
                        tbody {
                            @if p.keys.is_empty() { tr { td colspan="6" .muted { "No keys match." } } }
                            @for k in &p.keys {
                                tr {
                                    td { (key_link(&k.key)) }
                                    td { (k.state) }
                                    td.mono { (k.item_id.as_deref().unwrap_or("–")) }
                                    td { (k.source.as_deref().unwrap_or("–")) }
                                    td { @if k.pending { span.warn { "yes" } } @else { "no" } }
                                    td.wide { (k.confirmed_at.as_deref().unwrap_or("–")) }
                                }
                            }
                        }
                    } }
                    @if let Some(next) = &p.next {
                        p { a href=(format!("/ui/keys?prefix={}&state={}&after={}",
                            urlencode(filter.prefix.as_deref().unwrap_or("")),
                            urlencode(filter.state.as_deref().unwrap_or("")), urlencode(next))) { "Next page" } }
                    }
                }
            }
        },
    )
}

pub struct KeyView<'a> {
    pub key: &'a str,
    pub record: Result<&'a KeyRecord, String>,
    pub recent: &'a [Arc<Entry>],
    pub incident: Option<&'a Result<serde_json::Value, String>>,
    pub trace_url: Option<&'a str>,
}

fn unix_ms(ms: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
        .to_string()
}

fn pretty(v: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

pub fn key(chrome: &Chrome<'_>, v: &KeyView<'_>) -> Markup {
    page(
        chrome,
        Nav::Keys,
        "Key",
        html! {
            p.mono #key { (v.key) }
            @match &v.record {
                Err(e) => p.notice.bad { (e) },
                Ok(r) => {
                    @let record = &r.record;
                    div.grid {
                        section.panel {
                            h2 { "In the store" }
                            dl.facts #stored {
                                dt { "Incident" }
                                dd.mono { @match &record.stored { Some(s) => (s.item_id), None => "none" } }
                                dt { "State" }
                                dd { @match &record.stored { Some(s) => (format!("{:?}", s.state).to_lowercase()), None => "–" } }
                                dt { "Source" } dd { (record.source.as_deref().unwrap_or("–")) }
                                dt { "Revision" } dd { (r.revision) }
                                dt { "Intent under way" }
                                dd { @match &record.pending { Some(p) => span.warn { (p.decision) " (" (p.owner) ")" }, None => "none" } }
                            }
                            div.actions {
                                @if record.stored.is_some() {
                                    a href=(format!("/ui/key?key={}&read=true", urlencode(v.key))) { "Read the incident from SCWM" }
                                }
                                a href=(format!("/ui/key/forget?key={}&revision={}", urlencode(v.key), r.revision)) { "Forget this key…" }
                            }
                        }
                        section.panel #flapping {
                            h2 { "Flapping" }
                            @match &record.flap {
                                None => p.muted { "Not watched for flapping (the source does not damp it, or the key is quiet)." },
                                Some(f) => dl.facts {
                                    dt { "Flapping" }
                                    dd { @match f.flapping_since_ms { Some(ms) => span.warn { "since " (unix_ms(ms)) }, None => "no" } }
                                    dt { "Status" } dd { (format!("{:?}", f.status).to_lowercase()) " since " (unix_ms(f.since_ms)) }
                                    dt { "Refires in the window" } dd { (f.refires_ms.len()) }
                                },
                            }
                            @if let Some(h) = &record.held {
                                p.notice { "Held back: " (format!("{:?}", h.what).to_lowercase()) ", looked at again at " (unix_ms(h.due_ms)) "." }
                            }
                        }
                    }
                    @if let Some(incident) = v.incident {
                        section.panel #incident {
                            h2 { "The incident in SCWM, read now" }
                            @match incident { Ok(json) => pre { (pretty(json)) }, Err(e) => p.notice.bad { (e) } }
                        }
                    }
                    details { summary { "The whole record" } pre { (pretty(record)) } }
                }
            }
            h2 { "Recent decisions for this key" }
            div.scroll { table {
                thead { tr {
                    th { "Time" } th { "Source" } th { "Alert" } th { "Key" } th.wide { "Route" }
                    th { "Decision" } th { "Outcome" } th { "Why" } th { "Incident" } th.wide { "licensePlate" } th.wide { "Trace" }
                } }
                tbody { (decision_rows(v.recent, v.trace_url)) }
            } }
        },
    )
}

pub fn forget_confirm(chrome: &Chrome<'_>, key: &str, revision: u64) -> Markup {
    page(
        chrome,
        Nav::Keys,
        "Forget a key",
        html! {
            p { "Forget " code { (key) } " (revision " (revision) ")? The bridge drops its mapping: the next firing of this alert opens a new incident. SCWM's incident is not touched." }
            div.actions {
                form method="post" action="/ui/key/forget" {
                    (csrf(chrome))
                    input type="hidden" name="key" value=(key);
                    input type="hidden" name="revision" value=(revision);
                    button.danger #confirm type="submit" { "Forget it" }
                }
                a href=(format!("/ui/key?key={}", urlencode(key))) { "Cancel" }
            }
        },
    )
}

fn hidden_filters(q: &LetterQuery) -> Markup {
    let fields = [
        ("id", &q.id),
        ("source", &q.source),
        ("op", &q.op),
        ("reason", &q.reason),
        ("key", &q.key),
        ("since", &q.since),
    ];
    html! {
        @for (name, value) in fields {
            @if let Some(v) = value { input type="hidden" name=(name) value=(v); }
        }
    }
}

fn letter_actions(chrome: &Chrome<'_>, q: &LetterQuery, n: usize) -> Markup {
    html! {
        div.actions {
            form method="post" action="/ui/dlq/replay" {
                (csrf(chrome)) (hidden_filters(q))
                input type="hidden" name="dry_run" value="true";
                button #replay type="submit" { "Replay " (n) "… (dry run first)" }
            }
            form method="post" action="/ui/dlq/purge" {
                (csrf(chrome)) (hidden_filters(q))
                button.danger #purge type="submit" { "Purge " (n) "…" }
            }
        }
    }
}

pub fn dead_letters(chrome: &Chrome<'_>, q: &LetterQuery, letters: &[KeptLetter]) -> Markup {
    let filtered = q.filters_anything();
    page(
        chrome,
        Nav::DeadLetters,
        "Dead letters",
        html! {
            form.filters method="get" action="/ui/dlq" {
                label { "Source" input type="text" name="source" value=(q.source.as_deref().unwrap_or("")); }
                label { "Operation" input type="text" name="op" value=(q.op.as_deref().unwrap_or("")); }
                label { "Reason" input type="text" name="reason" value=(q.reason.as_deref().unwrap_or("")) placeholder="scwm_rejected, decode, …"; }
                label { "Key" input type="text" name="key" value=(q.key.as_deref().unwrap_or("")); }
                label { "Since" input type="text" name="since" value=(q.since.as_deref().unwrap_or("")) placeholder="12h or RFC 3339"; }
                button type="submit" { "Filter" }
            }
            p #letter-count { (letters.len()) " dead letter(s)" @if filtered { " match" } "." }
            @if !letters.is_empty() {
                @if filtered { (letter_actions(chrome, q, letters.len())) }
                @else { p.muted { "Filter to replay or purge a set (a source, a reason, a time), or open one letter." } }
            }
            div.scroll { table #letters {
                thead { tr { th { "When" } th { "Letter" } th { "Source" } th { "Op" } th { "Reason" } th { "Key" } th.num.wide { "Attempts" } th.num.wide { "Replays" } } }
                tbody {
                    @for l in letters.iter().take(500) {
                        tr {
                            td { (l.at.get(..19).unwrap_or(&l.at)) }
                            td { a.mono href=(format!("/ui/dlq/letter?id={}", urlencode(&l.id))) { (l.id) } }
                            td { (l.source) }
                            td { (l.op.as_deref().unwrap_or("–")) }
                            td { span.tag.bad { (l.reason_kind) } br; (l.reason) }
                            td { (key_link(l.key.as_deref().unwrap_or(""))) }
                            td.num.wide { (l.attempts) " / " (l.deliveries) }
                            td.num.wide { (l.replays) }
                        }
                    }
                }
            } }
            @if letters.len() > 500 { p.muted { "The first 500 are shown; filter to see others." } }
        },
    )
}

pub fn letter(chrome: &Chrome<'_>, l: &KeptLetter) -> Markup {
    let q = LetterQuery { id: Some(l.id.clone()), ..Default::default() };
    page(
        chrome,
        Nav::DeadLetters,
        "Dead letter",
        html! {
            dl.facts #letter {
                dt { "Letter" } dd.mono { (l.id) }
                dt { "When" } dd { (l.at) }
                dt { "Source" } dd { (l.source) " over " (l.transport) ", " code { (l.subject) } }
                dt { "Operation" } dd { (l.op.as_deref().unwrap_or("–")) }
                dt { "Key" } dd { (key_link(l.key.as_deref().unwrap_or(""))) }
                dt { "licensePlate" } dd.mono { (l.license_plate.as_deref().unwrap_or("–")) }
                dt { "Reason" } dd { span.tag.bad { (l.reason_kind) } " " (l.reason) }
                dt { "Attempts, deliveries" } dd { (l.attempts) ", " (l.deliveries) }
                dt { "Replayed" } dd { (l.replays) " time(s)" }
            }
            (letter_actions(chrome, &q, 1))
            h2 { "Headers" }
            @if l.headers.is_empty() { p.muted { "None kept (credentials are never kept)." } }
            @else { table { tbody { @for (n, v) in &l.headers { tr { th.mono { (n) } td.mono { (v) } } } } } }
            h2 { "Body" @if l.encoding != "utf-8" { " (" (l.encoding) ")" } }
            pre #body { (pretty_body(&l.body)) }
        },
    )
}

/// A JSON body indented, anything else as it is.
fn pretty_body(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body).map_or_else(|_| body.to_owned(), |v| pretty(&v))
}

pub fn replayed(chrome: &Chrome<'_>, q: &LetterQuery, told: &serde_json::Value) -> Markup {
    let list = |name: &str| told.get(name).and_then(|v| v.as_array()).cloned().unwrap_or_default();
    let (replayed, skipped) = (list("replayed"), list("skipped"));
    let title = if q.dry_run { "Replay: dry run" } else { "Replayed" };
    page(
        chrome,
        Nav::DeadLetters,
        title,
        html! {
            @if q.dry_run {
                p #dry-run { (replayed.len()) " letter(s) would be replayed, each with its original licensePlate (SCWM does nothing twice)." }
                @if !replayed.is_empty() {
                    form method="post" action="/ui/dlq/replay" {
                        (csrf(chrome)) (hidden_filters(q))
                        @if let Some(limit) = q.limit { input type="hidden" name="limit" value=(limit); }
                        button #replay-now type="submit" { "Replay " (replayed.len()) " now" }
                    }
                }
            } @else {
                p #replayed { (replayed.len()) " replayed; a letter whose replay settled has left the store." }
            }
            table {
                thead { tr { th { "Letter" } th { "Outcome" } } }
                tbody {
                    @for r in &replayed {
                        tr {
                            td.mono { (r.get("id").and_then(|v| v.as_str()).unwrap_or("?")) }
                            td { @if q.dry_run { "would be replayed" } @else {
                                @if r.get("settled").and_then(serde_json::Value::as_bool) == Some(true) { span.ok { "settled" } } @else { span.warn { "not settled: still kept" } }
                                " " code { (r.get("outcomes").map(|o| o.to_string()).unwrap_or_default()) }
                            } }
                        }
                    }
                    @for s in &skipped {
                        tr { td.mono { (s.get("id").and_then(|v| v.as_str()).unwrap_or("?")) } td.warn { "skipped: " (s.get("why").and_then(|v| v.as_str()).unwrap_or("")) } }
                    }
                }
            }
            p { a href="/ui/dlq" { "Back to the dead letters" } }
        },
    )
}

pub fn purge_confirm(chrome: &Chrome<'_>, q: &LetterQuery, n: usize) -> Markup {
    page(
        chrome,
        Nav::DeadLetters,
        "Purge dead letters",
        html! {
            p { "Purge " (n) " dead letter(s)? They are forgotten for good; nothing is sent to SCWM." }
            div.actions {
                form method="post" action="/ui/dlq/purge" {
                    (csrf(chrome)) (hidden_filters(q))
                    input type="hidden" name="confirm" value="yes";
                    button.danger #confirm type="submit" { "Purge " (n) }
                }
                a href="/ui/dlq" { "Cancel" }
            }
        },
    )
}

/// The explain form's fields, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct ExplainForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub source: String,
    /// `Name: value` per line.
    #[serde(default)]
    pub headers: String,
    #[serde(default)]
    pub body: String,
}

pub fn explain(
    chrome: &Chrome<'_>,
    sources: &[String],
    form: &ExplainForm,
    result: Option<&Result<crate::intake::Explained, String>>,
) -> Markup {
    page(
        chrome,
        Nav::Explain,
        "Explain",
        html! {
            p.muted { "What a message would do, and why, without doing it: nothing is sent to SCWM or written." }
            form method="post" action="/ui/explain" {
                (csrf(chrome))
                div.filters {
                    label { "Source"
                        select name="source" {
                            @for s in sources { option value=(s) selected[form.source == *s] { (s) } }
                        }
                    }
                }
                label for="headers" { "Headers, " code { "Name: value" } " per line (the signature, if the source checks one)" }
                textarea #headers name="headers" rows="3" { (form.headers) }
                label for="body" { "Body, as the sender sends it" }
                textarea #body name="body" rows="12" { (form.body) }
                div.actions { button #explain type="submit" { "Explain" } }
            }
            @if let Some(result) = result {
                section #explained {
                    @match result {
                        Err(e) => p.notice.bad { (e) },
                        Ok(x) => {
                            p { "Verification: " span.ok[x.verification == "passed"].bad[x.verification != "passed"] { (x.verification) } }
                            @if x.events.is_empty() { p.notice { "The message carries no event a route takes." } }
                            @for e in &x.events {
                                section.panel.event {
                                    h2 { (e.alertname.as_deref().unwrap_or("event")) " " span.muted.mono { (e.key) } }
                                    dl.facts {
                                        dt { "Decision" } dd { span.tag.decision { (e.decision) } }
                                        dt { "Why" } dd { (e.reason) }
                                        @if let Some(r) = &e.route { dt { "Route" } dd { (r.name) @if !r.matchers.is_empty() { " (" (r.matchers.join(", ")) ")" } } }
                                        @if let Some(s) = e.status { dt { "Status" } dd { (s) } }
                                    }
                                    @for f in &e.template_fallbacks { p.notice.bad { "Template " code { (f.template) } " would fail (" (f.message) "); the built-in default stands in for " (f.part) "." } }
                                    @for r in &e.requests {
                                        h2 { (r.op.as_str()) " → " span.mono { (r.url) } }
                                        @if let Some(title) = r.envelope.payload.get("title").and_then(|t| t.as_str()) {
                                            p { "Title: " strong.title { (title) } }
                                        }
                                        pre { (pretty(&r.envelope)) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chrome() -> Chrome<'static> {
        Chrome { csrf: "c5rf", signed_in_with_form: true }
    }

    #[test]
    fn every_page_escapes_what_it_shows_and_carries_no_inline_script_or_style() {
        let hostile = "<script>alert(1)</script>\"'";
        let pages = [
            message(&chrome(), hostile, hostile, false).into_string(),
            forget_confirm(&chrome(), hostile, 3).into_string(),
            sign_in(Some(hostile), false, hostile).into_string(),
            purge_confirm(&chrome(), &LetterQuery { source: Some(hostile.into()), ..Default::default() }, 2)
                .into_string(),
        ];
        for html in &pages {
            assert!(!html.contains("<script>alert"), "{html}");
            assert!(html.contains("&lt;script&gt;"), "{html}");
            assert!(!html.contains("style="), "{html}");
            assert!(!html.contains("onclick") && !html.contains("javascript:"), "{html}");
            // The only script is the console's own file.
            assert_eq!(html.matches("<script").count(), 1, "{html}");
        }
    }

    #[test]
    fn every_action_form_carries_the_csrf_token() {
        let q = LetterQuery { reason: Some("decode".into()), ..Default::default() };
        for html in [
            forget_confirm(&chrome(), "k", 1).into_string(),
            purge_confirm(&chrome(), &q, 1).into_string(),
            explain(&chrome(), &["am".into()], &ExplainForm::default(), None).into_string(),
        ] {
            let posts = html.matches("method=\"post\"").count();
            assert!(posts > 0);
            assert_eq!(html.matches("name=\"csrf\" value=\"c5rf\"").count(), posts, "{html}");
        }
    }

    #[test]
    fn urlencode_leaves_only_unreserved_characters() {
        assert_eq!(urlencode("am/a b&c=d"), "am%2Fa%20b%26c%3Dd");
        assert_eq!(urlencode("ключ"), "%D0%BA%D0%BB%D1%8E%D1%87");
    }
}
