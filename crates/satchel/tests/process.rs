//! Tests of the `satchel` binary as a process: crash durability under `kill -9`, memory while
//! taking a large batch, and start-up refusals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::{Server, client_get, client_send, create_batch, get_batch, requests_body};

/// Asserts the batch ended with exactly one line per request `r0..r{n-1}`, in order, and
/// counts that sum to `n`.
async fn assert_exactly_once(server: &Server, id: &str, n: usize) -> Value {
    let batch = server.wait_ended(id, Duration::from_secs(120)).await;
    let counts = &batch["request_counts"];
    let sum: u64 = ["processing", "succeeded", "errored", "canceled", "expired"]
        .iter()
        .map(|k| counts[k].as_u64().unwrap())
        .sum();
    assert_eq!(sum, n as u64, "{batch}");
    assert_eq!(counts["succeeded"].as_u64().unwrap(), n as u64, "{batch}");
    let (status, body) =
        client_get(&server.url(&format!("/v1/messages/batches/{id}/results"))).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = body.split_terminator('\n').collect();
    assert_eq!(lines.len(), n, "exactly one line per request");
    for (i, line) in lines.iter().enumerate() {
        let line: Value = serde_json::from_str(line).unwrap();
        assert_eq!(
            line["custom_id"],
            format!("r{i}"),
            "lines in submission order, none twice"
        );
        assert_eq!(line["result"]["type"], "succeeded");
    }
    batch
}

#[tokio::test]
async fn kill_9_mid_batch_loses_nothing_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("satchel.db");
    let args = ["--emulator-latency", "20ms", "--max-in-flight", "16"];
    let mut server = Server::start(&db, &args).await;
    let n = 3_000;
    let id = create_batch(&server, requests_body(n, 200)).await;

    let mut progress = Vec::new();
    for pause in [300, 550, 800, 1_100] {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let now = get_batch(&server, &id).await;
        progress.push(now["request_counts"]["succeeded"].as_u64().unwrap());
        server.kill_9();
        server = Server::start(&db, &args).await;
    }
    assert!(
        progress.windows(2).all(|w| w[0] <= w[1]),
        "results survive each kill: {progress:?}"
    );
    assert!(
        *progress.last().unwrap() < n as u64,
        "the kills happened mid-batch: {progress:?}"
    );
    assert_exactly_once(&server, &id, n).await;
}

#[tokio::test]
async fn kill_9_during_group_commits_at_zero_latency() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("satchel.db");
    let mut server = Server::start(&db, &[]).await;
    let n = 20_000;
    let id = create_batch(&server, requests_body(n, 100)).await;
    for (kill, pause) in [20, 60, 120].into_iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if kill == 0 {
            let succeeded = get_batch(&server, &id).await["request_counts"]["succeeded"]
                .as_u64()
                .unwrap();
            assert!(
                succeeded < n as u64,
                "the first kill must come mid-batch: {succeeded} done"
            );
        }
        server.kill_9();
        server = Server::start(&db, &[]).await;
    }
    assert_exactly_once(&server, &id, n).await;
}

#[tokio::test]
async fn kill_9_during_an_upload_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("satchel.db");
    let server = Server::start(&db, &[]).await;
    // A client that sends half a body and then stalls, while the server is killed.
    let body = requests_body(20_000, 300);
    let half = body.len() / 2;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages/batches HTTP/1.1\r\nhost: {}\r\nx-api-key: k\r\nanthropic-version: 2023-06-01\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n",
        server.addr,
        body.len()
    );
    use tokio::io::AsyncWriteExt;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body.as_bytes()[..half]).await.unwrap();
    // Some chunks reach the store: past the first chunk, a batch's params go to its file.
    let params = dir.path().join("satchel.db.params");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&params).map_or(0, |d| d.count()) == 0 {
        assert!(std::time::Instant::now() < deadline, "no chunk was stored");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut server = server;
    server.kill_9();
    drop(stream);
    let server = Server::start(&db, &[]).await;
    let (status, list) = client_get(&server.url("/v1/messages/batches")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["data"],
        json!([]),
        "no half batch"
    );
    // The store is healthy: a new batch runs to the end.
    let id = create_batch(&server, requests_body(50, 10)).await;
    assert_exactly_once(&server, &id, 50).await;
}

#[tokio::test]
async fn peak_memory_stays_bounded_while_taking_a_large_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("satchel.db"),
        &["--emulator-latency", "1h"],
    )
    .await;
    // ~96 MB: 40,000 requests of ~2.4 KB.
    let body = requests_body(40_000, 2_300);
    assert!(body.len() > 90_000_000, "{}", body.len());
    let (status, batch) =
        client_send("POST", &server.url("/v1/messages/batches"), Some(body)).await;
    assert_eq!(status, 200, "{batch}");
    let peak_mb = server.peak_rss_kb() / 1024;
    assert!(
        peak_mb < 100,
        "server peak RSS {peak_mb} MB while taking a ~96 MB batch"
    );
}

#[tokio::test]
async fn refuses_a_second_process_on_the_same_file_and_open_listening_beyond_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("satchel.db");
    let _first = Server::start(&db, &[]).await;
    let output = support::run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("in use by another Satchel process"),
        "{stderr}"
    );

    let other = dir.path().join("other.db");
    let output = support::run_to_exit(&[
        "serve",
        "--listen",
        "0.0.0.0:0",
        "--db",
        other.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0 without API keys"),
        "{stderr}"
    );
}

#[test]
fn help_explains_every_serve_flag() {
    let output = support::run_to_exit(&["serve", "--help"]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--port-file",
        "--db",
        "--config",
        "--public-base-url",
        "--emulator-latency",
        "--emulator-error-rate",
        "--expiry",
        "--retention",
        "SATCHEL_API_KEYS",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
}

#[tokio::test]
async fn port_zero_takes_a_free_port_and_says_which_in_the_port_file_and_the_log() {
    let dir = tempfile::tempdir().unwrap();
    // Server::start listens on 127.0.0.1:0 with --port-file, and reads the address from it.
    let server = Server::start(&dir.path().join("satchel.db"), &[]).await;
    assert_ne!(server.addr.port(), 0);
    let (status, _) = client_get(&server.url("/healthz")).await;
    assert_eq!(status, 200, "the address written is the one served");
    let log = server.log_text();
    assert!(
        log.contains(&server.addr.to_string()) && log.contains("Satchel is serving"),
        "the log names the address bound: {log}"
    );

    // A shared database's default node id is made of the port: port 0 needs --node-id.
    let output = support::run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        "postgres://satchel@127.0.0.1:1/satchel",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--node-id"), "{stderr}");
}
