//! Per-workspace limits (`[[workspace_limits]]`): requests in the processing queue, and calls
//! a minute to the batch routes. Over either: 429 `rate_limit_error` with `retry-after`,
//! nothing created, other workspaces unaffected.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use satchel_core::workspace_limits::{WorkspaceLimit, WorkspaceLimits};
use serde_json::{Value, json};

use crate::helpers::{KEY_B, TestApp};

fn requests(prefix: &str, n: usize) -> Value {
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("{prefix}{i}"), "params": {"model": "m", "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]}})
        })
        .collect()
}

async fn app(limit: WorkspaceLimit) -> TestApp {
    TestApp::spawn_with(|config| {
        // Nothing ends while the test runs: every accepted request stays queued.
        config.emulator.latency = Duration::from_secs(3600);
        config.workspace_limits = Arc::new(WorkspaceLimits::new([("team-a".to_owned(), limit)]));
    })
    .await
}

async fn batch_ids(app: &TestApp) -> Vec<String> {
    let page = app.send(Method::GET, "/v1/messages/batches", None).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    page.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_create_over_the_queue_limit_is_refused_and_creates_nothing() {
    let app = app(WorkspaceLimit {
        max_queued_requests: Some(5),
        requests_per_minute: None,
    })
    .await;
    let first = app.create_ok(&requests("a", 3)).await;

    let refused = app.create(&requests("b", 3)).await;
    refused.assert_error(
        429,
        "rate_limit_error",
        "This batch of 3 requests would exceed your workspace's limit of 5 requests in the Message Batches processing queue (3 queued now). Retry once some of them have ended.",
    );
    assert_eq!(refused.headers["retry-after"], "10");
    assert_eq!(batch_ids(&app).await, [first["id"].as_str().unwrap()]);

    // A batch larger than one ingest chunk (1,000 requests) is refused after its first
    // chunks reached the store: they are discarded too.
    let big = app.create(&requests("c", 2500)).await;
    assert_eq!(big.status, StatusCode::TOO_MANY_REQUESTS, "{}", big.text);
    assert_eq!(batch_ids(&app).await.len(), 1);

    // What was refused takes no room: the queue fills up to its limit exactly.
    app.create_ok(&requests("d", 2)).await;
    let full = app.create(&requests("e", 1)).await;
    assert_eq!(full.status, StatusCode::TOO_MANY_REQUESTS, "{}", full.text);
    assert_eq!(batch_ids(&app).await.len(), 2);

    // Another workspace has its own queue (here unlimited).
    let other = app.as_key(KEY_B);
    other.create_ok(&requests("f", 50)).await;
    assert_eq!(batch_ids(&other).await.len(), 1);
}

#[tokio::test]
async fn concurrent_creates_of_one_workspace_never_overfill_its_queue() {
    // Creates of one workspace racing each other: no interleaving lets them pass together.
    let app = app(WorkspaceLimit {
        max_queued_requests: Some(10),
        requests_per_minute: None,
    })
    .await;
    let replies = futures::future::join_all((0..8).map(|i| {
        let body = requests(&format!("r{i}-"), 3);
        let app = &app;
        async move { app.create(&body).await.status }
    }))
    .await;
    let accepted = replies.iter().filter(|s| **s == StatusCode::OK).count();
    assert_eq!(accepted, 3, "{replies:?}");
    assert!(
        replies
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::TOO_MANY_REQUESTS)
    );
    assert_eq!(batch_ids(&app).await.len(), 3);
}

#[tokio::test]
async fn calls_over_the_rate_are_refused_and_other_workspaces_go_on() {
    let app = app(WorkspaceLimit {
        max_queued_requests: None,
        requests_per_minute: NonZeroU32::new(3),
    })
    .await;
    // Any batch route counts: create, retrieve, list.
    let batch = app.create_ok(&requests("a", 1)).await;
    let id = batch["id"].as_str().unwrap();
    assert_eq!(app.get(id).await.status, StatusCode::OK);
    assert_eq!(batch_ids(&app).await.len(), 1);

    let refused = app.get(id).await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.text
    );
    let body = refused.json();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "This request would exceed your workspace's rate limit of 3 requests per minute"
        ),
        "{message}"
    );
    // One call comes back every 20 s.
    let after: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&after), "retry-after {after}");
    let create = app.create(&requests("b", 1)).await;
    assert_eq!(create.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(create.headers.contains_key("retry-after"));

    let other = app.as_key(KEY_B);
    for _ in 0..10 {
        assert_eq!(batch_ids(&other).await.len(), 0);
    }
    // The probes are not batch routes.
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}
