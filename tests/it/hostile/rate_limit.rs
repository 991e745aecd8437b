//! Rate limiting: a source over its rate answers 429 with Retry-After.

use super::*;

#[tokio::test]
async fn a_source_over_its_rate_answers_429_with_retry_after_and_accepts_again_after_it() {
    let sources = format!(
        r#"
[sources.limited]
kind = "alertmanager"
[[sources.limited.auth]]
scheme = "bearer"
tokens = ["{t}"]
[sources.limited.limits]
rate_per_second = 2
rate_burst = 2
"#,
        t = BEARER_TOKENS[0]
    );
    let bridge = Bridge::start(&sources).await;
    let auth = Scheme::Bearer.sign(BEARER_TOKENS[0], b"", 0);
    // Three at once, so that no token can refill between them however slow the machine.
    let bodies: Vec<_> = (0..3).map(|i| alertmanager_body(&format!("{:016x}", 0x1000 + i))).collect();
    let answers =
        futures::future::join_all(bodies.iter().map(|b| bridge.post("/webhooks/limited", &auth, b.clone())))
            .await;
    let mut statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 200, 429], "a burst of 2");
    let limited_at = answers.iter().position(|r| r.status() == 429).unwrap();
    let limited = answers.into_iter().nth(limited_at).unwrap();
    assert_eq!(limited.headers()["content-type"], "application/problem+json");
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let problem: Value = limited.json().await.unwrap();
    assert_eq!(problem["status"], 429);
    assert_eq!(bridge.app.sim.requests().len(), 2, "a rate-limited request reached SCWM");
    let body = bodies[limited_at].clone();

    // The wait the bridge advertised is the behaviour under test: honour it exactly.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_accepted(bridge.post("/webhooks/limited", &auth, body).await, "after Retry-After").await;
    assert_eq!(bridge.app.sim.requests().len(), 3);
    bridge.stop().await;
}
