//! The dashboard: a small page served by Satchel at `/dashboard` (HTML, CSS and script
//! embedded in the binary; no framework, no CDN) that shows one workspace's batches live,
//! a batch's errors grouped by type, and the backends' health, with cancel and delete.
//!
//! The page holds no secret and needs none to load; it signs in with one of the
//! workspace's API keys, kept in the tab's session storage and sent as `x-api-key` on the
//! same API calls any client makes, so it sees exactly what that key sees. The one call of
//! its own, [`backends`], sits behind the same key check.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::api::AppState;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/app.css");

/// The page and its assets, unauthenticated (they carry no data).
pub fn assets() -> Router {
    Router::new()
        .route(
            "/dashboard",
            get(|| asset(INDEX, "text/html; charset=utf-8")),
        )
        .route(
            "/dashboard/app.js",
            get(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/dashboard/app.css",
            get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
}

async fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            // Only our own script and style; no frames, so nothing can overlay the buttons.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; frame-ancestors 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// One backend's health, as the dashboard shows it.
#[derive(Serialize)]
pub struct BackendHealth {
    name: String,
    in_flight: usize,
    concurrency_limit: usize,
    max_concurrency: usize,
    paused: bool,
    attempts: u64,
    throttles: u64,
    retries: u64,
    failures: u64,
    /// Time spent in attempts since start; the page turns differences into recent latency.
    attempt_seconds: f64,
}

#[derive(Serialize)]
pub struct BackendsReply {
    backends: Vec<BackendHealth>,
}

/// `GET /dashboard/api/backends`: this node's backends now (behind the API's key check).
pub async fn backends(State(state): State<AppState>) -> Json<BackendsReply> {
    let backends = state
        .routes
        .routes()
        .map(|route| {
            let totals = route.tally.totals();
            BackendHealth {
                name: route.name.clone(),
                in_flight: route.limits.in_flight(),
                concurrency_limit: route.limits.concurrency_limit(),
                max_concurrency: route.limits.max_concurrency(),
                paused: route.limits.is_paused(),
                attempts: totals.attempts,
                throttles: totals.throttles,
                retries: totals.retries,
                failures: totals.failures,
                attempt_seconds: totals.attempt_micros as f64 / 1e6,
            }
        })
        .collect();
    Json(BackendsReply { backends })
}
