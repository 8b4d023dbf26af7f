//! Operating Satchel: leases that outlive their TTL, draining on SIGTERM, upstream outages,
//! and faults that end as data. Real `satchel serve` and `satchel mock-upstream` processes,
//! real signals, real files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Mock, Server, client_get, create_batch, get_batch, run_to_exit};

fn requests(n: usize, prefix: &str) -> Value {
    let requests: Vec<Value> = (0..n)
        .map(|i| {
            json!({"custom_id": format!("{prefix}{i}"), "params": {"model": "claude-test", "max_tokens": 32,
                "messages": [{"role": "user", "content": format!("request {prefix}{i}")}]}})
        })
        .collect();
    json!({ "requests": requests })
}

fn backend(mock: &str, extra: &str) -> String {
    format!("[[backends]]\nname = \"mock\"\nkind = \"anthropic\"\nbase_url = \"{mock}\"\n{extra}\n")
}

async fn serve(dir: &Path, config: &str, args: &[&str]) -> Server {
    let path = dir.join("satchel.toml");
    std::fs::write(&path, config).unwrap();
    let mut all = vec!["--config", path.to_str().unwrap()];
    all.extend_from_slice(args);
    Server::start(&dir.join("satchel.db"), &all).await
}

async fn lines(server: &Server, id: &str) -> Vec<Value> {
    let (status, body) =
        client_get(&server.url(&format!("/v1/messages/batches/{id}/results"))).await;
    assert_eq!(status, 200, "{body}");
    body.split_terminator('\n')
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Asserts one line per request `prefix0..n`, in order.
fn assert_each_once(lines: &[Value], n: usize, prefix: &str) {
    assert_eq!(lines.len(), n, "one line per request");
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line["custom_id"],
            format!("{prefix}{i}"),
            "in order, none twice"
        );
    }
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn no_request_is_sent_twice_while_its_attempt_outlives_the_lease() {
    // Replies take 8 s, four times the lease TTL; half the requests also wait 8 s for a slot
    // first. Without renewals each would be leased again, and sent again, after 2 s.
    let mock = Mock::start(&["--latency", "8s"]);
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &backend(&mock.base, "max_concurrency = 4\ntimeout = \"60s\""),
        &["--lease-ttl", "2s"],
    )
    .await;
    let n = 8;
    let id = create_batch(&server, requests(n, "r").to_string()).await;
    let ended = server.wait_ended(&id, Duration::from_secs(90)).await;
    assert_eq!(ended["request_counts"]["succeeded"], n, "{ended}");
    assert_each_once(&lines(&server, &id).await, n, "r");
    let stats = mock.stats().await;
    assert_eq!(stats["distinct_requests"], n, "{stats}");
    assert_eq!(
        stats["max_arrivals_per_request"], 1,
        "a request was sent twice: {stats}"
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_attempts_and_a_restart_finishes_the_rest() {
    let mock = Mock::start(&["--latency", "1500ms"]);
    let dir = tempfile::tempdir().unwrap();
    let config = backend(&mock.base, "max_concurrency = 4\ntimeout = \"60s\"");
    let mut server = serve(dir.path(), &config, &[]).await;
    let n = 40;
    let id = create_batch(&server, requests(n, "r").to_string()).await;
    wait_for(
        "some requests to be sent",
        Duration::from_secs(30),
        async || mock.stats().await["requests"].as_u64().unwrap() >= 6,
    )
    .await;
    let status = server
        .signal_and_wait("TERM", Duration::from_secs(60))
        .await;
    assert!(status.success(), "exit 0 after a drain: {status:?}");
    let log = server.log_text();
    assert!(log.contains("shutting down: draining"), "{log}");
    assert!(log.contains("drained"), "{log}");
    // The attempts in flight at the signal finished and were stored: the mock answered every
    // request it saw, and the batch holds their lines.
    let sent_before = mock.stats().await["requests"].as_u64().unwrap();
    let server = serve(dir.path(), &config, &[]).await;
    let mid = get_batch(&server, &id).await;
    assert!(
        mid["request_counts"]["succeeded"].as_u64().unwrap() >= sent_before.min(n as u64),
        "every attempt in flight at SIGTERM was stored: {mid}, {sent_before} sent"
    );
    let ended = server.wait_ended(&id, Duration::from_secs(90)).await;
    assert_eq!(ended["request_counts"]["succeeded"], n, "{ended}");
    assert_each_once(&lines(&server, &id).await, n, "r");
    let stats = mock.stats().await;
    assert_eq!(stats["distinct_requests"], n, "{stats}");
    assert_eq!(
        stats["max_arrivals_per_request"], 1,
        "a drained request was sent again after the restart: {stats}"
    );
}

#[tokio::test]
async fn sigint_drains_too_and_exits_zero_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&dir.path().join("satchel.db"), &[]).await;
    let status = server.signal_and_wait("INT", Duration::from_secs(30)).await;
    assert!(status.success(), "{status:?}");
    assert!(server.log_text().contains("SIGINT"));
}

#[tokio::test]
async fn an_upstream_outage_pauses_the_route_and_every_request_succeeds() {
    // Few retries with short backoff: without the pause, an outage of a few seconds would
    // use them all up and end requests errored.
    let mock = Mock::start(&["--latency", "20ms"]);
    let listen = mock.listen_addr();
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &backend(
            &mock.base,
            "max_concurrency = 4\nmax_retries = 2\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"",
        ),
        &[],
    )
    .await;
    let n = 400;
    let id = create_batch(&server, requests(n, "r").to_string()).await;
    wait_for(
        "the batch to be under way",
        Duration::from_secs(30),
        async || {
            get_batch(&server, &id).await["request_counts"]["succeeded"]
                .as_u64()
                .unwrap()
                >= 20
        },
    )
    .await;
    mock.stop();
    tokio::time::sleep(Duration::from_secs(6)).await; // the outage itself, not a barrier
    let during = get_batch(&server, &id).await;
    assert_eq!(
        during["request_counts"]["errored"], 0,
        "no request failed for the route's outage: {during}"
    );
    let _back = Mock::start_on(&listen, &["--latency", "20ms"]);
    let ended = server.wait_ended(&id, Duration::from_secs(120)).await;
    assert_eq!(ended["request_counts"]["succeeded"], n, "{ended}");
    assert_each_once(&lines(&server, &id).await, n, "r");
    let log = server.log_text();
    assert!(log.contains("pausing the route"), "{log}");
    assert!(log.contains("the route resumes"), "{log}");
    assert!(
        !log.contains(&listen),
        "the upstream's address is not logged"
    );
}

#[tokio::test]
async fn result_lines_never_expose_the_upstream_address() {
    // Nothing listens there: with no retries the requests end errored at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let server = serve(
        dir.path(),
        &backend(&format!("http://127.0.0.1:{port}"), "max_retries = 0"),
        &["--expiry", "3s"],
    )
    .await;
    let id = create_batch(&server, requests(3, "r").to_string()).await;
    let ended = server.wait_ended(&id, Duration::from_secs(60)).await;
    // Unreachable costs no retries: they wait for the upstream until the batch expires.
    assert_eq!(ended["request_counts"]["expired"], 3, "{ended}");
    let log = server.log_text();
    assert!(log.contains("pausing the route"), "{log}");
    let (_, body) = client_get(&server.url(&format!("/v1/messages/batches/{id}/results"))).await;
    assert!(!body.contains(&port.to_string()), "{body}");
}

#[tokio::test]
async fn a_request_whose_params_file_is_gone_ends_errored_not_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("satchel.db");
    // Slow enough that most requests are still queued at the kill; big enough for a file.
    let mut server =
        Server::start(&db, &["--emulator-latency", "2s", "--max-in-flight", "4"]).await;
    let n = 3_000;
    let id = create_batch(&server, support::requests_body(n, 100)).await;
    server.kill_9();
    let params_dir = dir.path().join("satchel.db.params");
    let files: Vec<_> = std::fs::read_dir(&params_dir).unwrap().collect();
    assert_eq!(files.len(), 1, "one params file for the batch");
    for file in files {
        std::fs::remove_file(file.unwrap().path()).unwrap();
    }
    let server = Server::start(&db, &[]).await;
    let ended = server.wait_ended(&id, Duration::from_secs(60)).await;
    assert_eq!(ended["request_counts"]["errored"], n, "{ended}");
    let lines = lines(&server, &id).await;
    assert_eq!(lines.len(), n);
    let error = &lines[0]["result"]["error"]["error"];
    assert_eq!(error["type"], "api_error", "{}", lines[0]);
    assert!(
        error["message"].as_str().unwrap().contains("params"),
        "{}",
        lines[0]
    );
}

#[tokio::test]
async fn an_empty_database_beside_params_files_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("satchel.db");
    let mut server = Server::start(&db, &["--emulator-latency", "1h"]).await;
    create_batch(&server, support::requests_body(2_000, 100)).await;
    server.kill_9();
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("satchel.db{suffix}")));
    }
    std::fs::write(&db, b"").unwrap();
    let out = run_to_exit(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--db",
        db.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "must refuse to start");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("params"), "{stderr}");
    assert!(stderr.contains("empty"), "{stderr}");
    let left = std::fs::read_dir(dir.path().join("satchel.db.params"))
        .unwrap()
        .count();
    assert_eq!(left, 1, "the params file is never deleted");
}

/// A small tmpfs mounted on a temporary directory, unmounted on drop. None (and a loud
/// message) where mounting is not allowed.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            if std::env::var_os("CI").is_some() {
                panic!("CI runs as root and must be able to mount a tmpfs for the disk-full test");
            }
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here (needs root); the disk-full test did not run"
            );
            return None;
        }
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk with a ballast file until writes fail.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.path().join("ballast");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0x55u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_while_storing_results_ends_the_batch_once_space_frees() {
    let Some(disk) = SmallDisk::mount("32m") else {
        return;
    };
    let db = disk.path().join("satchel.db");
    let server = Server::start(
        &db,
        &["--emulator-latency", "100ms", "--max-in-flight", "16"],
    )
    .await;
    let n = 4_000;
    let id = create_batch(&server, support::requests_body(n, 1_000)).await;
    let ballast = disk.fill();
    wait_for(
        "a failed write of results",
        Duration::from_secs(60),
        async || server.log_text().contains("storing results failed"),
    )
    .await;
    let stuck = get_batch(&server, &id).await;
    assert_eq!(stuck["processing_status"], "in_progress", "{stuck}");
    std::fs::remove_file(ballast).unwrap();
    // No restart: the retried writes go through and the batch ends.
    let ended = server.wait_ended(&id, Duration::from_secs(180)).await;
    assert_eq!(ended["request_counts"]["succeeded"], n, "{ended}");
    assert_each_once(&lines(&server, &id).await, n, "r");
    drop(server);
}

#[tokio::test]
async fn a_create_that_runs_out_of_space_answers_an_error_and_leaves_no_file() {
    let Some(disk) = SmallDisk::mount("32m") else {
        return;
    };
    let db = disk.path().join("satchel.db");
    let server = Server::start(&db, &["--emulator-latency", "1h"]).await;
    let ballast = disk.fill();
    // Room for the first chunks (so the params file is made and written) but not the rest.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&ballast)
        .unwrap();
    let size = file.metadata().unwrap().len();
    file.set_len(size - 3 * 1024 * 1024).unwrap();
    file.sync_all().unwrap();
    drop(file);

    let body = support::requests_body(8_000, 1_000);
    let (status, reply) = support::client_send(
        "POST",
        &server.url("/v1/messages/batches"),
        Some(body.clone()),
    )
    .await;
    assert_eq!(status, 500, "{reply}");
    assert!(reply.contains(r#""type":"api_error""#), "{reply}");
    let params = disk.path().join("satchel.db.params");
    let files = || std::fs::read_dir(&params).map(|d| d.count()).unwrap_or(0);
    assert_eq!(files(), 0, "the failed create left no params file");
    let (_, list) = client_get(&server.url("/v1/messages/batches")).await;
    assert!(list.contains(r#""data":[]"#), "{list}");

    // Once space frees, the same create succeeds, without a restart.
    std::fs::remove_file(ballast).unwrap();
    let (status, reply) =
        support::client_send("POST", &server.url("/v1/messages/batches"), Some(body)).await;
    assert_eq!(status, 200, "{reply}\n{}", server.log_text());
    let id = serde_json::from_str::<Value>(&reply).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        get_batch(&server, &id).await["request_counts"]["processing"],
        8_000
    );
    assert_eq!(files(), 1);
}
