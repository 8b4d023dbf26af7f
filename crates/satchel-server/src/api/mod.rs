//! The HTTP API: the six Message Batches routes under `/v1/messages/batches`, and Satchel's
//! extensions beside them ([`extensions`]: results while a batch runs, re-running what failed).
//!
//! Every request passes [`context::layer`] first: it mints the `request-id`, checks the key and
//! `anthropic-version`, and renders every error in the API's envelope. Handlers then only
//! speak in domain terms ([`satchel_core::Batches`]) and [`ApiError`]s.

mod batches;
mod body;
pub mod context;
mod convert;
pub mod cors;
mod error;
mod extensions;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use satchel_core::Batches;

use tower_http::CompressionLevel;
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::SizeAbove;

use crate::auth::Keys;
pub use error::{ApiError, WireError};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub batches: Batches,
    pub keys: Arc<Keys>,
    pub public_base_url: Option<Arc<str>>,
    /// The bound address: the base of `results_url` when a request names no `Host` and
    /// its connection's own address is unknown.
    pub listen_addr: SocketAddr,
    /// How long an upload may go without a new byte before it is refused.
    pub body_idle_timeout: std::time::Duration,
    /// Which browser origins may call the API (see [`cors`]).
    pub cors: Arc<cors::CorsPolicy>,
    /// The routing table, for the dashboard's view of the backends.
    pub routes: Arc<satchel_core::routing::Routes>,
    /// Sent as `anthropic-organization-id` on every response (see
    /// [`crate::organization`]).
    pub organization_id: axum::http::HeaderValue,
    /// The store's webhook outbox, for the delivery log (None: the engine keeps none).
    pub webhooks: Option<Arc<dyn satchel_core::webhooks::Outbox>>,
}

/// Smaller answers are not worth compressing.
const COMPRESS_ABOVE_BYTES: u16 = 1024;

/// The whole API as an axum router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/messages/batches",
            post(batches::create).get(batches::list),
        )
        .route(
            "/v1/messages/batches/{id}",
            get(batches::retrieve).delete(batches::delete),
        )
        .route("/v1/messages/batches/{id}/cancel", post(batches::cancel))
        .route("/v1/messages/batches/{id}/results", get(batches::results))
        .route("/v1/messages/batches/{id}/retry", post(extensions::retry))
        .route("/dashboard/api/backends", get(crate::dashboard::backends))
        .route(
            "/v1/satchel/webhooks/deliveries",
            get(crate::webhooks::log::deliveries),
        )
        .fallback(batches::unknown_route)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            context::layer,
        ))
        // Answers are compressed when the client asks (`accept-encoding`), results included,
        // as they stream; at the fastest level, since most clients sit close by.
        .layer(
            CompressionLayer::new()
                .quality(CompressionLevel::Fastest)
                .compress_when(SizeAbove::new(COMPRESS_ABOVE_BYTES)),
        )
        .layer(axum::middleware::from_fn_with_state(
            state.cors.clone(),
            cors::layer,
        ))
        .with_state(state)
}
