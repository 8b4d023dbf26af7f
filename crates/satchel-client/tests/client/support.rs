//! A real Satchel server in-process, and small fake servers for what Satchel never does
//! (429s, 503s, slow answers, odd bodies).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use satchel_client::{Client, ClientBuilder, MessageBatch, MessageBatchRequest, ProcessingStatus};
use satchel_server::ServerConfig;
use serde_json::json;

pub const KEY_A: &str = "sk-test-a";
pub const KEY_B: &str = "sk-test-b";

/// A real server on 127.0.0.1:0 over a temporary SQLite file, keys `KEY_A` and `KEY_B`.
pub struct App {
    pub base: String,
    server: Option<satchel_server::RunningServer>,
    _dir: tempfile::TempDir,
}

impl App {
    pub async fn spawn_with(tune: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ServerConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            dir.path().join("satchel.db"),
        );
        config.keys.add(KEY_A, "team-a").unwrap();
        config.keys.add(KEY_B, "team-b").unwrap();
        config.housekeeping_tick = Duration::from_millis(50);
        config.dispatch.idle_poll = Duration::from_millis(50);
        tune(&mut config);
        let server = satchel_server::start(config).await.expect("server starts");
        Self {
            base: format!("http://{}", server.addr),
            server: Some(server),
            _dir: dir,
        }
    }

    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A client of this server with key A.
    pub fn client(&self) -> Client {
        self.client_with(|b| b.api_key(KEY_A))
    }

    pub fn client_with(&self, tune: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Client {
        tune(Client::builder().base_url(&self.base))
            .build()
            .unwrap()
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

/// `n` valid requests `r0..` asking the emulator to echo `"{text} {i}"`.
pub fn requests(n: usize, text: &str) -> Vec<MessageBatchRequest> {
    (0..n)
        .map(|i| {
            MessageBatchRequest::new(
                format!("r{i}"),
                json!({"model": "claude-test", "max_tokens": 64,
                       "messages": [{"role": "user", "content": format!("{text} {i}")}]}),
            )
        })
        .collect()
}

pub async fn wait_ended(client: &Client, id: &str) -> MessageBatch {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let batch = client.messages().batches().retrieve(id).await.unwrap();
        if batch.processing_status == ProcessingStatus::Ended {
            return batch;
        }
        assert!(Instant::now() < deadline, "batch did not end: {batch:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fake API on 127.0.0.1:0: `routes` gets the fake's own base URL (for `results_url`s)
/// and a hit counter the handlers may bump.
pub struct Fake {
    pub base: String,
    pub hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    pub async fn start(routes: impl FnOnce(String, Arc<AtomicUsize>) -> axum::Router) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let app = routes(base.clone(), hits.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { base, hits, task }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn client(&self, tune: impl FnOnce(ClientBuilder) -> ClientBuilder) -> Client {
        tune(Client::builder().base_url(&self.base).api_key("k"))
            .build()
            .unwrap()
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A batch as the API returns it, `ended` with `results_url`.
pub fn ended_batch(id: &str, results_url: &str) -> serde_json::Value {
    json!({
        "id": id, "type": "message_batch", "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": 2, "errored": 0, "canceled": 0, "expired": 0},
        "ended_at": "2024-09-24T18:37:24.100435Z", "created_at": "2024-09-24T18:37:24.100435Z",
        "expires_at": "2024-09-25T18:37:24.100435Z", "cancel_initiated_at": null,
        "archived_at": null, "results_url": results_url,
    })
}
