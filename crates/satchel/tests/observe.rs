//! Seeing inside a running Satchel: the health probes (and readiness during a drain), JSON
//! log lines, and the Prometheus metrics scraped while a batch runs. Real `satchel serve`
//! processes, real HTTP, real signals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, create_batch};

fn requests(n: usize) -> String {
    let requests: Vec<Value> = (0..n)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "params": {"model": "claude-test", "max_tokens": 16,
                "messages": [{"role": "user", "content": format!("request {i}")}]}})
        })
        .collect();
    json!({ "requests": requests }).to_string()
}

/// A GET without any key or version header: what a probe sends.
async fn probe(url: &str) -> Result<(u16, Value), reqwest::Error> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_turns_false_on_sigterm_while_the_node_drains_and_liveness_stays() {
    let dir = tempfile::tempdir().unwrap();
    // Each emulated request takes 5 s: the drain stays open while attempts finish.
    let mut server = Server::start(
        &dir.path().join("s.db"),
        &["--emulator-latency", "5s", "--drain-delay", "3s"],
    )
    .await;
    let (status, body) = probe(&server.url("/healthz")).await.unwrap();
    assert_eq!((status, &body), (200, &json!({"status": "ok"})));
    let (status, body) = probe(&server.url("/readyz")).await.unwrap();
    assert_eq!((status, &body), (200, &json!({"status": "ready"})));
    create_batch(&server, requests(4)).await;

    let sent = std::process::Command::new("kill")
        .args(["-TERM", &server_pid(&server)])
        .status()
        .unwrap();
    assert!(sent.success());
    // While the node drains, a prober still gets an answer: not ready, but alive.
    let mut seen_draining = false;
    wait_for(
        "/readyz to answer 503 draining",
        Duration::from_secs(20),
        async || match probe(&server.url("/readyz")).await {
            Ok((503, body)) => {
                assert_eq!(body, json!({"status": "draining"}));
                seen_draining = true;
                true
            }
            Ok((200, _)) => false,
            other => panic!("unexpected readiness answer during the drain: {other:?}"),
        },
    )
    .await;
    assert!(seen_draining);
    let (status, _) = probe(&server.url("/healthz")).await.unwrap();
    assert_eq!(status, 200, "alive while draining");
    let status = server
        .signal_and_wait("TERM", Duration::from_secs(60))
        .await;
    assert!(status.success(), "exit 0 after the drain: {status:?}");
}

fn server_pid(server: &Server) -> String {
    server.pid().to_string()
}

#[tokio::test]
async fn json_logs_carry_request_id_route_status_latency_and_batch_id_and_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-secret-never-logged-123";
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--log-format", "json", "--api-keys", key],
    )
    .await;
    let client = reqwest::Client::new();
    let created = client
        .post(server.url("/v1/messages/batches"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(requests(2))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let created: Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let got = client
        .get(server.url(&format!("/v1/messages/batches/{id}")))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    let request_id = got.headers()["request-id"].to_str().unwrap().to_owned();

    let mut lines = Vec::new();
    wait_for("both request lines", Duration::from_secs(10), async || {
        lines = server
            .log_text()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|l| l["message"] == "request")
            .collect();
        lines.len() >= 2
    })
    .await;
    let create = lines
        .iter()
        .find(|l| l["method"] == "POST")
        .expect("the create's line");
    assert_eq!(create["route"], "/v1/messages/batches", "{create}");
    assert_eq!(create["status"], 200, "{create}");
    assert_eq!(create["batch_id"], id.as_str(), "{create}");
    assert!(create["elapsed_ms"].is_u64(), "{create}");
    assert!(
        create["request_id"].as_str().unwrap().starts_with("req_"),
        "{create}"
    );
    let get = lines
        .iter()
        .find(|l| l["request_id"] == request_id.as_str())
        .expect("the retrieve's line, by its request-id header");
    assert_eq!(get["route"], "/v1/messages/batches/{id}", "{get}");
    assert_eq!(get["batch_id"], id.as_str(), "{get}");
    assert_eq!(get["status"], 200);
    assert!(!server.log_text().contains(key), "the key is never logged");
}
