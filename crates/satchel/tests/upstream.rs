//! Running batches on model servers: the real `satchel serve` process against the real
//! `satchel mock-upstream` process, with faults, rate limits, retry-after and fairness.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Mock, Server, client_get, client_send, create_batch, get_batch};

/// Writes a config with the given `[[backends]]` TOML and starts Satchel on it.
async fn serve_with(dir: &Path, backends: &str) -> Server {
    let config = dir.join("satchel.toml");
    std::fs::write(&config, backends).unwrap();
    Server::start(
        &dir.join("satchel.db"),
        &["--config", config.to_str().unwrap()],
    )
    .await
}

fn requests(n: usize, model: &str, prefix: &str) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("{prefix}{i}"), "params": {"model": model, "max_tokens": 32,
                "messages": [{"role": "user", "content": format!("request {prefix}{i}")}]}})
        })
        .collect()
}

async fn create(server: &Server, requests: Vec<Value>) -> String {
    create_batch(server, json!({ "requests": requests }).to_string()).await
}

async fn lines(server: &Server, id: &str) -> Vec<Value> {
    let (status, body) =
        client_get(&server.url(&format!("/v1/messages/batches/{id}/results"))).await;
    assert_eq!(status, 200, "{body}");
    body.split_terminator('\n')
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn thirty_percent_faults_end_every_request_exactly_once() {
    let mock = Mock::start(&[
        "--rate-429",
        "0.08",
        "--rate-529",
        "0.05",
        "--rate-500",
        "0.07",
        "--rate-hang",
        "0.02",
        "--rate-reset",
        "0.04",
        "--rate-malformed",
        "0.04",
        "--retry-after",
        "50ms",
        "--hang",
        "30s",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &format!(
            r#"[[backends]]
name = "flaky"
kind = "anthropic"
base_url = "{}"
max_concurrency = 64
timeout = "1s"
max_retries = 8
initial_backoff = "20ms"
max_backoff = "200ms"
"#,
            mock.base
        ),
    )
    .await;
    let n = 3_000;
    let id = create(&server, requests(n, "claude-test", "r")).await;
    let ended = server.wait_ended(&id, Duration::from_secs(180)).await;
    let counts = &ended["request_counts"];
    let (succeeded, errored) = (
        counts["succeeded"].as_u64().unwrap(),
        counts["errored"].as_u64().unwrap(),
    );
    assert_eq!(succeeded + errored, n as u64, "{ended}");

    let lines = lines(&server, &id).await;
    assert_eq!(lines.len(), n, "one line per request");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("r{i}"), "in order, none twice");
        match line["result"]["type"].as_str().unwrap() {
            "succeeded" => assert_eq!(
                line["result"]["message"]["content"][0]["text"],
                format!("request r{i}")
            ),
            // Only a fault that outlasted every retry may end a request as errored.
            "errored" => {
                let kind = line["result"]["error"]["error"]["type"].as_str().unwrap();
                assert!(
                    [
                        "api_error",
                        "rate_limit_error",
                        "overloaded_error",
                        "timeout_error"
                    ]
                    .contains(&kind),
                    "{line}"
                );
            }
            other => panic!("unexpected {other}: {line}"),
        }
    }
    let stats = mock.stats().await;
    for status in ["429", "529", "500", "200"] {
        assert!(
            stats["statuses"][status].as_u64().unwrap_or(0) > 0,
            "faults were injected: {stats}"
        );
    }
    assert!(
        stats["requests"].as_u64().unwrap() > n as u64 * 13 / 10,
        "retries happened: {}",
        stats["requests"]
    );
}

#[tokio::test]
async fn the_request_rate_never_exceeds_the_configured_limit() {
    let mock = Mock::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &format!("[[backends]]\nname = \"limited\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nmax_concurrency = 100\nrequests_per_minute = 3000\n", mock.base),
    )
    .await;
    let id = create(&server, requests(200, "claude-test", "r")).await;
    server.wait_ended(&id, Duration::from_secs(60)).await;
    let stats = mock.stats().await;
    let arrivals: Vec<f64> = stats["arrivals_ms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert_eq!(arrivals.len(), 200);
    // 3000/min = 50/s, evenly spaced: no one-second window may hold more than 50 (+1 for
    // where the window starts).
    for (i, start) in arrivals.iter().enumerate() {
        let in_window = arrivals[i..]
            .iter()
            .take_while(|t| **t < start + 1000.0)
            .count();
        assert!(
            in_window <= 51,
            "{in_window} requests within 1 s of {start} ms"
        );
    }
    assert!(
        arrivals.last().unwrap() >= &3_900.0,
        "200 requests at 50/s take ~4 s"
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_4xx_are_not_retried() {
    let mock = Mock::start(&["--fail-first", "1", "--retry-after", "700ms"]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &format!("[[backends]]\nname = \"slow-down\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nmax_concurrency = 16\ninitial_backoff = \"10ms\"\n", mock.base),
    )
    .await;
    let mut batch_requests = requests(20, "claude-test", "ok");
    // Missing max_tokens: the upstream answers 400 on the retry after the 429.
    batch_requests.push(json!({"custom_id": "bad", "params": {"model": "claude-test", "messages": [{"role": "user", "content": "x"}]}}));
    let id = create(&server, batch_requests).await;
    let ended = server.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(ended["request_counts"]["succeeded"], 20, "{ended}");
    assert_eq!(ended["request_counts"]["errored"], 1, "{ended}");
    let bad = lines(&server, &id).await.pop().unwrap();
    assert_eq!(
        bad["result"]["error"],
        json!({"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}, "request_id": null})
    );
    let stats = mock.stats().await;
    // Each request: one 429, then one answer. The 400 was final: no third attempt.
    assert_eq!(stats["requests"], 42, "{stats}");
    let gaps = stats["retry_gaps_ms"].as_array().unwrap();
    assert_eq!(gaps.len(), 21);
    for gap in gaps {
        assert!(
            gap["gap"].as_f64().unwrap() >= 700.0 - 5.0,
            "retried before retry-after: {gap}"
        );
    }
}

#[tokio::test]
async fn openai_backends_translate_both_ways_and_unknown_models_are_not_found() {
    let mock = Mock::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &format!(
            "[[backends]]\nname = \"vllm\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\nmodels = [\"qwen*\"]\n\n\
             [[backends]]\nname = \"anthropic\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodels = [\"claude-*\"]\n",
            mock.base, mock.base
        ),
    )
    .await;
    let tool =
        json!({"name": "lookup", "description": "Look it up", "input_schema": {"type": "object"}});
    let id = create(
        &server,
        vec![
            json!({"custom_id": "text", "params": {"model": "qwen2.5", "max_tokens": 2, "system": "terse",
                "messages": [{"role": "user", "content": "abcdefghijkl"}]}}),
            json!({"custom_id": "tool", "params": {"model": "qwen2.5", "max_tokens": 64, "tools": [tool],
                "tool_choice": {"type": "any"}, "messages": [{"role": "user", "content": "find it"}]}}),
            json!({"custom_id": "thinking", "params": {"model": "qwen2.5", "max_tokens": 64,
                "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [{"role": "user", "content": "hm"}]}}),
            json!({"custom_id": "claude", "params": {"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}}),
            json!({"custom_id": "unknown", "params": {"model": "gpt-4o", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}}),
        ],
    )
    .await;
    server.wait_ended(&id, Duration::from_secs(30)).await;
    let lines = lines(&server, &id).await;
    let text = &lines[0]["result"]["message"];
    assert_eq!(
        text["content"],
        json!([{"type": "text", "text": "abcdefgh", "citations": null}])
    );
    assert_eq!(text["stop_reason"], "max_tokens");
    assert!(text["id"].as_str().unwrap().starts_with("msg_"));
    let tool_use = &lines[1]["result"]["message"];
    assert_eq!(tool_use["stop_reason"], "tool_use");
    assert_eq!(tool_use["content"][0]["type"], "tool_use");
    assert_eq!(tool_use["content"][0]["name"], "lookup");
    assert_eq!(tool_use["content"][0]["input"], json!({}));
    assert_eq!(
        lines[2]["result"]["error"]["error"]["type"],
        "invalid_request_error"
    );
    assert_eq!(
        lines[2]["result"]["error"]["error"]["message"],
        "thinking: extended thinking cannot be translated for an OpenAI-format backend"
    );
    assert_eq!(lines[3]["result"]["message"]["content"][0]["text"], "hello");
    assert_eq!(
        lines[4]["result"]["error"]["error"],
        json!({"type": "not_found_error", "message": "model: gpt-4o"})
    );
}

#[tokio::test]
async fn a_small_batch_is_not_starved_by_a_large_one() {
    let mock = Mock::start(&["--latency", "10ms"]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &format!("[[backends]]\nname = \"narrow\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nmax_concurrency = 4\n", mock.base),
    )
    .await;
    let big = create(&server, requests(2_000, "claude-test", "big")).await;
    // The big batch is running (its requests reach the upstream) before the small one comes.
    mock.wait_requests(8, Duration::from_secs(30)).await;
    let small = create(&server, requests(20, "claude-test", "small")).await;
    server.wait_ended(&small, Duration::from_secs(60)).await;
    let big_now = get_batch(&server, &big).await;
    let big_left = big_now["request_counts"]["processing"].as_u64().unwrap();
    // Interleaved, the small one is done after about 2 × 20 requests: far before the big one
    // is half way. Measured in requests, not seconds, so a slow machine cannot fail it.
    assert!(
        big_left > 1_000,
        "big batch had only {big_left} left when the small one ended"
    );
}

#[tokio::test]
async fn cancel_stops_dispatch_at_once() {
    let mock = Mock::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &format!("[[backends]]\nname = \"metered\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nmax_concurrency = 50\nrequests_per_minute = 600\n", mock.base),
    )
    .await;
    let id = create(&server, requests(100, "claude-test", "r")).await;
    // Some requests went out (at 10/s) before the cancel.
    mock.wait_requests(5, Duration::from_secs(30)).await;
    let (status, _) = client_send(
        "POST",
        &server.url(&format!("/v1/messages/batches/{id}/cancel")),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let sent_at_cancel = mock.stats().await["requests"].as_u64().unwrap();
    let ended = server.wait_ended(&id, Duration::from_secs(5)).await;
    let sent = mock.stats().await["requests"].as_u64().unwrap();
    // At 10/s a few had been sent; at most the one already admitted follows the cancel.
    assert!(
        sent <= sent_at_cancel + 1,
        "{sent} sent, {sent_at_cancel} at cancel"
    );
    let counts = &ended["request_counts"];
    assert_eq!(counts["succeeded"].as_u64().unwrap(), sent, "{ended}");
    assert_eq!(counts["canceled"].as_u64().unwrap(), 100 - sent, "{ended}");
}

#[tokio::test]
async fn kill_9_during_retries_loses_nothing_and_duplicates_nothing() {
    // Every request is told to come back later once, so at each kill many are mid-retry.
    let mock = Mock::start(&[
        "--fail-first",
        "1",
        "--retry-after",
        "300ms",
        "--latency",
        "5ms",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("satchel.toml");
    std::fs::write(
        &config,
        format!("[[backends]]\nname = \"m\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nmax_concurrency = 32\n", mock.base),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let db = dir.path().join("satchel.db");
    let mut server = Server::start(&db, &args).await;
    let n = 600;
    let id = create(&server, requests(n, "claude-test", "r")).await;
    for pause in [400, 500, 600] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill_9();
        server = Server::start(&db, &args).await;
    }
    let ended = server.wait_ended(&id, Duration::from_secs(120)).await;
    assert_eq!(ended["request_counts"]["succeeded"], n, "{ended}");
    let lines = lines(&server, &id).await;
    assert_eq!(lines.len(), n);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("r{i}"));
    }
}

#[tokio::test]
async fn a_rate_limited_route_holds_no_slots_another_route_could_use() {
    let mock = Mock::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &format!(
            "[[backends]]\nname = \"slow\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nmodels = [\"slow-*\"]\nmax_concurrency = 2\nrequests_per_minute = 60\n\n\
             [[backends]]\nname = \"fast\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nmodels = [\"fast-*\"]\nmax_concurrency = 4\n",
            mock.base
        ),
    )
    .await;
    // The slow route takes one request a second. Its batch comes first and would fill every
    // run slot with requests waiting for that rate, if claims did not look at routes.
    let slow = create(&server, requests(200, "slow-model", "s")).await;
    // The slow batch has claimed its run slots (its first requests went out) first.
    mock.wait_requests(1, Duration::from_secs(30)).await;
    let fast = create(&server, requests(300, "fast-model", "f")).await;
    let ended = server.wait_ended(&fast, Duration::from_secs(60)).await;
    assert_eq!(ended["request_counts"]["succeeded"], 300, "{ended}");
    let slow_now = get_batch(&server, &slow).await;
    assert!(
        slow_now["request_counts"]["processing"].as_u64().unwrap() > 100,
        "the slow route kept its pace: {slow_now}"
    );
}

/// The create call's `anthropic-beta` and `anthropic-user-profile-id` go upstream with every
/// request of its batch, and its `anthropic-version` too unless the backend pins one; a batch
/// created without them sends none (and the client's version). Seen from the mock's side.
#[tokio::test]
async fn create_call_headers_go_upstream_with_every_request() {
    let mock = Mock::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve_with(
        dir.path(),
        &format!(
            "[[backends]]\nname = \"as-sent\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nmodels = [\"free-*\"]\n\
             [[backends]]\nname = \"pinned\"\nkind = \"anthropic\"\nbase_url = \"{0}\"\nmodels = [\"pinned-*\"]\nanthropic_version = \"2023-01-01\"\n",
            mock.base
        ),
    )
    .await;
    let mut batch = requests(30, "free-model", "f");
    batch.extend(requests(20, "pinned-model", "p"));
    let response = reqwest::Client::new()
        .post(server.url("/v1/messages/batches"))
        .header("x-api-key", "any-key")
        .header("anthropic-version", "2024-02-02")
        .header("anthropic-beta", "files-api-2025-04-14")
        .header("anthropic-beta", "context-1m-2025-08-07")
        .header("anthropic-user-profile-id", "prof_42")
        .header("content-type", "application/json")
        .body(json!({ "requests": batch }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let with: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    let with = with["id"].as_str().unwrap();
    // The test client's create: anthropic-version 2023-06-01, no beta, no profile.
    let without = create(&server, requests(10, "free-model", "n")).await;
    for id in [with, without.as_str()] {
        let ended = server.wait_ended(id, Duration::from_secs(60)).await;
        assert_eq!(ended["request_counts"]["errored"], 0, "{ended}");
    }
    let stats = mock.stats().await;
    assert_eq!(stats["requests"], 60, "{stats}");
    let headers = &stats["headers"];
    assert_eq!(
        headers["anthropic-version"],
        json!({"2024-02-02": 30, "2023-01-01": 20, "2023-06-01": 10}),
        "{stats}"
    );
    assert_eq!(
        headers["anthropic-beta"],
        json!({"files-api-2025-04-14,context-1m-2025-08-07": 50, "": 10}),
        "{stats}"
    );
    assert_eq!(
        headers["anthropic-user-profile-id"],
        json!({"prof_42": 50, "": 10}),
        "{stats}"
    );
}
