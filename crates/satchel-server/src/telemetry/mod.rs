//! `GET /metrics`: the Prometheus text exposition, on its own listener (`--metrics-listen`),
//! never behind the API keys. Counters and histograms are recorded where things happen
//! (names in [`satchel_core::observe`]); the gauges that describe state (batches, queue,
//! backends) are read from the store and the routes at each scrape, so they are never stale.
//!
//! - `store`: [`MeteredStore`], the store with each call timed.

mod store;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use satchel_core::Store;
use satchel_core::model::StoreStats;
use satchel_core::observe as names;
use satchel_core::routing::Routes;
use satchel_wire::Timestamp;

pub use store::MeteredStore;

/// Histogram buckets, in seconds: from a fast store call to a slow model's answer.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// How often histograms are compacted between scrapes (the exporter leaves it to its user).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("cannot set up the metrics recorder: {0}")]
pub struct MetricsError(String);

/// The process's one recorder. The `metrics` facade has one global recorder, so a second
/// server in the same process (tests) shares the first one's, and its `node` label.
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process), every series labelled `node`.
fn install(node_id: &str) -> Result<PrometheusHandle, MetricsError> {
    if let Some(handle) = RECORDER.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .add_global_label("node", node_id)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)
        .map_err(|e| MetricsError(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    match metrics::set_global_recorder(recorder) {
        Ok(()) => {
            names::describe();
            let upkeep = handle.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(UPKEEP_EVERY).await;
                    upkeep.run_upkeep();
                }
            });
            let _ = RECORDER.set(handle.clone());
            Ok(handle)
        }
        // Lost a race with another server of this process: use the one that won.
        Err(_) => RECORDER
            .get()
            .cloned()
            .ok_or_else(|| MetricsError("another metrics recorder is installed".into())),
    }
}

/// What a scrape reads.
pub struct Telemetry {
    handle: PrometheusHandle,
    store: Arc<dyn Store>,
    routes: Arc<Routes>,
}

impl Telemetry {
    /// Installs the recorder: from now on counters and histograms are kept.
    pub fn install(
        node_id: &str,
        store: Arc<dyn Store>,
        routes: Arc<Routes>,
    ) -> Result<Arc<Self>, MetricsError> {
        Ok(Arc::new(Self {
            handle: install(node_id)?,
            store,
            routes,
        }))
    }

    /// The exposition now: the state gauges refreshed, then everything rendered. If the
    /// store cannot say, its gauges keep their last values (and the failure is logged).
    pub async fn render(&self) -> String {
        match self.store.stats().await {
            Ok(stats) => store_gauges(&stats),
            Err(e) => tracing::warn!(error = %e, "metrics: the store's figures are unavailable"),
        }
        for route in self.routes.routes() {
            let limits = &route.limits;
            let backend = route.name.clone();
            metrics::gauge!(names::BACKEND_IN_FLIGHT, "backend" => backend.clone())
                .set(limits.in_flight() as f64);
            metrics::gauge!(names::BACKEND_CONCURRENCY, "backend" => backend.clone())
                .set(limits.concurrency_limit() as f64);
            metrics::gauge!(names::BACKEND_MAX_CONCURRENCY, "backend" => backend.clone())
                .set(limits.max_concurrency() as f64);
            metrics::gauge!(names::BACKEND_PAUSED, "backend" => backend)
                .set(if limits.is_paused() { 1.0 } else { 0.0 });
        }
        self.handle.render()
    }
}

fn store_gauges(stats: &StoreStats) {
    for (status, n) in [
        ("in_progress", stats.in_progress),
        ("canceling", stats.canceling),
        ("ended", stats.ended),
    ] {
        metrics::gauge!(names::BATCHES, "status" => status).set(n as f64);
    }
    let counts = &stats.requests;
    for (result, n) in [
        ("processing", counts.processing),
        ("succeeded", counts.succeeded),
        ("errored", counts.errored),
        ("canceled", counts.canceled),
        ("expired", counts.expired),
    ] {
        metrics::gauge!(names::REQUESTS, "result" => result).set(n as f64);
    }
    metrics::gauge!(names::QUEUE_DEPTH).set(counts.processing as f64);
    let waited = stats.oldest_waiting.map_or(0.0, |at| {
        (Timestamp::now().as_micros() - at.as_micros()).max(0) as f64 / 1e6
    });
    metrics::gauge!(names::QUEUE_OLDEST_AGE).set(waited);
}

/// `/metrics`, to serve on the metrics listener beside the health probes.
pub fn router(telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(telemetry)
}

async fn scrape(State(telemetry): State<Arc<Telemetry>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        telemetry.render().await,
    )
        .into_response()
}
