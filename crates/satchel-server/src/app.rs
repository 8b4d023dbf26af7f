//! Starting the service: open the store, recover this node's leases, spawn the dispatcher
//! and housekeeping, serve; and stopping it, at once or by draining.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use satchel_core::dispatch::{DispatchConfig, Dispatcher, DispatcherHandle, DrainReport};
use satchel_core::housekeeping::Housekeeper;
use satchel_core::{Batches, Store, StoreError};
use satchel_store_postgres::PostgresStore;
use satchel_store_sqlite::{OpenError, SqliteStore};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::api::{self, AppState};
use crate::backends;
use crate::config::{ConfigError, ServerConfig};
use crate::http::{HttpHandle, HttpServer, HttpShutdown};

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
    dispatcher: DispatcherHandle,
    housekeeping: JoinHandle<()>,
    /// Keeps this node's share of the backends' limits in step with the live nodes.
    shares: JoinHandle<()>,
    server: HttpServer,
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
        self.housekeeping.abort();
        self.shares.abort();
        self.dispatcher.abort();
        result
    }

    /// Controls the HTTP side while [`RunningServer::wait`] is awaited elsewhere.
    pub fn http(&self) -> HttpHandle {
        self.server.handle()
    }

    /// Stops at once: serving and all background work. Leased requests stay leased in the
    /// store, and run again when this node starts again (or their leases run out).
    pub fn stop(self) {
        self.server.abort();
        self.housekeeping.abort();
        self.shares.abort();
        self.dispatcher.abort();
    }

    /// Stops gracefully within `window`: no new connections; open exchanges may finish (the
    /// rest are cut); no new claims; requests not yet sent are given back at once; attempts
    /// in flight may finish and are stored; whatever still runs when the window closes is
    /// given back.
    pub async fn shutdown(self, window: Duration) -> ShutdownReport {
        let http = self.server.handle();
        let (dispatch, http) = tokio::join!(self.dispatcher.drain(window), http.shutdown(window));
        self.housekeeping.abort();
        self.shares.abort();
        self.server.abort();
        ShutdownReport { dispatch, http }
    }
}

/// Opens the store the configuration names: a PostgreSQL database shared with other nodes
/// when `config.db` is a `postgres://` URL (this node registering as its node id), else the
/// SQLite file at that path.
pub async fn open_store(config: &ServerConfig) -> Result<Arc<dyn Store>, StartError> {
    if let Some(url) = config.postgres_url() {
        let store = PostgresStore::open(
            url,
            &config.dispatch.node_id,
            satchel_store_postgres::Options::default(),
        )
        .await?;
        return Ok(Arc::new(store));
    }
    Ok(Arc::new(SqliteStore::open(&config.db)?))
}

/// Opens the configured store, then starts the server on it (see [`start_with`]).
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    // Configuration problems first: nothing is opened for a server that cannot run.
    check(&config)?;
    let store = open_store(&config).await?;
    start_with(config, store).await
}

fn check(config: &ServerConfig) -> Result<(), StartError> {
    if config.keys.is_open() && !config.listen.ip().is_loopback() {
        return Err(StartError::OpenBeyondLoopback(config.listen));
    }
    backends::build(config)?;
    Ok(())
}

/// Starts the server on `store`: recovers this node's leases, starts the dispatcher (on the
/// configured backends, else the emulator), housekeeping and the HTTP server.
pub async fn start_with(
    config: ServerConfig,
    store: Arc<dyn Store>,
) -> Result<RunningServer, StartError> {
    check(&config)?;
    let (routes, route_capacity) = backends::build(&config)?;
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
    let batches = Batches::new(
        store.clone(),
        config.lifecycle.clone(),
        work_arrived.clone(),
    );
    let dispatch = DispatchConfig {
        max_in_flight: route_capacity,
        ..config.dispatch.clone()
    };
    let routes = Arc::new(routes);
    let shares = share_limits(store.clone(), routes.clone()).await;
    let dispatcher = Dispatcher::new(store.clone(), routes, dispatch, work_arrived).spawn();
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
    };
    let app = api::router(state);
    let server =
        HttpServer::start(listener, app, &config.http).map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(%addr, node = %node_id, db = %config.db_for_logs(), "Satchel is serving the Message Batches API");
    Ok(RunningServer {
        addr,
        node_id,
        dispatcher,
        housekeeping,
        shares,
        server,
    })
}

/// How often a node recounts the live nodes sharing its store.
const SHARE_REFRESH: Duration = Duration::from_secs(2);

/// Gives this node its equal share of every backend's limits among the live nodes sharing
/// the store, now and then every [`SHARE_REFRESH`] (a node that joins or leaves is counted
/// within that; one that died is counted until its heartbeat runs out, which errs on the
/// side of the limits).
async fn share_limits(
    store: Arc<dyn Store>,
    routes: Arc<satchel_core::routing::Routes>,
) -> JoinHandle<()> {
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
