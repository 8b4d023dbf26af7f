//! The metrics Satchel records, named once here (Prometheus naming: `satchel_` prefix,
//! `_total` counters, `_seconds` histograms, base units), through the `metrics` facade. With
//! no recorder installed (no `--metrics-listen`) recording them costs next to nothing.
//!
//! Gauges read from the store or the routes at scrape time are set by the server
//! (`satchel-server`'s `metrics` module); counters and histograms are recorded where things
//! happen.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Batches by `status` (in_progress, canceling, ended), every workspace, from the store.
pub const BATCHES: &str = "satchel_batches";
/// Requests by `result` (processing, succeeded, errored, canceled, expired): the batches'
/// `request_counts` summed, from the store.
pub const REQUESTS: &str = "satchel_requests";
/// Requests not yet ended (running or waiting), from the store.
pub const QUEUE_DEPTH: &str = "satchel_queue_depth";
/// How long the oldest request still to run has waited (its batch's age), from the store.
pub const QUEUE_OLDEST_AGE: &str = "satchel_queue_oldest_age_seconds";

/// Attempts running now on a `backend` (this node).
pub const BACKEND_IN_FLIGHT: &str = "satchel_backend_in_flight";
/// The adaptive concurrency cap of a `backend` now (shrinks on throttling).
pub const BACKEND_CONCURRENCY: &str = "satchel_backend_concurrency_limit";
/// The configured `max_concurrency` of a `backend`.
pub const BACKEND_MAX_CONCURRENCY: &str = "satchel_backend_max_concurrency";
/// 1 while a `backend`'s route is paused because its upstream cannot be reached.
pub const BACKEND_PAUSED: &str = "satchel_backend_paused";
/// Attempts made on a `backend`, by `outcome` (success, throttled, transient, unreachable,
/// rejected).
pub const BACKEND_ATTEMPTS: &str = "satchel_backend_attempts_total";
/// Attempts a `backend` refused as saturated (429, 529).
pub const BACKEND_THROTTLES: &str = "satchel_backend_throttles_total";
/// Attempts made again after a failure, on a `backend`.
pub const BACKEND_RETRIES: &str = "satchel_backend_retries_total";
/// Requests that ended errored on a `backend`, by `class` (the error type of their line).
pub const BACKEND_FAILURES: &str = "satchel_backend_failures_total";
/// How long one attempt took on a `backend`, whatever its outcome.
pub const BACKEND_ATTEMPT_DURATION: &str = "satchel_backend_attempt_duration_seconds";

/// API requests by `route` (its template), `method` and `status`.
pub const HTTP_REQUESTS: &str = "satchel_http_requests_total";
/// API request latency by `route` and `method`, up to the response head (a results
/// download streams on after it).
pub const HTTP_DURATION: &str = "satchel_http_request_duration_seconds";
/// Create body bytes received.
pub const INGEST_BYTES: &str = "satchel_ingest_bytes_total";
/// Requests accepted in created batches.
pub const INGEST_REQUESTS: &str = "satchel_ingest_requests_total";
/// How long a create took, from its head to its answer (its body streams in meanwhile).
pub const CREATE_DURATION: &str = "satchel_batch_create_duration_seconds";
/// Result bytes streamed to clients.
pub const RESULTS_BYTES: &str = "satchel_results_bytes_total";
/// Store calls by `op`, with their latency.
pub const STORE_DURATION: &str = "satchel_store_operation_duration_seconds";
/// Store calls by `op` that failed.
pub const STORE_ERRORS: &str = "satchel_store_errors_total";

/// The HELP line of every metric, for the exposition.
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(
        BATCHES,
        "Batches by status, every workspace (from the store)."
    );
    describe_gauge!(
        REQUESTS,
        "Requests by result: the batches' request_counts summed (from the store)."
    );
    describe_gauge!(QUEUE_DEPTH, "Requests not yet ended, running or waiting.");
    describe_gauge!(
        QUEUE_OLDEST_AGE,
        Unit::Seconds,
        "How long the oldest request still to run has waited."
    );
    describe_gauge!(BACKEND_IN_FLIGHT, "Attempts running now on the backend.");
    describe_gauge!(
        BACKEND_CONCURRENCY,
        "The backend's adaptive concurrency cap now."
    );
    describe_gauge!(
        BACKEND_MAX_CONCURRENCY,
        "The backend's configured max_concurrency."
    );
    describe_gauge!(
        BACKEND_PAUSED,
        "1 while the backend's upstream cannot be reached."
    );
    describe_counter!(BACKEND_ATTEMPTS, "Attempts on the backend, by outcome.");
    describe_counter!(
        BACKEND_THROTTLES,
        "Attempts the backend refused as saturated (429, 529)."
    );
    describe_counter!(BACKEND_RETRIES, "Attempts made again after a failure.");
    describe_counter!(
        BACKEND_FAILURES,
        "Requests that ended errored on the backend, by error type."
    );
    describe_histogram!(
        BACKEND_ATTEMPT_DURATION,
        Unit::Seconds,
        "Duration of one attempt on the backend."
    );
    describe_counter!(HTTP_REQUESTS, "API requests by route, method and status.");
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "API request latency up to the response head."
    );
    describe_counter!(INGEST_BYTES, Unit::Bytes, "Create body bytes received.");
    describe_counter!(INGEST_REQUESTS, "Requests accepted in created batches.");
    describe_histogram!(
        CREATE_DURATION,
        Unit::Seconds,
        "Duration of a batch create, body included."
    );
    describe_counter!(
        RESULTS_BYTES,
        Unit::Bytes,
        "Result bytes streamed to clients."
    );
    describe_histogram!(
        STORE_DURATION,
        Unit::Seconds,
        "Store call latency, by operation."
    );
    describe_counter!(STORE_ERRORS, "Store calls that failed, by operation.");
}

/// A route's own running totals since start, kept whether or not metrics are served: what
/// the dashboard shows of a backend's health.
#[derive(Debug, Default)]
pub struct RouteTally {
    attempts: AtomicU64,
    throttles: AtomicU64,
    retries: AtomicU64,
    failures: AtomicU64,
    attempt_micros: AtomicU64,
}

/// A [`RouteTally`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteTotals {
    pub attempts: u64,
    pub throttles: u64,
    pub retries: u64,
    /// Requests that ended errored on the route.
    pub failures: u64,
    /// Time spent in attempts, summed.
    pub attempt_micros: u64,
}

impl RouteTally {
    /// One attempt on `backend` that took `took` and ended as `outcome` (recorded in the
    /// metrics too).
    pub fn attempt(&self, backend: &str, outcome: &'static str, took: Duration) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.attempt_micros.fetch_add(micros, Ordering::Relaxed);
        metrics::histogram!(BACKEND_ATTEMPT_DURATION, "backend" => backend.to_owned())
            .record(took.as_secs_f64());
        metrics::counter!(BACKEND_ATTEMPTS, "backend" => backend.to_owned(), "outcome" => outcome)
            .increment(1);
        if outcome == "throttled" {
            self.throttles.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(BACKEND_THROTTLES, "backend" => backend.to_owned()).increment(1);
        }
    }

    pub fn retry(&self, backend: &str) {
        self.retries.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(BACKEND_RETRIES, "backend" => backend.to_owned()).increment(1);
    }

    /// A request ended errored on `backend`, its line saying `class`.
    pub fn failure(&self, backend: &str, class: &'static str) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(BACKEND_FAILURES, "backend" => backend.to_owned(), "class" => class)
            .increment(1);
    }

    pub fn totals(&self) -> RouteTotals {
        RouteTotals {
            attempts: self.attempts.load(Ordering::Relaxed),
            throttles: self.throttles.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            attempt_micros: self.attempt_micros.load(Ordering::Relaxed),
        }
    }
}
