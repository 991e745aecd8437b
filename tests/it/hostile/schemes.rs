//! Every scheme: the genuine article gets in, nothing else does.

use super::*;

#[tokio::test]
async fn every_scheme_accepts_its_signature_and_refuses_every_forgery_without_calling_scwm() {
    let bridge = Bridge::start(&all_sources()).await;
    let mut expected = Vec::new();
    for (n, scheme) in SCHEMES.into_iter().enumerate() {
        let path = format!("/webhooks/{}", scheme.source());
        let secret = scheme.secrets()[0];
        let fp = format!("{:016x}", 0xa000 + n);
        let body = alertmanager_body(&fp);

        // Every refusal first, so the genuine message below is the first this source accepts.
        let mut refused: Vec<(String, Headers, Vec<u8>)> = Vec::new();
        refused.push((
            "wrong secret".into(),
            scheme.sign(scheme.wrong_secret(), &body, now_unix()),
            body.clone(),
        ));
        // A flipped byte at the edges and spread through the body; tests/it/verify_properties.rs
        // flips arbitrary bytes at the verifier itself. Bearer and Basic sign no body.
        let last = body.len() - 1;
        let tamper_at: &[usize] = if scheme.signs_body() {
            &[0, 1, last / 7, last / 3, last / 2, 2 * last / 3, last - 1, last]
        } else {
            &[]
        };
        for &at in tamper_at {
            let mut tampered = body.clone();
            tampered[at] ^= 0x01;
            refused.push((format!("byte {at} flipped"), scheme.sign(secret, &body, now_unix()), tampered));
        }
        let good = scheme.sign(secret, &body, now_unix());
        for (i, (name, value)) in good.iter().enumerate() {
            let mut without = good.clone();
            without.remove(i);
            refused.push((format!("{name} missing"), without, body.clone()));
            for bad in malformed_values(value) {
                let mut broken = good.clone();
                broken[i].1 = bad.clone();
                refused.push((format!("{name}: {:?}", String::from_utf8_lossy(&bad)), broken, body.clone()));
            }
            let mut twice = good.clone();
            twice.push((name.clone(), value.clone()));
            refused.push((format!("{name} sent twice"), twice, body.clone()));
        }
        if scheme.timestamped() {
            for (what, offset) in [("an hour old", -3600), ("an hour ahead", 3600)] {
                refused.push((what.into(), scheme.sign(secret, &body, now_unix() + offset), body.clone()));
            }
        }
        refused.push(("no credentials at all".into(), Vec::new(), body.clone()));

        for (what, headers, sent) in refused {
            let resp = bridge.post(&path, &headers, sent).await;
            assert_unauthorized(resp, &format!("{scheme:?}: {what}")).await;
        }
        assert_eq!(bridge.scwm_adds(), expected, "{scheme:?}: a refused request reached SCWM");

        // The genuine message: accepted, and its incident opened.
        let resp = bridge.post(&path, &scheme.sign(secret, &body, now_unix()), body.clone()).await;
        assert_accepted(resp, &format!("{scheme:?}: correctly signed")).await;
        expected.push(format!("{}:fp:{fp}", scheme.source()));
        assert_eq!(bridge.scwm_adds(), expected, "{scheme:?}");
    }
    assert_eq!(bridge.app.sim.incidents().len(), SCHEMES.len());
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn during_a_rotation_either_secret_is_accepted_over_http() {
    let bridge = Bridge::start(&all_sources()).await;
    let mut expected = Vec::new();
    for (n, scheme) in SCHEMES.into_iter().enumerate() {
        for (i, secret) in scheme.secrets().into_iter().enumerate() {
            let fp = format!("{:016x}", 0xb000 + 2 * n + i);
            let body = alertmanager_body(&fp);
            let resp = bridge
                .post(
                    &format!("/webhooks/{}", scheme.source()),
                    &scheme.sign(secret, &body, now_unix()),
                    body,
                )
                .await;
            assert_accepted(resp, &format!("{scheme:?} with secret {i}")).await;
            expected.push(format!("{}:fp:{fp}", scheme.source()));
        }
    }
    assert_eq!(bridge.scwm_adds(), expected);
    bridge.stop().await;
}

#[tokio::test]
async fn a_repeated_standard_webhooks_delivery_gets_its_first_answer_and_acts_once_even_concurrently() {
    let bridge = Bridge::start(&Scheme::StandardWebhooks.config()).await;
    let body = alertmanager_body("00000000000c0001");
    let headers = standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), &body);

    let first = bridge.post("/webhooks/sw", &headers, body.clone()).await;
    assert_eq!(first.status(), 200);
    let first_answer = first.text().await.unwrap();
    assert_eq!(bridge.scwm_adds(), ["sw:fp:00000000000c0001"]);

    // The same delivery again, as a sender that lost the first answer sends it: the first
    // answer again, marked as a replay, and nothing more reaches SCWM.
    let again = bridge.post("/webhooks/sw", &headers, body.clone()).await;
    assert_eq!(again.status(), 200, "a verified repeat is acknowledged, not refused");
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.text().await.unwrap(), first_answer);
    // A sender's retry reuses the message id with a fresh timestamp and signature: the same
    // delivery all the same.
    let id = String::from_utf8(headers[0].1.clone()).unwrap();
    let resigned = standard_webhooks_headers(SW_SECRETS[1], &id, now_unix() + 1, &body);
    let resent = bridge.post("/webhooks/sw", &resigned, body.clone()).await;
    assert_eq!(resent.status(), 200, "the same id re-signed");
    // A repeat that does not verify is refused like any forgery.
    let forged = standard_webhooks_headers("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSx", &id, now_unix(), &body);
    assert_unauthorized(bridge.post("/webhooks/sw", &forged, body).await, "a repeat signed with another key")
        .await;
    assert_eq!(bridge.scwm_adds(), ["sw:fp:00000000000c0001"], "a repeat reached SCWM");

    // Ten copies of one new message at once: exactly one is handled; each other copy is told
    // the first is in flight (503, come back) or, if it came after, gets its answer.
    let body = alertmanager_body("00000000000c0003");
    let headers = standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), &body);
    let copies = (0..10).map(|_| bridge.post("/webhooks/sw", &headers, body.clone()));
    let answers = futures::future::join_all(copies).await;
    let handled = answers
        .iter()
        .filter(|r| r.status() == 200 && !r.headers().contains_key("idempotent-replayed"))
        .count();
    assert_eq!(handled, 1, "one copy handled");
    for r in &answers {
        match r.status().as_u16() {
            200 => {}
            503 => assert!(r.headers().contains_key("retry-after")),
            other => panic!("copy answered {other}"),
        }
    }
    assert_eq!(bridge.scwm_adds(), ["sw:fp:00000000000c0001", "sw:fp:00000000000c0003"]);
    bridge.stop().await;
}

#[tokio::test]
async fn a_standard_webhooks_retry_after_a_5xx_is_accepted_not_taken_for_a_replay() {
    // One SCWM attempt per request and no circuit breaker in the way: one injected failure
    // makes the bridge answer 503, and the next request goes through.
    let overrides = [("scwm.retry.max_attempts", "1"), ("scwm.breaker.minimum_calls", "100")];
    let bridge = Bridge::start_with(&Scheme::StandardWebhooks.config(), &overrides).await;
    bridge.app.sim.set_faults(Faults { fail_next: 1, ..Faults::default() });
    let body = alertmanager_body("00000000000c0002");
    let id = message_id();

    let first = bridge
        .post("/webhooks/sw", &standard_webhooks_headers(SW_SECRETS[0], &id, now_unix(), &body), body.clone())
        .await;
    assert_eq!(first.status(), 503, "SCWM failed, so the sender is told to retry");
    assert!(first.headers().contains_key("retry-after"));
    assert!(bridge.app.sim.incidents().is_empty());

    // The sender's retry: the same message id, a new timestamp and signature.
    let retry = standard_webhooks_headers(SW_SECRETS[0], &id, now_unix() + 1, &body);
    assert_accepted(bridge.post("/webhooks/sw", &retry, body.clone()).await, "the retry").await;
    assert_eq!(bridge.app.sim.incidents().len(), 1, "the alert was not lost");

    // Once processed, the message is remembered: the same request once more gets that answer.
    let repeat = bridge.post("/webhooks/sw", &retry, body).await;
    assert_eq!(repeat.status(), 200);
    assert_eq!(repeat.headers()["idempotent-replayed"], "true");
    assert_eq!(bridge.app.sim.incidents().len(), 1);
    bridge.stop().await;
}
