//! NATS messages signed like webhooks, over core NATS and JetStream.

use super::*;

#[tokio::test]
async fn signed_nats_messages_are_processed_and_unsigned_ones_become_dead_letters() {
    let nats = NatsServer::start();
    let sources = format!(
        r#"
[nats]
url = "{url}"
[[nats.subscriptions]]
subject = "alerts.signed"
source = "signed"

[sources.signed]
kind = "alertmanager"
verify_nats = true
[[sources.signed.auth]]
scheme = "standard-webhooks"
secrets = ["{secret}"]
"#,
        url = nats.url(),
        secret = SW_SECRETS[0]
    );
    let bridge = Bridge::start(&sources).await;
    let client = nats.client().await;
    let mut dead = client.subscribe("scwm.dlq.>").await.unwrap();
    client.flush().await.unwrap();

    let body = alertmanager_body("0000000000aa0001");
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), &body) {
        headers.insert(name.as_str(), String::from_utf8(value).unwrap().as_str());
    }
    let reply = nats_request(&client, "alerts.signed", headers, Bytes::from(body.clone())).await;
    assert_eq!(reply_status(&reply), "200", "{}", String::from_utf8_lossy(&reply.payload));
    assert_eq!(bridge.scwm_adds(), ["signed:fp:0000000000aa0001"]);

    // The same body, unsigned; then signed with a wrong secret.
    let other = alertmanager_body("0000000000aa0002");
    let mut wrong = async_nats::HeaderMap::new();
    for (name, value) in standard_webhooks_headers(SW_SECRETS[1], &message_id(), now_unix(), &other) {
        wrong.insert(name.as_str(), String::from_utf8(value).unwrap().as_str());
    }
    for (what, headers) in [("unsigned", async_nats::HeaderMap::new()), ("wrong secret", wrong)] {
        let reply = nats_request(&client, "alerts.signed", headers, Bytes::from(other.clone())).await;
        assert_eq!(reply_status(&reply), "401", "{what}");
        let letter = within(10, "the dead letter", dead.next()).await.unwrap();
        assert!(letter.subject.starts_with("scwm.dlq."), "{}", letter.subject);
        let kind = letter
            .headers
            .as_ref()
            .and_then(|h| h.get("Incident-Bridge-Error-Kind"))
            .map(|v| v.as_str().to_owned());
        assert_eq!(kind.as_deref(), Some("unauthenticated"), "{what}");
        assert_eq!(&letter.payload[..], &other[..], "{what}: the dead letter keeps the original body");
    }
    assert_eq!(bridge.scwm_adds(), ["signed:fp:0000000000aa0001"], "an unsigned message reached SCWM");
    bridge.stop().await;
}

#[tokio::test]
async fn a_signed_jetstream_message_redelivered_after_a_failure_is_processed_not_refused_as_a_replay() {
    let nats = NatsServer::start();
    let sources = format!(
        r#"
[nats]
url = "{url}"
subscriptions = []
[[nats.consumers]]
stream = "ALERTS"
create = true
stream_subjects = ["alerts.js.>"]
source = "signed"
ack_wait = "5s"

[sources.signed]
kind = "alertmanager"
verify_nats = true
[[sources.signed.auth]]
scheme = "standard-webhooks"
secrets = ["{secret}"]
"#,
        url = nats.url(),
        secret = SW_SECRETS[0]
    );
    // One SCWM attempt per delivery, so the injected failure naks the message.
    let overrides = [("scwm.retry.max_attempts", "1"), ("scwm.breaker.minimum_calls", "100")];
    let bridge = Bridge::start_with(&sources, &overrides).await;
    bridge.app.sim.set_faults(Faults { fail_next: 1, ..Faults::default() });
    let client = nats.client().await;
    let mut dead = client.subscribe("scwm.dlq.>").await.unwrap();
    client.flush().await.unwrap();

    let body = alertmanager_body("0000000000bb0001");
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), &body) {
        headers.insert(name.as_str(), String::from_utf8(value).unwrap().as_str());
    }
    let js = async_nats::jetstream::new(client.clone());
    within(20, "the stream to exist", async {
        loop {
            if js.get_stream("ALERTS").await.is_ok() {
                break;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    js.publish_with_headers("alerts.js.am", headers, Bytes::from(body)).await.unwrap().await.unwrap();

    // The first delivery fails at SCWM and is nakked; the redelivery, the same message byte for
    // byte, must open the incident.
    let requests = bridge.app.sim.wait_for_requests(2, Duration::from_secs(30)).await.expect("a redelivery");
    assert!(requests[0].fault.is_some(), "the first attempt failed: {requests:?}");
    within(10, "the incident", async {
        while bridge.app.sim.incidents().is_empty() {
            tokio::task::yield_now().await;
        }
    })
    .await;
    let requests = bridge.app.sim.requests();
    assert_eq!(requests.len(), 2, "one failed attempt, one that opened the incident");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), dead.next()).await.is_err(),
        "the redelivery became a dead letter"
    );
    bridge.stop().await;
}

#[test]
fn the_test_configurations_are_valid() {
    // Guards the helpers above: a typo in a source table would fail every test confusingly.
    for sources in [all_sources(), corpus_sources()] {
        let text = crate::kit::config_text("http://127.0.0.1:1/incident", &sources);
        config::load(&text, &Default::default(), &|p| std::fs::read_to_string(p)).unwrap();
    }
}
