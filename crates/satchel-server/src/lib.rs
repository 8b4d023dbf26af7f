//! Satchel's server: the HTTP API over the batch lifecycle, its configuration, and the
//! assembly of store, dispatcher and housekeeping into one running service.
//!
//! - [`api`]: routes, authentication, the wire conversion and the one error mapping.
//! - [`auth`]: API keys and the workspaces they belong to.
//! - [`config`]: the typed configuration and the TOML config file.
//! - [`backends`]: the routing table (model → backend, limits, retries) from the config.
//! - [`dashboard`]: the operator's page at `/dashboard`, its assets embedded.
//! - [`health`]: `/healthz` and `/readyz`, for orchestrators and load balancers.
//! - [`http`]: the serving loop: accepts connections and serves them, with limits.
//! - [`telemetry`]: `/metrics` (Prometheus), on its own listener.
//! - [`workspace_limits`]: the per-workspace limits of the config file.
//! - [`webhooks`]: the webhook settings of the config file and the delivery log route.
//! - [`app`]: starts everything and hands back a handle (used by the binary and by tests).

pub mod api;
pub mod app;
pub mod auth;
pub mod backend_config;
pub mod backends;
pub mod config;
pub mod dashboard;
pub mod health;
pub mod http;
pub mod organization;
pub mod telemetry;
pub mod webhooks;
pub mod workspace_limits;

pub use app::{RunningServer, ShutdownReport, StartError, open_store, start, start_with};
pub use config::{
    ConfigError, ConfigFile, DEFAULT_SHUTDOWN_TIMEOUT, HttpConfig, PrefixGrouping, ServerConfig,
    default_node_id,
};
pub use http::{HttpHandle, HttpShutdown};
