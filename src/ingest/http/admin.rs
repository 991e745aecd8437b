//! The admin API, for people and scripts (`incident-bridge explain|store --url`): `POST
//! /v1/explain/{source}`, what a message would do and why; `GET /v1/store/keys`, `GET` and
//! `DELETE /v1/store/key?key=...`, what the correlation store holds. Refused with 404 unless
//! `[admin]` is configured, with 401 unless the request passes its `auth` entries. Explain never
//! acts: it is a dry run through the same intake and pipeline (no SCWM call, no store or
//! replay-cache write); forget is the one write, a compare-and-swap on the revision shown.
//!
//! The request names the message as the sender would send it: `{"headers": {"name": "value",
//! ...}, "body": "<the raw body>"}` (`body` may also be a JSON object, sent compact). The
//! message's own `Authorization` header thus stays apart from the admin's.

use std::{sync::Arc, time::SystemTime};

use axum::{
    body::Body,
    extract::{Path, Query, State},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde::Deserialize;

use super::{HttpState, body, problem::Problem, status};
use crate::{
    pipeline::{
        Outcome,
        inspect::{Filter, InspectError},
    },
    publish::kept::{Kept, KeptLetter},
    sources::SourceKind,
};

/// What to explain: the message as its sender would send it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainRequest {
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: serde_json::Value,
}

impl ExplainRequest {
    /// The raw body: a string as it is, anything else as compact JSON.
    pub fn body_bytes(&self) -> Bytes {
        match &self.body {
            serde_json::Value::String(s) => Bytes::from(s.clone().into_bytes()),
            other => Bytes::from(other.to_string().into_bytes()),
        }
    }
}

/// The refusal, when the request may not use the admin API: 404 while it is off, 401 unless
/// the request passes `[admin] auth`.
fn refusal(state: &HttpState, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    let Some(admin) = &state.admin else {
        return Some(
            Problem::new(StatusCode::NOT_FOUND, "admin-not-configured", "Not found")
                .detail("the admin API is off: configure [admin] auth to use it")
                .into_response(),
        );
    };
    // Nothing is remembered against replays: the same query may come again.
    admin
        .verify_dry(headers, body.clone(), SystemTime::now())
        .is_err()
        .then(|| Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", "Unauthorized").into_response())
}

/// A request that may use the admin API: taking one as a handler argument checks it first
/// (queries without a body; explain checks its body itself).
pub struct Admitted;

impl axum::extract::FromRequestParts<HttpState> for Admitted {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &HttpState,
    ) -> Result<Self, Response> {
        match refusal(state, &parts.headers, &Bytes::new()) {
            Some(refused) => Err(refused),
            None => Ok(Admitted),
        }
    }
}

pub(super) fn invalid(title: &'static str, detail: impl Into<String>) -> Response {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request", title).detail(detail).into_response()
}

fn json_answer(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_string_pretty(value).expect("an answer serialises");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

pub(super) fn inspect_problem(e: InspectError) -> Response {
    let (status, kind) = match &e {
        InspectError::NoStore | InspectError::NotFound(_) => (StatusCode::NOT_FOUND, "not-found"),
        InspectError::Changed(_) => (StatusCode::CONFLICT, "changed"),
        InspectError::Store(s) if s.is_retryable() => (StatusCode::SERVICE_UNAVAILABLE, "store-unavailable"),
        InspectError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store-error"),
    };
    Problem::new(status, kind, "Store").detail(e.to_string()).into_response()
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    prefix: Option<String>,
    state: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/store/keys?prefix=&state=open|closed|none|pending&after=&limit=100`.
pub async fn store_list(State(state): State<HttpState>, _: Admitted, Query(q): Query<ListQuery>) -> Response {
    let filter = Filter {
        prefix: q.prefix,
        state: q.state,
        after: q.after,
        limit: q.limit.unwrap_or(100).min(10_000),
    };
    match state.intake.runner().pipeline().store_list(&filter).await {
        Ok(page) => json_answer(StatusCode::OK, &page),
        Err(e) => inspect_problem(e),
    }
}

#[derive(Debug, Deserialize)]
pub struct KeyQuery {
    key: String,
    revision: Option<u64>,
}

/// `GET /v1/store/key?key=...`: the record and its revision.
pub async fn store_get(State(state): State<HttpState>, _: Admitted, Query(q): Query<KeyQuery>) -> Response {
    match state.intake.runner().pipeline().store_get(&q.key).await {
        Ok(record) => json_answer(StatusCode::OK, &record),
        Err(e) => inspect_problem(e),
    }
}

/// `DELETE /v1/store/key?key=...&revision=N`: forget the key if it still has that revision.
pub async fn store_forget(
    State(state): State<HttpState>,
    _: Admitted,
    Query(q): Query<KeyQuery>,
) -> Response {
    let Some(revision) = q.revision else {
        return invalid(
            "Revision required",
            "name the revision a get showed (`revision=N`), so nothing newer is forgotten",
        );
    };
    match state.intake.runner().pipeline().store_forget(&q.key, revision).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => inspect_problem(e),
    }
}

pub async fn explain(
    State(state): State<HttpState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // Off: refused before the body is read.
    if state.admin.is_none()
        && let Some(refused) = refusal(&state, &headers, &Bytes::new())
    {
        return refused;
    }
    let bytes = match body::read_json(&headers, body, state.body_limit, state.body_read_timeout).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    if let Some(refused) = refusal(&state, &headers, &bytes) {
        return refused;
    }
    let request: ExplainRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return invalid(
                "Invalid explain request",
                format!("expected {{\"headers\": {{...}}, \"body\": ...}}: {e}"),
            );
        }
    };
    let Some(spec) =
        state.intake.sources().get(&name).filter(|s| s.kind != SourceKind::Native).map(Arc::clone)
    else {
        return Problem::new(StatusCode::NOT_FOUND, "unknown-source", "Unknown source")
            .detail(format!("no webhook source named `{name}`"))
            .into_response();
    };
    let sent = match crate::headers::to_http_headers(
        request.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    ) {
        Ok(h) => h,
        Err(e) => {
            return invalid("Invalid explain request", format!("a header is not valid HTTP: {e}"));
        }
    };
    let message = super::explain_inbound(&spec.name, &sent, request.body_bytes());
    match state.intake.explain(&spec, message, &sent).await {
        Ok(explained) => json_answer(StatusCode::OK, &explained),
        Err(e) => Problem::new(status::of_decode(&e), "invalid-payload", "The sender would be refused")
            .detail(e.to_string())
            .into_response(),
    }
}

/// Which kept dead letters a dlq call is about.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LetterQuery {
    pub id: Option<String>,
    pub source: Option<String>,
    pub op: Option<String>,
    pub reason: Option<String>,
    pub key: Option<String>,
    /// RFC 3339, or a duration back from now (`"12h"`).
    pub since: Option<String>,
    /// At most this many (list, replay).
    pub limit: Option<usize>,
    /// Replay: say what would be replayed, replay nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Purge: with no other filter, every letter.
    #[serde(default)]
    pub all: bool,
}

impl LetterQuery {
    /// Empty filters (a form's blank fields) are no filters.
    pub fn without_blanks(mut self) -> Self {
        for f in
            [&mut self.id, &mut self.source, &mut self.op, &mut self.reason, &mut self.key, &mut self.since]
        {
            if f.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *f = None;
            }
        }
        self
    }

    pub fn filters_anything(&self) -> bool {
        self.id.is_some()
            || self.source.is_some()
            || self.op.is_some()
            || self.reason.is_some()
            || self.key.is_some()
            || self.since.is_some()
    }

    fn since(&self) -> Result<Option<String>, String> {
        let Some(text) = &self.since else { return Ok(None) };
        let at = match humantime::parse_rfc3339_weak(text) {
            Ok(t) => t,
            Err(_) => {
                let ago = humantime::parse_duration(text)
                    .map_err(|_| format!("`since={text}`: neither an RFC 3339 time nor a duration"))?;
                SystemTime::now() - ago
            }
        };
        Ok(Some(humantime::format_rfc3339_millis(at).to_string()))
    }

    fn matches(&self, l: &KeptLetter, since: Option<&str>) -> bool {
        let is = |want: &Option<String>, have: Option<&str>| want.as_deref().is_none_or(|w| have == Some(w));
        is(&self.id, Some(&l.id))
            && is(&self.source, Some(&l.source))
            && is(&self.op, l.op.as_deref())
            && is(&self.reason, Some(&l.reason_kind))
            && is(&self.key, l.key.as_deref())
            && since.is_none_or(|s| l.at.as_str() >= s)
    }
}

/// The kept letters a query selects, newest first; or the answer to give instead.
pub(super) async fn selected(
    state: &HttpState,
    q: &LetterQuery,
) -> Result<(Kept, Vec<KeptLetter>), Response> {
    let Some(kept) = state.intake.runner().pipeline().publisher().kept().cloned() else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "no-dead-letter-store", "No dead letters kept")
            .detail("results.keep_dead_letters is 0: no dead letters are kept")
            .into_response());
    };
    let since = q.since().map_err(|e| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid query")
            .detail(e)
            .into_response()
    })?;
    let all = kept.all().await.map_err(|e| inspect_problem(InspectError::Store(e)))?;
    let chosen = all.into_iter().filter(|l| q.matches(l, since.as_deref())).collect();
    Ok((kept, chosen))
}

/// What a listing shows of a letter: everything but the body and headers (`show` has them).
fn summary(l: &KeptLetter) -> serde_json::Value {
    let mut v = serde_json::to_value(l).expect("a kept letter serialises");
    if let Some(o) = v.as_object_mut() {
        o.remove("body");
        o.remove("headers");
        o.remove("encoding");
    }
    v
}

/// `GET /v1/dlq?source=&op=&reason=&key=&since=&limit=`.
pub async fn dlq_list(State(state): State<HttpState>, _: Admitted, Query(q): Query<LetterQuery>) -> Response {
    let (_, letters) = match selected(&state, &q).await {
        Ok(s) => s,
        Err(answer) => return answer,
    };
    let total = letters.len();
    let shown: Vec<_> = letters.iter().take(q.limit.unwrap_or(100)).map(summary).collect();
    json_answer(StatusCode::OK, &serde_json::json!({"total": total, "letters": shown}))
}

/// `GET /v1/dlq/letter?id=`: the whole letter, original message included.
pub async fn dlq_show(State(state): State<HttpState>, _: Admitted, Query(q): Query<LetterQuery>) -> Response {
    if q.id.is_none() {
        return invalid("id required", "name the letter: `id=dl-...`");
    }
    match selected(&state, &q).await {
        Ok((_, letters)) => match letters.first() {
            Some(l) => json_answer(StatusCode::OK, l),
            None => inspect_problem(InspectError::NotFound(q.id.clone().unwrap_or_default())),
        },
        Err(answer) => answer,
    }
}

/// `POST /v1/dlq/replay?id=|filters&limit=&dry_run=true`: each selected letter through the
/// pipeline again, with its original licensePlate; a letter that succeeds leaves the store.
pub async fn dlq_replay(
    State(state): State<HttpState>,
    _: Admitted,
    Query(q): Query<LetterQuery>,
) -> Response {
    match replay(&state, &q).await {
        Ok(told) => json_answer(StatusCode::OK, &told),
        Err(answer) => answer,
    }
}

/// Replays (or, dry, names) the letters `q` selects: `{"replayed": [...], "skipped": [...]}`.
pub(super) async fn replay(state: &HttpState, q: &LetterQuery) -> Result<serde_json::Value, Response> {
    if !q.filters_anything() {
        return Err(invalid("Say which letters", "name an id or a filter (source, op, reason, key, since)"));
    }
    let (kept, letters) = selected(state, q).await?;
    let mut replayed = Vec::new();
    let mut skipped = Vec::new();
    for mut letter in letters.into_iter().take(q.limit.unwrap_or(100)) {
        if letter.replays >= state.max_replays {
            skipped.push(serde_json::json!({"id": letter.id, "why": format!("replayed {} times already (results.max_replays)", letter.replays)}));
            continue;
        }
        if q.dry_run {
            replayed.push(serde_json::json!({"id": letter.id, "outcome": "dry_run", "op": letter.op, "key": letter.key}));
            continue;
        }
        letter.replays += 1;
        if let Err(e) = kept.put(&letter).await {
            skipped.push(serde_json::json!({"id": letter.id, "why": e.to_string()}));
            continue;
        }
        match state.intake.replay(&letter, state.sync_timeout).await {
            Ok(outcomes) => {
                let settled =
                    outcomes.iter().all(|o| matches!(o, Outcome::Done(_) | Outcome::Duplicate { .. }));
                if settled {
                    let _ = kept.remove(&letter.id).await;
                }
                let told: Vec<_> = outcomes.iter().map(status::summary).collect();
                replayed.push(serde_json::json!({"id": letter.id, "settled": settled, "outcomes": told}));
            }
            Err(why) => skipped.push(serde_json::json!({"id": letter.id, "why": why})),
        }
    }
    Ok(serde_json::json!({"replayed": replayed, "skipped": skipped}))
}

/// `DELETE /v1/dlq?id=|filters` (or `all=true`): forget the selected letters.
pub async fn dlq_purge(
    State(state): State<HttpState>,
    _: Admitted,
    Query(q): Query<LetterQuery>,
) -> Response {
    match purge(&state, &q).await {
        Ok(purged) => json_answer(StatusCode::OK, &serde_json::json!({"purged": purged})),
        Err(answer) => answer,
    }
}

/// Forgets the letters `q` selects; how many were.
pub(super) async fn purge(state: &HttpState, q: &LetterQuery) -> Result<usize, Response> {
    if !q.filters_anything() && !q.all {
        return Err(invalid("Say which letters", "name an id or a filter, or all=true for every letter"));
    }
    let (kept, letters) = selected(state, q).await?;
    let mut purged = 0;
    for l in &letters {
        if kept.remove(&l.id).await.is_ok() {
            purged += 1;
        }
    }
    Ok(purged)
}

/// `GET /v1/decisions?source=&decision=&outcome=&key=&text=&limit=100`: the newest decisions
/// this replica kept (`[admin] recent_decisions`), newest first.
pub async fn decisions(
    State(state): State<HttpState>,
    _: Admitted,
    Query(q): Query<DecisionQuery>,
) -> Response {
    let journal = state.intake.runner().pipeline().journal();
    let entries = journal.select(&q.into_query(100));
    let entries: Vec<&crate::pipeline::journal::Entry> = entries.iter().map(|e| &**e).collect();
    json_answer(StatusCode::OK, &serde_json::json!({"kept": journal.len(), "decisions": entries}))
}

/// Which decisions to show.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DecisionQuery {
    pub source: Option<String>,
    pub decision: Option<String>,
    pub outcome: Option<String>,
    pub key: Option<String>,
    pub text: Option<String>,
    pub limit: Option<usize>,
}

impl DecisionQuery {
    pub fn into_query(self, default_limit: usize) -> crate::pipeline::journal::Query {
        crate::pipeline::journal::Query {
            source: self.source,
            decision: self.decision,
            outcome: self.outcome,
            key: self.key,
            text: self.text,
            limit: self.limit.unwrap_or(default_limit).min(10_000),
        }
    }
}
