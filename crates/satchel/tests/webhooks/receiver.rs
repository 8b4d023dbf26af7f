//! The test's webhook receiver: an HTTP server that checks every request's Standard
//! Webhooks signature with its own HMAC code (not Satchel's) and records what came.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::support::Server;

pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub body: Value,
    pub answered: u16,
}

/// A webhook receiver: answers the scripted statuses first (a `429` with `retry-after: 1`;
/// `100`: no answer ever), then 204; every request's signature is checked (a bad one fails the test).
#[derive(Clone)]
pub struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    pub addr: SocketAddr,
}

impl Receiver {
    pub async fn start(script: &[u16]) -> Self {
        Self::start_on("127.0.0.1:0", script).await
    }

    pub async fn start_on(listen: &str, script: &[u16]) -> Self {
        let listener = tokio::net::TcpListener::bind(listen).await.unwrap();
        let receiver = Self {
            got: Arc::default(),
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            addr: listener.local_addr().unwrap(),
        };
        let state = receiver.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let reply = state.receive(&headers, &body);
                    if reply.0 == StatusCode::CONTINUE {
                        // Scripted 100: never answer (a send in flight when the server dies).
                        std::future::pending::<()>().await;
                    }
                    reply
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    fn receive(&self, headers: &HeaderMap, body: &str) -> (StatusCode, HeaderMap) {
        let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_owned();
        let (id, timestamp) = (header("webhook-id"), header("webhook-timestamp"));
        assert_eq!(header("content-type"), "application/json");
        let expected = expected_signature(&id, &timestamp, body);
        assert!(
            header("webhook-signature")
                .split(' ')
                .any(|s| s == expected),
            "bad signature"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!(
            (now - timestamp.parse::<i64>().unwrap()).abs() < 300,
            "stale timestamp"
        );
        let answered = self.script.lock().unwrap().pop_front().unwrap_or(204);
        self.got.lock().unwrap().push(Received {
            id,
            body: serde_json::from_str(body).unwrap(),
            answered,
        });
        let mut reply = HeaderMap::new();
        if answered == 429 {
            reply.insert("retry-after", "1".parse().unwrap());
        }
        (StatusCode::from_u16(answered).unwrap(), reply)
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    pub fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` requests arrived.
    pub async fn wait_for(&self, n: usize, server: &Server) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.got();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} webhook requests arrived: {got:?}\n{}",
                got.len(),
                server.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The Standard Webhooks signature, computed here independently of Satchel's code.
fn expected_signature(id: &str, timestamp: &str, body: &str) -> String {
    let key = STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}
