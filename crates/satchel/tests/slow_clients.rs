//! Slow and hostile clients starve no one: hundreds of stalled uploads and of results readers
//! that stop reading, held open at once against a real `satchel serve` process, while a batch
//! runs. The rest of the API still answers promptly, the batch ends, memory stays bounded,
//! and all recovers when they leave.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::time::{Duration, Instant};

use support::{Server, client_get, create_batch, requests_body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const STALLED_UPLOADS: usize = 300;
const SLOW_READERS: usize = 500;

/// Generous for a loaded 2-core machine; the issue's bound is "about 1 s".
const PROMPT: Duration = Duration::from_secs(2);

/// An upload that sends its head and the start of its body, then nothing.
async fn stalled_upload(server: &Server) -> TcpStream {
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(
        b"POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\n\
          anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
          content-length: 1000000\r\n\r\n{\"requests\":[{\"custom_id\":\"a\",\"params\":{}},",
    )
    .await
    .unwrap();
    s
}

/// A results download whose client reads its first bytes and then stops reading; with a
/// small receive window (the server cannot push much into the kernel) or the default one
/// (it can push megabytes first, growing its pages, then stalls).
async fn slow_reader(server: &Server, id: &str, small_window: bool) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    if small_window {
        socket.set_recv_buffer_size(4096).unwrap();
    }
    let mut s = socket.connect(server.addr).await.unwrap();
    let head = format!(
        "GET /v1/messages/batches/{id}/results HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\n\
         anthropic-version: 2023-06-01\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 1024];
    let n = s.read(&mut first).await.unwrap();
    assert!(
        first[..n].starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first[..n])
    );
    s
}

/// Times a GET; panics unless it answers 200.
async fn timed_get(server: &Server, path: &str) -> Duration {
    let started = Instant::now();
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(60), client_get(&server.url(path)))
            .await
            .unwrap_or_else(|_| panic!("{path} did not answer within 60 s"));
    assert_eq!(status, 200, "{body}");
    started.elapsed()
}

fn p99(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[(times.len() * 99 / 100).min(times.len() - 1)]
}

#[tokio::test]
async fn stalled_uploads_and_slow_readers_starve_no_one() {
    let dir = tempfile::tempdir().unwrap();
    // Uploads are allowed to stall for longer than the test, so they stay for all of it.
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--emulator-latency", "20ms", "--body-idle-timeout", "10m"],
    )
    .await;

    // A finished batch whose results (about 10 MB) are far more than the kernel buffers.
    let done = create_batch(&server, requests_body(4_000, 2_000)).await;
    server.wait_ended(&done, Duration::from_secs(120)).await;
    let baseline_kb = server.rss_kb();

    let mut held = Vec::with_capacity(STALLED_UPLOADS + SLOW_READERS);
    for _ in 0..STALLED_UPLOADS {
        held.push(stalled_upload(&server).await);
    }
    for i in 0..SLOW_READERS {
        held.push(slow_reader(&server, &done, i % 2 == 0).await);
    }
    eprintln!(
        "holding {STALLED_UPLOADS} stalled uploads and {SLOW_READERS} slow readers; \
         server threads: {}",
        server.status_kb("Threads")
    );

    // A batch runs meanwhile, and list and retrieve stay prompt.
    let running = create_batch(&server, requests_body(3_000, 100)).await;
    let mut times = Vec::new();
    for _ in 0..30 {
        times.push(timed_get(&server, "/v1/messages/batches?limit=20").await);
        times.push(timed_get(&server, &format!("/v1/messages/batches/{running}")).await);
    }
    let worst = *times.iter().max().unwrap();
    eprintln!(
        "list/retrieve under load: p99 {:?}, worst {worst:?}",
        p99(times)
    );
    assert!(worst < PROMPT, "a list or retrieve took {worst:?}");
    let batch = server.wait_ended(&running, Duration::from_secs(120)).await;
    assert_eq!(batch["request_counts"]["succeeded"], 3_000, "{batch}");

    let rss_mb = server.rss_kb() / 1024;
    let peak_mb = server.peak_rss_kb() / 1024;
    eprintln!(
        "server RSS {rss_mb} MB (peak {peak_mb} MB; {} MB before the slow clients came)",
        baseline_kb / 1024
    );
    assert!(peak_mb < 200, "peak RSS {peak_mb} MB");

    // They leave; everything recovers: a whole download, and no trace of the uploads.
    drop(held);
    let started = Instant::now();
    let (status, body) =
        client_get(&server.url(&format!("/v1/messages/batches/{done}/results"))).await;
    assert_eq!(status, 200);
    assert_eq!(body.lines().count(), 4_000);
    eprintln!("a full download after they left: {:?}", started.elapsed());
    let (status, body) = client_get(&server.url("/v1/messages/batches")).await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        2,
        "the stalled uploads created nothing: {list}"
    );
}

#[tokio::test]
async fn a_stalled_upload_is_refused_after_the_body_idle_timeout_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = Server::start(&db, &["--body-idle-timeout", "1s"]).await;
    // Enough requests that the store has started writing chunks (and a params file).
    let body = requests_body(5_000, 300);
    let cut = &body[..body.len() - 1_000];
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\n\
         anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(cut.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut answer))
        .await
        .expect("the stalled upload was never answered")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains(r#""type":"timeout_error""#), "{answer}");
    assert!(answer.contains("request-id"), "{answer}");

    let (status, body) = client_get(&server.url("/v1/messages/batches")).await;
    assert_eq!(status, 200);
    assert!(body.contains(r#""data":[]"#), "nothing was created: {body}");
    let params_dir = dir.path().join("s.db.params");
    let files = std::fs::read_dir(&params_dir)
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(files, 0, "no params file is left behind");
}

#[tokio::test]
async fn a_held_results_download_does_not_pin_the_wal() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = Server::start(&db, &["--emulator-latency", "0s"]).await;
    let done = create_batch(&server, requests_body(4_000, 2_000)).await;
    server.wait_ended(&done, Duration::from_secs(120)).await;
    // Each later create writes about 0.9 MB through the WAL (one chunk: no params file),
    // and its results as much again.
    let reader = slow_reader(&server, &done, true).await;
    let db_size = || std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
    let before = db_size();
    let creates = 120;
    let body = requests_body(900, 900);
    for _ in 0..creates {
        create_batch(&server, body.clone()).await;
    }
    // Checkpoints copy what the creates wrote from the WAL into the database file, unless a
    // reader's snapshot holds them back: a download that pinned the WAL (one read
    // transaction from its first page to its last, taken before these creates) would keep
    // every one of their pages out of the file for as long as it is held. Wait, with the
    // download still held, until most of what they wrote is in the file. (The WAL file's own
    // size is not the measure: how far checkpoints lag behind the writer depends on the
    // machine's load, not on the reader.)
    let params = (creates * body.len()) as u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while db_size() < before + params / 2 {
        assert!(
            Instant::now() < deadline,
            "after {creates} creates of {} MB, the database file grew by only {} MB with a download held open: it keeps checkpoints from moving past it",
            body.len() >> 20,
            (db_size() - before) >> 20
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wal = std::fs::metadata(dir.path().join("s.db-wal"))
        .map(|m| m.len() >> 20)
        .unwrap_or(0);
    eprintln!(
        "database file +{} MB, WAL {wal} MB after {creates} creates with a download held open",
        (db_size() - before) >> 20
    );
    drop(reader);
}
