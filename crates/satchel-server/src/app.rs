//! Starting the service: open the store, recover this node's leases, spawn the dispatcher
//! and housekeeping, serve; and stopping it, at once or by draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use satchel_core::dispatch::{DispatchConfig, Dispatcher, DispatcherHandle, DrainReport};
use satchel_core::housekeeping::Housekeeper;
use satchel_core::routing::Routes;
use satchel_core::{Batches, LifecycleConfig, Store, StoreError};
use satchel_store_postgres::PostgresStore;
use satchel_store_sqlite::{OpenError, SqliteStore};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::backends;
use crate::config::{ConfigError, ServerConfig};
use crate::health::{self, Health};
use crate::http::{HttpHandle, HttpServer, HttpShutdown};
use crate::telemetry::{self, MeteredStore, MetricsError, Telemetry};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(
        "refusing to listen on {0} without API keys: anyone who can reach it could use it. \
         Configure keys (SATCHEL_API_KEYS or [[api_keys]] in --config), or listen on a loopback address"
    )]
    OpenBeyondLoopback(SocketAddr),
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error(transparent)]
    Postgres(#[from] satchel_store_postgres::OpenError),
    #[error("recovering the store failed: {0}")]
    Recover(#[from] StoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error("--organization-id {0:?} is not a UUID (like 0d6c4a3e-1f2b-4c5d-8e9f-a0b1c2d3e4f5)")]
    OrganizationId(String),
    #[error("cannot start webhook delivery: {0}")]
    Webhooks(#[from] satchel_upstream::UpstreamError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started server. Dropping it does not stop it; call [`RunningServer::shutdown`] (drains)
/// or [`RunningServer::stop`] (at once).
pub struct RunningServer {
    pub addr: SocketAddr,
    /// The owner of this server's leases.
    pub node_id: String,
    /// Where `/metrics` (and the probes) are served, with `--metrics-listen`.
    pub metrics_addr: Option<SocketAddr>,
    /// Serves `/metrics`; stopped last, so a drain can be watched to its end.
    metrics_server: Option<HttpServer>,
    dispatcher: DispatcherHandle,
    housekeeping: JoinHandle<()>,
    /// Keeps this node's share of the backends' limits in step with the live nodes.
    shares: JoinHandle<()>,
    server: HttpServer,
    /// What `/readyz` reports; marked draining as a shutdown starts.
    health: Arc<Health>,
    /// How long a graceful shutdown keeps serving, not ready, before it drains.
    drain_delay: Duration,
    /// The backends, for [`RunningServer::reload`].
    routes: Arc<Routes>,
    /// The webhook delivery worker (none when the engine keeps no outbox).
    webhooks: Option<JoinHandle<()>>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    pub dispatch: DrainReport,
    /// The HTTP connections that finished, and those cut at the end of the window.
    pub http: HttpShutdown,
}

impl RunningServer {
    /// Waits until the HTTP server stops (it runs until shut down through [`Self::http`]).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self.server.wait().await;
        if let Some(metrics) = self.metrics_server {
            metrics.abort();
        }
        self.housekeeping.abort();
        self.shares.abort();
        self.dispatcher.abort();
        abort_webhooks(self.webhooks);
        result
    }

    /// Has every backend re-read what it reads from files (the emulator's fixtures): what
    /// SIGHUP does. A file that cannot be used is logged and the previous contents kept.
    pub fn reload(&self) {
        for route in self.routes.routes() {
            route.backend.reload();
        }
    }

    /// Controls the HTTP side while [`RunningServer::wait`] is awaited elsewhere.
    pub fn http(&self) -> HttpHandle {
        self.server.handle()
    }

    /// Stops at once: serving and all background work. Leased requests stay leased in the
    /// store, and run again when this node starts again (or their leases run out).
    pub fn stop(self) {
        self.server.abort();
        if let Some(metrics) = self.metrics_server {
            metrics.abort();
        }
        self.housekeeping.abort();
        self.shares.abort();
        self.dispatcher.abort();
        abort_webhooks(self.webhooks);
    }

    /// Stops gracefully within `window`: no new connections; open exchanges may finish (the
    /// rest are cut); no new claims; requests not yet sent are given back at once; attempts
    /// in flight may finish and are stored; whatever still runs when the window closes is
    /// given back.
    ///
    /// First `/readyz` turns 503 and, for the configured drain delay, everything else goes
    /// on as before: load balancers see the node is not ready and stop sending to it before
    /// it stops accepting.
    pub async fn shutdown(self, window: Duration) -> ShutdownReport {
        self.health.start_draining();
        if !self.drain_delay.is_zero() {
            tracing::info!(delay = ?self.drain_delay, "not ready; serving on until load balancers notice");
            tokio::time::sleep(self.drain_delay).await;
        }
        let http = self.server.handle();
        let (dispatch, http) = tokio::join!(self.dispatcher.drain(window), http.shutdown(window));
        // An attempt cut short here is sent again once its lease runs out (at least once).
        abort_webhooks(self.webhooks);
        self.housekeeping.abort();
        self.shares.abort();
        self.server.abort();
        if let Some(metrics) = self.metrics_server {
            metrics.abort();
        }
        ShutdownReport { dispatch, http }
    }
}

/// Opens the store the configuration names, for a server running `routes`: a PostgreSQL
/// database shared with other nodes when `config.db` is a `postgres://` URL (this node
/// registering as its node id), else the SQLite file at that path.
pub async fn open_store(
    config: &ServerConfig,
    routes: &Routes,
) -> Result<Arc<dyn Store>, StartError> {
    if let Some(url) = config.postgres_url() {
        let store = PostgresStore::open(
            url,
            &config.dispatch.node_id,
            satchel_store_postgres::Options::default(),
        )
        .await?;
        return Ok(Arc::new(store));
    }
    // Claims ask for some models only when there are several routes (`Lanes`).
    let options = satchel_store_sqlite::Options {
        claims_by_model: !routes.is_catch_all(),
    };
    Ok(Arc::new(SqliteStore::open_with(&config.db, &options)?))
}

/// Opens the configured store, then starts the server on it (see [`start_with`]).
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    // Configuration problems first: nothing is opened for a server that cannot run.
    let (routes, _) = check(&config)?;
    let store = open_store(&config, &routes).await?;
    start_with(config, store).await
}

/// Checks the configuration, returning the routes it makes and their run slots.
fn check(config: &ServerConfig) -> Result<(Routes, usize), StartError> {
    if config.keys.is_open() && !config.listen.ip().is_loopback() {
        return Err(StartError::OpenBeyondLoopback(config.listen));
    }
    let routes = backends::build(config)?;
    organization_header(config)?;
    Ok(routes)
}

/// The `anthropic-organization-id` header's value; a configured id must be a UUID.
fn organization_header(config: &ServerConfig) -> Result<axum::http::HeaderValue, StartError> {
    let id = crate::organization::organization_id(config);
    match axum::http::HeaderValue::from_str(&id) {
        Ok(value) if crate::organization::is_uuid(&id) => Ok(value),
        _ => Err(StartError::OrganizationId(id)),
    }
}

/// Starts the server on `store`: recovers this node's leases, starts the dispatcher (on the
/// configured backends, else the emulator), housekeeping and the HTTP server.
pub async fn start_with(
    config: ServerConfig,
    mut store: Arc<dyn Store>,
) -> Result<RunningServer, StartError> {
    let (routes, route_capacity) = check(&config)?;
    let routes = Arc::new(routes);

    // Metrics only when they are served: without a recorder, recording them is a no-op.
    let telemetry = match config.metrics_listen {
        Some(_) => {
            store = MeteredStore::wrap(store);
            let node = &config.dispatch.node_id;
            Some(Telemetry::install(node, store.clone(), routes.clone())?)
        }
        None => None,
    };
    for route in routes.routes() {
        tracing::info!(backend = %route.name, "backend ready");
    }
    let node_id = config.dispatch.node_id.clone();
    let recovered = store.recover(&node_id).await?;
    if recovered > 0 {
        tracing::info!(
            recovered,
            node = %node_id,
            "recovered this node's leases from its previous run; those requests run again"
        );
    }
    let work_arrived = Arc::new(Notify::new());
    // Batches created or canceled on other nodes sharing the store wake this one too.
    store.watch(work_arrived.clone());
    let lifecycle = LifecycleConfig {
        group_by_prefix: config.prefix_grouping.resolve(&config.backends),
        ..config.lifecycle.clone()
    };
    if lifecycle.group_by_prefix {
        tracing::info!("batches run requests sharing a prompt prefix together");
    }
    let batches = Batches::new(store.clone(), lifecycle, work_arrived.clone())
        .with_workspace_limits(config.workspace_limits.clone());
    let dispatch = DispatchConfig {
        max_in_flight: route_capacity,
        ..config.dispatch.clone()
    };

    let shares = share_limits(store.clone(), routes.clone()).await;
    let dispatcher = Dispatcher::new(store.clone(), routes.clone(), dispatch, work_arrived).spawn();
    let health = Health::new(store.clone());
    let webhook_outbox = store.webhook_outbox();
    let webhooks = start_webhooks(webhook_outbox.clone(), &config)?;
    let housekeeping =
        Housekeeper::new(store, config.lifecycle.retention, config.housekeeping_tick).spawn();

    let listener = crate::http::bind(config.listen).map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: config.listen,
        source,
    })?;
    // Both addresses are taken before anything serves: a second one that is busy stops the
    // start before the first is reachable.
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some((
            at,
            crate::http::bind(at).map_err(|source| StartError::Listen { addr: at, source })?,
        )),
        None => None,
    };
    if config.keys.is_open() {
        tracing::warn!(%addr, "no API keys configured: accepting any key (loopback only), workspace \"default\"");
    } else {
        tracing::info!(keys = config.keys.len(), "API keys loaded");
    }
    let state = AppState {
        batches,
        keys: Arc::new(config.keys.clone()),
        public_base_url: config.public_base_url.as_deref().map(Arc::from),
        listen_addr: addr,
        body_idle_timeout: config.http.body_idle_timeout,
        cors: Arc::new(api::cors::CorsPolicy::new(
            config.cors_allowed_origins.clone(),
        )),
        routes: routes.clone(),
        organization_id: organization_header(&config)?,
        webhooks: webhook_outbox,
    };
    let app = api::router(state)
        .merge(health::router(health.clone()))
        .merge(crate::dashboard::assets());
    let server =
        HttpServer::start(listener, app, &config.http).map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    let metrics_server = match (telemetry, metrics_listener) {
        (Some(telemetry), Some((at, listener))) => {
            let router = telemetry::router(telemetry).merge(health::router(health.clone()));
            let server = HttpServer::start(listener, router, &config.http)
                .map_err(|source| StartError::Listen { addr: at, source })?;
            tracing::info!(addr = %server.addr(), "serving /metrics, /healthz and /readyz");
            Some(server)
        }
        _ => None,
    };
    let metrics_addr = metrics_server.as_ref().map(HttpServer::addr);
    tracing::info!(%addr, node = %node_id, db = %config.db_for_logs(), "Satchel is serving the Message Batches API");
    Ok(RunningServer {
        addr,
        node_id,
        metrics_addr,
        metrics_server,
        dispatcher,
        housekeeping,
        shares,
        server,
        health,
        drain_delay: config.drain_delay,
        routes,
        webhooks,
    })
}

/// How often a node recounts the live nodes sharing its store.
const SHARE_REFRESH: Duration = Duration::from_secs(2);

/// Gives this node its equal share of every backend's limits among the live nodes sharing
/// the store, now and then every [`SHARE_REFRESH`] (a node that joins or leaves is counted
/// within that; one that died is counted until its heartbeat runs out, which errs on the
/// side of the limits).
async fn share_limits(store: Arc<dyn Store>, routes: Arc<Routes>) -> JoinHandle<()> {
    let apply = |nodes: u32| {
        for route in routes.routes() {
            route.limits.set_nodes(nodes);
        }
    };
    let mut last = 1;
    match store.live_nodes().await {
        Ok(nodes) => {
            apply(nodes);
            last = nodes;
        }
        Err(e) => tracing::warn!(error = %e, "cannot count the live nodes yet"),
    }
    let routes = routes.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(SHARE_REFRESH).await;
            match store.live_nodes().await {
                Ok(nodes) if nodes != last => {
                    tracing::info!(
                        nodes,
                        "live nodes changed: each takes an equal share of the backends' limits"
                    );
                    for route in routes.routes() {
                        route.limits.set_nodes(nodes);
                    }
                    last = nodes;
                }
                Ok(_) => {}
                // Keeps the last share meanwhile.
                Err(e) => tracing::debug!(error = %e, "cannot count the live nodes"),
            }
        }
    })
}

/// Starts the webhook delivery worker on the store's outbox (even with no endpoint
/// configured: events are then marked handled, and old ones purged).
fn start_webhooks(
    outbox: Option<Arc<dyn satchel_core::webhooks::Outbox>>,
    config: &ServerConfig,
) -> Result<Option<JoinHandle<()>>, StartError> {
    let Some(outbox) = outbox else {
        return Ok(None);
    };
    let sender = satchel_upstream::webhook::WebhookSender::new(config.webhooks.timeout)?;
    for endpoint in &config.webhooks.endpoints {
        tracing::info!(workspace = %endpoint.workspace, events = ?endpoint.events, "webhook endpoint configured");
    }
    let worker = satchel_core::webhooks::WebhookWorker::new(
        outbox,
        Arc::new(sender),
        config.webhooks.clone(),
        config.dispatch.node_id.clone(),
    );
    Ok(Some(worker.spawn()))
}

fn abort_webhooks(worker: Option<JoinHandle<()>>) {
    if let Some(worker) = worker {
        worker.abort();
    }
}
