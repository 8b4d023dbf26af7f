//! Results: one line per request, in submission order, with the emulator's messages.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{TestApp, requests};

#[tokio::test]
async fn one_line_per_request_in_submission_order() {
    let app = TestApp::spawn_with(|c| c.dispatch.max_in_flight = 64).await;
    let batch = app.create_ok(&requests(2_500, "order")).await;
    let id = batch["id"].as_str().unwrap();
    app.wait_ended(id, Duration::from_secs(30)).await;
    let lines = app.result_lines(id).await;
    assert_eq!(lines.len(), 2_500);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("r{i}"));
        assert_eq!(line["result"]["type"], "succeeded");
        assert_eq!(
            line["result"]["message"]["content"][0]["text"],
            format!("order {i}")
        );
        let keys: Vec<&String> = line.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["custom_id", "result"]);
    }
}

#[tokio::test]
async fn params_problems_become_errored_lines_at_run_time() {
    let app = TestApp::spawn().await;
    let hello = json!([{"role": "user", "content": "Hello, world"}]);
    let batch = app
        .create_ok(&json!([
            {"custom_id": "ok", "params": {"model": "claude-x", "max_tokens": 64, "messages": hello}},
            {"custom_id": "no-max", "params": {"model": "claude-x", "messages": hello}},
            {"custom_id": "no-model", "params": {"max_tokens": 5, "messages": hello}},
            {"custom_id": "zero", "params": {"model": "m", "max_tokens": 0, "messages": hello}},
            {"custom_id": "stream", "params": {"model": "m", "max_tokens": 5, "messages": hello, "stream": true}},
            {"custom_id": "short", "params": {"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": "a long question indeed"}]}},
        ]))
        .await;
    let id = batch["id"].as_str().unwrap();
    let ended = app.wait_ended(id, Duration::from_secs(10)).await;
    assert_eq!(
        ended["request_counts"],
        json!({"processing": 0, "succeeded": 2, "errored": 4, "canceled": 0, "expired": 0})
    );
    let lines = app.result_lines(id).await;
    let ok = &lines[0]["result"]["message"];
    assert!(ok["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(ok["type"], "message");
    assert_eq!(ok["role"], "assistant");
    assert_eq!(ok["model"], "claude-x");
    assert_eq!(ok["stop_reason"], "end_turn");
    assert_eq!(
        ok["content"],
        json!([{"type": "text", "text": "Hello, world", "citations": null}])
    );
    assert_eq!(ok["usage"]["output_tokens"], 3);
    assert_eq!(ok["usage"]["service_tier"], "batch");
    let error_of = |i: usize| lines[i]["result"]["error"].clone();
    assert_eq!(
        error_of(1),
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}, "request_id": null})
    );
    assert_eq!(error_of(2)["error"]["message"], "model: Field required");
    assert_eq!(
        error_of(3)["error"]["message"],
        "max_tokens: must be greater than or equal to 1"
    );
    assert_eq!(
        error_of(4)["error"]["message"],
        "\"stream=True\" is not supported in the Message Batches API"
    );
    let short = &lines[5]["result"]["message"];
    assert_eq!(short["stop_reason"], "max_tokens");
    assert_eq!(short["usage"]["output_tokens"], 1);
    assert_eq!(short["content"][0]["text"], "a lo");
}

#[tokio::test]
async fn injected_errors_are_errored_lines() {
    let app = TestApp::spawn_with(|c| c.emulator.error_rate = 1.0).await;
    let batch = app.create_ok(&requests(20, "fail")).await;
    let id = batch["id"].as_str().unwrap();
    let ended = app.wait_ended(id, Duration::from_secs(10)).await;
    assert_eq!(ended["request_counts"]["errored"], 20);
    for line in app.result_lines(id).await {
        let kind = line["result"]["error"]["error"]["type"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(kind == "api_error" || kind == "overloaded_error", "{line}");
    }
}

#[tokio::test]
async fn the_configured_public_base_url_is_used_in_results_url() {
    let app = TestApp::spawn_with(|c| {
        c.public_base_url = Some("https://batches.example.com/prefix/".into())
    })
    .await;
    let batch = app.create_ok(&requests(1, "x")).await;
    let id = batch["id"].as_str().unwrap();
    let ended = app.wait_ended(id, Duration::from_secs(10)).await;
    assert_eq!(
        ended["results_url"],
        format!("https://batches.example.com/prefix/v1/messages/batches/{id}/results")
    );
}
