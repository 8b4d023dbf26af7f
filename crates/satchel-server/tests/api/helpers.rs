//! `TestApp`: a real server on 127.0.0.1:0 over a temporary SQLite file, and a client for it.

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use satchel_server::ServerConfig;
use serde_json::{Value, json};

pub const KEY_A: &str = "sk-test-a";
pub const KEY_B: &str = "sk-test-b";

pub struct TestApp {
    pub base: String,
    pub addr: std::net::SocketAddr,
    pub client: reqwest::Client,
    pub key: String,
    /// The server's SQLite file.
    pub db: std::path::PathBuf,
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

    /// Asserts the API's error envelope with this status and type, whatever the message.
    pub fn assert_status_and_type(&self, status: u16, kind: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.text);
        let body = self.json();
        assert_eq!(body["type"], "error", "{body}");
        assert_eq!(body["error"]["type"], kind, "{body}");
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
        let db = config.db.clone();
        let server = satchel_server::start(config).await.expect("server starts");
        Self {
            base: format!("http://{}", server.addr),
            addr: server.addr,
            client: reqwest::Client::new(),
            key: KEY_A.to_owned(),
            db,
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
            addr: self.addr,
            client: self.client.clone(),
            key: key.to_owned(),
            db: self.db.clone(),
            server: None,
            _dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The running server's HTTP side (for graceful-stop tests).
    pub fn http(&self) -> satchel_server::HttpHandle {
        self.server.as_ref().expect("the spawning TestApp").http()
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

    /// Waits until at least `n` attempts are in flight on the backends (as the dashboard's
    /// backends call counts them), failing after a generous `within`.
    pub async fn wait_in_flight(&self, n: u64, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let reply = self
                .send(Method::GET, "/dashboard/api/backends", None)
                .await;
            let backends = reply.json();
            let in_flight: u64 = backends["backends"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| b["in_flight"].as_u64().unwrap())
                .sum();
            if in_flight >= n {
                return;
            }
            assert!(Instant::now() < deadline, "{in_flight} in flight, not {n}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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

/// Writes `request` on a fresh connection and reads until the server closes it (at most
/// `within`); returns everything read.
pub async fn raw_exchange(addr: std::net::SocketAddr, request: &[u8], within: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may refuse (and close) before the whole request is written.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let read = tokio::time::timeout(within, async {
        let mut buf = [0u8; 65536];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server did not close the connection within {within:?}"
    );
    String::from_utf8_lossy(&out).into_owned()
}

/// A raw HTTP/1.1 response: status, lower-cased headers, body (de-chunked if chunked).
pub fn parse_raw(response: &str) -> (u16, std::collections::HashMap<String, String>, String) {
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no complete head in {response:?}"));
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: std::collections::HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let body = if headers
        .get("transfer-encoding")
        .is_some_and(|v| v == "chunked")
    {
        let mut rest = body;
        let mut out = String::new();
        loop {
            let (size, after) = rest.split_once("\r\n").expect("chunk size line");
            let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
            if size == 0 {
                break;
            }
            out.push_str(&after[..size]);
            rest = &after[size + 2..];
        }
        out
    } else {
        body.to_owned()
    };
    (status, headers, body)
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
