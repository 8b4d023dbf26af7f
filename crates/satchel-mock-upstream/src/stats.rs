//! What the mock saw, for tests and benchmarks to read at `GET /stats`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[derive(Default)]
pub(crate) struct Stats {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    first: Option<Instant>,
    /// Arrival of each request, in milliseconds since the first.
    arrivals_ms: Vec<f64>,
    statuses: BTreeMap<u16, u64>,
    /// Arrivals of each distinct request body.
    per_request: HashMap<u64, u32>,
    /// Requests told to retry: when, and after how long.
    waiting: HashMap<u64, (Instant, Duration)>,
    /// For each retry of such a request: (observed gap, asked gap) in milliseconds.
    retry_gaps_ms: Vec<(f64, f64)>,
    /// For each of [`RECORDED_HEADERS`], how many requests came with each value (`""`:
    /// without the header).
    headers: BTreeMap<&'static str, BTreeMap<String, u64>>,
}

/// The request headers whose values the mock counts, so tests can see what was forwarded.
pub(crate) const RECORDED_HEADERS: [&str; 3] = [
    "anthropic-version",
    "anthropic-beta",
    "anthropic-user-profile-id",
];

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn arrived(&self, key: u64) {
        let now = Instant::now();
        let mut inner = self.lock();
        let first = *inner.first.get_or_insert(now);
        inner
            .arrivals_ms
            .push(now.duration_since(first).as_secs_f64() * 1000.0);
        *inner.per_request.entry(key).or_default() += 1;
        if let Some((asked_at, asked)) = inner.waiting.remove(&key) {
            let gap = now.duration_since(asked_at).as_secs_f64() * 1000.0;
            inner
                .retry_gaps_ms
                .push((gap, asked.as_secs_f64() * 1000.0));
        }
    }

    /// Counts the values of [`RECORDED_HEADERS`] a request came with.
    pub(crate) fn headers(&self, headers: &axum::http::HeaderMap) {
        let mut inner = self.lock();
        for name in RECORDED_HEADERS {
            let value = headers
                .get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                .unwrap_or_default();
            *inner
                .headers
                .entry(name)
                .or_default()
                .entry(value)
                .or_default() += 1;
        }
    }

    pub(crate) fn asked_to_retry(&self, key: u64, after: Duration) {
        self.lock().waiting.insert(key, (Instant::now(), after));
    }

    pub(crate) fn answered(&self, status: u16) {
        *self.lock().statuses.entry(status).or_default() += 1;
    }

    pub(crate) fn report(&self) -> Value {
        let inner = self.lock();
        json!({
            "requests": inner.arrivals_ms.len(),
            "statuses": inner.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "arrivals_ms": inner.arrivals_ms,
            "distinct_requests": inner.per_request.len(),
            "max_arrivals_per_request": inner.per_request.values().max().copied().unwrap_or(0),
            "requests_seen_more_than_once": inner.per_request.values().filter(|n| **n > 1).count(),
            "headers": inner.headers,
            "retry_gaps_ms": inner.retry_gaps_ms.iter().map(|(gap, asked)| json!({"gap": gap, "asked": asked})).collect::<Vec<_>>(),
        })
    }
}
