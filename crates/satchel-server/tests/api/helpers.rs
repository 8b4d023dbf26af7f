//! `TestApp`: a real server on 127.0.0.1:0 over a temporary SQLite file, and a client for it.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use satchel_server::ServerConfig;
use serde_json::{Value, json};

pub const KEY_A: &str = "sk-test-a";
pub const KEY_B: &str = "sk-test-b";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub key: String,
    server: Option<satchel_server::RunningServer>,
    _dir: tempfile::TempDir,
}

/// A reply: status, headers and body (JSON when it parses).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text))
    }

    /// Asserts the API's error envelope with this status, type and message.
    pub fn assert_error(&self, status: u16, kind: &str, message: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let body = self.json();
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], kind, "{body}");
        assert_eq!(body["error"]["message"], message, "{body}");
        let request_id = self.headers["request-id"].to_str().unwrap();
        assert!(request_id.starts_with("req_"));
        assert_eq!(body["request_id"], request_id);
    }
}

impl TestApp {
    /// A server with two workspaces (keys `KEY_A`, `KEY_B`), tuned by `tune`.
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
            client: reqwest::Client::new(),
            key: KEY_A.to_owned(),
            server: Some(server),
            _dir: dir,
        }
    }

    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// The same server, seen with another key.
    pub fn as_key(&self, key: &str) -> Self {
        Self {
            base: self.base.clone(),
            client: self.client.clone(),
            key: key.to_owned(),
            server: None,
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<String>) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", &self.key)
            .header("anthropic-version", "2023-06-01");
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        read(request.send().await.expect("request sent")).await
    }

    pub async fn create(&self, requests: &Value) -> Reply {
        self.send(
            Method::POST,
            "/v1/messages/batches",
            Some(json!({ "requests": requests }).to_string()),
        )
        .await
    }

    /// Creates a batch that must be accepted; returns it.
    pub async fn create_ok(&self, requests: &Value) -> Value {
        let reply = self.create(requests).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.json()
    }

    pub async fn get(&self, id: &str) -> Reply {
        self.send(Method::GET, &format!("/v1/messages/batches/{id}"), None)
            .await
    }

    pub async fn cancel(&self, id: &str) -> Reply {
        self.send(
            Method::POST,
            &format!("/v1/messages/batches/{id}/cancel"),
            None,
        )
        .await
    }

    pub async fn delete(&self, id: &str) -> Reply {
        self.send(Method::DELETE, &format!("/v1/messages/batches/{id}"), None)
            .await
    }

    pub async fn results(&self, id: &str) -> Reply {
        self.send(
            Method::GET,
            &format!("/v1/messages/batches/{id}/results"),
            None,
        )
        .await
    }

    /// Polls until the batch has ended; panics after `within`.
    pub async fn wait_ended(&self, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let batch = self.get(id).await.json();
            if batch["processing_status"] == "ended" {
                return batch;
            }
            assert!(
                Instant::now() < deadline,
                "batch {id} did not end in {within:?}: {batch}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The result lines of an ended batch, parsed, checking the JSONL framing.
    pub async fn result_lines(&self, id: &str) -> Vec<Value> {
        let reply = self.results(id).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/x-jsonl");
        assert!(reply.text.is_empty() || reply.text.ends_with('\n'));
        reply
            .text
            .split_terminator('\n')
            .map(|line| {
                assert!(!line.is_empty(), "blank line in results");
                serde_json::from_str(line).unwrap()
            })
            .collect()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
        }
    }
}

pub async fn read(response: reqwest::Response) -> Reply {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body read");
    Reply {
        status,
        headers,
        text,
    }
}

/// `n` valid requests `r0..r{n-1}` asking the emulator to echo `text`.
pub fn requests(n: usize, text: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| {
                json!({"custom_id": format!("r{i}"), "params": {
                    "model": "claude-test", "max_tokens": 64,
                    "messages": [{"role": "user", "content": format!("{text} {i}")}]}})
            })
            .collect(),
    )
}
