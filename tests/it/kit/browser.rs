//! A real browser for the console tests: Debian's Chromium, headless, driven by its ChromeDriver
//! over W3C WebDriver (`CHROMEDRIVER_BIN`, `CHROMIUM_BIN`; scripts/test.sh installs both). The
//! client is the handful of WebDriver commands the tests use, over reqwest.
//!
//! Every wait is for a condition the page shows, with a deadline; screenshots go to
//! `target/console-screenshots/`, which CI keeps as an artifact.

use std::{path::PathBuf, process::Stdio, time::Duration};

use serde_json::{Value, json};

/// The key WebDriver names an element by in its answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
    _driver: tokio::process::Child,
    _profile: tempfile::TempDir,
}

fn bin(var: &str, default: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => v,
        _ if std::path::Path::new(default).exists() => default.to_owned(),
        _ => panic!(
            "{var} is not set and {default} does not exist: scripts/test.sh installs Chromium and ChromeDriver"
        ),
    }
}

/// Where screenshots are kept.
pub fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

impl Browser {
    /// A browser window of 1280×800.
    pub async fn start() -> Self {
        Self::start_sized(1280, 800).await
    }

    pub async fn start_sized(width: u32, height: u32) -> Self {
        Self::start_with(json!({}), width, height).await
    }

    /// A phone's screen (390×844 CSS pixels, touch, a phone's user agent): a desktop window cannot
    /// be made that narrow.
    pub async fn phone() -> Self {
        let emulation = json!({"mobileEmulation": {
            "deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0, "touch": true, "mobile": true},
            "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/148.0 Mobile Safari/537.36",
        }});
        Self::start_with(emulation, 390, 844).await
    }

    async fn start_with(extra_options: Value, width: u32, height: u32) -> Self {
        let driver_bin = bin("CHROMEDRIVER_BIN", "/usr/bin/chromedriver");
        let chromium = bin("CHROMIUM_BIN", "/usr/bin/chromium");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = tokio::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{driver_bin}: {e}"));
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        super::within(30, "chromedriver to listen", async {
            loop {
                if let Ok(r) = http.get(format!("{base}/status")).send().await
                    && r.json::<Value>().await.is_ok_and(|v| v["value"]["ready"] == true)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let profile = tempfile::tempdir().unwrap();
        let mut options = json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-extensions", "--hide-scrollbars",
                format!("--window-size={width},{height}"),
                format!("--user-data-dir={}", profile.path().display()),
            ],
        });
        if let (Some(o), Some(extra)) = (options.as_object_mut(), extra_options.as_object()) {
            o.extend(extra.clone());
        }
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": options,
        }}});
        let created: Value = super::within(60, "a browser session", async {
            http.post(format!("{base}/session"))
                .json(&capabilities)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
        .await;
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {created}"))
            .to_owned();
        Self { http, session: format!("{base}/session/{id}"), _driver: driver, _profile: profile }
    }

    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let answer: Value = req.send().await.expect("chromedriver answers").json().await.expect("JSON");
        answer["value"].clone()
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.command(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> Value {
        self.command(reqwest::Method::GET, path, None).await
    }

    pub async fn goto(&self, url: &str) {
        let v = self.post("/url", json!({"url": url})).await;
        assert!(v.is_null(), "navigating to {url}: {v}");
    }

    pub async fn current_url(&self) -> String {
        self.get("/url").await.as_str().unwrap_or_default().to_owned()
    }

    pub async fn title(&self) -> String {
        self.get("/title").await.as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub async fn source(&self) -> String {
        self.get("/source").await.as_str().unwrap_or_default().to_owned()
    }

    /// The element `css` selects now, if any.
    pub async fn find(&self, css: &str) -> Option<String> {
        let v = self.post("/element", json!({"using": "css selector", "value": css})).await;
        v[ELEMENT].as_str().map(str::to_owned)
    }

    /// Waits for `css` to select an element.
    pub async fn wait_for(&self, css: &str, secs: u64) -> String {
        super::within(secs, &format!("`{css}` on the page"), async {
            loop {
                if let Some(e) = self.find(css).await {
                    break e;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// The visible text of the element `css` selects (waiting up to 10 s for it).
    pub async fn text(&self, css: &str) -> String {
        let e = self.wait_for(css, 10).await;
        self.get(&format!("/element/{e}/text")).await.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the element `css` selects shows `wanted`.
    pub async fn wait_text(&self, css: &str, wanted: &str, secs: u64) -> String {
        super::within(secs, &format!("`{css}` to show `{wanted}`"), async {
            loop {
                if let Some(e) = self.find(css).await {
                    let text = self.get(&format!("/element/{e}/text")).await;
                    if let Some(t) = text.as_str().filter(|t| t.contains(wanted)) {
                        break t.to_owned();
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    pub async fn click(&self, css: &str) {
        let e = self.wait_for(css, 10).await;
        let v = self.post(&format!("/element/{e}/click"), json!({})).await;
        assert!(v.is_null(), "clicking `{css}`: {v}");
    }

    /// Types `text` into the field `css` selects, after what it holds.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.wait_for(css, 10).await;
        let v = self.post(&format!("/element/{e}/value"), json!({"text": text})).await;
        assert!(v.is_null(), "typing into `{css}`: {v}");
    }

    /// Empties the field `css` selects.
    pub async fn clear(&self, css: &str) {
        let e = self.wait_for(css, 10).await;
        self.post(&format!("/element/{e}/clear"), json!({})).await;
    }

    /// Runs `script` in the page; its return value.
    pub async fn execute(&self, script: &str) -> Value {
        self.post("/execute/sync", json!({"script": script, "args": []})).await
    }

    /// Keeps a PNG of the window as `target/console-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let png = self.get("/screenshot").await;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(png.as_str().expect("a screenshot")).unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    pub async fn quit(self) {
        self.command(reqwest::Method::DELETE, "", None).await;
    }
}
