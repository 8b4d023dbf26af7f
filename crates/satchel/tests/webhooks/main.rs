//! Webhooks end to end: the real `satchel` process delivering to a receiver (an HTTP server
//! in this test) that checks every signature with its own HMAC code and records what came.
//! A batch that ends is delivered in Anthropic's envelope; failures (500, 429 with
//! retry-after, 503) are retried with the same `webhook-id` until delivered; a final 4xx is
//! not retried; loopback targets are refused unless allowed; an event recorded before a
//! `kill -9` is delivered after the restart. (the repository's `tests/webhooks/` does the same with the
//! official Python SDK's `unwrap` and the `standardwebhooks` library.)

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod receiver;
#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use receiver::{Receiver, SECRET};
use serde_json::Value;
use support::{Server, client_get, client_send, create_batch, requests_body, run_to_exit};

fn write_config(dir: &Path, endpoints: &[(&str, bool)], delivery: &str) -> String {
    let mut text = format!(
        "[webhook_delivery]\ninitial_backoff = \"200ms\"\nmax_backoff = \"2s\"\n{delivery}\n"
    );
    for (url, allow) in endpoints {
        text.push_str(&format!(
            "[[webhooks]]\nurl = \"{url}\"\nsecret = \"{SECRET}\"\nevents = [\"message_batch.ended\"]\nallow_private_targets = {allow}\n"
        ));
    }
    let path = dir.join("satchel.toml");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// The delivery log of the default workspace.
async fn deliveries(server: &Server) -> Vec<Value> {
    let (status, body) = client_get(&server.url("/v1/satchel/webhooks/deliveries?limit=100")).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["data"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the log's delivery for `batch` satisfies `done`.
async fn wait_log(server: &Server, batch: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = deliveries(server).await;
        if let Some(d) = log.iter().find(|d| d["batch_id"] == batch && done(d)) {
            return d.clone();
        }
        assert!(Instant::now() < deadline, "{log:?}\n{}", server.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_batch_that_ends_arrives_signed_in_the_sdk_envelope() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[]).await;
    let config = write_config(dir.path(), &[(&receiver.url(), true)], "");
    let db = dir.path().join("s.db");
    let server = Server::start(&db, &["--config", &config]).await;
    let id = create_batch(&server, requests_body(3, 20)).await;
    let batch = server.wait_ended(&id, Duration::from_secs(60)).await;

    let got = receiver.wait_for(1, &server).await;
    let event = &got[0].body;
    assert_eq!(event["type"], "event");
    assert_eq!(
        event["id"],
        got[0].id.as_str(),
        "webhook-id is the event's id"
    );
    assert_eq!(event["created_at"], batch["ended_at"]);
    assert_eq!(event["data"]["type"], "message_batch.ended");
    assert_eq!(event["data"]["id"], id.as_str());
    assert_eq!(event["data"]["workspace_id"], "default");
    assert!(event["data"]["organization_id"].is_string());

    let delivered = wait_log(&server, &id, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["event_id"], got[0].id.as_str());
    assert_eq!(delivered["attempts"], 1);
    assert_eq!(delivered["last_status_code"], 204);
    assert_eq!(delivered["url"], receiver.url().as_str());

    // A cancel that ends the batch is an end too.
    let slow = Server::start(
        &dir.path().join("slow.db"),
        &["--config", &config, "--emulator-latency", "30s"],
    )
    .await;
    let canceled = create_batch(&slow, requests_body(5, 20)).await;
    let (status, _) = client_send(
        "POST",
        &slow.url(&format!("/v1/messages/batches/{canceled}/cancel")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    drop(slow); // in-flight requests would take 30 s: their leases end with the process
    let slow = Server::start(
        &dir.path().join("slow.db"),
        &[
            "--config",
            &config,
            "--emulator-latency",
            "30s",
            "--lease-ttl",
            "2s",
        ],
    )
    .await;
    slow.wait_ended(&canceled, Duration::from_secs(60)).await;
    let got = receiver.wait_for(2, &slow).await;
    assert_eq!(got[1].body["data"]["id"], canceled.as_str());
    // Nothing twice: one event a batch.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.got().len(), 2);
}

#[tokio::test]
async fn failures_are_retried_with_the_same_webhook_id_and_a_final_4xx_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = Receiver::start(&[500, 429, 503]).await;
    let gone = Receiver::start(&[404]).await;
    let config = write_config(dir.path(), &[(&flaky.url(), true), (&gone.url(), true)], "");
    let server = Server::start(&dir.path().join("s.db"), &["--config", &config]).await;
    let id = create_batch(&server, requests_body(2, 20)).await;
    server.wait_ended(&id, Duration::from_secs(60)).await;

    let got = flaky.wait_for(4, &server).await;
    assert_eq!(
        got.iter().map(|r| r.answered).collect::<Vec<_>>(),
        [500, 429, 503, 204]
    );
    assert!(
        got.iter().all(|r| r.id == got[0].id),
        "the same webhook-id at every attempt"
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "the same body at every attempt"
    );
    let delivered = wait_log(&server, &id, |d| {
        d["url"] == flaky.url().as_str() && d["status"] == "delivered"
    })
    .await;
    assert_eq!(delivered["attempts"], 4);

    let failed = wait_log(&server, &id, |d| {
        d["url"] == gone.url().as_str() && d["status"] == "failed"
    })
    .await;
    assert_eq!(
        (
            failed["attempts"].clone(),
            failed["last_status_code"].clone()
        ),
        (1.into(), 404.into())
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(gone.got().len(), 1, "a final answer is not retried");
}

#[tokio::test]
async fn loopback_targets_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[]).await;
    // A literal loopback address without the allowance: refused at start, saying why.
    let config = write_config(dir.path(), &[(&receiver.url(), false)], "");
    let out = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        dir.path().join("x.db").to_str().unwrap(),
        "--config",
        &config,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("allow_private_targets"), "{stderr}");

    // A name that resolves to loopback passes the start-up check, and is refused at delivery.
    let by_name = format!("http://localhost:{}/hook", receiver.addr.port());
    let config = write_config(dir.path(), &[(&by_name, false)], "");
    let server = Server::start(&dir.path().join("s.db"), &["--config", &config]).await;
    let id = create_batch(&server, requests_body(1, 20)).await;
    server.wait_ended(&id, Duration::from_secs(60)).await;
    let failed = wait_log(&server, &id, |d| d["status"] == "failed").await;
    assert!(
        failed["last_error"].as_str().unwrap().contains("private"),
        "{failed}"
    );
    assert_eq!(failed["attempts"], 1);
    assert!(receiver.got().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn an_event_recorded_before_a_kill_9_is_delivered_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    // The receiver is down at first: its port is reserved, then freed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/hook");
    let config = write_config(dir.path(), &[(&url, true)], "");
    let db = dir.path().join("s.db");
    let mut server = Server::start(&db, &["--config", &config]).await;
    let id = create_batch(&server, requests_body(3, 20)).await;
    server.wait_ended(&id, Duration::from_secs(60)).await;
    let pending = wait_log(&server, &id, |d| {
        // An attempt made and its failure recorded (not merely claimed, still in flight).
        d["status"] == "pending" && d["attempts"].as_i64() >= Some(1) && d["last_error"].is_string()
    })
    .await;
    assert!(
        pending["last_error"].as_str().unwrap().contains("connect"),
        "{pending}"
    );
    server.kill_9();

    let receiver = Receiver::start_on(&format!("127.0.0.1:{port}"), &[]).await;
    let server = Server::start(&db, &["--config", &config]).await;
    let got = receiver.wait_for(1, &server).await;
    assert_eq!(
        got[0].id,
        pending["event_id"].as_str().unwrap(),
        "the same event, after the restart"
    );
    assert_eq!(got[0].body["data"]["id"], id.as_str());
    wait_log(&server, &id, |d| d["status"] == "delivered").await;
}

/// Two nodes on one PostgreSQL database: both run the delivery worker, and each event is
/// sent once (the leases keep the other node off it), whichever node ended the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_send_each_event_once() {
    let Some(pg) = satchel_pg_test::Cluster::start("the two-node webhook test") else {
        return;
    };
    let url = pg.create_database();
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[]).await;
    let config = write_config(dir.path(), &[(&receiver.url(), true)], "");
    let a = Server::start_shared(
        &url,
        dir.path(),
        &["--config", &config, "--node-id", "node-a"],
    )
    .await;
    let b = Server::start_shared(
        &url,
        dir.path(),
        &["--config", &config, "--node-id", "node-b"],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        let node = if i % 2 == 0 { &a } else { &b };
        ids.push(create_batch(node, requests_body(3, 20)).await);
    }
    for id in &ids {
        a.wait_ended(id, Duration::from_secs(60)).await;
    }
    let got = receiver.wait_for(ids.len(), &a).await;
    for id in &ids {
        wait_log(&b, id, |d| d["status"] == "delivered").await;
    }
    // Every delivery is recorded delivered; a second claim of one would have been made
    // alongside the first, so its request would have arrived by now too.
    let got_now = receiver.got();
    assert_eq!(got_now.len(), ids.len(), "each event sent once: {got:?}");
    let batches: std::collections::HashSet<&str> = got_now
        .iter()
        .map(|r| r.body["data"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(batches.len(), ids.len());
}

/// A node killed while an attempt is in flight gives that delivery back when it starts again
/// (here the lease would last 90 s, longer than the test waits): sent again, same id.
#[tokio::test]
async fn a_send_cut_by_kill_9_is_made_again_at_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[100]).await;
    let config = write_config(dir.path(), &[(&receiver.url(), true)], "timeout = \"60s\"");
    let db = dir.path().join("s.db");
    let mut server = Server::start(&db, &["--config", &config]).await;
    let id = create_batch(&server, requests_body(1, 20)).await;
    server.wait_ended(&id, Duration::from_secs(60)).await;
    receiver.wait_for(1, &server).await; // in flight, unanswered
    server.kill_9();

    let server = Server::start(&db, &["--config", &config]).await;
    let got = receiver.wait_for(2, &server).await;
    assert_eq!(got[1].id, got[0].id, "the same webhook-id");
    let delivered = wait_log(&server, &id, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["attempts"], 2);
}

/// GET with a given key (none: no `x-api-key` header).
async fn get_with_key(url: &str, key: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .get(url)
        .header("anthropic-version", "2023-06-01");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        serde_json::from_str(&response.text().await.unwrap()).unwrap(),
    )
}

/// The delivery log needs a key and shows only the caller's workspace; endpoints get only
/// their own workspace's events.
#[tokio::test]
async fn the_delivery_log_is_scoped_to_the_callers_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(&[]).await;
    let config = dir.path().join("satchel.toml");
    std::fs::write(
        &config,
        format!(
            "[[api_keys]]\nkey = \"key-a\"\nworkspace = \"team-a\"\n\
             [[api_keys]]\nkey = \"key-b\"\nworkspace = \"team-b\"\n\
             [[webhooks]]\nworkspace = \"team-a\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\n\
             allow_private_targets = true\n",
            receiver.url()
        ),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let mut ids = Vec::new();
    for key in ["key-a", "key-b"] {
        let response = reqwest::Client::new()
            .post(server.url("/v1/messages/batches"))
            .header("x-api-key", key)
            .header("anthropic-version", "2023-06-01")
            .header("content-type", "application/json")
            .body(requests_body(1, 20))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let batch: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        ids.push(batch["id"].as_str().unwrap().to_owned());
    }
    let got = receiver.wait_for(1, &server).await;
    assert_eq!(got[0].body["data"]["id"], ids[0].as_str());
    assert_eq!(got[0].body["data"]["workspace_id"], "team-a");

    let log = server.url("/v1/satchel/webhooks/deliveries");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, page) = get_with_key(&log, Some("key-a")).await;
        assert_eq!(status, 200);
        if page["data"][0]["status"] == "delivered" {
            assert_eq!(page["data"].as_array().unwrap().len(), 1);
            break;
        }
        assert!(Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, page) = get_with_key(&log, Some("key-b")).await;
    assert_eq!(status, 200);
    assert_eq!(
        page["data"],
        serde_json::json!([]),
        "another workspace sees nothing"
    );
    let (status, error) = get_with_key(&log, None).await;
    assert_eq!(status, 401);
    assert_eq!(error["error"]["type"], "authentication_error");
    let (status, error) = get_with_key(&format!("{log}?limit=0"), Some("key-a")).await;
    assert_eq!(status, 400);
    assert_eq!(error["error"]["type"], "invalid_request_error");
    assert_eq!(
        receiver.got().len(),
        1,
        "team-b's batch goes to no endpoint"
    );
}
