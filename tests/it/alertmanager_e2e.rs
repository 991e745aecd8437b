//! A real Prometheus Alertmanager in front of the bridge: alerts posted to Alertmanager's API
//! come out of its webhook receiver (Bearer token from a `credentials_file`, `send_resolved`)
//! and must open incidents in the SCWM simulator, change nothing when Alertmanager repeats them,
//! and close exactly the incidents of the alerts that resolve.
//!
//! Alertmanager's webhook goes through a pass-through tap in front of the bridge, which forwards
//! every request unchanged and reports it with the bridge's answer. That is how the test knows a
//! repeat notification arrived and was answered (and so fully handled) without sleeping past
//! `repeat_interval` and hoping.
//!
//! Needs `prometheus-alertmanager` (Debian/Ubuntu: `apt-get install -y prometheus-alertmanager`;
//! `scripts/test.sh` installs it). A missing binary fails the test, it never skips.

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use crate::kit::TestApp;
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Request, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode, header};
use incident_bridge::{
    publish::Published,
    sim::{IncidentStatus, PersonAction, RecordedRequest},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::sync::CancellationToken;

/// The token Alertmanager sends (`Authorization: Bearer ...`) and the bridge accepts.
const BEARER: &str = "e2e-alertmanager-token";

/// Alertmanager's timers, short so that a repeat comes within seconds.
const GROUP_WAIT: &str = "1s";
const GROUP_INTERVAL: &str = "1s";
const REPEAT_INTERVAL: Duration = Duration::from_secs(2);

/// How long to wait for any one webhook: a repeat is due `REPEAT_INTERVAL` after the last send
/// and goes out at the next `GROUP_INTERVAL` tick; the rest is slack for a busy machine.
const WEBHOOK_WAIT_SECS: u64 = 15;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_notifications_open_incidents_repeats_add_nothing_and_resolving_closes_exactly_those() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("alertmanager-token");
    // With a trailing newline, as `echo` writes it: Alertmanager and the bridge both drop it.
    std::fs::write(&token_file, format!("{BEARER}\n")).unwrap();

    let sim = crate::kit::start_simulator().await;
    let bridge_config = bridge_config(dir.path(), &token_file, "");
    let app = TestApp::start_against(sim, &bridge_config, &[]).await;
    let mut tap = Tap::start(app.addr).await;
    let am = Alertmanager::start(&alertmanager_config(&tap.url("/webhooks/alertmanager"), &token_file));

    // Three alerts in one group (group_by alertname): one notification carries all of them.
    // They start now: Alertmanager flushes a new group at once, without group_wait, for an
    // alert that started longer than group_wait ago, and that flush could hold only some of them.
    let starts_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let alerts: Vec<Value> =
        ["db-1", "db-2", "db-3"].iter().map(|host| disk_alert(host, &starts_at, Ends::InAnHour)).collect();
    am.post_alerts(&app.http, &alerts).await;

    // Firing: the first notification opens one incident per alert.
    let first = am.within("the first notification", tap.next()).await;
    first.assert_from_alertmanager();
    assert_eq!(first.status, StatusCode::OK, "bridge answer: {}", first.answer);
    assert_eq!(
        first.alerts(),
        [("db-1", "firing", "done"), ("db-2", "firing", "done"), ("db-3", "firing", "done")]
    );

    // The bridge answers only once SCWM has answered, so the adds are in the simulator's log.
    let requests = app.sim.requests();
    assert_eq!(operations(&requests), ["add-incident", "add-incident", "add-incident"]);
    let fingerprints = am.fingerprints(&app.http).await;
    let mut incident_of = BTreeMap::new();
    for incident in app.sim.incidents() {
        assert_eq!(incident.status, IncidentStatus::Open);
        let f = &incident.fields;
        let host = f["labels"]["host"].as_str().unwrap().to_owned();
        assert_eq!(f["externalRef"], format!("alertmanager:fp:{}", fingerprints[&host]), "{host}");
        assert_eq!(f["title"], format!("DiskAlmostFull: Disk /var/lib/postgresql 95% full on {host}"));
        assert_eq!(f["severity"], "critical");
        assert_eq!(f["service"], "postgres");
        assert_eq!(f["source"], "incident-bridge/alertmanager");
        // The same instant; Go writes it without trailing zeros (`.050Z` becomes `.05Z`).
        let occurred_at = f["occurredAt"].as_str().unwrap();
        assert_eq!(humantime::parse_rfc3339(occurred_at).ok(), humantime::parse_rfc3339(&starts_at).ok());
        incident_of.insert(host, incident.id);
    }
    assert_eq!(incident_of.len(), 3, "one incident per alert");

    // Repeating: Alertmanager sends the same group again after repeat_interval. The bridge
    // answers 200 and SCWM hears nothing.
    let repeat = am.within("a repeat notification", tap.next()).await;
    assert!(
        repeat.received_at.duration_since(first.received_at) >= REPEAT_INTERVAL,
        "a repeat, not a retry: {:?} after the first",
        repeat.received_at.duration_since(first.received_at)
    );
    repeat.assert_from_alertmanager();
    assert_eq!(repeat.status, StatusCode::OK, "bridge answer: {}", repeat.answer);
    assert_eq!(
        repeat.alerts(),
        [("db-1", "firing", "duplicate"), ("db-2", "firing", "duplicate"), ("db-3", "firing", "duplicate")]
    );
    assert_eq!(app.sim.requests().len(), 3, "a repeat must not call SCWM");

    // Resolving db-1 and db-2: their incidents close, db-3's stays open.
    let ends_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let resolved: Vec<Value> =
        ["db-1", "db-2"].iter().map(|host| disk_alert(host, &starts_at, Ends::At(&ends_at))).collect();
    am.post_alerts(&app.http, &resolved).await;
    let resolution = loop {
        let d = am.within("the notification with the resolved alerts", tap.next()).await;
        d.assert_from_alertmanager();
        assert_eq!(d.status, StatusCode::OK, "bridge answer: {}", d.answer);
        if d.alerts().iter().any(|(_, status, _)| *status == "resolved") {
            break d;
        }
        // A repeat that went out before Alertmanager took in the resolution.
        assert!(d.alerts().iter().all(|(_, _, outcome)| *outcome == "duplicate"), "{}", d.answer);
    };
    assert_eq!(
        resolution.alerts(),
        [("db-1", "resolved", "done"), ("db-2", "resolved", "done"), ("db-3", "firing", "duplicate")]
    );

    let requests = app.sim.requests();
    assert_eq!(operations(&requests[3..]), ["close-incident", "close-incident"]);
    let mut closed: Vec<&str> =
        requests[3..].iter().map(|r| r.body["payload"]["id"].as_str().unwrap()).collect();
    closed.sort_unstable();
    let mut resolved_incidents = [incident_of["db-1"].as_str(), incident_of["db-2"].as_str()];
    resolved_incidents.sort_unstable();
    assert_eq!(closed, resolved_incidents, "exactly the incidents of the resolved alerts close");

    // And nothing follows: the next notification (db-3 repeating alone) changes nothing.
    let after = am.within("the repeat after the resolution", tap.next()).await;
    assert_eq!(after.status, StatusCode::OK, "bridge answer: {}", after.answer);
    assert_eq!(after.alerts(), [("db-3", "firing", "duplicate")]);
    assert_eq!(app.sim.requests().len(), 5, "no SCWM call after the closes");
    let status_of: BTreeMap<String, IncidentStatus> =
        app.sim.incidents().into_iter().map(|i| (i.id.to_string(), i.status)).collect();
    assert_eq!(status_of[incident_of["db-1"].as_str()], IncidentStatus::Closed);
    assert_eq!(status_of[incident_of["db-2"].as_str()], IncidentStatus::Closed);
    assert_eq!(status_of[incident_of["db-3"].as_str()], IncidentStatus::Open);

    drop(am);
    tap.stop();
    app.stop().await;
    eprintln!("alertmanager end-to-end run took {:.1?}", started.elapsed());
}

/// People work in SCWM while Alertmanager fires, repeats and resolves: one closes an incident,
/// one deletes another, one hands a third to a partner, one reopens a fourth the bridge closed. The bridge reads before acting and in
/// the background, and at the end every firing alert has exactly one open incident, every
/// resolved one is closed, nothing that reached its end state is dead-lettered, and each change
/// is named by exactly one drift event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_acting_in_scwm_while_alertmanager_fires_repeats_and_resolves_leave_one_incident_per_alert() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("alertmanager-token");
    std::fs::write(&token_file, BEARER).unwrap();
    let sim = crate::kit::start_simulator().await;
    let reconcile = "[reconcile]\ninterval = \"0s\"\nreads_per_second = 20\nownership_check_after = \"0s\"\n";
    let bridge_config = bridge_config(dir.path(), &token_file, reconcile);
    let mut app = TestApp::start_against(sim, &bridge_config, &[]).await;
    let mut tap = Tap::start(app.addr).await;
    let am = Alertmanager::start(&alertmanager_config(&tap.url("/webhooks/alertmanager"), &token_file));
    let hosts = ["db-1", "db-2", "db-3", "db-4"];
    let starts_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let alerts: Vec<Value> = hosts.iter().map(|h| disk_alert(h, &starts_at, Ends::InAnHour)).collect();
    am.post_alerts(&app.http, &alerts).await;
    let first = am.within("the first notification", tap.next()).await;
    assert_eq!(first.status, StatusCode::OK, "bridge answer: {}", first.answer);
    assert!(first.alerts().iter().all(|(_, _, outcome)| *outcome == "done"), "{}", first.answer);

    let incidents_of = |sim: &incident_bridge::sim::SimHandle, host: &str| -> Vec<(String, IncidentStatus)> {
        sim.incidents()
            .into_iter()
            .filter(|i| i.fields["labels"]["host"] == host)
            .map(|i| (i.id.to_string(), i.status))
            .collect()
    };
    let id = |host: &str| incidents_of(&app.sim, host)[0].0.clone();
    let (one, two, three) = (id("db-1"), id("db-2"), id("db-3"));
    let act = |incident: &str, action: PersonAction| app.sim.act(incident, &action).expect("allowed");
    act(&one, PersonAction::Close { resolution: Some(json!("fixed")), close_notes: None });
    act(&two, PersonAction::Delete);
    act(&three, PersonAction::Submit { partner_id: json!("P-7"), note: Some(json!("yours now")) });

    // Alertmanager repeats while the bridge finds out: db-1's incident is reopened, db-2 gets a
    // new one, db-3 stays open with its partner.
    loop {
        let d = am.within("repeats until the bridge caught up", tap.next()).await;
        assert_eq!(d.status, StatusCode::OK, "bridge answer: {}", d.answer);
        let two_now = incidents_of(&app.sim, "db-2");
        if incidents_of(&app.sim, "db-1") == [(one.clone(), IncidentStatus::Open)]
            && two_now.len() == 1
            && two_now[0].0 != two
        {
            break;
        }
    }

    // db-4 resolves and the bridge closes its incident; a person reopens it (not fixed, they
    // say), and the alert fires again: the bridge finds the person's reopen (SCWM refuses its
    // reopen as a conflict, and a read shows why) and opens nothing new.
    let four = id("db-4");
    let ended = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    am.post_alerts(&app.http, &[disk_alert("db-4", &starts_at, Ends::At(&ended))]).await;
    loop {
        let d = am.within("db-4's resolution", tap.next()).await;
        assert_eq!(d.status, StatusCode::OK, "bridge answer: {}", d.answer);
        if incidents_of(&app.sim, "db-4") == [(four.clone(), IncidentStatus::Closed)] {
            break;
        }
    }
    act(&four, PersonAction::Reopen { reason: Some(json!("not fixed")) });
    let again = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    am.post_alerts(&app.http, &[disk_alert("db-4", &again, Ends::InAnHour)]).await;
    loop {
        let d = am.within("db-4 firing again", tap.next()).await;
        assert_eq!(d.status, StatusCode::OK, "bridge answer: {}", d.answer);
        if d.alerts()
            .iter()
            .any(|(host, status, outcome)| *host == "db-4" && *status == "firing" && *outcome == "done")
        {
            break;
        }
    }
    assert_eq!(
        incidents_of(&app.sim, "db-4"),
        [(four.clone(), IncidentStatus::Open)],
        "the reopened one, no other"
    );

    let ends_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    let resolved: Vec<Value> =
        hosts[..3].iter().map(|h| disk_alert(h, &starts_at, Ends::At(&ends_at))).collect();
    am.post_alerts(&app.http, &resolved).await;
    loop {
        let d = am.within("the notification with the resolved alerts", tap.next()).await;
        assert_eq!(d.status, StatusCode::OK, "bridge answer: {}", d.answer);
        if d.alerts().iter().any(|(_, status, _)| *status == "resolved") {
            let outcomes = d.alerts();
            assert!(
                outcomes.iter().filter(|(_, status, _)| *status == "resolved").all(|(_, _, o)| *o == "done"),
                "{outcomes:?}"
            );
            break;
        }
    }

    for host in &hosts[..3] {
        let found = incidents_of(&app.sim, host);
        assert_eq!(found.len(), 1, "{host}: {found:?}");
        assert_eq!(found[0].1, IncidentStatus::Closed, "{host} resolved: its incident is closed");
    }
    assert_eq!(incidents_of(&app.sim, "db-4")[0].1, IncidentStatus::Open, "db-4 still fires");
    assert_eq!(incidents_of(&app.sim, "db-4").len(), 1);

    let published: Vec<Published> = std::iter::from_fn(|| app.published.try_recv().ok()).collect();
    let dead: Vec<_> = published
        .iter()
        .filter_map(|p| if let Published::DeadLetter(d) = p { Some(&d.reason) } else { None })
        .collect();
    assert!(dead.is_empty(), "nothing that reached its end state is dead-lettered: {dead:?}");
    let mut drift: Vec<(String, &str)> = published
        .iter()
        .filter_map(
            |p| if let Published::Drift(d) = p { Some((d.item_id.to_string(), d.kind)) } else { None },
        )
        .collect();
    drift.sort();
    let mut want = vec![(one, "closed"), (two, "deleted"), (three, "handed_over"), (four, "reopened")];
    want.sort();
    assert_eq!(drift, want, "each change named once");

    drop(am);
    tap.stop();
    app.stop().await;
}

/// An alert that fires and resolves again and again, as a real Alertmanager reports it: past the
/// threshold the key is flapping, its incident stays open and the closes and reopens stop
/// reaching SCWM; once it stays resolved for the quiet period the bridge closes it, once. One
/// incident in all, and the SCWM calls do not grow with the cycles.
#[tokio::test]
async fn a_flapping_alert_from_alertmanager_ends_with_one_incident_and_a_bounded_number_of_calls() {
    const CYCLES: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("alertmanager-token");
    std::fs::write(&token_file, BEARER).unwrap();
    let sim = crate::kit::start_simulator().await;
    // A quiet period well beyond the time Alertmanager takes between one cycle's notifications
    // (its group interval is 1 s), so flapping ends only once the alert stays resolved.
    let flap = "\n[sources.alertmanager.flap]\ncycles = 2\nwindow = \"10m\"\nquiet = \"10s\"\n";
    let bridge_config = format!("{}{flap}", bridge_config(dir.path(), &token_file, ""));
    let mut app = TestApp::start_against(sim, &bridge_config, &[]).await;
    let mut tap = Tap::start(app.addr).await;
    let am = Alertmanager::start(&alertmanager_config(&tap.url("/webhooks/alertmanager"), &token_file));

    for cycle in 0..CYCLES {
        let starts_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        am.post_alerts(&app.http, &[disk_alert("db-1", &starts_at, Ends::InAnHour)]).await;
        loop {
            let d = am.within("the firing notification", tap.next()).await;
            assert_eq!(d.status, StatusCode::OK, "bridge answer: {}", d.answer);
            if d.alerts().iter().any(|(_, status, _)| *status == "firing") {
                break;
            }
        }
        let ends_at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        am.post_alerts(&app.http, &[disk_alert("db-1", &starts_at, Ends::At(&ends_at))]).await;
        loop {
            let d = am.within("the resolved notification", tap.next()).await;
            assert_eq!(d.status, StatusCode::OK, "bridge answer: {}", d.answer);
            if d.alerts().iter().any(|(_, status, _)| *status == "resolved") {
                break;
            }
        }
        eprintln!("cycle {cycle}: {:?}", operations(&app.sim.requests()));
    }
    // Resolved for the quiet period: the held close is applied and flapping ends.
    let ended = crate::kit::within(40, "the flap to end", async {
        loop {
            if let Published::Flap(f) = app.published.recv().await.expect("the sink is open")
                && f.kind == "flap.end"
            {
                return f;
            }
        }
    })
    .await;
    assert_eq!(ended.status, "resolved");
    let incidents = app.sim.incidents();
    assert_eq!(incidents.len(), 1, "{incidents:?}");
    assert_eq!(incidents[0].status, IncidentStatus::Closed);
    let ops = operations(&app.sim.requests());
    // The add, two close/reopen cycles (each refire edits in its new startsAt), the edit that
    // says it flaps, the final close: nine, whatever the number of cycles after the threshold.
    assert_eq!(
        ops,
        [
            "add-incident",
            "close-incident",
            "reopen-incident",
            "edit-incident",
            "close-incident",
            "reopen-incident",
            "edit-incident",
            "edit-incident",
            "close-incident"
        ],
        "{CYCLES} fire/resolve cycles"
    );
    drop(am);
    tap.stop();
    app.stop().await;
}

/// The bridge's configuration: a store in `dir`, an Alertmanager source taking the token in
/// `token_file`, and `extra` tables.
fn bridge_config(dir: &Path, token_file: &Path, extra: &str) -> String {
    format!(
        r#"
[store]
path = '{store}'

{extra}
[sources.alertmanager]
kind = "alertmanager"
grouping = "alert"

[[sources.alertmanager.auth]]
scheme = "bearer"
token_files = ['{token}']
"#,
        store = dir.join("bridge.redb").display(),
        token = token_file.display(),
    )
}

fn alertmanager_config(webhook_url: &str, token_file: &Path) -> String {
    format!(
        r#"route:
  receiver: incident-bridge
  group_by: ['alertname']
  group_wait: {GROUP_WAIT}
  group_interval: {GROUP_INTERVAL}
  repeat_interval: {repeat}s
receivers:
  - name: incident-bridge
    webhook_configs:
      - url: '{webhook_url}'
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials_file: '{token_file}'
"#,
        repeat = REPEAT_INTERVAL.as_secs(),
        token_file = token_file.display(),
    )
}

enum Ends<'a> {
    /// Still firing: Alertmanager keeps it active until then (or until told otherwise).
    InAnHour,
    /// Resolved at this time.
    At(&'a str),
}

/// One alert as Prometheus posts it to `POST /api/v2/alerts`.
fn disk_alert(host: &str, starts_at: &str, ends: Ends<'_>) -> Value {
    let ends_at = match ends {
        Ends::InAnHour => {
            humantime::format_rfc3339_millis(SystemTime::now() + Duration::from_secs(3600)).to_string()
        }
        Ends::At(t) => t.to_owned(),
    };
    json!({
        "labels": {
            "alertname": "DiskAlmostFull",
            "host": host,
            "service": "postgres",
            "severity": "critical",
        },
        "annotations": {
            "summary": format!("Disk /var/lib/postgresql 95% full on {host}"),
            "description": format!("Filesystem /var/lib/postgresql on {host} has less than 5% space left."),
        },
        "startsAt": starts_at,
        "endsAt": ends_at,
        "generatorURL": format!("http://prometheus.example:9090/graph?g0.expr=disk_free%7Bhost%3D%22{host}%22%7D"),
    })
}

/// The operation of each SCWM request, from its eventName (`agile-process-teams:<op>:v3`).
fn operations(requests: &[RecordedRequest]) -> Vec<String> {
    requests
        .iter()
        .map(|r| {
            let name = r.body["header"]["eventName"].as_str().unwrap_or_default();
            name.split(':').nth(1).unwrap_or(name).to_owned()
        })
        .collect()
}

/// A `prometheus-alertmanager` process on a free loopback port, with its own storage directory
/// and config file, killed on drop. Clustering is off.
struct Alertmanager {
    child: Child,
    addr: SocketAddr,
    /// Everything it has written to stderr (its log), for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

/// `ALERTMANAGER_BIN` (what `scripts/test.sh` sets), else Debian's
/// `/usr/bin/prometheus-alertmanager`, else `prometheus-alertmanager` on PATH.
fn alertmanager_binary() -> PathBuf {
    let name = "prometheus-alertmanager";
    let local = PathBuf::from("/usr/bin").join(name);
    let on_path = || {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    };
    let bin = std::env::var_os("ALERTMANAGER_BIN")
        .map(PathBuf::from)
        .or_else(|| local.is_file().then(|| local.clone()))
        .or_else(on_path)
        .unwrap_or_else(|| PathBuf::from("/usr/bin").join(name));
    assert!(
        bin.is_file(),
        "{name} is not installed (looked at ALERTMANAGER_BIN, {} and on PATH). Run \
         scripts/test.sh, which installs it, or `apt-get install -y prometheus-alertmanager` \
         (Debian/Ubuntu).",
        local.display()
    );
    bin
}

impl Alertmanager {
    /// Starts Alertmanager with `config` on 127.0.0.1, port 0, and waits until it listens,
    /// reading the port it got from its log.
    fn start(config: &str) -> Self {
        let bin = alertmanager_binary();
        let dir = tempfile::tempdir().expect("alertmanager dir");
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(&bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg("--web.listen-address=127.0.0.1:0")
            .arg("--cluster.listen-address=")
            .arg("--log.level=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // `msg="Listening on" address=127.0.0.1:45361`
                if line.contains("msg=\"Listening on\"")
                    && let Some(addr) =
                        line.split("address=").nth(1).and_then(|a| a.split_whitespace().next())
                    && let Ok(addr) = addr.parse::<SocketAddr>()
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr);
                }
                lines.lock().unwrap().push(line);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                panic!(
                    "Alertmanager did not start listening within 20s (exit: {status:?}); its log:\n{}",
                    log.lock().unwrap().join("\n")
                );
            }
        };
        Alertmanager { child, addr, log, _dir: dir }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Awaits `fut` for at most [`WEBHOOK_WAIT_SECS`]; on timeout fails with Alertmanager's log.
    async fn within<T>(&self, what: &str, fut: impl Future<Output = T>) -> T {
        match tokio::time::timeout(Duration::from_secs(WEBHOOK_WAIT_SECS), fut).await {
            Ok(v) => v,
            Err(_) => panic!(
                "timed out after {WEBHOOK_WAIT_SECS}s waiting for {what}; Alertmanager's log:\n{}",
                self.log()
            ),
        }
    }

    async fn post_alerts(&self, http: &reqwest::Client, alerts: &[Value]) {
        let resp =
            http.post(self.url("/api/v2/alerts")).json(alerts).send().await.expect("Alertmanager answers");
        let status = resp.status();
        assert!(
            status.is_success(),
            "POST /api/v2/alerts: {status} {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// Alertmanager's fingerprint of each active alert, by its `host` label.
    async fn fingerprints(&self, http: &reqwest::Client) -> BTreeMap<String, String> {
        let alerts: Vec<Value> =
            http.get(self.url("/api/v2/alerts")).send().await.unwrap().json().await.expect("a JSON list");
        alerts
            .iter()
            .map(|a| {
                (
                    a["labels"]["host"].as_str().unwrap().to_owned(),
                    a["fingerprint"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One webhook request as Alertmanager sent it and the bridge answered it.
#[derive(Debug)]
struct Delivery {
    received_at: Instant,
    headers: HeaderMap,
    body: Value,
    status: StatusCode,
    answer: Value,
}

impl Delivery {
    /// Alertmanager's own headers, with the token it read from its credentials file.
    fn assert_from_alertmanager(&self) {
        let header = |name: header::HeaderName| self.headers.get(&name).and_then(|v| v.to_str().ok());
        assert_eq!(header(header::AUTHORIZATION), Some(format!("Bearer {BEARER}").as_str()));
        assert!(
            header(header::USER_AGENT).is_some_and(|ua| ua.starts_with("Alertmanager/")),
            "{:?}",
            header(header::USER_AGENT)
        );
    }

    /// `(host, alert status, the bridge's outcome for it)` for each alert of the notification,
    /// sorted by host (Alertmanager orders a group's alerts by fingerprint). The bridge answers
    /// with one outcome per alert, in the notification's order.
    fn alerts(&self) -> Vec<(&str, &str, &str)> {
        let alerts = self.body["alerts"].as_array().expect("an Alertmanager notification");
        let outcomes = self.answer["outcomes"].as_array().map(Vec::as_slice).unwrap_or_default();
        assert_eq!(outcomes.len(), alerts.len(), "one outcome per alert: {}", self.answer);
        let mut seen: Vec<_> = alerts
            .iter()
            .zip(outcomes)
            .map(|(a, o)| {
                (
                    a["labels"]["host"].as_str().unwrap(),
                    a["status"].as_str().unwrap(),
                    o["outcome"].as_str().unwrap_or("?"),
                )
            })
            .collect();
        seen.sort_unstable();
        seen
    }
}

/// A pass-through HTTP proxy to the bridge that reports every exchange on a channel.
struct Tap {
    addr: SocketAddr,
    deliveries: mpsc::Receiver<Delivery>,
    shutdown: CancellationToken,
}

#[derive(Clone)]
struct TapState {
    upstream: SocketAddr,
    client: reqwest::Client,
    deliveries: mpsc::Sender<Delivery>,
}

impl Tap {
    async fn start(upstream: SocketAddr) -> Self {
        let (tx, deliveries) = mpsc::channel(64);
        let state = TapState { upstream, client: reqwest::Client::new(), deliveries: tx };
        let router = Router::new().fallback(forward).with_state(state);
        let listener = TcpListener::bind(crate::kit::loopback()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned()).await.unwrap();
        });
        Tap { addr, deliveries, shutdown }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn next(&mut self) -> Delivery {
        self.deliveries.recv().await.expect("the tap runs")
    }

    fn stop(&self) {
        self.shutdown.cancel();
    }
}

/// Forwards the request as received (method, path, headers, body) and the bridge's answer back.
async fn forward(State(tap): State<TapState>, request: Request) -> Response {
    let received_at = Instant::now();
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = parts.headers.clone();
    for hop in [header::HOST, header::CONTENT_LENGTH, header::CONNECTION, header::TRANSFER_ENCODING] {
        headers.remove(hop);
    }
    let sent = tap
        .client
        .request(parts.method.clone(), format!("http://{}{path}", tap.upstream))
        .headers(headers)
        .body(body.clone())
        .send()
        .await;
    let (status, answer) = match sent {
        Ok(resp) => (resp.status(), resp.bytes().await.unwrap_or_default()),
        Err(e) => (StatusCode::BAD_GATEWAY, Bytes::from(format!("tap: the bridge did not answer: {e}"))),
    };
    let delivery = Delivery {
        received_at,
        headers: parts.headers,
        body: serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into())),
        status,
        answer: serde_json::from_slice(&answer)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&answer).into())),
    };
    let _ = tap.deliveries.send(delivery).await;
    (status, [(header::CONTENT_TYPE, "application/json")], Body::from(answer)).into_response()
}
