//! Probes for orchestrators and load balancers: `GET /healthz` (the process is alive and
//! serving) and `GET /readyz` (send it traffic: the store answers and the node is not
//! draining). Unauthenticated, outside `/v1`, tiny JSON bodies; they say nothing about
//! batches or workspaces.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use satchel_core::Store;

/// A store slower than this to answer a probe counts as not answering: a probe must not
/// hang for as long as the orchestrator's own timeout.
const STORE_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// What the probes look at. Shared by the API and the metrics listener.
pub struct Health {
    store: Arc<dyn Store>,
    draining: AtomicBool,
}

impl Health {
    pub fn new(store: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            store,
            draining: AtomicBool::new(false),
        })
    }

    /// From now on `/readyz` answers 503: the node is stopping.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Why the node should not get traffic, if it should not.
    pub async fn not_ready(&self) -> Option<&'static str> {
        if self.is_draining() {
            return Some("draining");
        }
        match tokio::time::timeout(STORE_PROBE_TIMEOUT, self.store.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the store does not answer");
                Some("store_unavailable")
            }
            Err(_) => {
                tracing::warn!("readiness: the store did not answer in time");
                Some("store_unavailable")
            }
        }
    }
}

/// `/healthz` and `/readyz`, to merge beside the API (they pass none of its checks).
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

fn json(status: StatusCode, text: &'static str) -> Response {
    let body = format!("{{\"status\":\"{text}\"}}");
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn healthz() -> Response {
    json(StatusCode::OK, "ok")
}

async fn readyz(State(health): State<Arc<Health>>) -> Response {
    match health.not_ready().await {
        None => json(StatusCode::OK, "ready"),
        Some(why) => json(StatusCode::SERVICE_UNAVAILABLE, why),
    }
}
