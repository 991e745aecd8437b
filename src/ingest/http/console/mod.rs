//! The console: the admin API's pages for the people on call, at `/ui` on the bridge's listener.
//! Overview, decisions, keys, dead letters, explain, server-rendered; every asset is compiled
//! into the binary.
//!
//! It owns signing in, protecting every action, and the pages' security headers; what it shows
//! and does goes through the same calls as the admin API (the journal, the store inspection,
//! the kept dead letters, explain), and it decides nothing about incidents itself.
//!
//! - **Who**: exactly who may use the admin API (`[admin] auth`). A browser without credentials
//!   gets 401 with the sign-in page and a `WWW-Authenticate` challenge (Basic, so a browser asks
//!   by itself, when the admin auth is `basic`). A bearer token typed into the sign-in form is
//!   kept in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/ui` and checked on every request
//!   like an `Authorization` header: no server-side session, so every replica behind a Service
//!   knows it, and a rotated token ends it.
//! - **Actions** (forget, replay, purge, explain, sign out) are POSTs that must carry the page's
//!   CSRF token, an HMAC of the request's credential (unguessable without it, the same on every
//!   replica), and must not come from another site (`Sec-Fetch-Site`, `Origin`).
//! - **Headers**: a Content-Security-Policy allowing only this origin's script and stylesheet
//!   (no inline script or style), no framing, no referrer to other sites, no caching of pages.

mod chart;
mod pages;

use std::{sync::Arc, time::SystemTime};

use axum::{
    Form, Router,
    extract::{Query, State, rejection::FormRejection},
    middleware,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use base64::Engine;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;

use super::{
    HttpState,
    admin::{self, DecisionQuery, LetterQuery},
    problem::Problem,
};
use crate::{pipeline::inspect::Filter, sources::SourceKind};

/// The console's own settings (`[admin]`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// A link for trace ids, `{trace_id}` standing for the id.
    pub trace_url: Option<String>,
}

const COOKIE: &str = "ib_console";
/// How long a sign-in lasts: a night's shift.
const SIGN_IN_SECONDS: u32 = 12 * 3600;
/// What the CSRF token is an HMAC of, under the credential as the key.
const CSRF_PURPOSE: &[u8] = b"incident-bridge console csrf v1";

pub fn router() -> Router<HttpState> {
    Router::new()
        .route("/", get(overview))
        .route("/decisions", get(decisions))
        .route("/decisions/rows", get(decision_rows))
        .route("/keys", get(keys))
        .route("/key", get(key))
        .route("/key/forget", get(forget_confirm).post(forget))
        .route("/dlq", get(dlq))
        .route("/dlq/letter", get(letter))
        .route("/dlq/replay", post(replay))
        .route("/dlq/purge", post(purge))
        .route("/explain", get(explain_form).post(explain))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .layer(middleware::map_response(secure))
}

/// The security headers every console answer carries.
async fn secure(mut resp: Response) -> Response {
    let h = resp.headers_mut();
    let set = |h: &mut HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
         form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-frame-options", "DENY");
    set(h, "x-content-type-options", "nosniff");
    // Not `no-referrer`: with it, a browser sends `Origin: null` on the console's own forms.
    set(h, "referrer-policy", "same-origin");
    set(h, "cross-origin-opener-policy", "same-origin");
    set(h, "cross-origin-resource-policy", "same-origin");
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    resp
}

fn off() -> Response {
    Problem::new(StatusCode::NOT_FOUND, "console-off", "Not found")
        .detail("the console is off: configure [admin] auth (and leave [admin] console on) to use it")
        .into_response()
}

/// The admin auth, when the console is on.
fn admin_auth(state: &HttpState) -> Option<&Arc<crate::verify::SourceAuth>> {
    state.console.as_ref().and(state.admin.as_ref())
}

/// A request that may use the console, with the CSRF token its forms carry.
pub struct Viewer {
    csrf: String,
    /// Signed in with the form (so signing out means something).
    cookie: bool,
}

impl axum::extract::FromRequestParts<HttpState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        state: &HttpState,
    ) -> Result<Self, Response> {
        let Some(auth) = admin_auth(state) else { return Err(off()) };
        match credential(auth, &parts.headers) {
            Some((credential, cookie)) => Ok(Viewer { csrf: csrf_token(&credential), cookie }),
            None => {
                // The whole path: this router is nested under `/ui`, which `uri` no longer has.
                let uri = parts.extensions.get::<axum::extract::OriginalUri>().map_or(&parts.uri, |o| &o.0);
                let next = console_path(uri.path_and_query().map_or("/ui", |p| p.as_str())).to_owned();
                Err(sign_in_page(auth, StatusCode::UNAUTHORIZED, None, &next))
            }
        }
    }
}

/// The request's credential, when it passes the admin auth: its `Authorization` header, else
/// the signed-in token of its cookie (and whether it came from the cookie).
fn credential(auth: &crate::verify::SourceAuth, headers: &HeaderMap) -> Option<(String, bool)> {
    let (credential, cookie) = match headers.get(header::AUTHORIZATION) {
        Some(v) => (v.to_str().ok()?.to_owned(), false),
        None => (format!("Bearer {}", cookie_token(headers)?), true),
    };
    passes(auth, &credential).then_some((credential, cookie))
}

fn passes(auth: &crate::verify::SourceAuth, credential: &str) -> bool {
    let probe = [("authorization", credential)];
    auth.verify_dry(&probe[..], Bytes::new(), SystemTime::now()).is_ok()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    let value = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(value).ok()?;
    String::from_utf8(bytes).ok()
}

fn csrf_token(credential: &str) -> String {
    use hmac::{KeyInit, Mac};
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(credential.as_bytes()).expect("HMAC takes any key");
    mac.update(CSRF_PURPOSE);
    mac.finalize().into_bytes()[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether a POST comes from another site: the browser says so (`Sec-Fetch-Site`), or its
/// `Origin` is not this host.
fn cross_site(headers: &HeaderMap) -> bool {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("?"));
    if let Some(site) = headers.get("sec-fetch-site").map(|v| v.to_str().unwrap_or("?"))
        && !matches!(site, "same-origin" | "none")
    {
        return true;
    }
    match (text(header::ORIGIN), text(header::HOST)) {
        (Some(origin), Some(host)) => {
            origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) != Some(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

fn refused(detail: &'static str) -> Response {
    Problem::new(StatusCode::FORBIDDEN, "cross-site-request", "Refused").detail(detail).into_response()
}

impl Viewer {
    /// An action is this viewer's own: same site, and the form's token is the page's.
    #[allow(clippy::result_large_err)] // The error is the answer itself, given at once.
    fn acting(&self, headers: &HeaderMap, csrf: &str) -> Result<(), Response> {
        if cross_site(headers) {
            return Err(refused("the request came from another site"));
        }
        let same = self.csrf.len() == csrf.len()
            && self.csrf.bytes().zip(csrf.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
        if same { Ok(()) } else { Err(refused("the form's CSRF token is missing or not this session's")) }
    }
}

/// What an action's form carries besides its fields.
trait WithCsrf {
    fn csrf(&self) -> &str;
}

macro_rules! with_csrf {
    ($($form:ty),*) => {$(impl WithCsrf for $form { fn csrf(&self) -> &str { &self.csrf } })*};
}
with_csrf!(CsrfOnly, ForgetForm, LetterForm, pages::ExplainForm);

/// An action's form, once it may be taken: parsed (else 422), from this site and carrying the
/// page's token (else 403).
#[allow(clippy::result_large_err)] // The error is the answer itself, given at once.
fn action<T: WithCsrf>(
    viewer: &Viewer,
    headers: &HeaderMap,
    form: Result<Form<T>, FormRejection>,
) -> Result<T, Response> {
    let Form(form) = form.map_err(bad_form)?;
    viewer.acting(headers, form.csrf())?;
    Ok(form)
}

/// A form that did not parse, as problem+json.
fn bad_form(e: FormRejection) -> Response {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid-request", "Invalid form")
        .detail(e.body_text())
        .into_response()
}

fn sign_in_page(
    auth: &crate::verify::SourceAuth,
    status: StatusCode,
    message: Option<&str>,
    next: &str,
) -> Response {
    let basic = auth.scheme_names().contains(&"basic");
    let challenge = if basic {
        r#"Basic realm="incident-bridge console", charset="UTF-8""#
    } else {
        r#"Bearer realm="incident-bridge console""#
    };
    let mut resp = (status, pages::sign_in(message, basic, next)).into_response();
    resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
    resp
}

/// Where to go after signing in: a console page, nothing else (no open redirect).
fn console_path(next: &str) -> &str {
    if next.starts_with("/ui") && !next.starts_with("//") && !next.contains("://") { next } else { "/ui" }
}

async fn login_form(State(state): State<HttpState>, Query(q): Query<NextQuery>) -> Response {
    let Some(auth) = admin_auth(&state) else { return off() };
    sign_in_page(auth, StatusCode::OK, None, console_path(q.next.as_deref().unwrap_or("/ui")))
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct SignIn {
    token: String,
    #[serde(default)]
    next: String,
}

async fn login(
    State(state): State<HttpState>,
    headers: HeaderMap,
    form: Result<Form<SignIn>, FormRejection>,
) -> Response {
    let Some(auth) = admin_auth(&state) else { return off() };
    // Signing someone in to an attacker's account is an attack too.
    if cross_site(&headers) {
        return refused("the request came from another site");
    }
    let Form(form) = match form {
        Ok(f) => f,
        Err(e) => return bad_form(e),
    };
    let token = form.token.trim();
    let next = console_path(&form.next);
    if token.is_empty() || !passes(auth, &format!("Bearer {token}")) {
        tracing::info!("a console sign-in was refused");
        return sign_in_page(auth, StatusCode::UNAUTHORIZED, Some("That token is not accepted."), next);
    }
    let secure = headers.get("x-forwarded-proto").is_some_and(|p| p.as_bytes() == b"https");
    let cookie = format!(
        "{COOKIE}={}; Path=/ui; Max-Age={SIGN_IN_SECONDS}; HttpOnly; SameSite=Strict{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token),
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Redirect::to(next).into_response();
    if let Ok(v) = HeaderValue::try_from(cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

#[derive(Debug, Deserialize)]
struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

async fn logout(viewer: Viewer, headers: HeaderMap, form: Result<Form<CsrfOnly>, FormRejection>) -> Response {
    if let Err(refusal) = action(&viewer, &headers, form) {
        return refusal;
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("ib_console=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict"),
    );
    resp
}

async fn css(State(state): State<HttpState>) -> Response {
    asset(&state, "text/css; charset=utf-8", include_str!("assets/console.css"))
}

async fn js(State(state): State<HttpState>) -> Response {
    asset(&state, "text/javascript; charset=utf-8", include_str!("assets/console.js"))
}

fn asset(state: &HttpState, content_type: &'static str, body: &'static str) -> Response {
    if admin_auth(state).is_none() {
        return off();
    }
    // The same for everyone and compiled in: no credential needed (the sign-in page uses it).
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=3600")], body)
        .into_response()
}

fn chrome(viewer: &Viewer) -> pages::Chrome<'_> {
    pages::Chrome { csrf: &viewer.csrf, signed_in_with_form: viewer.cookie }
}

async fn overview(State(state): State<HttpState>, viewer: Viewer) -> Response {
    let runner = state.intake.runner();
    let pipeline = runner.pipeline();
    let kept = match pipeline.publisher().kept() {
        Some(kept) => kept.all().await.map(|l| l.len()).map_err(|e| e.to_string()),
        None => Err("not kept (results.keep_dead_letters = 0)".to_owned()),
    };
    let view = pages::OverviewView {
        hour: pipeline.journal().hour(SystemTime::now()),
        scwm: pipeline.scwm().health(),
        queue: (runner.depth(), runner.capacity()),
        outbox: pipeline.publisher().relay().map(|r| r.depth()),
        components: state.health.components(),
        draining: state.health.is_draining(),
        dead_letters: kept,
    };
    pages::overview(&chrome(&viewer), &view).into_response()
}

fn trace_url(state: &HttpState) -> Option<&str> {
    state.console.as_ref().and_then(|c| c.trace_url.as_deref())
}

async fn decisions(
    State(state): State<HttpState>,
    viewer: Viewer,
    Query(q): Query<DecisionQuery>,
) -> Response {
    let journal = state.intake.runner().pipeline().journal();
    let entries = journal.select(&q.clone().into_query(200));
    let (sources, kinds) = journal.names();
    let view = pages::DecisionsView {
        entries: &entries,
        kept: journal.len(),
        capacity: journal.capacity(),
        query: &q,
        sources: &sources,
        decisions: &kinds,
        trace_url: trace_url(&state),
    };
    pages::decisions(&chrome(&viewer), &view).into_response()
}

/// The rows of the decisions table alone, for the page's live refresh.
async fn decision_rows(
    State(state): State<HttpState>,
    _: Viewer,
    Query(q): Query<DecisionQuery>,
) -> Response {
    let entries = state.intake.runner().pipeline().journal().select(&q.into_query(200));
    pages::decision_rows(&entries, trace_url(&state)).into_response()
}

#[derive(Debug, Deserialize)]
struct KeysQuery {
    prefix: Option<String>,
    state: Option<String>,
    after: Option<String>,
}

async fn keys(State(state): State<HttpState>, viewer: Viewer, Query(q): Query<KeysQuery>) -> Response {
    let blank = |v: Option<String>| v.filter(|s| !s.trim().is_empty());
    let filter = Filter { prefix: blank(q.prefix), state: blank(q.state), after: blank(q.after), limit: 100 };
    let page = state.intake.runner().pipeline().store_list(&filter).await.map_err(|e| e.to_string());
    pages::keys(&chrome(&viewer), &filter, &page).into_response()
}

#[derive(Debug, Deserialize)]
struct KeyQuery {
    key: String,
    #[serde(default)]
    read: bool,
}

async fn key(State(state): State<HttpState>, viewer: Viewer, Query(q): Query<KeyQuery>) -> Response {
    let pipeline = state.intake.runner().pipeline();
    let record = pipeline.store_get(&q.key).await;
    let incident = match (&record, q.read) {
        (Ok(r), true) => match r.record.stored.as_ref() {
            Some(stored) => Some(pipeline.read_incident(stored.item_id.as_str()).await),
            None => Some(Err("the key maps to no incident".to_owned())),
        },
        _ => None,
    };
    let recent = pipeline.journal().select(&crate::pipeline::journal::Query {
        key: Some(q.key.clone()),
        limit: 20,
        ..Default::default()
    });
    let view = pages::KeyView {
        key: &q.key,
        record: record.as_ref().map_err(ToString::to_string),
        recent: &recent,
        incident: incident.as_ref(),
        trace_url: trace_url(&state),
    };
    pages::key(&chrome(&viewer), &view).into_response()
}

#[derive(Debug, Deserialize)]
struct ForgetQuery {
    key: String,
    revision: u64,
}

async fn forget_confirm(viewer: Viewer, Query(q): Query<ForgetQuery>) -> Response {
    pages::forget_confirm(&chrome(&viewer), &q.key, q.revision).into_response()
}

#[derive(Debug, Deserialize)]
struct ForgetForm {
    #[serde(default)]
    csrf: String,
    key: String,
    revision: u64,
}

async fn forget(
    State(state): State<HttpState>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Result<Form<ForgetForm>, FormRejection>,
) -> Response {
    let form = match action(&viewer, &headers, form) {
        Ok(f) => f,
        Err(refusal) => return refusal,
    };
    let done = state.intake.runner().pipeline().store_forget(&form.key, form.revision).await;
    let (status, text) = match done {
        Ok(()) => (
            StatusCode::OK,
            format!(
                "`{}` is forgotten. The next firing of its alert opens a new incident; SCWM's incident was not touched.",
                form.key
            ),
        ),
        Err(e) => (StatusCode::CONFLICT, format!("`{}` was not forgotten: {e}", form.key)),
    };
    (status, pages::message(&chrome(&viewer), "Forget a key", &text, status.is_success())).into_response()
}

async fn dlq(State(state): State<HttpState>, viewer: Viewer, Query(q): Query<LetterQuery>) -> Response {
    let q = q.without_blanks();
    let letters = admin::selected(&state, &q).await.map(|(_, l)| l);
    match letters {
        Ok(letters) => pages::dead_letters(&chrome(&viewer), &q, &letters).into_response(),
        Err(answer) => answer,
    }
}

async fn letter(State(state): State<HttpState>, viewer: Viewer, Query(q): Query<LetterQuery>) -> Response {
    let q = q.without_blanks();
    if q.id.is_none() {
        return admin::invalid("id required", "name the letter: `id=dl-...`");
    }
    match admin::selected(&state, &q).await {
        Ok((_, letters)) => match letters.first() {
            Some(l) => pages::letter(&chrome(&viewer), l).into_response(),
            None => (
                StatusCode::NOT_FOUND,
                pages::message(
                    &chrome(&viewer),
                    "Dead letter",
                    "No such letter: replayed, purged or never kept.",
                    false,
                ),
            )
                .into_response(),
        },
        Err(answer) => answer,
    }
}

/// A replay or purge form: the filters of the page it came from, as text (a form's fields are
/// all text; `serde(flatten)` would not read numbers from them).
#[derive(Debug, Deserialize)]
struct LetterForm {
    #[serde(default)]
    csrf: String,
    id: Option<String>,
    source: Option<String>,
    op: Option<String>,
    reason: Option<String>,
    key: Option<String>,
    since: Option<String>,
    limit: Option<String>,
    dry_run: Option<String>,
    /// Purge: the person confirmed.
    confirm: Option<String>,
}

impl LetterForm {
    fn query(&self) -> LetterQuery {
        let yes = |v: &Option<String>| v.as_deref().is_some_and(|v| matches!(v, "true" | "on" | "1" | "yes"));
        LetterQuery {
            id: self.id.clone(),
            source: self.source.clone(),
            op: self.op.clone(),
            reason: self.reason.clone(),
            key: self.key.clone(),
            since: self.since.clone(),
            limit: self.limit.as_deref().and_then(|l| l.trim().parse().ok()),
            dry_run: yes(&self.dry_run),
            all: false,
        }
        .without_blanks()
    }

    fn confirmed(&self) -> bool {
        self.confirm.as_deref() == Some("yes")
    }
}

async fn replay(
    State(state): State<HttpState>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Result<Form<LetterForm>, FormRejection>,
) -> Response {
    let form = match action(&viewer, &headers, form) {
        Ok(f) => f,
        Err(refusal) => return refusal,
    };
    let q = form.query();
    match admin::replay(&state, &q).await {
        Ok(told) => pages::replayed(&chrome(&viewer), &q, &told).into_response(),
        Err(answer) => answer,
    }
}

async fn purge(
    State(state): State<HttpState>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Result<Form<LetterForm>, FormRejection>,
) -> Response {
    let form = match action(&viewer, &headers, form) {
        Ok(f) => f,
        Err(refusal) => return refusal,
    };
    let q = form.query();
    if !form.confirmed() {
        return match admin::selected(&state, &q).await {
            Ok((_, letters)) => pages::purge_confirm(&chrome(&viewer), &q, letters.len()).into_response(),
            Err(answer) => answer,
        };
    }
    match admin::purge(&state, &q).await {
        Ok(n) => pages::message(&chrome(&viewer), "Purge", &format!("{n} dead letter(s) purged."), true)
            .into_response(),
        Err(answer) => answer,
    }
}

fn webhook_sources(state: &HttpState) -> Vec<String> {
    state.intake.sources().iter().filter(|s| s.kind != SourceKind::Native).map(|s| s.name.clone()).collect()
}

async fn explain_form(State(state): State<HttpState>, viewer: Viewer) -> Response {
    let form = pages::ExplainForm::default();
    pages::explain(&chrome(&viewer), &webhook_sources(&state), &form, None).into_response()
}

async fn explain(
    State(state): State<HttpState>,
    viewer: Viewer,
    headers: HeaderMap,
    form: Result<Form<pages::ExplainForm>, FormRejection>,
) -> Response {
    let form = match action(&viewer, &headers, form) {
        Ok(f) => f,
        Err(refusal) => return refusal,
    };
    let sources = webhook_sources(&state);
    let result = explained(&state, &form).await;
    pages::explain(&chrome(&viewer), &sources, &form, Some(&result)).into_response()
}

/// What the message in the form would do, or why it cannot be explained.
async fn explained(state: &HttpState, form: &pages::ExplainForm) -> Result<crate::intake::Explained, String> {
    let spec = state
        .intake
        .sources()
        .get(&form.source)
        .filter(|s| s.kind != SourceKind::Native)
        .map(Arc::clone)
        .ok_or_else(|| format!("no webhook source named `{}`", form.source))?;
    let mut pairs = Vec::new();
    for line in form.headers.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (name, value) =
            line.split_once(':').ok_or_else(|| format!("`{line}` is not a header: write `Name: value`"))?;
        pairs.push((name.trim(), value.trim()));
    }
    let sent =
        crate::headers::to_http_headers(pairs).map_err(|e| format!("a header is not valid HTTP: {e}"))?;
    let message = super::explain_inbound(&spec.name, &sent, Bytes::from(form.body.clone().into_bytes()));
    state
        .intake
        .explain(&spec, message, &sent)
        .await
        .map_err(|e| format!("the sender would be refused ({}): {e}", super::status::of_decode(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs.iter().map(|(n, v)| (header::HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
    }

    #[test]
    fn a_post_from_another_site_or_origin_is_cross_site() {
        assert!(!cross_site(&headers(&[("host", "bridge:8080")])), "no browser hints: a script, same site");
        assert!(!cross_site(&headers(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://bridge:8080"),
            ("host", "bridge:8080")
        ])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "cross-site"), ("host", "bridge:8080")])));
        assert!(cross_site(&headers(&[("sec-fetch-site", "same-site"), ("host", "bridge:8080")])));
        assert!(cross_site(&headers(&[("origin", "http://evil.example"), ("host", "bridge:8080")])));
        assert!(cross_site(&headers(&[("origin", "null"), ("host", "bridge:8080")])));
    }

    #[test]
    fn the_csrf_token_depends_on_the_credential_only() {
        assert_eq!(csrf_token("Bearer a"), csrf_token("Bearer a"));
        assert_ne!(csrf_token("Bearer a"), csrf_token("Bearer b"));
        assert_eq!(csrf_token("Bearer a").len(), 32);
        let v = Viewer { csrf: csrf_token("Bearer a"), cookie: true };
        let same = headers(&[("host", "b")]);
        assert!(v.acting(&same, &csrf_token("Bearer a")).is_ok());
        assert!(v.acting(&same, &csrf_token("Bearer b")).is_err());
        assert!(v.acting(&same, "").is_err());
    }

    #[test]
    fn the_cookie_token_is_read_among_others() {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("s3cret; token");
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::try_from(format!("a=1; {COOKIE}={token}; b=2")).unwrap());
        assert_eq!(cookie_token(&h).as_deref(), Some("s3cret; token"));
        assert_eq!(cookie_token(&headers(&[("cookie", "ib_consolex=1")])), None);
    }

    #[test]
    fn after_signing_in_only_a_console_page_is_a_destination() {
        assert_eq!(console_path("/ui/dlq?source=am"), "/ui/dlq?source=am");
        assert_eq!(console_path("https://evil.example/ui"), "/ui");
        assert_eq!(console_path("//evil.example"), "/ui");
        assert_eq!(console_path("/v1/dlq"), "/ui");
    }
}
