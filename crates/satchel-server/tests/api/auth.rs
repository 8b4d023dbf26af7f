//! Keys, versions and workspaces.

use reqwest::{Method, StatusCode};
use satchel_server::auth::Keys;
use satchel_server::{ServerConfig, StartError};

use crate::helpers::{KEY_B, TestApp, read, requests};

#[tokio::test]
async fn missing_or_unknown_keys_are_401_on_every_route() {
    let app = TestApp::spawn().await;
    for (method, path) in [
        (Method::GET, "/v1/messages/batches"),
        (Method::POST, "/v1/messages/batches"),
        (Method::GET, "/v1/messages/batches/msgbatch_01x"),
        (Method::GET, "/v1/messages/batches/msgbatch_01x/results"),
        (Method::POST, "/v1/messages/batches/msgbatch_01x/cancel"),
        (Method::DELETE, "/v1/messages/batches/msgbatch_01x"),
        (Method::GET, "/somewhere/else"),
    ] {
        let url = format!("{}{path}", app.base);
        let reply = read(
            app.client
                .request(method.clone(), &url)
                .header("anthropic-version", "2023-06-01")
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.assert_error(401, "authentication_error", "x-api-key header is required");
        let reply = read(
            app.client
                .request(method, &url)
                .header("x-api-key", "sk-wrong")
                .header("anthropic-version", "2023-06-01")
                .send()
                .await
                .unwrap(),
        )
        .await;
        reply.assert_error(401, "authentication_error", "invalid x-api-key");
    }
}

#[tokio::test]
async fn bearer_tokens_work_like_x_api_key() {
    let app = TestApp::spawn().await;
    let batch = app.create_ok(&requests(1, "hi")).await;
    let url = format!(
        "{}/v1/messages/batches/{}",
        app.base,
        batch["id"].as_str().unwrap()
    );
    let reply = read(
        app.client
            .get(&url)
            .bearer_auth(&app.key)
            .header("anthropic-version", "2026-10-21")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.json()["id"], batch["id"]);
}

#[tokio::test]
async fn anthropic_version_is_required() {
    let app = TestApp::spawn().await;
    let url = format!("{}/v1/messages/batches", app.base);
    let reply = read(
        app.client
            .get(&url)
            .header("x-api-key", &app.key)
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_error(
        400,
        "invalid_request_error",
        "anthropic-version: header is required",
    );
    let reply = read(
        app.client
            .get(&url)
            .header("x-api-key", &app.key)
            .header("anthropic-version", "latest")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn another_workspace_sees_nothing() {
    let app = TestApp::spawn().await;
    let batch = app.create_ok(&requests(2, "mine")).await;
    let id = batch["id"].as_str().unwrap();
    app.wait_ended(id, std::time::Duration::from_secs(10)).await;
    let other = app.as_key(KEY_B);
    let not_found = format!("Message Batch {id} not found.");
    other
        .get(id)
        .await
        .assert_error(404, "not_found_error", &not_found);
    other
        .results(id)
        .await
        .assert_error(404, "not_found_error", &not_found);
    other
        .cancel(id)
        .await
        .assert_error(404, "not_found_error", &not_found);
    other
        .delete(id)
        .await
        .assert_error(404, "not_found_error", &not_found);
    let page = other
        .send(Method::GET, "/v1/messages/batches", None)
        .await
        .json();
    assert_eq!(page["data"], serde_json::json!([]));
    // Still there for its owner.
    assert_eq!(app.get(id).await.status, StatusCode::OK);
}

#[tokio::test]
async fn open_mode_accepts_any_key_on_loopback_only() {
    let app = TestApp::spawn_with(|c| c.keys = Keys::default()).await;
    let anyone = app.as_key("whatever-key");
    assert_eq!(
        anyone
            .send(Method::GET, "/v1/messages/batches", None)
            .await
            .status,
        StatusCode::OK
    );

    let dir = tempfile::tempdir().unwrap();
    let config = ServerConfig::new("0.0.0.0:0".parse().unwrap(), dir.path().join("x.db"));
    match satchel_server::start(config).await {
        Err(StartError::OpenBeyondLoopback(_)) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("must refuse to listen beyond loopback without keys"),
    }
}

#[tokio::test]
async fn unknown_routes_and_ids_are_404() {
    let app = TestApp::spawn().await;
    app.send(Method::GET, "/_stainless_unknown_path", None)
        .await
        .assert_error(404, "not_found_error", "Not found");
    app.send(Method::GET, "/v1/messages/batches/a/b/c", None)
        .await
        .assert_error(404, "not_found_error", "Not found");
    for id in ["msgbatch_01doesnotexist", "nope", "%27%3B--"] {
        let reply = app.get(id).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{id}: {}", reply.text);
        assert_eq!(reply.json()["error"]["type"], "not_found_error");
    }
    // A wrong method on a real route is a clean client error, not a 5xx.
    let reply = app.send(Method::PUT, "/v1/messages/batches", None).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.json()["type"], "error");
}
