#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

//! Satchel's extensions as a user meets them, real processes throughout:
//! `satchel batch results ID --follow` printing lines as they settle through a `kill -9` and
//! restart of the server, and `satchel batch retry ID`.

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
