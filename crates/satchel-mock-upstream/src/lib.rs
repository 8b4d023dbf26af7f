//! The mock upstream: a real HTTP server that answers like a model server.
//!
//! - `POST /v1/messages` (Anthropic format): validates and answers as Satchel's emulator does
//!   (the last user turn echoed back), or with the API's 400 for bad params.
//! - `POST /v1/chat/completions` (OpenAI format): echoes the last user message; calls the
//!   first tool when `tool_choice` is `required` or names a function.
//! - `GET /stats`: what it saw (requests, statuses, arrival times, retry gaps, the values of
//!   the `anthropic-*` headers forwarded), so tests can check rates, `retry-after` and the
//!   headers' pass-through from outside.
//!
//! Latency is fixed, uniform or exponential around a mean. Faults are injected by rate: 429
//! and 529 with `retry-after`, 500, hangs, connection resets and malformed JSON bodies; and
//! deterministically with `fail_first` (each distinct request body gets a 429 on its first
//! attempts), to observe retries.

mod faults;
mod openai;
mod stats;

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::value::RawValue;
use tokio::net::TcpListener;

pub use faults::{Faults, LatencyDistribution};
use stats::Stats;

/// How the mock behaves.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    pub latency: Duration,
    pub distribution: LatencyDistribution,
    pub faults: Faults,
}

#[derive(Clone)]
struct Mock {
    config: Arc<MockConfig>,
    stats: Arc<Stats>,
    /// Attempts seen per distinct request body, for `fail_first`.
    attempts: Arc<Mutex<HashMap<u64, u32>>>,
}

/// A started mock; it serves until the process ends or the task is aborted.
pub struct RunningMock {
    pub addr: SocketAddr,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

pub async fn start(listen: SocketAddr, config: MockConfig) -> std::io::Result<RunningMock> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let mock = Mock {
        config: Arc::new(config),
        stats: Arc::new(Stats::default()),
        attempts: Arc::new(Mutex::new(HashMap::new())),
    };
    let app = Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/stats", get(stats))
        .with_state(mock);
    let task = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(RunningMock { addr, task })
}

fn json_response(status: StatusCode, body: String) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn anthropic_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = serde_json::json!({"type": "error", "error": {"type": kind, "message": message}});
    json_response(status, body.to_string())
}

impl Mock {
    /// Records the arrival, waits the latency, and decides whether to inject a fault.
    async fn prelude(&self, body: &Bytes) -> Option<Response> {
        let key = {
            let mut hasher = DefaultHasher::new();
            body.hash(&mut hasher);
            hasher.finish()
        };
        self.stats.arrived(key);
        let latency = self.config.distribution.sample(self.config.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let faults = &self.config.faults;
        let attempt = {
            let mut attempts = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
            let n = attempts.entry(key).or_insert(0);
            *n += 1;
            *n
        };
        let retry_after = faults.retry_after;
        if attempt <= faults.fail_first {
            self.stats.asked_to_retry(key, retry_after);
            return Some(self.finish(throttle(429, retry_after)));
        }
        let fault = faults.pick();
        let response = match fault {
            faults::Fault::None => return None,
            faults::Fault::RateLimited => {
                self.stats.asked_to_retry(key, retry_after);
                throttle(429, retry_after)
            }
            faults::Fault::Overloaded => {
                self.stats.asked_to_retry(key, retry_after);
                throttle(529, retry_after)
            }
            faults::Fault::ServerError => anthropic_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "Internal server error",
            ),
            faults::Fault::Hang => {
                tokio::time::sleep(faults.hang_for).await;
                anthropic_error(StatusCode::GATEWAY_TIMEOUT, "timeout_error", "hung")
            }
            faults::Fault::Reset => {
                // A body that fails mid-stream makes the server drop the connection: the
                // client sees it close before a complete response.
                let failing = futures::stream::once(async {
                    Err::<Bytes, std::io::Error>(std::io::Error::other("reset"))
                });
                let mut response = Response::new(Body::from_stream(failing));
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                response
            }
            faults::Fault::Malformed => json_response(
                StatusCode::OK,
                "{\"id\": \"msg_broken\", \"content\": [".into(),
            ),
        };
        Some(self.finish(response))
    }

    fn finish(&self, response: Response) -> Response {
        self.stats.answered(response.status().as_u16());
        response
    }
}

fn throttle(status: u16, retry_after: Duration) -> Response {
    let (code, kind, message) = match status {
        429 => (
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "Rate limited",
        ),
        _ => (
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
            "Overloaded",
        ),
    };
    let mut response = anthropic_error(code, kind, message);
    if let Ok(value) = HeaderValue::from_str(&format!("{}", retry_after.as_secs_f64())) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

async fn messages(
    State(mock): State<Mock>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    mock.stats.headers(&headers);
    if let Some(fault) = mock.prelude(&body).await {
        return fault;
    }
    let response = match std::str::from_utf8(&body)
        .ok()
        .and_then(|text| RawValue::from_string(text.to_owned()).ok())
    {
        None => anthropic_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "The request body is not valid JSON",
        ),
        Some(params) => match satchel_core::emulator::reply(params.get()) {
            Ok(message) => json_response(
                StatusCode::OK,
                serde_json::to_string(&message).unwrap_or_default(),
            ),
            Err(invalid) => {
                anthropic_error(StatusCode::BAD_REQUEST, "invalid_request_error", &invalid.0)
            }
        },
    };
    mock.finish(response)
}

async fn chat_completions(State(mock): State<Mock>, body: Bytes) -> Response {
    if let Some(fault) = mock.prelude(&body).await {
        return fault;
    }
    let response = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(request) => match openai::complete(&request) {
            Ok(completion) => json_response(StatusCode::OK, completion.to_string()),
            Err(message) => {
                let body = serde_json::json!({"error": {"message": message, "type": "BadRequestError", "code": 400}});
                json_response(StatusCode::BAD_REQUEST, body.to_string())
            }
        },
        Err(e) => json_response(
            StatusCode::BAD_REQUEST,
            serde_json::json!({"error": {"message": e.to_string()}}).to_string(),
        ),
    };
    mock.finish(response)
}

async fn stats(State(mock): State<Mock>) -> Response {
    json_response(StatusCode::OK, mock.stats.report().to_string())
}
