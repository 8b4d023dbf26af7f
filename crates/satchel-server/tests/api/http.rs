//! The serving loop: header-read and idle timeouts, the connection cap, heads refused with
//! the envelope, echoes cut short, the `Host` fallback of `results_url`, the graceful stop.
//! Raw sockets where a client library would hide what is on the wire.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{KEY_A, TestApp, parse_raw, raw_exchange, requests};

/// Bounds for things that happen after a timeout: generous, since the machine may be loaded.
const GENEROUS: Duration = Duration::from_secs(30);

/// Reads until the server closes the connection; panics if it does not within `within`.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let result = tokio::time::timeout(within, async {
        let mut buf = [0u8; 65536];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(result.is_ok(), "the connection stayed open past {within:?}");
    out
}

/// Reads one response with a `content-length` (status, body), leaving the connection open.
async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut data = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        let text = String::from_utf8_lossy(&data).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .expect("a content-length");
            if body.len() >= length {
                let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, body[..length].to_owned());
            }
        }
        let n = tokio::time::timeout(GENEROUS, stream.read(&mut buf))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "closed before a whole response: {text:?}");
        data.extend_from_slice(&buf[..n]);
    }
}

fn list_request(host: &str) -> String {
    format!(
        "GET /v1/messages/batches HTTP/1.1\r\n{host}x-api-key: {KEY_A}\r\nanthropic-version: 2023-06-01\r\n\r\n"
    )
}

#[tokio::test]
async fn partial_headers_are_disconnected_after_the_header_read_timeout() {
    let app = TestApp::spawn_with(|c| {
        c.http.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let mut silent = TcpStream::connect(app.addr).await.unwrap();
    silent
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // A client trickling bytes does not extend its time: the deadline runs from its start.
    let mut trickler = TcpStream::connect(app.addr).await.unwrap();
    trickler.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let (mut trickle_read, mut trickle_write) = trickler.into_split();
    let trickle = tokio::spawn(async move {
        for _ in 0..300 {
            if trickle_write.write_all(b"x-a: b\r\n").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(read_to_close(&mut silent, GENEROUS).await.is_empty());
    let mut buf = [0u8; 1024];
    let closed = tokio::time::timeout(GENEROUS, async {
        while let Ok(n) = trickle_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the trickling client was not disconnected");
    trickle.abort();
    // The server itself is fine.
    assert_eq!(
        app.send(Method::GET, "/v1/messages/batches", None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn idle_keep_alive_outlives_the_header_timeout_then_closes_after_the_idle_timeout() {
    // The idle time is not the header-read time: a connection idle for longer than the
    // header timeout (but within the idle one) still takes its next request.
    let app = TestApp::spawn_with(|c| {
        c.http.header_read_timeout = Duration::from_millis(200);
        c.http.idle_timeout = Duration::from_secs(120);
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(list_request("Host: x\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stream
        .write_all(list_request("Host: x\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);

    let app = TestApp::spawn_with(|c| {
        c.http.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(list_request("Host: x\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    assert!(read_to_close(&mut stream, GENEROUS).await.is_empty());
}

#[tokio::test]
async fn at_the_connection_cap_new_connections_wait_for_a_free_slot() {
    let app = TestApp::spawn_with(|c| {
        c.http.max_connections = 2;
        c.http.header_read_timeout = Duration::from_millis(500);
    })
    .await;
    let mut hogs = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(app.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        hogs.push(s);
    }
    // Served once the header timeout frees a slot; not refused, not failed.
    let reply = tokio::time::timeout(
        GENEROUS,
        app.send(Method::GET, "/v1/messages/batches", None),
    )
    .await
    .expect("served once a slot freed");
    assert_eq!(reply.status, StatusCode::OK);
    for mut hog in hogs {
        assert!(read_to_close(&mut hog, GENEROUS).await.is_empty());
    }
}

/// Asserts a raw reply is the API's error envelope with this status and type, its
/// `request-id` header equal to the body's.
fn assert_envelope(raw: &str, status: u16) -> Value {
    let (got, headers, body) = parse_raw(raw);
    assert_eq!(got, status, "{raw}");
    assert_eq!(headers["content-type"], "application/json");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["type"], "error", "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    let request_id = &headers["request-id"];
    assert!(request_id.starts_with("req_"));
    assert_eq!(body["request_id"], request_id.as_str());
    body
}

#[tokio::test]
async fn heads_refused_before_routing_carry_the_envelope_and_a_request_id() {
    let app = TestApp::spawn().await;
    let long_uri = format!(
        "GET /v1/messages/batches?a={} HTTP/1.1\r\nHost: x\r\n\r\n",
        "b".repeat(70_000)
    );
    let body = assert_envelope(
        &raw_exchange(app.addr, long_uri.as_bytes(), GENEROUS).await,
        414,
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too long")
    );

    let many: String = (0..200).map(|i| format!("x-h{i}: v\r\n")).collect();
    let many = format!("GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\n{many}\r\n");
    assert_envelope(
        &raw_exchange(app.addr, many.as_bytes(), GENEROUS).await,
        431,
    );

    let huge = format!(
        "GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "v".repeat(100_000)
    );
    assert_envelope(
        &raw_exchange(app.addr, huge.as_bytes(), GENEROUS).await,
        431,
    );

    for malformed in [
        &b"GET\x01 / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"HELLO\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03",
    ] {
        let raw = raw_exchange(app.addr, malformed, GENEROUS).await;
        let body = assert_envelope(&raw, 400);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with("Malformed HTTP request"),
            "{body}"
        );
    }
    // Nothing else suffered.
    assert_eq!(
        app.send(Method::GET, "/v1/messages/batches", None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_bad_head_after_a_good_exchange_on_one_connection_gets_the_envelope_too() {
    let app = TestApp::spawn().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(list_request("Host: x\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, 200);
    // A POST with a body, then the bad head: the scanner skips the body by its length.
    let body = "{}";
    stream
        .write_all(
            format!(
                "POST /v1/messages/batches/x/cancel HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY_A}\r\nanthropic-version: 2023-06-01\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.0, 404);
    stream
        .write_all(b"GET /\x7f HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let raw = String::from_utf8_lossy(&read_to_close(&mut stream, GENEROUS).await).into_owned();
    assert_envelope(&raw, 400);
}

#[tokio::test]
async fn error_messages_quote_client_input_cut_short() {
    let app = TestApp::spawn().await;
    // A version as long as the header limit allows.
    let version = "v".repeat(60_000);
    let reply = app
        .client
        .get(format!("{}/v1/messages/batches", app.base))
        .header("x-api-key", KEY_A)
        .header("anthropic-version", &version)
        .send()
        .await
        .unwrap();
    let reply = crate::helpers::read(reply).await;
    let quoted = format!("{}…", "v".repeat(100));
    reply.assert_error(
        400,
        "invalid_request_error",
        &format!(
            "anthropic-version: {quoted:?} is not a valid version; expected a date such as 2023-06-01"
        ),
    );

    // An id as long as the URI limit allows, on every route that takes one.
    let id = "k".repeat(10_000);
    let message = format!("Message Batch {}… not found.", "k".repeat(100));
    app.get(&id)
        .await
        .assert_error(404, "not_found_error", &message);
    app.cancel(&id)
        .await
        .assert_error(404, "not_found_error", &message);
    app.delete(&id)
        .await
        .assert_error(404, "not_found_error", &message);
    app.results(&id)
        .await
        .assert_error(404, "not_found_error", &message);

    // A 5 MB key in a create body: the message stays small whoever built it.
    let key = "k".repeat(5_000_000);
    let body = format!(r#"{{"requests":[{{"custom_id":"a","params":{{}},"{key}":1}}]}}"#);
    let reply = app
        .send(Method::POST, "/v1/messages/batches", Some(body))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::BAD_REQUEST,
        "{}",
        &reply.text[..200]
    );
    assert!(reply.text.len() < 4_000, "{} bytes", reply.text.len());
    assert_eq!(reply.json()["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn results_url_falls_back_to_the_connection_address_without_a_host() {
    let app = TestApp::spawn().await;
    let id = app.create_ok(&requests(1, "hi")).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.wait_ended(&id, GENEROUS).await;
    let expected = format!("http://{}/v1/messages/batches/{id}/results", app.addr);
    for (version, host) in [("1.0", ""), ("1.1", "Host:\r\n"), ("1.1", "Host:   \r\n")] {
        let request = format!(
            "GET /v1/messages/batches/{id} HTTP/{version}\r\n{host}x-api-key: {KEY_A}\r\nanthropic-version: 2023-06-01\r\nconnection: close\r\n\r\n"
        );
        let (status, _, body) =
            parse_raw(&raw_exchange(app.addr, request.as_bytes(), GENEROUS).await);
        assert_eq!(status, 200, "{body}");
        let batch: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            batch["results_url"],
            expected.as_str(),
            "HTTP/{version} {host:?}"
        );
    }
    // A Host given is still used.
    let request = format!(
        "GET /v1/messages/batches/{id} HTTP/1.1\r\nHost: batches.example:9\r\nx-api-key: {KEY_A}\r\nanthropic-version: 2023-06-01\r\nconnection: close\r\n\r\n"
    );
    let (_, _, body) = parse_raw(&raw_exchange(app.addr, request.as_bytes(), GENEROUS).await);
    let batch: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        batch["results_url"],
        format!("http://batches.example:9/v1/messages/batches/{id}/results")
    );
}

#[tokio::test]
async fn a_graceful_stop_lets_an_in_flight_request_finish() {
    let app = TestApp::spawn().await;
    let body = json!({ "requests": requests(3, "slow upload") }).to_string();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut upload = TcpStream::connect(app.addr).await.unwrap();
    upload
        .write_all(
            format!(
                "POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: {KEY_A}\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{first}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let http = app.http();
    let waited = tokio::time::timeout(GENEROUS, async {
        while http.open_connections() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the upload's connection was not accepted");
    let stopping = tokio::spawn(async move { http.shutdown(Duration::from_secs(120)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !stopping.is_finished(),
        "the stop must wait for the upload in progress"
    );
    // New connections are no longer accepted once the stop began.
    let refused = tokio::time::timeout(GENEROUS, async {
        loop {
            if TcpStream::connect(app.addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "still accepting after the stop began");

    upload.write_all(rest.as_bytes()).await.unwrap();
    let (status, reply) = read_response(&mut upload).await;
    assert_eq!(status, 200, "{reply}");
    let batch: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(batch["request_counts"]["processing"], 3, "{batch}");
    let report = tokio::time::timeout(GENEROUS, stopping)
        .await
        .expect("the stop ends once the upload is answered")
        .unwrap();
    assert_eq!(report.cut, 0, "{report:?}");
    assert!(report.finished >= 1, "{report:?}");
}

#[tokio::test]
async fn a_graceful_stop_cuts_what_is_still_open_at_the_deadline() {
    let app = TestApp::spawn_with(|c| {
        c.http.header_read_timeout = Duration::from_secs(600);
    })
    .await;
    let mut stalled = TcpStream::connect(app.addr).await.unwrap();
    stalled
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let http = app.http();
    let waited = tokio::time::timeout(GENEROUS, async {
        while http.open_connections() < 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the connection was not accepted");
    let report = tokio::time::timeout(GENEROUS, http.shutdown(Duration::from_millis(300)))
        .await
        .expect("the stop ends at its deadline");
    assert_eq!(
        report,
        satchel_server::HttpShutdown {
            finished: 0,
            cut: 1
        }
    );
    assert!(read_to_close(&mut stalled, GENEROUS).await.is_empty());
}

#[tokio::test]
async fn every_answer_names_the_organization_as_the_hosted_api_does() {
    let app = TestApp::spawn().await;
    let ok = app.send(Method::GET, "/v1/messages/batches", None).await;
    let missing = app.get("msgbatch_nope").await;
    let unauthenticated = app.as_key("wrong").get("msgbatch_nope").await;
    let id = ok.headers["anthropic-organization-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(satchel_server::organization::is_uuid(&id), "{id}");
    for reply in [&missing, &unauthenticated] {
        assert_eq!(reply.headers["anthropic-organization-id"], id.as_str());
    }

    let pinned = TestApp::spawn_with(|config| {
        config.organization_id = Some("0d6c4a3e-1f2b-4c5d-8e9f-a0b1c2d3e4f5".into());
    })
    .await;
    let reply = pinned.send(Method::GET, "/v1/messages/batches", None).await;
    assert_eq!(
        reply.headers["anthropic-organization-id"],
        "0d6c4a3e-1f2b-4c5d-8e9f-a0b1c2d3e4f5"
    );
    let refused = satchel_server::start({
        let mut config = satchel_server::ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            std::env::temp_dir().join("never-opened.db"),
        );
        config.organization_id = Some("org-1".into());
        config
    })
    .await;
    assert!(matches!(
        refused,
        Err(satchel_server::StartError::OrganizationId(_))
    ));
}
