//! A corpus of hostile requests written to the socket byte for byte, and stalled bodies.

use super::*;
use std::time::Duration;

/// An answer read off the wire, whatever shape the request had.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn is_problem(&self) -> bool {
        self.header("content-type") == Some("application/problem+json")
            && serde_json::from_slice::<Value>(&self.body).is_ok_and(|v| v["status"] == self.status)
    }
}

/// How a raw request's body goes on the wire.
enum Framing {
    /// `Content-Length` with the body's true length.
    Length,
    /// `Content-Length` claiming this many bytes, followed by the body as given.
    Claimed(u64),
    /// `Transfer-Encoding: chunked`, in chunks of this size.
    Chunked(usize),
}

/// Sends one HTTP/1.1 request byte for byte as given (header values may be any bytes) and reads
/// the answer. The body is written by a task of its own while the answer is read, so a server
/// that answers before reading everything (a body over the limit) is heard, not mistaken for
/// a broken connection.
async fn raw_post(
    addr: SocketAddr,
    path: &str,
    headers: &Headers,
    body: Vec<u8>,
    framing: Framing,
) -> Answer {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n").into_bytes();
    for (name, value) in headers {
        head.extend_from_slice(name.as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value);
        head.extend_from_slice(b"\r\n");
    }
    match framing {
        Framing::Length => head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes()),
        Framing::Claimed(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        Framing::Chunked(_) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.extend_from_slice(b"\r\n");
    let writer = tokio::spawn(async move {
        // The server may close the connection before the body is through; that is its right.
        if write.write_all(&head).await.is_err() {
            return;
        }
        match framing {
            Framing::Chunked(size) => {
                for chunk in body.chunks(size.max(1)) {
                    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
                    framed.extend_from_slice(chunk);
                    framed.extend_from_slice(b"\r\n");
                    if write.write_all(&framed).await.is_err() {
                        return;
                    }
                }
                let _ = write.write_all(b"0\r\n\r\n").await;
            }
            _ => {
                for chunk in body.chunks(64 * 1024) {
                    if write.write_all(chunk).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = write.flush().await;
        // Hold the write side open until the answer is read: hyper takes a half-closed
        // connection for a client that left and drops the request.
        std::future::pending::<()>().await;
    });
    let answer = within(30, "the bridge's answer", read_answer(&mut read, path)).await;
    writer.abort();
    answer
}

async fn read_answer(read: &mut tokio::net::tcp::OwnedReadHalf, path: &str) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = read.read(&mut chunk).await.expect("reading the answer");
        assert!(
            n > 0,
            "{path}: the connection closed without an answer; got {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut rest = buf[head_end + 4..].to_vec();
    let length =
        headers.iter().find(|(n, _)| n == "content-length").map(|(_, v)| v.parse::<usize>().unwrap());
    match length {
        Some(len) => {
            while rest.len() < len {
                let n = read.read(&mut chunk).await.expect("reading the answer's body");
                assert!(n > 0, "the answer's body was cut short");
                rest.extend_from_slice(&chunk[..n]);
            }
            rest.truncate(len);
        }
        None => {
            // `connection: close`: the body runs to the end of the connection.
            let _ = read.read_to_end(&mut rest).await;
        }
    }
    Answer { status, headers, body: rest }
}

/// A request of the corpus and what it must get.
struct Case {
    name: String,
    path: &'static str,
    headers: Headers,
    body: Vec<u8>,
    framing: Framing,
    /// The statuses allowed; every one is a refusal unless the case says otherwise.
    expect: &'static [u16],
}

const JSON: (&str, &str) = ("content-type", "application/json");

/// Standard Webhooks headers plus a JSON content type: a request that passes authentication.
fn signed(body: &[u8]) -> Headers {
    let mut headers = standard_webhooks_headers(SW_SECRETS[0], &message_id(), now_unix(), body);
    headers.push(h(JSON.0, JSON.1));
    headers
}

fn native_auth() -> Headers {
    vec![h(JSON.0, JSON.1), h("authorization", &format!("Bearer {NATIVE_TOKEN}"))]
}

/// An Alertmanager notification with `n` alerts, each with its own fingerprint.
fn notification_with_alerts(n: usize) -> Vec<u8> {
    let alert = |i: usize| {
        json!({"status": "firing", "labels": {"alertname": "Many", "i": i.to_string()}, "annotations": {},
               "startsAt": "2026-11-28T12:41:48.668Z", "endsAt": "0001-01-01T00:00:00Z",
               "fingerprint": format!("{:016x}", 0xd000 + i)})
    };
    json!({"receiver": "r", "status": "firing", "alerts": (0..n).map(alert).collect::<Vec<_>>(),
           "groupLabels": {}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
           "version": "4", "groupKey": "{}:{alertname=\"Many\"}", "truncatedAlerts": 0})
    .to_string()
    .into_bytes()
}

fn hostile_corpus() -> Vec<Case> {
    let fixture = alertmanager_body("00000000000e0001");
    let over = vec![b' '; CORPUS_LIMIT + 1];
    let huge = {
        let mut v = b"{\"pad\":\"".to_vec();
        v.resize(8 * 1024 * 1024, b'x');
        v
    };
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_object = format!("{{\"alerts\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes();
    let deep_open = "{\"a\":".repeat(50_000).into_bytes();
    let mut invalid_utf8 = br#"{"receiver":"caf"#.to_vec();
    invalid_utf8.extend_from_slice(&[0xc3, 0x28, 0xff, 0xfe]);
    invalid_utf8.extend_from_slice(br#"","status":"firing","alerts":[]}"#);
    let truncated = fixture[..fixture.len() / 2].to_vec();
    let long_value = "v".repeat(60 * 1024);

    let mut cases = Vec::new();
    let mut case = |name: &str,
                    path: &'static str,
                    headers: Headers,
                    body: Vec<u8>,
                    framing: Framing,
                    expect: &'static [u16]| {
        cases.push(Case { name: name.to_owned(), path, headers, body, framing, expect })
    };
    for (path, auth) in [("/webhooks/sw", signed(&over)), ("/v1/incidents/add", native_auth())] {
        case(
            "over the limit, with Content-Length",
            path,
            auth.clone(),
            over.clone(),
            Framing::Length,
            &[413],
        );
        case("over the limit, chunked", path, auth.clone(), over.clone(), Framing::Chunked(8 * 1024), &[413]);
        case("8 MiB, chunked", path, auth.clone(), huge.clone(), Framing::Chunked(64 * 1024), &[413]);
        case("8 MiB, with Content-Length", path, auth.clone(), huge.clone(), Framing::Length, &[413]);
        case(
            "claims 1 GiB, sends nothing",
            path,
            auth.clone(),
            Vec::new(),
            Framing::Claimed(1 << 30),
            &[413],
        );
    }
    for (what, body) in [
        ("100k levels", &deep),
        ("100k levels in an object", &deep_object),
        ("50k unclosed objects", &deep_open),
    ] {
        case(
            &format!("signed, nested {what}"),
            "/webhooks/sw",
            signed(body),
            body.clone(),
            Framing::Length,
            &[400, 422],
        );
        case(
            &format!("nested {what}"),
            "/v1/incidents/add",
            native_auth(),
            body.clone(),
            Framing::Length,
            &[400, 422],
        );
        case(
            &format!("unsigned, nested {what}"),
            "/webhooks/sw",
            vec![h(JSON.0, JSON.1)],
            body.clone(),
            Framing::Length,
            &[401],
        );
    }
    case(
        "signed, invalid UTF-8",
        "/webhooks/sw",
        signed(&invalid_utf8),
        invalid_utf8.clone(),
        Framing::Length,
        &[400, 422],
    );
    case(
        "invalid UTF-8",
        "/v1/incidents/add",
        native_auth(),
        invalid_utf8.clone(),
        Framing::Length,
        &[400, 422],
    );
    let mut text_plain = signed(&fixture);
    text_plain.retain(|(n, _)| n != "content-type");
    let no_type = text_plain.clone();
    text_plain.push(h("content-type", "text/plain"));
    case("signed, text/plain", "/webhooks/sw", text_plain, fixture.clone(), Framing::Length, &[415]);
    case("signed, no content type", "/webhooks/sw", no_type, fixture.clone(), Framing::Length, &[415]);
    let form = vec![
        h("content-type", "application/x-www-form-urlencoded"),
        h("authorization", &format!("Bearer {NATIVE_TOKEN}")),
    ];
    case("form-encoded", "/v1/incidents/add", form, b"title=x".to_vec(), Framing::Length, &[415]);
    case(
        "signed, truncated JSON",
        "/webhooks/sw",
        signed(&truncated),
        truncated.clone(),
        Framing::Length,
        &[400, 422],
    );
    case(
        "truncated JSON",
        "/v1/incidents/add",
        native_auth(),
        br#"{"title": "cut he"#.to_vec(),
        Framing::Length,
        &[400, 422],
    );
    for shape in [
        "[]",
        "null",
        "\"a string\"",
        "42",
        r#"{"alerts": "not a list"}"#,
        r#"{"status": "firing", "alerts": [{"labels": 5}]}"#,
        r#"{"status": "firing", "alerts": [null]}"#,
        r#"{"status": "exploded", "alerts": []}"#,
        r#"{"status":"firing","alerts":[{"status":"firing","labels":{"a":"\ud800"}}]}"#,
        r#"{"status":"firing","alerts":[],"truncatedAlerts":1e999999}"#,
    ] {
        let body = shape.as_bytes().to_vec();
        case(
            &format!("signed, wrong shape {shape}"),
            "/webhooks/sw",
            signed(&body),
            body.clone(),
            Framing::Length,
            &[400, 422],
        );
    }
    for shape in
        ["[]", "null", "\"a string\"", r#"{"title": "t", "externalRef": ["not", "text"]}"#, r#"{"id": 5}"#]
    {
        let body = shape.as_bytes().to_vec();
        case(
            &format!("wrong shape {shape}"),
            "/v1/incidents/add",
            native_auth(),
            body,
            Framing::Length,
            &[400, 422],
        );
    }
    let mut twice = signed(&fixture);
    let sig = twice.iter().find(|(n, _)| n == "webhook-signature").unwrap().clone();
    twice.push(sig);
    case("signature header sent twice", "/webhooks/sw", twice, fixture.clone(), Framing::Length, &[401]);
    let mut two_ids = signed(&fixture);
    two_ids.push(h("Webhook-Id", "msg_other"));
    case("webhook-id sent twice", "/webhooks/sw", two_ids, fixture.clone(), Framing::Length, &[401]);
    let mut two_auth = native_auth();
    two_auth.push(h("authorization", &format!("Bearer {NATIVE_TOKEN}")));
    case(
        "Authorization sent twice",
        "/v1/incidents/add",
        two_auth,
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[401],
    );
    let mut auth_wrong_first = vec![h(JSON.0, JSON.1), h("authorization", "Bearer wrong")];
    auth_wrong_first.push(h("authorization", &format!("Bearer {NATIVE_TOKEN}")));
    case(
        "a wrong Authorization, then the right one",
        "/v1/incidents/add",
        auth_wrong_first,
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[401],
    );
    case("signed, empty body", "/webhooks/sw", signed(b""), Vec::new(), Framing::Length, &[400, 422]);
    case(
        "unsigned, empty body",
        "/webhooks/sw",
        vec![h(JSON.0, JSON.1)],
        Vec::new(),
        Framing::Length,
        &[401],
    );
    case("empty body", "/v1/incidents/add", native_auth(), Vec::new(), Framing::Length, &[400, 422]);
    case(
        "empty chunked body",
        "/v1/incidents/add",
        native_auth(),
        Vec::new(),
        Framing::Chunked(1),
        &[400, 422],
    );
    let mut long_sig = signed(&fixture);
    for (n, v) in &mut long_sig {
        if n == "webhook-signature" {
            *v = format!("v1,{long_value}").into_bytes();
        }
    }
    case("a 60 KiB signature header", "/webhooks/sw", long_sig, fixture.clone(), Framing::Length, &[401]);
    let mut long_id = signed(&fixture);
    long_id.push(h("x-padding", &long_value));
    // A long header that is not part of authentication does not change the verdict.
    case(
        "signed, with a 60 KiB unrelated header",
        "/webhooks/sw",
        long_id,
        fixture.clone(),
        Framing::Length,
        &[200],
    );
    let long_bearer = vec![h(JSON.0, JSON.1), h("authorization", &format!("Bearer {long_value}"))];
    case(
        "a 60 KiB bearer token",
        "/v1/incidents/add",
        long_bearer,
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[401],
    );
    let long_basic = vec![h(JSON.0, JSON.1), h("authorization", &format!("Basic {long_value}"))];
    case(
        "60 KiB of Basic credentials",
        "/v1/incidents/add",
        long_basic,
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[401],
    );
    let second = alertmanager_body("00000000000e0003");
    let mut binary_header = signed(&second);
    binary_header.push(("x-binary".into(), vec![0x80, 0xff, 0xfe, b'a']));
    case(
        "signed, a header value that is not UTF-8",
        "/webhooks/sw",
        binary_header,
        second,
        Framing::Length,
        &[200],
    );
    let mut binary_sig = signed(&fixture);
    for (n, v) in &mut binary_sig {
        if n == "webhook-signature" {
            *v = vec![b'v', b'1', b',', 0xff, 0xfe, 0x80];
        }
    }
    case(
        "a signature that is not UTF-8",
        "/webhooks/sw",
        binary_sig,
        fixture.clone(),
        Framing::Length,
        &[401],
    );
    let too_many = notification_with_alerts(MAX_ALERTS + 1);
    case(
        "signed, more alerts than max_alerts",
        "/webhooks/sw",
        signed(&too_many),
        too_many,
        Framing::Length,
        &[422],
    );
    case("unknown source", "/webhooks/nope", signed(&fixture), fixture.clone(), Framing::Length, &[404]);
    case(
        "the native source is not a webhook",
        "/webhooks/native",
        native_auth(),
        fixture.clone(),
        Framing::Length,
        &[404],
    );
    case(
        "unknown operation",
        "/v1/incidents/explode",
        native_auth(),
        br#"{"title":"t"}"#.to_vec(),
        Framing::Length,
        &[404],
    );
    cases
}

#[tokio::test]
async fn a_corpus_of_hostile_requests_gets_problem_answers_and_nothing_reaches_scwm() {
    let bridge = Bridge::start(&corpus_sources()).await;
    let mut accepted = 0;
    for case in hostile_corpus() {
        let answer = raw_post(bridge.app.addr, case.path, &case.headers, case.body, case.framing).await;
        let body = String::from_utf8_lossy(&answer.body);
        assert!(case.expect.contains(&answer.status), "{}: got {} {body}", case.name, answer.status);
        if answer.status == 200 {
            accepted += 1;
        } else {
            assert!(answer.is_problem(), "{}: not problem+json: {answer:?}", case.name);
        }
        if answer.status == 401 {
            assert_eq!(body, UNAUTHORIZED, "{}", case.name);
        }
        if case.name.contains("nested") && answer.status != 401 {
            // Refused by the depth scan over the raw bytes, before a parser could recurse.
            assert!(body.contains("nested deeper than"), "{}: {body}", case.name);
        }
        assert_eq!(bridge.app.sim.requests().len(), accepted, "{}: SCWM was called", case.name);
    }
    assert_eq!(bridge.scwm_adds(), ["sw:fp:00000000000e0001", "sw:fp:00000000000e0003"]);
    bridge.assert_alive().await;
    // And still working.
    let body = alertmanager_body("00000000000e0002");
    assert_accepted(bridge.post("/webhooks/sw", &signed(&body), body).await, "after the corpus").await;
    bridge.stop().await;
}

#[tokio::test]
async fn headers_too_large_for_the_http_layer_are_refused_before_the_bridge_sees_them() {
    let bridge = Bridge::start(&corpus_sources()).await;
    let fixture = alertmanager_body("00000000000f0001");
    // One header of 1 MiB, and a thousand small ones: beyond what hyper parses at all.
    let mut one_huge = signed(&fixture);
    one_huge.push(h("x-huge", &"h".repeat(1024 * 1024)));
    let mut very_many = signed(&fixture);
    very_many.extend((0..1000).map(|i| h(&format!("x-h{i}"), "v")));
    for (what, headers) in [("a 1 MiB header", one_huge), ("a thousand headers", very_many)] {
        let answer =
            raw_post(bridge.app.addr, "/webhooks/sw", &headers, fixture.clone(), Framing::Length).await;
        assert_eq!(answer.status, 431, "{what}: {answer:?}");
    }
    assert!(bridge.app.sim.requests().is_empty());
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_body_that_never_finishes_arriving_is_refused_with_408_when_server_body_read_timeout_passes() {
    let bridge = Bridge::start_with(&corpus_sources(), &[("server.body_read_timeout", "1s")]).await;
    for path in ["/webhooks/sw", "/v1/incidents/add"] {
        // Announces 1000 bytes, sends 10 and then nothing: the writer holds the connection open.
        let mut headers = native_auth();
        headers.extend(signed(b"{}"));
        let answer =
            raw_post(bridge.app.addr, path, &headers, b"{\"title\":".to_vec(), Framing::Claimed(1000)).await;
        assert_eq!(answer.status, 408, "{path}: {answer:?}");
        assert!(answer.is_problem(), "{path}: {answer:?}");
    }
    assert!(bridge.app.sim.requests().is_empty());
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn headers_that_never_finish_arriving_lose_their_connection_when_the_read_timeout_passes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bridge = Bridge::start_with(&corpus_sources(), &[("server.body_read_timeout", "1s")]).await;
    // A request line and one header, then nothing: the slowloris pattern.
    let mut stream = tokio::net::TcpStream::connect(bridge.app.addr).await.unwrap();
    stream.write_all(b"POST /webhooks/sw HTTP/1.1\r\nhost: bridge\r\n").await.unwrap();
    let mut rest = Vec::new();
    // The server ends the connection (perhaps after a 408); a read then reaches its end.
    let read =
        crate::kit::within(10, "the server to drop the stalled connection", stream.read_to_end(&mut rest))
            .await;
    assert!(read.is_ok(), "{read:?}");
    let answer = String::from_utf8_lossy(&rest);
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(bridge.app.sim.requests().is_empty());
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_connection_that_never_sends_a_byte_is_closed_after_the_first_byte_timeout() {
    use tokio::io::AsyncReadExt;
    let bridge = Bridge::start_with(&corpus_sources(), &[("server.first_byte_timeout", "1s")]).await;
    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(tokio::net::TcpStream::connect(bridge.app.addr).await.unwrap());
    }
    for stream in &mut silent {
        let mut rest = Vec::new();
        let read =
            crate::kit::within(10, "the server to close a silent connection", stream.read_to_end(&mut rest))
                .await;
        assert!(read.is_ok() && rest.is_empty(), "{read:?} {rest:?}");
    }
    bridge.assert_alive().await;
    bridge.stop().await;
}

#[tokio::test]
async fn a_kept_alive_connection_outlives_the_header_timeout_while_idle_and_is_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bridge = Bridge::start_with(&corpus_sources(), &[("server.body_read_timeout", "1s")]).await;
    let mut stream = tokio::net::TcpStream::connect(bridge.app.addr).await.unwrap();
    async fn answer(stream: &mut tokio::net::TcpStream) -> String {
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: bridge\r\n\r\n").await.unwrap();
        let mut buf = vec![0u8; 4096];
        let n = crate::kit::within(10, "an answer on the kept-alive connection", stream.read(&mut buf))
            .await
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
    assert!(answer(&mut stream).await.starts_with("HTTP/1.1 200"));
    // Idle for twice the header timeout, as a client's pooled connection is between requests.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let again = answer(&mut stream).await;
    assert!(again.starts_with("HTTP/1.1 200"), "the idle connection was kept: {again:?}");
    bridge.stop().await;
}

#[tokio::test]
async fn connections_past_server_max_connections_are_closed_at_once_and_counted() {
    use tokio::io::AsyncReadExt;
    let bridge = Bridge::start_with(&corpus_sources(), &[("server.max_connections", "3")]).await;
    // The test's own client keeps one connection for /metrics below: two more fill the cap.
    let metrics = || async {
        bridge.app.http.get(bridge.app.url("/metrics")).send().await.unwrap().text().await.unwrap()
    };
    assert!(metrics().await.contains("incident_bridge_http_connections"));
    let _held: Vec<_> =
        futures::future::join_all((0..2).map(|_| tokio::net::TcpStream::connect(bridge.app.addr)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
    let mut over = tokio::net::TcpStream::connect(bridge.app.addr).await.unwrap();
    let mut rest = Vec::new();
    let read =
        crate::kit::within(10, "the connection over the cap to be closed", over.read_to_end(&mut rest)).await;
    assert!(read.is_ok() && rest.is_empty(), "{read:?}");
    let text = metrics().await;
    let refused = text
        .lines()
        .find_map(|l| l.strip_prefix("incident_bridge_http_connections_refused_total "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert!(refused.is_some_and(|n| n >= 1.0), "{text}");
    bridge.stop().await;
}

#[tokio::test]
async fn strings_over_max_string_chars_reach_scwm_cut_with_a_visible_marker() {
    let bridge = Bridge::start(&corpus_sources()).await;
    let long = "L".repeat(10_000);
    let mut n: Value = serde_json::from_slice(&alertmanager_body("00000000000a0001")).unwrap();
    n["alerts"][0]["annotations"]["summary"] = json!(long);
    n["alerts"][0]["annotations"]["description"] = json!(format!("ü{long}"));
    n["alerts"][0]["labels"]["service"] = json!(long);
    n["alerts"][0]["labels"][&long] = json!("a label whose name is long");
    let body = serde_json::to_vec(&n).unwrap();
    assert_accepted(bridge.post("/webhooks/sw", &signed(&body), body).await, "long strings").await;

    let native = json!({"title": long, "fields": {"deep": [format!("é{long}")]}});
    let resp = bridge.post("/v1/incidents/add", &native_auth(), native.to_string()).await;
    assert_eq!(resp.status(), 200);

    let requests = bridge.app.sim.requests();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        let payload = &r.body["payload"];
        let mut strings = Vec::new();
        collect_strings(payload, &mut strings);
        for s in &strings {
            assert!(
                s.chars().count() <= MAX_STRING,
                "a string of {} characters reached SCWM: {s:.80}",
                s.chars().count()
            );
        }
        let cut: Vec<_> = strings.iter().filter(|s| s.ends_with("…[truncated]")).collect();
        assert!(!cut.is_empty(), "no visible truncation marker in {payload}");
    }
    assert_eq!(requests[1].body["payload"]["title"], format!("{}…[truncated]", "L".repeat(MAX_STRING - 12)));
    bridge.stop().await;
}

/// Every string in `v`: values and object keys alike.
fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|i| collect_strings(i, out)),
        Value::Object(map) => {
            for (k, v) in map {
                out.push(k.clone());
                collect_strings(v, out);
            }
        }
        _ => {}
    }
}
