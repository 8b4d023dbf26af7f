#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

//! Satchel's extensions as a user meets them, real processes throughout:
//! `satchel batch results ID --follow` printing lines as they settle through a `kill -9` and
//! restart of the server, and `satchel batch retry ID`; and both on two nodes sharing
//! PostgreSQL, through a `kill -9` of one of them.

mod support;

use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Server, create_batch, requests_body};

const BIN: &str = env!("CARGO_BIN_EXE_satchel");

fn batch_command(server: &Server, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .arg("batch")
        .args(["--base-url", &server.url(""), "--api-key", "any-key"])
        .args(args);
    for var in [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
    ] {
        command.env_remove(var);
    }
    command
}

fn lines_in(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_prints_every_line_once_through_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("satchel.db");
    let args = ["--emulator-latency", "20ms", "--max-in-flight", "8"];
    let mut server = Server::start(&db, &args).await;
    let id = create_batch(&server, requests_body(600, 40)).await;

    let out = dir.path().join("followed.jsonl");
    let mut follower = batch_command(
        &server,
        &["results", &id, "--follow", "-o", out.to_str().unwrap()],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();

    // Lines land while the batch runs...
    let deadline = Instant::now() + Duration::from_secs(60);
    while lines_in(&out).len() < 50 {
        assert!(Instant::now() < deadline, "no lines arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before_crash = lines_in(&out).len();
    assert!(before_crash < 600, "the batch was still running");

    // ...the server dies without warning and comes back on the same address.
    let addr = server.addr;
    server.kill_9();
    tokio::time::sleep(Duration::from_millis(300)).await; // the follower meets a dead port
    let server = Server::start_at(&db, addr, &args).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the follower never ended");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let stderr = std::io::read_to_string(follower.stderr.take().unwrap()).unwrap();
    assert!(status.success(), "follower failed: {stderr}");
    assert!(stderr.contains("wrote 600 results"), "{stderr}");

    let lines = lines_in(&out);
    let ids: Vec<String> = lines
        .iter()
        .map(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            assert_eq!(line["result"]["type"], "succeeded", "{l}");
            line["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a line was printed twice");
    assert_eq!(ids.len(), 600);
    let batch = server.wait_ended(&id, Duration::from_secs(5)).await;
    assert_eq!(batch["request_counts"]["succeeded"], 600);
}

#[tokio::test]
async fn retry_reruns_the_failed_requests_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("satchel.db");
    let server = Server::start(&db, &["--emulator-error-rate", "0.5"]).await;
    let id = create_batch(&server, requests_body(60, 10)).await;
    let ended = server.wait_ended(&id, Duration::from_secs(30)).await;
    let errored = ended["request_counts"]["errored"].as_u64().unwrap();
    assert!(errored > 0, "the emulator injected errors");

    let output = batch_command(&server, &["--json", "retry", &id])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let retried: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(retried["source_batch_id"], id.as_str());
    assert_eq!(retried["request_count"], errored);
    let new_id = retried["batch"]["id"].as_str().unwrap();
    let rerun = server.wait_ended(new_id, Duration::from_secs(30)).await;
    assert_eq!(rerun["request_counts"]["processing"], 0);
    let total: u64 = ["succeeded", "errored"]
        .iter()
        .map(|k| rerun["request_counts"][k].as_u64().unwrap())
        .sum();
    assert_eq!(total, errored);

    // Nothing to re-run: a clear one-line error, exit status 1, no batch made.
    let none = batch_command(
        &server,
        &["retry", &id, "--errored", "none", "--no-expired"],
    )
    .output()
    .unwrap();
    assert_eq!(none.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("has no requests to retry"), "{stderr}");
}

/// Reads one page of lines settled after `after` from `node`: (lines, cursor, complete). A node that is gone or cannot reach the database answers no page.
async fn page(node: &Server, id: &str, after: &str) -> Option<(Vec<String>, String, bool)> {
    let response = reqwest::Client::new()
        .get(node.url(&format!(
            "/v1/messages/batches/{id}/results?after={after}&wait=1&limit=97"
        )))
        .header("x-api-key", "any-key")
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .ok()?;
    if response.status() != 200 {
        return None;
    }
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let (cursor, complete) = (
        header("satchel-results-cursor"),
        header("satchel-results-complete") == "true",
    );
    let text = response.text().await.ok()?;
    Some((text.lines().map(str::to_owned).collect(), cursor, complete))
}

/// On two nodes sharing PostgreSQL, a reader alternating between them reads every line once
/// while the batch runs, through a `kill -9` of the node that made the batch; and a batch
/// made on one node is re-run from the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_postgres_nodes_serve_results_while_running_and_retries() {
    let Some(pg) = satchel_pg_test::Cluster::start("the two-node extensions test") else {
        return;
    };
    let url = pg.create_database();
    let dir = tempfile::tempdir().unwrap();
    let args = |id: &'static str| {
        vec![
            "--emulator-latency",
            "10ms",
            "--emulator-error-rate",
            "0.2",
            "--max-in-flight",
            "16",
            "--lease-ttl",
            "3s",
            "--node-id",
            id,
        ]
    };
    let mut a = Server::start_shared(&url, dir.path(), &args("node-a")).await;
    let b = Server::start_shared(&url, dir.path(), &args("node-b")).await;
    let id = create_batch(&a, requests_body(1_500, 20)).await;

    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut cursor, mut seen, mut turn, mut killed) = ("0".to_owned(), Vec::new(), 0, false);
    loop {
        let node = if killed || turn % 2 == 1 { &b } else { &a };
        turn += 1;
        let Some((lines, next, complete)) = page(node, &id, &cursor).await else {
            assert!(Instant::now() < deadline, "no page");
            tokio::time::sleep(Duration::from_millis(50)).await; // polling a node, not a barrier
            continue;
        };
        seen.extend(lines.iter().map(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            line["custom_id"].as_str().unwrap().to_owned()
        }));
        cursor = next;
        if complete {
            break;
        }
        if !killed && seen.len() > 300 {
            a.kill_9();
            killed = true;
        }
        assert!(
            Instant::now() < deadline,
            "never complete: {} lines",
            seen.len()
        );
    }
    assert!(killed, "node a died mid-batch");
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a line was read twice");
    assert_eq!(seen.len(), 1_500);

    // Re-run the errored requests from node b.
    let ended = b.wait_ended(&id, Duration::from_secs(10)).await;
    let errored = ended["request_counts"]["errored"].as_u64().unwrap();
    assert!(errored > 0);
    let (status, body) = support::client_send(
        "POST",
        &b.url(&format!("/v1/messages/batches/{id}/retry")),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let retried: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(retried["request_count"], errored);
    let rerun = b
        .wait_ended(
            retried["batch"]["id"].as_str().unwrap(),
            Duration::from_secs(60),
        )
        .await;
    let total: u64 = ["succeeded", "errored"]
        .iter()
        .map(|k| rerun["request_counts"][k].as_u64().unwrap())
        .sum();
    assert_eq!(total, errored);
}
