//! Create: the returned batch, and the synchronous validation of the envelope.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, requests};

const INVALID: &str = "invalid_request_error";

#[tokio::test]
async fn create_returns_an_in_progress_batch_with_all_keys() {
    let app = TestApp::spawn_with(|c| c.emulator.latency = std::time::Duration::from_secs(5)).await;
    let reply = app.create(&requests(3, "hello")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert!(
        reply.headers["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    let batch = reply.json();
    let mut keys: Vec<&str> = batch
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "archived_at",
            "cancel_initiated_at",
            "created_at",
            "ended_at",
            "expires_at",
            "id",
            "processing_status",
            "request_counts",
            "results_url",
            "type"
        ]
    );
    assert!(batch["id"].as_str().unwrap().starts_with("msgbatch_01"));
    assert_eq!(batch["type"], "message_batch");
    assert_eq!(batch["processing_status"], "in_progress");
    assert_eq!(
        batch["request_counts"],
        json!({"processing": 3, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0})
    );
    for key in [
        "ended_at",
        "cancel_initiated_at",
        "archived_at",
        "results_url",
    ] {
        assert_eq!(batch[key], Value::Null, "{key}");
    }
    let created = batch["created_at"].as_str().unwrap();
    let expires = batch["expires_at"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2024-09-24T18:37:24.100435Z".len(),
        "{created}"
    );
    let secs = |t: &str| humantime_secs(t);
    assert_eq!(secs(expires) - secs(created), 86_400.0);
    assert_eq!(created[19..], expires[19..], "same fraction of a second");
}

/// Seconds since the epoch of an RFC 3339 time, to the microsecond.
fn humantime_secs(t: &str) -> f64 {
    let (date, time) = t.trim_end_matches('Z').split_once('T').unwrap();
    let d: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let (hms, frac) = time.split_once('.').unwrap();
    let h: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    // Days from civil (Howard Hinnant's algorithm).
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    (days * 86_400 + h[0] * 3600 + h[1] * 60 + h[2]) as f64
        + format!("0.{frac}").parse::<f64>().unwrap()
}

async fn create_raw(app: &TestApp, body: &str) -> crate::helpers::Reply {
    app.send(Method::POST, "/v1/messages/batches", Some(body.to_owned()))
        .await
}

#[tokio::test]
async fn envelope_and_custom_id_errors_use_the_api_messages() {
    let app = TestApp::spawn().await;
    let item = |id: &str| json!({"custom_id": id, "params": {"model": "m", "max_tokens": 1, "messages": []}});
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"requests": [item("dup"), item("x"), item("dup")]}),
            "requests: custom_id's must be unique within a batch. Duplicate custom_id found: dup",
        ),
        (
            json!({"requests": [item("ok"), {"params": {}}]}),
            "requests.1.custom_id: Field required",
        ),
        (
            json!({"requests": [item(&"a".repeat(65))]}),
            "requests.0.custom_id: String should have at most 64 characters",
        ),
        (
            json!({"requests": [item("ok"), item("a.b")]}),
            "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        ),
        (
            json!({"requests": []}),
            "requests: List should have at least 1 item after validation, not 0",
        ),
        (json!({}), "requests: Field required"),
        (
            json!({"requests": [{"custom_id": "a"}]}),
            "requests.0.params: Field required",
        ),
        (
            json!({"requests": [item("a")], "model": "x"}),
            "model: Extra inputs are not permitted",
        ),
        (
            json!({"requests": [{"custom_id": "a", "params": {}, "extra": true}]}),
            "requests.0.extra: Extra inputs are not permitted",
        ),
    ];
    for (body, message) in cases {
        create_raw(&app, &body.to_string())
            .await
            .assert_error(400, INVALID, message);
    }
    let reply = create_raw(&app, r#"{"requests": [ "#).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.starts_with("The request body is not valid JSON: "),
        "{message}"
    );
    // None of these created anything.
    let page = app
        .send(Method::GET, "/v1/messages/batches", None)
        .await
        .json();
    assert_eq!(page["data"], json!([]));
}

#[tokio::test]
async fn over_the_request_cap_reports_the_count_and_creates_nothing() {
    let app = TestApp::spawn_with(|c| c.lifecycle.max_requests = 50).await;
    create_raw(&app, &json!({"requests": requests(53, "x")}).to_string())
        .await
        .assert_error(
            400,
            INVALID,
            "requests: List should have at most 50 items after validation, not 53",
        );
    let page = app
        .send(Method::GET, "/v1/messages/batches", None)
        .await
        .json();
    assert_eq!(page["data"], json!([]));
}

#[tokio::test]
async fn a_bad_item_at_the_end_of_a_big_body_creates_nothing() {
    let app = TestApp::spawn().await;
    let mut items = requests(5_000, "a fairly ordinary prompt")
        .as_array()
        .unwrap()
        .clone();
    items.push(json!({"custom_id": "bad:id", "params": {}}));
    create_raw(&app, &json!({"requests": items}).to_string())
        .await
        .assert_error(
            400,
            INVALID,
            "requests.5000.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
        );
    let page = app
        .send(Method::GET, "/v1/messages/batches", None)
        .await
        .json();
    assert_eq!(page["data"], json!([]));
    // And the server still takes good batches.
    app.create_ok(&requests(2, "after")).await;
}

#[tokio::test]
async fn bodies_over_256_mb_are_413() {
    let app = TestApp::spawn().await;
    // Declared too large: refused before reading.
    let url = format!("{}/v1/messages/batches", app.base);
    let too_big = satchel_wire::MAX_CREATE_BODY_BYTES + 1;
    let reply = crate::helpers::read(
        app.client
            .post(&url)
            .header("x-api-key", &app.key)
            .header("anthropic-version", "2023-06-01")
            .header("content-length", too_big.to_string())
            .body("{")
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_error(413, "request_too_large", "Request exceeds the maximum size");

    // Chunked (no length): counted as it streams, refused once past the cap.
    let chunk = bytes::Bytes::from(vec![b' '; 8 * 1024 * 1024]);
    let chunks = (satchel_wire::MAX_CREATE_BODY_BYTES / chunk.len() as u64) + 2;
    let head = futures::stream::once(async {
        Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"{\"requests\": ["))
    });
    let body = head.chain(futures::stream::iter(
        (0..chunks).map(move |_| Ok(chunk.clone())),
    ));
    let reply = crate::helpers::read(
        app.client
            .post(&url)
            .header("x-api-key", &app.key)
            .header("anthropic-version", "2023-06-01")
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_error(413, "request_too_large", "Request exceeds the maximum size");
}

use futures::StreamExt;
