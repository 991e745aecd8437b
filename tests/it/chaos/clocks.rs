//! Clock steps: the bridge's wall clock jumps, as an NTP step would, while its monotonic clock
//! runs on. libfaketime is preloaded into the bridge process (`FAKETIME_LIB`, which
//! `scripts/test.sh` installs and sets), reading its offset from a file the test rewrites, so the
//! jump happens at run time. It owns these scenarios only; it must not fake the test's own clock
//! or the simulator's (they stand for the rest of the world, whose clock is right).

use super::*;

/// The Standard Webhooks secret of the signed source (the quickstart's).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const SIGNED: &str = "sw";

/// libfaketime: `FAKETIME_LIB`, else Debian's path.
fn faketime_lib() -> String {
    let lib = std::env::var("FAKETIME_LIB")
        .unwrap_or_else(|_| "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1".to_owned());
    assert!(
        std::path::Path::new(&lib).exists(),
        "{lib} is missing: run scripts/test.sh (which installs Debian's faketime) or set FAKETIME_LIB"
    );
    lib
}

/// A bridge whose wall clock is offset by what `offset_file` says (libfaketime's relative
/// syntax, `+0`, `-2h`), read again at every clock call.
struct Skewed {
    offset_file: std::path::PathBuf,
}

impl Skewed {
    fn new(dir: &TempDir) -> Self {
        let skewed = Self { offset_file: dir.path().join("faketime-offset") };
        skewed.set("+0");
        skewed
    }

    /// Steps the bridge's wall clock to `offset` from the true time.
    fn set(&self, offset: &str) {
        // Written whole and renamed, so the bridge never reads half a line.
        let tmp = self.offset_file.with_extension("tmp");
        std::fs::write(&tmp, format!("{offset}\n")).unwrap();
        std::fs::rename(&tmp, &self.offset_file).unwrap();
    }

    fn env(&self, lib: &str) -> Vec<(String, String)> {
        vec![
            ("LD_PRELOAD".into(), lib.to_owned()),
            ("FAKETIME_NO_CACHE".into(), "1".into()),
            // Only the wall clock jumps; timers and timeouts run on as they would.
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
            ("FAKETIME_TIMESTAMP_FILE".into(), self.offset_file.display().to_string()),
        ]
    }
}

/// Standard Webhooks headers for `body`, signed now by a sender whose clock is right.
fn signed(id: &str, body: &[u8]) -> Vec<(&'static str, String)> {
    use base64::Engine;
    use hmac::{KeyInit, Mac};
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.decode(SECRET.strip_prefix("whsec_").unwrap()).unwrap();
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    for part in [id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body] {
        mac.update(part);
    }
    let sig = b64.encode(mac.finalize().into_bytes());
    vec![
        ("webhook-id", id.to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", format!("v1,{sig}")),
    ]
}

async fn post_signed(bridge: &Bridge, id: &str, body: &[u8]) -> (u16, String, serde_json::Value) {
    let mut req = bridge
        .http
        .post(bridge.url(&format!("/webhooks/{SIGNED}")))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in signed(id, body) {
        req = req.header(name, value);
    }
    let resp = req.send().await.expect("the bridge answers");
    let status = resp.status().as_u16();
    let kind =
        resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    (status, kind, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_stepped_back_past_the_signature_tolerance_refuses_signed_webhooks_and_takes_their_resends() {
    let lib = faketime_lib();
    let rig = Rig::start().await;
    let skewed = Skewed::new(&rig.dir);
    let source = format!(
        "[sources.{SIGNED}]\nkind = \"alertmanager\"\nreopen_window = \"1h\"\n\n[[sources.{SIGNED}.auth]]\n\
         scheme = \"standard-webhooks\"\nsecrets = [\"{SECRET}\"]\n"
    );
    let config = crate::kit::config_text(&rig.scwm_url(), &format!("{source}\n{}", embedded_store(&rig.dir)));
    let env = skewed.env(&lib);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let bridge = Bridge::spawn_with_env(&config, &rig.dir, &[], &env).await;

    // In step: a signed webhook is taken.
    let (status, _, answer) = post_signed(&bridge, "msg_before", &keyed_notification(0, Step::Fire)).await;
    assert_eq!(status, 200, "{answer}");

    // Two hours back, far past the default 5-minute tolerance: every correctly signed webhook
    // now carries a timestamp from the bridge's future.
    skewed.set("-2h");
    let body = keyed_notification(1, Step::Fire);
    let (status, kind, problem) = post_signed(&bridge, "msg_during", &body).await;
    eprintln!("clock stepped back: answer {status} {kind} {problem}");
    assert_eq!(status, 401, "{problem}");
    assert!(kind.starts_with("application/problem+json"), "{kind}");
    // The sender hears only "unauthorized", by design (src/ingest/http/webhook.rs: the reason
    // of an authentication failure goes to the operator, not to whoever sent it); the operator
    // sees that it was the timestamp, from the bridge's future.
    assert_eq!(problem["type"], "urn:incident-bridge:problem:unauthorized", "{problem}");
    poll_until(10, "the refusal for a future timestamp to be counted", Duration::from_millis(50), || async {
        let Ok(r) = bridge.http.get(bridge.url("/metrics")).send().await else { return false };
        let metrics = r.text().await.unwrap_or_default();
        metrics.lines().any(|l| {
            l.starts_with("incident_bridge_auth_failures_total")
                && l.contains("timestamp_in_future")
                && l.ends_with(" 1")
        })
    })
    .await;
    assert_eq!(rig.scwm.incidents().len(), 1, "the refused webhook reached nothing");

    // The clock is put right; the sender resends the same message (same id, signed afresh),
    // as Standard Webhooks senders do after a failure, and it is taken, once.
    skewed.set("+0");
    let (status, _, answer) = post_signed(&bridge, "msg_during", &body).await;
    assert_eq!(status, 200, "the resend is taken: {answer}");
    let mut want = all_open(2);
    want =
        want.into_iter().map(|(k, v)| (k.replace(&format!("{SOURCE}:"), &format!("{SIGNED}:")), v)).collect();
    assert_scwm_is(&rig.scwm, &want);
    bridge.kill().await;
}

/// Two replicas share the consumer and the KV store; mid-run one's wall clock jumps two hours
/// ahead, past `claim_ttl` (2 s) and the reopen window (1 h). To it every claim of the other
/// looks stale and every closed incident old. Taking claims over must stay harmless (the same
/// licensePlates, SCWM's dedup, the store's compare-and-swap): no licensePlate twice, no
/// refusal, every key in the state its steps ask for. What the jump may change, by design: an
/// alert that fires again after resolving, decided by the jumped replica, finds its incident
/// closed "two hours ago" and opens a new one instead of reopening the old (which stays
/// closed). The check allows exactly that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_jumped_forward_past_the_claim_ttl_and_the_reopen_window_doubles_nothing() {
    let lib = faketime_lib();
    let scale = Scale::from_env();
    let mut rng = seeded("clock forward");
    let keys = scale.pick(200, 1_000);
    let scripts = random_scripts(&mut rng, keys, 5);
    let rig = Rig::start().await;
    let skewed = Skewed::new(&rig.dir);
    let config = rig.config(CONSUMER, KV_STORE);
    let env = skewed.env(&lib);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let jumped = Bridge::spawn_with_env(&config, &rig.dir, &[], &env).await;
    let steady = Bridge::spawn(&config, &rig.dir, &[]).await;
    rig.wait_pulling(2).await;
    let last = rig.publish(in_rounds(&scripts)).await;

    rig.wait_scwm_requests(keys / 4, "SCWM work to be under way", 60).await;
    skewed.set("+2h");
    rig.wait_acked(last, scale.pick(120, 600)).await;
    let replaced = rig
        .scwm
        .incidents()
        .len()
        .saturating_sub(scripts.iter().filter(|s| final_state(s).is_some()).count());
    eprintln!(
        "clock forward: {keys} keys, {} SCWM requests, {replaced} incidents replaced",
        rig.scwm.requests().len()
    );
    history::History::of_scripts(&scripts)
        .allowing_replacements()
        .assert_kept(&rig.scwm, &history::dead_letters(&rig).await);
    jumped.kill().await;
    steady.kill().await;
}
