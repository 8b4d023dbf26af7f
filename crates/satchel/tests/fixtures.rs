#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

//! The emulator's scripted replies (`--emulator-fixtures`, `fixtures =` in the config file)
//! on the real binary: each kind of rule shapes its request's result line, a bad file refuses
//! the start naming its line, and SIGHUP reloads the rules (a bad file then keeps the old);
//! and the per-workspace limits of the config file.

mod support;

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, client_get, create_batch, run_to_exit};

const WITHIN: Duration = Duration::from_secs(60);

fn write(path: &Path, rules: &[Value]) {
    let text: Vec<String> = rules.iter().map(Value::to_string).collect();
    std::fs::write(path, text.join("\n") + "\n").unwrap();
}

fn item(custom_id: &str, model: &str, text: &str) -> Value {
    json!({"custom_id": custom_id, "params": {"model": model, "max_tokens": 64,
        "messages": [{"role": "user", "content": text}]}})
}

/// Runs a batch of `items` to its end; its result lines by custom_id.
async fn run_batch(server: &Server, items: Vec<Value>) -> HashMap<String, Value> {
    let id = create_batch(server, json!({ "requests": items }).to_string()).await;
    server.wait_ended(&id, WITHIN).await;
    let (status, body) =
        client_get(&server.url(&format!("/v1/messages/batches/{id}/results"))).await;
    assert_eq!(status, 200, "{body}");
    body.lines()
        .map(|line| {
            let line: Value = serde_json::from_str(line).unwrap();
            (
                line["custom_id"].as_str().unwrap().to_owned(),
                line["result"].clone(),
            )
        })
        .collect()
}

/// A counter's value summed over its series, from `/metrics`.
async fn counter(metrics: &str, name: &str) -> f64 {
    let (status, text) = client_get(&format!("http://{metrics}/metrics")).await;
    assert_eq!(status, 200);
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn each_kind_of_rule_shapes_its_result_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("fixtures.jsonl");
    write(
        &rules,
        &[
            json!({"match": {"custom_id": "short*"}, "message": {"content": [{"type": "text", "text": "Hi!"}], "stop_reason": "max_tokens", "usage": {"output_tokens": 1}}}),
            json!({"match": {"custom_id": "busy-*"}, "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            json!({"match": {"params": {"model": "claude-gone"}}, "error": {"type": "not_found_error", "message": "model: claude-gone"}}),
            json!({"match": {"custom_id": "flaky"}, "fail_first": 2}),
            json!({"match": {"custom_id": "slow"}, "latency_ms": 200}),
        ],
    );
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Server::start(
        &dir.path().join("s.db"),
        &[
            "--emulator-fixtures",
            rules.to_str().unwrap(),
            "--metrics-listen",
            &metrics,
        ],
    )
    .await;
    let mut invalid = item("short-invalid", "m", "x");
    invalid["params"]
        .as_object_mut()
        .unwrap()
        .remove("messages");
    let results = run_batch(
        &server,
        vec![
            item("short", "m", "a long question"),
            item("busy-1", "m", "x"),
            item("gone", "claude-gone", "x"),
            item("flaky", "m", "third time lucky"),
            item("slow", "m", "take your time"),
            item("plain", "m", "echo me"),
            invalid,
        ],
    )
    .await;
    let short = &results["short"];
    assert_eq!(short["type"], "succeeded", "{short}");
    assert_eq!(
        short["message"]["content"],
        json!([{"type": "text", "text": "Hi!"}])
    );
    assert_eq!(short["message"]["stop_reason"], "max_tokens");
    assert_eq!(short["message"]["usage"]["output_tokens"], 1);
    assert_eq!(short["message"]["usage"]["service_tier"], "batch");

    let busy = &results["busy-1"];
    assert_eq!(busy["type"], "errored", "{busy}");
    assert_eq!(busy["error"]["error"]["type"], "overloaded_error");
    assert_eq!(busy["error"]["error"]["message"], "Overloaded");

    let gone = &results["gone"];
    assert_eq!(gone["error"]["error"]["type"], "not_found_error", "{gone}");
    assert_eq!(gone["error"]["error"]["message"], "model: claude-gone");

    let flaky = &results["flaky"];
    assert_eq!(flaky["type"], "succeeded", "{flaky}");
    assert_eq!(flaky["message"]["content"][0]["text"], "third time lucky");
    assert_eq!(results["slow"]["type"], "succeeded");
    assert_eq!(results["plain"]["message"]["content"][0]["text"], "echo me");

    // Fixtures apply after validation.
    let invalid = &results["short-invalid"];
    assert_eq!(
        invalid["error"]["error"]["type"], "invalid_request_error",
        "{invalid}"
    );
    assert_eq!(
        invalid["error"]["error"]["message"],
        "messages: Field required"
    );

    // The retries the dispatcher made: busy-1's four (its rule matches every attempt, the
    // route's default max_retries) and flaky's two; none for the final not_found_error.
    assert_eq!(
        counter(&metrics, "satchel_backend_retries_total").await,
        6.0
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn an_emulator_backend_takes_its_own_fixtures_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("fixtures.jsonl");
    write(
        &rules,
        &[json!({"match": {"custom_id": "a"}, "message": {"model": "scripted"}})],
    );
    let config = dir.path().join("satchel.toml");
    std::fs::write(
        &config,
        format!(
            "[[backends]]\nname = \"fake\"\nkind = \"emulator\"\nfixtures = {:?}\n",
            rules.to_str().unwrap()
        ),
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let results = run_batch(&server, vec![item("a", "m", "hi"), item("b", "m", "hi")]).await;
    assert_eq!(results["a"]["message"]["model"], "scripted");
    assert_eq!(results["b"]["message"]["model"], "m");
}

#[tokio::test]
async fn a_bad_fixtures_file_refuses_to_start_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("fixtures.jsonl");
    std::fs::write(
        &rules,
        "{\"latency_ms\": 5}\n# a comment\n{\"mesage\": {}}\n",
    )
    .unwrap();
    let output = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        dir.path().join("s.db").to_str().unwrap(),
        "--emulator-fixtures",
        rules.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("unknown field `mesage`"), "{stderr}");
    assert!(
        !dir.path().join("s.db").exists(),
        "nothing is opened for a server that cannot run"
    );
}

#[tokio::test]
async fn sighup_reloads_the_rules_and_a_bad_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("fixtures.jsonl");
    let answer = |model: &str| json!({"match": {"custom_id": "x"}, "message": {"model": model}});
    write(&rules, &[answer("one")]);
    let mut server = Server::start(
        &dir.path().join("s.db"),
        &["--emulator-fixtures", rules.to_str().unwrap()],
    )
    .await;
    let model = async |server: &Server| -> String {
        run_batch(server, vec![item("x", "m", "hi")]).await["x"]["message"]["model"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(model(&server).await, "one");

    write(&rules, &[answer("two")]);
    hangup(&server);
    let deadline = Instant::now() + WITHIN;
    while model(&server).await != "two" {
        assert!(
            Instant::now() < deadline,
            "not reloaded: {}",
            server.log_text()
        );
    }

    std::fs::write(&rules, "{broken\n").unwrap();
    hangup(&server);
    let deadline = Instant::now() + WITHIN;
    while !server.log_text().contains("emulator fixtures not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no word of the bad file: {}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.log_text().contains("line 1"),
        "{}",
        server.log_text()
    );
    assert_eq!(model(&server).await, "two");
    assert!(server.is_running());
}

fn hangup(server: &Server) {
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// `[[workspace_limits]]` from the config file reach the server (the rules themselves are
/// tested over HTTP in satchel-server's tests).
#[tokio::test]
async fn workspace_limits_from_the_config_file_apply() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("satchel.toml");
    std::fs::write(
        &config,
        "[[workspace_limits]]\nworkspace = \"*\"\nrequests_per_minute = 2\nmax_queued_requests = 100\n",
    )
    .unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--config", config.to_str().unwrap()],
    )
    .await;
    let list = server.url("/v1/messages/batches");
    assert_eq!(client_get(&list).await.0, 200);
    assert_eq!(client_get(&list).await.0, 200);
    let (status, body) = client_get(&list).await;
    assert_eq!(status, 429, "{body}");
    assert!(body.contains("rate_limit_error"), "{body}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[workspace_limits]]\nworkspace = \"a\"\nmax_queued_requests = 0\n",
    )
    .unwrap();
    let output = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        dir.path().join("t.db").to_str().unwrap(),
        "--config",
        bad.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("workspace_limits for \"a\""), "{stderr}");
}
