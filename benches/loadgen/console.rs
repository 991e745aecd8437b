//! The console's cost on the server: how long its pages take with 10,000 decisions kept,
//! against `/healthz` on the same listener (the floor of any request) in the same run.

use std::sync::Arc;

use super::{Args, Report, Shot, classify, drive, print_table, simulator, spawn_bridge};

const ADMIN: &str = "load-admin";
const BEARER: &str = "load-am";

/// Fills the journal with `decisions` alert decisions (each its own new alert), then times
/// each page `--count` times (default 500) one request at a time.
pub(super) async fn run(args: &Args) {
    let decisions: u64 = 10_000;
    let sim = simulator().await;
    let extra = format!(
        "[admin]\nrecent_decisions = {decisions}\n[[admin.auth]]\nscheme = \"bearer\"\ntokens = [\"{ADMIN}\"]\n\
         [sources.am]\nkind = \"alertmanager\"\n[[sources.am.auth]]\nscheme = \"bearer\"\ntokens = [\"{BEARER}\"]\n"
    );
    let (mut child, addr, _dir) = spawn_bridge(args, &sim, &extra).await;
    let webhook = format!("http://{addr}/webhooks/am");
    let fill: Shot = Arc::new(move |http, i| {
        let url = webhook.clone();
        Box::pin(async move {
            classify(
                http.post(&url)
                    .bearer_auth(BEARER)
                    .header("content-type", "application/json")
                    .body(super::http::alert_body(i))
                    .send()
                    .await,
            )
        })
    });
    let filling = Args { count: Some(decisions), concurrency: 32, rate: 0, ..args.clone() };
    let filled = drive("fill: new alerts", &filling, fill).await;
    let kept: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{addr}/v1/decisions?limit=1"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    println!("decisions kept: {}", kept["kept"]);

    let timing = Args { count: Some(args.count_or(500)), concurrency: 1, rate: 0, ..args.clone() };
    let page = |path: &str, admin: bool| -> Shot {
        let url = format!("http://{addr}{path}");
        Arc::new(move |http, _| {
            let url = url.clone();
            Box::pin(async move {
                let req = http.get(&url);
                let req = if admin { req.bearer_auth(ADMIN) } else { req };
                match req.send().await {
                    // The whole body, as a browser would read it.
                    Ok(resp) if resp.status().is_success() => {
                        resp.bytes().await.map(|_| ()).map_err(|_| "body".to_owned())
                    }
                    other => classify(other),
                }
            })
        })
    };
    let mut reports: Vec<Report> = Vec::new();
    for (name, path, admin) in [
        ("/healthz (the floor)", "/healthz", false),
        ("overview /ui", "/ui", true),
        ("decisions, newest 200", "/ui/decisions", true),
        ("decisions, text filter over all", "/ui/decisions?text=load%20alert%209999", true),
        ("live rows, newest 200", "/ui/decisions/rows", true),
        ("decisions API, newest 100", "/v1/decisions", true),
    ] {
        reports.push(drive(name, &timing, page(path, admin)).await);
    }
    child.kill().await.ok();
    print_table(&[&filled]);
    println!();
    print_table(&reports.iter().collect::<Vec<_>>());
}
