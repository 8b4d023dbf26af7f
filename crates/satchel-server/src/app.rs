//! Starting the service: open the store, recover, spawn the dispatcher and housekeeping, serve.

use std::net::SocketAddr;
use std::sync::Arc;

use satchel_core::dispatch::{DispatchConfig, Dispatcher};
use satchel_core::housekeeping::Housekeeper;
use satchel_core::{Batches, Store, StoreError};
use satchel_store_sqlite::{OpenError, SqliteStore};
use std::time::Duration;
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

/// A started server. Dropping it does not stop it; call [`RunningServer::stop`].
pub struct RunningServer {
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
    server: HttpServer,
}

impl RunningServer {
    /// Waits until the HTTP server stops (it runs until [`HttpHandle::shutdown`]).
    pub async fn wait(self) -> std::io::Result<()> {
        let result = self.server.wait().await;
        for task in self.tasks {
            task.abort();
        }
        result
    }

    /// Stops serving and all background work. Leased requests stay leased in the store and
    /// run again at the next start.
    pub fn stop(self) {
        self.server.abort();
        for task in self.tasks {
            task.abort();
        }
    }

    /// Controls the HTTP side while [`RunningServer::wait`] is awaited elsewhere.
    pub fn http(&self) -> HttpHandle {
        self.server.handle()
    }

    /// Stops gracefully: no new connections, open exchanges may finish within `deadline`
    /// (the rest are cut), then the background work stops.
    pub async fn shutdown(self, deadline: Duration) -> HttpShutdown {
        let report = self.server.handle().shutdown(deadline).await;
        self.stop();
        report
    }
}

/// Opens the store at `config.db`, recovers leases, starts the dispatcher (on the emulator),
/// housekeeping and the HTTP server.
pub async fn start(config: ServerConfig) -> Result<RunningServer, StartError> {
    if config.keys.is_open() && !config.listen.ip().is_loopback() {
        return Err(StartError::OpenBeyondLoopback(config.listen));
    }
    // Configuration problems first: nothing is opened for a server that cannot run.
    let (routes, route_capacity) = backends::build(&config)?;
    for route in routes.routes() {
        tracing::info!(backend = %route.name, "backend ready");
    }
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&config.db)?);
    let released = store.release_all_leases().await?;
    if released > 0 {
        tracing::info!(
            released,
            "released the leases of the previous run; those requests run again"
        );
    }
    let work_arrived = Arc::new(Notify::new());
    let batches = Batches::new(
        store.clone(),
        config.lifecycle.clone(),
        work_arrived.clone(),
    );
    let dispatch = DispatchConfig {
        max_in_flight: route_capacity,
        ..config.dispatch.clone()
    };
    let mut tasks =
        Dispatcher::new(store.clone(), Arc::new(routes), dispatch, work_arrived).spawn();
    tasks.push(
        Housekeeper::new(store, config.lifecycle.retention, config.housekeeping_tick).spawn(),
    );

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
    };
    let app = api::router(state);
    let server =
        HttpServer::start(listener, app, &config.http).map_err(|source| StartError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(%addr, db = %config.db.display(), "Satchel is serving the Message Batches API");
    Ok(RunningServer {
        addr,
        tasks,
        server,
    })
}
