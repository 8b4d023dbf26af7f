//! The binary's HTTP limits as a process: many half-open connections under a low
//! open-file limit, and the start-up refusal of one key in two workspaces.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{Server, client_get, create_batch, requests_body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BIN: &str = env!("CARGO_BIN_EXE_satchel");

/// This process's open-file soft limit.
fn own_nofile_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_under_ulimit_1024_leave_the_server_serving() {
    const HALF_OPEN: usize = 1100;
    assert!(
        own_nofile_limit() > HALF_OPEN as u64 + 200,
        "this test opens {HALF_OPEN} sockets: raise `ulimit -n` (now {})",
        own_nofile_limit()
    );
    let dir = tempfile::tempdir().unwrap();
    // The default header-read timeout (10 s): longer than opening the sockets takes, so
    // the list below arrives while the server is at its cap.
    let server = Server::start_with_nofile(&dir.path().join("s.db"), 1024, &[]).await;
    let opening = Instant::now();

    let mut sockets = Vec::with_capacity(HALF_OPEN);
    for _ in 0..HALF_OPEN {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        // A request's first lines, and never the blank line that ends its head.
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        sockets.push(s);
    }

    eprintln!(
        "opened {HALF_OPEN} half-open connections in {:?}",
        opening.elapsed()
    );
    // The list waits for a slot (the cap is below the descriptor limit, so the server
    // never runs out of them) and is served once the header timeout frees slots.
    let started = Instant::now();
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(120),
        client_get(&server.url("/v1/messages/batches")),
    )
    .await
    .unwrap_or_else(|_| panic!("list not served: {}", server.log_text()));
    assert_eq!(status, 200, "{body}");
    eprintln!(
        "list served {:?} after opening {HALF_OPEN} half-open connections",
        started.elapsed()
    );
    let log = server.log_text();
    assert!(log.contains("connection limit reached"), "{log}");
    assert!(!log.contains("accepting connections failed"), "{log}");

    // Every half-open connection is closed by the server, none answered.
    for s in &mut sockets {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(120), s.read(&mut buf))
            .await
            .expect("a half-open connection left open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    drop(sockets);

    // Everything works afterwards.
    let id = create_batch(&server, requests_body(20, 100)).await;
    let batch = server.wait_ended(&id, Duration::from_secs(120)).await;
    assert_eq!(batch["request_counts"]["succeeded"], 20, "{batch}");
    let (status, _) = client_get(&server.url(&format!("/v1/messages/batches/{id}/results"))).await;
    assert_eq!(status, 200);
}

fn serve_to_exit(dir: &std::path::Path, config: &str, env_keys: Option<&str>) -> (bool, String) {
    let path = dir.join("satchel.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .arg("--db")
        .arg(dir.join("s.db"))
        .env_remove("SATCHEL_API_KEYS");
    if let Some(keys) = env_keys {
        command.env("SATCHEL_API_KEYS", keys);
    }
    let output = command.output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn one_key_in_two_workspaces_refuses_to_start_naming_the_workspaces() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-shared-secret-1234";
    let (ok, stderr) = serve_to_exit(
        dir.path(),
        &format!(
            "[[api_keys]]\nkey = \"{key}\"\nworkspace = \"team-a\"\n[[api_keys]]\nkey = \"{key}\"\nworkspace = \"team-b\"\n"
        ),
        None,
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("\"team-a\"") && stderr.contains("\"team-b\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains(key),
        "the key must not be printed: {stderr}"
    );
    assert!(!dir.path().join("s.db").exists(), "nothing opened");

    // The same key from SATCHEL_API_KEYS (the default workspace) and the file.
    let (ok, stderr) = serve_to_exit(
        dir.path(),
        &format!("[[api_keys]]\nkey = \"{key}\"\nworkspace = \"team-a\"\n"),
        Some(&format!("sk-other,{key}")),
    );
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("\"team-a\"") && stderr.contains("\"default\""),
        "{stderr}"
    );
    assert!(
        !stderr.contains(key),
        "the key must not be printed: {stderr}"
    );
}
