//! The console, the way the person on call uses it: a real headless Chromium against a running
//! bridge and the SCWM simulator. Each test checks what a person would see (a decision appears
//! after the webhook, a dead letter replays and disappears, explain shows the rendered title),
//! that a browser without credentials is challenged, that a forged cross-site POST changes
//! nothing, and keeps a screenshot of each page (`target/console-screenshots/`).

use std::time::Instant;

use serde_json::{Value, json};

use crate::kit::{
    TestApp,
    alerts::{BEARER, Step, am_source, correlation_key, keyed_notification},
    browser::Browser,
    within,
};

const ADMIN: &str = "console-admin-token";

fn admin(extra: &str) -> String {
    format!("\n[admin]\n{extra}\n[[admin.auth]]\nscheme = \"bearer\"\ntokens = [\"{ADMIN}\"]\n")
}

async fn bridge() -> TestApp {
    let sim = crate::kit::start_simulator().await;
    TestApp::start_against(sim, &format!("{}{}", am_source("am", ""), admin("")), &[]).await
}

/// Signs `browser` in with the admin token through the sign-in form, landing on `path`.
async fn sign_in(browser: &Browser, app: &TestApp, path: &str) {
    browser.goto(&app.url(path)).await;
    browser.type_into("#token", ADMIN).await;
    browser.click("button[type=submit]").await;
    browser.wait_for("header nav", 10).await;
}

/// With SCWM failing, an asynchronous add nobody retries becomes a dead letter; SCWM is well
/// again when this returns. The letter's id.
async fn dead_letter(app: &mut TestApp, title: &str) -> String {
    crate::kit::dead_lettered_add(app, title).await;
    app.sim.set_faults(incident_bridge::sim::Faults::default());
    let listed: Value =
        app.http.get(app.url("/v1/dlq")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    listed["letters"][0]["id"].as_str().expect("a kept letter").to_owned()
}

async fn letters(app: &TestApp) -> u64 {
    let listed: Value =
        app.http.get(app.url("/v1/dlq")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    listed["total"].as_u64().unwrap()
}

#[tokio::test]
async fn the_console_is_off_without_the_admin_api_or_when_turned_off() {
    let plain = TestApp::start().await;
    let off =
        TestApp::start_against(crate::kit::start_simulator().await, &admin("console = false"), &[]).await;
    for app in [&plain, &off] {
        for path in ["/ui", "/ui/decisions", "/ui/login", "/ui/assets/console.css"] {
            let resp = app.http.get(app.url(path)).bearer_auth(ADMIN).send().await.unwrap();
            assert_eq!(resp.status(), 404, "{path}");
            let problem: Value = resp.json().await.unwrap();
            assert!(problem["type"].as_str().unwrap().ends_with("console-off"), "{problem}");
        }
    }
    // The admin API stays where the console is turned off.
    let api = off.http.get(off.url("/v1/decisions")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(api.status(), 200);
    plain.stop().await;
    off.stop().await;
}

#[tokio::test]
async fn without_credentials_the_console_answers_401_with_a_challenge_and_its_security_headers() {
    let app = bridge().await;
    let resp = app.http.get(app.url("/ui/decisions")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let h = resp.headers().clone();
    assert_eq!(h["www-authenticate"], r#"Bearer realm="incident-bridge console""#);
    let csp = h["content-security-policy"].to_str().unwrap();
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "form-action 'self'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["cache-control"], "no-store");
    let page = resp.text().await.unwrap();
    assert!(page.contains("name=\"token\"") && page.contains("value=\"/ui/decisions\""), "{page}");
    // The sender's token is not the admin's.
    let wrong = app.http.get(app.url("/ui")).bearer_auth(BEARER).send().await.unwrap();
    assert_eq!(wrong.status(), 401);
    // A script with the admin token needs no cookie.
    let ok = app.http.get(app.url("/ui")).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(ok.text().await.unwrap().contains("Events per minute"));
    app.stop().await;

    // With Basic admin auth, the browser is asked by itself.
    let sim = crate::kit::start_simulator().await;
    let basic = "\n[admin]\n[[admin.auth]]\nscheme = \"basic\"\nusername = \"oncall\"\npasswords = [\"pw-for-tests\"]\n";
    let app = TestApp::start_against(sim, basic, &[]).await;
    let resp = app.http.get(app.url("/ui")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic realm="));
    let ok = app.http.get(app.url("/ui")).basic_auth("oncall", Some("pw-for-tests")).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    app.stop().await;
}

#[tokio::test]
async fn an_alert_s_decision_appears_in_the_browser_and_every_page_shows_what_the_bridge_did() {
    let app = bridge().await;
    let browser = Browser::start().await;

    // Without credentials: the sign-in page; a wrong token is refused; the right one lands on
    // the page that was asked for.
    browser.goto(&app.url("/ui/decisions")).await;
    browser.wait_for("#token", 10).await;
    browser.screenshot("sign-in").await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("button[type=submit]").await;
    browser.wait_text(".notice", "not accepted", 10).await;
    browser.type_into("#token", ADMIN).await;
    browser.click("button[type=submit]").await;
    browser.wait_for("table#decisions", 10).await;
    assert!(browser.current_url().await.ends_with("/ui/decisions"));
    assert!(browser.text("#decisions tbody").await.contains("No decisions match"));

    // The decision shows on the open page, without a reload, soon after the webhook's answer.
    let (status, _) = crate::kit::alerts::send(&app, "am", 1, Step::Fire).await;
    assert_eq!(status, 200);
    let answered = Instant::now();
    let row = browser.wait_text("#decisions tbody", "QueueBacklog", 10).await;
    let shown_after = answered.elapsed();
    assert!(shown_after.as_millis() <= 1000, "the decision took {shown_after:?} to appear");
    let key = correlation_key("am", 1);
    let item = app.sim.incidents().first().expect("an incident").id.to_string();
    for wanted in ["am", "add", "done", key.as_str(), item.as_str()] {
        assert!(row.contains(wanted), "`{wanted}` in {row}");
    }
    browser.screenshot("decisions").await;

    // The key: what the store holds, its decisions, the incident read from SCWM on demand.
    browser.click("#decisions tbody a.mono").await;
    browser.wait_text("#stored", &item, 10).await;
    assert!(browser.text("#stored").await.contains("open"));
    browser.click("a[href*='read=true']").await;
    browser.wait_text("#incident", &item, 10).await;
    browser.screenshot("key").await;

    // The overview: the source's events in the last hour, decisions by kind, SCWM's health.
    browser.goto(&app.url("/ui")).await;
    assert!(browser.text("#sources").await.contains("am"));
    assert!(browser.find("#sources svg.chart rect.bar").await.is_some(), "a bar for this minute");
    assert!(browser.text("#decision-kinds").await.contains("add"));
    assert_eq!(browser.text("#circuit").await, "closed");
    // Two attempts: the add, and the read asked for on the key page.
    assert!(browser.text("#error-rate").await.starts_with("0.0 % of 2 attempts"));
    browser.screenshot("overview").await;

    // The filters: a second alert, then only the decisions that mention the first one's
    // fingerprint, in any case.
    crate::kit::alerts::send(&app, "am", 4, Step::Fire).await;
    browser.goto(&app.url("/ui/decisions")).await;
    browser.wait_text("#decisions tbody", &correlation_key("am", 4), 10).await;
    browser.type_into("input[name=text]", "A1E70001").await;
    browser.click("form.filters button[type=submit]").await;
    browser.wait_for("input[name=text][value=A1E70001]", 10).await;
    let filtered = browser.text("#decisions tbody").await;
    assert!(filtered.contains(&key) && !filtered.contains(&correlation_key("am", 4)), "{filtered}");

    browser.goto(&app.url("/ui/keys")).await;
    assert!(browser.text("table").await.contains(&key));
    browser.screenshot("keys").await;

    // Forget, after a confirmation: the store no longer has the key; SCWM's incident stays.
    browser.goto(&app.url(&format!("/ui/key?key={}", key.replace(':', "%3A")))).await;
    browser.click("a[href*='/ui/key/forget']").await;
    browser.click("#confirm").await;
    browser.wait_text("main", "is forgotten", 10).await;
    let gone =
        app.http.get(app.url(&format!("/v1/store/key?key={key}"))).bearer_auth(ADMIN).send().await.unwrap();
    assert_eq!(gone.status(), 404);
    assert!(app.sim.incidents().iter().any(|i| i.id.as_str() == item), "SCWM's incident is not touched");

    // Explain: the rendered title, as the admin API has it, and nothing sent.
    let before = app.sim.requests().len();
    browser.goto(&app.url("/ui/explain")).await;
    browser.type_into("#headers", &format!("Authorization: Bearer {BEARER}")).await;
    browser.type_into("#body", &String::from_utf8(keyed_notification(2, Step::Fire)).unwrap()).await;
    browser.click("#explain").await;
    let title = browser.text("#explained .title").await;
    let api: Value = app
        .http
        .post(app.url("/v1/explain/am"))
        .bearer_auth(ADMIN)
        .json(&json!({"headers": {"authorization": format!("Bearer {BEARER}")},
                      "body": String::from_utf8(keyed_notification(2, Step::Fire)).unwrap()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(title, api["events"][0]["requests"][0]["envelope"]["payload"]["title"].as_str().unwrap());
    assert!(!title.is_empty());
    assert_eq!(browser.text("#explained .decision").await, "add");
    assert_eq!(app.sim.requests().len(), before, "explain sends nothing");
    browser.screenshot("explain").await;

    // Signing out ends it: the next page asks again.
    browser.click("header form button").await;
    browser.wait_for("#token", 10).await;
    browser.goto(&app.url("/ui")).await;
    browser.wait_for("#token", 10).await;
    browser.quit().await;
    app.stop().await;
}

#[tokio::test]
async fn a_dead_letter_replays_from_the_console_after_a_dry_run_and_disappears() {
    let mut app = bridge().await;
    let id = dead_letter(&mut app, "disk full on db-1").await;
    let browser = Browser::start().await;
    sign_in(&browser, &app, "/ui/dlq").await;
    assert!(browser.text("#letters").await.contains(&id));
    browser.screenshot("dead-letters").await;
    browser.click(&format!("a[href*='{id}']")).await;
    browser.wait_text("#letter", "retries_exhausted", 10).await;
    assert!(browser.text("#body").await.contains("disk full on db-1"));
    browser.screenshot("dead-letter").await;

    // The dry run names it and sends nothing; the replay sends it once and it leaves the list.
    let before = app.sim.requests().len();
    browser.click("#replay").await;
    assert!(browser.text("#dry-run").await.starts_with("1 letter(s) would be replayed"));
    assert_eq!(app.sim.requests().len(), before);
    assert_eq!(letters(&app).await, 1);
    browser.click("#replay-now").await;
    browser.wait_text("#replayed", "1 replayed", 10).await;
    assert!(browser.source().await.contains("settled"));
    assert_eq!(app.sim.incidents().len(), 1, "the replayed add opened its incident");
    browser.goto(&app.url("/ui/dlq")).await;
    assert!(browser.text("#letter-count").await.starts_with("0 dead letter(s)"));
    assert_eq!(letters(&app).await, 0);
    browser.quit().await;
    app.stop().await;
}

/// An attacker's page on another site that posts a purge of every dead letter to the bridge
/// as soon as it loads, with a guessed CSRF token.
async fn attacker_page(bridge: &str) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let page = format!(
        r#"<!doctype html><html><body><form id="f" method="post" action="{bridge}/ui/dlq/purge">
<input name="reason" value="retries_exhausted"><input name="confirm" value="yes"><input name="csrf" value="guess">
</form><script>document.getElementById("f").submit()</script></body></html>"#
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            let answer = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    // `localhost` and `127.0.0.1` are different sites to the browser.
    (format!("http://localhost:{port}/"), task)
}

#[tokio::test]
async fn a_forged_cross_site_post_is_refused_and_changes_nothing() {
    let mut app = bridge().await;
    dead_letter(&mut app, "kept through the attack").await;

    // A signed-in person visits the attacker's page: the forged purge does nothing.
    let browser = Browser::start().await;
    sign_in(&browser, &app, "/ui/dlq").await;
    let (attack, server) = attacker_page(&format!("http://{}", app.addr)).await;
    browser.goto(&attack).await;
    within(10, "the forged form to be answered", async {
        while !browser.current_url().await.contains("/ui/dlq/purge") {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let answered = browser.source().await;
    assert!(!answered.contains("purged"), "{answered}");
    assert_eq!(letters(&app).await, 1, "the letter is still kept");
    browser.screenshot("forged-post-refused").await;
    browser.quit().await;
    server.abort();

    // Each check holds on its own, even for a request with valid credentials: another site's
    // Origin, a wrong token, no token. The same form from the console's own page goes through.
    let page =
        app.http.get(app.url("/ui/dlq?reason=retries_exhausted")).bearer_auth(ADMIN).send().await.unwrap();
    let html = page.text().await.unwrap();
    let csrf =
        html.split("name=\"csrf\" value=\"").nth(1).and_then(|s| s.split('"').next()).unwrap().to_owned();
    let purge = |origin: Option<&'static str>, token: Option<String>| {
        let mut form = vec![("reason", "retries_exhausted".to_owned()), ("confirm", "yes".to_owned())];
        if let Some(t) = token {
            form.push(("csrf", t));
        }
        let body: Vec<String> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut req = app
            .http
            .post(app.url("/ui/dlq/purge"))
            .bearer_auth(ADMIN)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        req.send()
    };
    for (origin, token) in
        [(Some("http://evil.example"), Some(csrf.clone())), (None, Some("0".repeat(32))), (None, None)]
    {
        let resp = purge(origin, token).await.unwrap();
        assert_eq!(resp.status(), 403, "origin {origin:?}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        assert_eq!(letters(&app).await, 1);
    }
    let own_origin: &'static str = Box::leak(format!("http://{}", app.addr).into_boxed_str());
    let resp = purge(Some(own_origin), Some(csrf)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.unwrap().contains("1 dead letter(s) purged"));
    assert_eq!(letters(&app).await, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_console_fits_a_phone() {
    let app = bridge().await;
    crate::kit::alerts::send(&app, "am", 3, Step::Fire).await;
    let browser = Browser::phone().await;
    sign_in(&browser, &app, "/ui").await;
    for (path, name) in [("/ui", "phone-overview"), ("/ui/decisions", "phone-decisions")] {
        browser.goto(&app.url(path)).await;
        browser.wait_for("main h1", 10).await;
        let width = browser.execute("return window.innerWidth").await;
        assert_eq!(width, json!(390), "a phone's width");
        let fits = browser.execute("return document.documentElement.scrollWidth <= window.innerWidth").await;
        assert_eq!(fits, Value::Bool(true), "{path} scrolls sideways on a phone");
        browser.screenshot(name).await;
    }
    browser.quit().await;
    app.stop().await;
}
