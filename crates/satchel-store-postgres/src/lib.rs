//! Satchel's PostgreSQL store: several nodes sharing one database.
//!
//! The layout mirrors the SQLite store (see `migrations/0001_initial.sql`): `batches` (with
//! their live counts), `requests` (`params` as `bytea`, stored uncompressed out of line),
//! `queue` (a narrow row for each request still to run, with its lease), `results` (the final
//! line of each settled request). A batch's requests take a contiguous block of ids, so its
//! results are a primary-key range read in submission order.
//!
//! What makes several nodes safe (each operation's module says how):
//! - a request has a result iff its queue row is gone, both changed in one transaction,
//!   conditional on the current lease token, which comes from a sequence (`settle.rs`);
//! - claims lock the rows they take with `FOR UPDATE SKIP LOCKED`, so two nodes never take
//!   the same one, and judge leases by the database's clock (`claim.rs`, `db.rs`);
//! - a node id is held by one live process (a session advisory lock, `node.rs`), so
//!   recovering "my previous life's leases" at start never steals a live node's;
//! - periodic work runs on whichever node takes a transaction advisory lock first, in
//!   bounded chunks (`sweep.rs`); a create is invisible until its final commit, and what a
//!   dead node half-ingested is removed by that housekeeping (`ingest.rs`).

mod claim;
mod db;
mod ingest;
mod migrate;
mod node;
mod outbox;
mod partial;
mod read;
mod settle;
mod sweep;

use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use satchel_core::model::{
    BatchRecord, ClaimedRequest, DeleteOutcome, IngestChunk, ListCursor, ModelFilter, NewBatch,
    RequestKey, SettleCursor, SettledPage, Settlement, StoredRequest,
};
use satchel_core::store::{ResultStream, Store, StoreError};
use satchel_wire::Timestamp;
use tokio::sync::{Notify, mpsc};
use tokio_postgres::NoTls;

/// The hot statements, for the test that EXPLAINs them (their plans must stay index probes,
/// never a scan of the whole queue).
#[doc(hidden)]
pub mod statements {
    pub use crate::claim::{claim_sql, renew_sql};
    pub use crate::settle::SETTLE_SQL;
}

/// Errors opening the store (the URL, the connection, the schema, the node id).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid PostgreSQL URL: {0}")]
    Url(String),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    #[error(
        "the database's schema is version {applied}, newer than this Satchel knows ({known}): \
         upgrade Satchel on this node"
    )]
    SchemaTooNew { applied: i32, known: i32 },
    #[error(
        "node id {0:?} is in use by another live Satchel node on this database: give each node \
         its own --node-id"
    )]
    NodeIdInUse(String),
    #[error("too many node ids registered in this database")]
    TooManyNodes,
}

/// Whether a `--db` value names a PostgreSQL database (else it is a SQLite file path).
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// `url` without its password, for logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((user, host)) => {
            let user = user.split_once(':').map_or(user, |(name, _)| name);
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

/// How a node connects.
#[derive(Debug, Clone)]
pub struct Options {
    /// Most connections this node opens for its operations (besides its own node
    /// connection).
    pub max_connections: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            max_connections: 16,
        }
    }
}

/// The PostgreSQL store, one per node.
pub struct PostgresStore {
    pool: Pool,
    /// This node's start (its ingests are marked with it).
    instance: i64,
    /// The fair-share rotation of this node's claims.
    claims: Mutex<satchel_core::fairness::ClaimOrder>,
    /// Model ids already interned (an id never changes once given).
    models: Mutex<std::collections::HashMap<String, i32>>,
    waker: node::Waker,
    _node: node::Node,
}

impl PostgresStore {
    /// Connects to `url`, applies the schema migrations, and registers this node as
    /// `node_id` (refused if a live node holds that id).
    pub async fn open(url: &str, node_id: &str, options: Options) -> Result<Self, OpenError> {
        let mut config =
            tokio_postgres::Config::from_str(url).map_err(|e| OpenError::Url(e.to_string()))?;
        config.application_name("satchel");
        // A session left idle in a transaction would hold back vacuum for every table (the
        // queue's dead rows pile up): PostgreSQL ends any such session of ours.
        config.options("-c idle_in_transaction_session_timeout=60000");
        {
            let (mut client, connection) = config.connect(NoTls).await?;
            let driver = tokio::spawn(connection);
            migrate::migrate(&mut client).await?;
            drop(client);
            let _ = driver.await;
        }
        let waker: node::Waker = Arc::new(Mutex::new(None));
        let node = node::register(&config, node_id, waker.clone()).await?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.max_connections.max(2))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| OpenError::Pool(e.to_string()))?;
        Ok(Self {
            pool,
            instance: node.instance,
            claims: Mutex::new(satchel_core::fairness::ClaimOrder::default()),
            models: Mutex::new(std::collections::HashMap::new()),
            waker,
            _node: node,
        })
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn create_batch(
        &self,
        batch: NewBatch,
        chunks: mpsc::Receiver<IngestChunk>,
    ) -> Result<BatchRecord, StoreError> {
        ingest::ingest(self, batch, chunks).await
    }

    async fn get_batch(
        &self,
        workspace: &str,
        id: &str,
    ) -> Result<Option<BatchRecord>, StoreError> {
        read::get_batch(&self.pool, workspace, id).await
    }

    async fn queued_requests(&self, workspace: &str) -> Result<u64, StoreError> {
        read::queued_requests(&self.pool, workspace).await
    }

    async fn list_batches(
        &self,
        workspace: &str,
        cursor: &ListCursor,
        limit: u32,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        read::list_batches(&self.pool, workspace, cursor, limit).await
    }

    async fn cancel_batch(
        &self,
        workspace: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<BatchRecord>, StoreError> {
        sweep::cancel_batch(&self.pool, workspace, id, now).await
    }

    async fn delete_batch(&self, workspace: &str, id: &str) -> Result<DeleteOutcome, StoreError> {
        sweep::delete_batch(&self.pool, workspace, id).await
    }

    fn results(&self, workspace: &str, id: &str) -> ResultStream {
        read::stream_results(self.pool.clone(), workspace.to_owned(), id.to_owned())
    }

    async fn settled_since(
        &self,
        workspace: &str,
        id: &str,
        after: SettleCursor,
        max_lines: usize,
        max_bytes: usize,
    ) -> Result<Option<SettledPage>, StoreError> {
        partial::settled_since(&self.pool, workspace, id, after, max_lines, max_bytes).await
    }

    async fn stored_requests(
        &self,
        workspace: &str,
        id: &str,
        from: i64,
        limit: usize,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        partial::stored_requests(&self.pool, workspace, id, from, limit).await
    }

    async fn claim(
        &self,
        owner: &str,
        max: usize,
        models: &ModelFilter,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ClaimedRequest>, StoreError> {
        claim::claim(self, owner, max, models, now, until).await
    }

    async fn models(&self) -> Result<Vec<(i64, String)>, StoreError> {
        read::models(&self.pool).await
    }

    async fn renew(
        &self,
        leases: Vec<RequestKey>,
        until: Timestamp,
    ) -> Result<Vec<RequestKey>, StoreError> {
        claim::renew(&self.pool, leases, until).await
    }

    async fn settle(
        &self,
        settlements: Arc<[Settlement]>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        settle::settle(&self.pool, &settlements, now).await
    }

    async fn release(&self, requests: Vec<RequestKey>) -> Result<(), StoreError> {
        claim::release(&self.pool, requests).await
    }

    async fn running_batches(&self, now: Timestamp) -> Result<Vec<i64>, StoreError> {
        read::running_batches(&self.pool, now).await
    }

    async fn sweep_unrunnable(&self, now: Timestamp) -> Result<u64, StoreError> {
        sweep::sweep_unrunnable(&self.pool, now).await
    }

    async fn archive(&self, created_before: Timestamp, now: Timestamp) -> Result<u64, StoreError> {
        sweep::housekeeping(&self.pool).await?;
        sweep::archive(&self.pool, created_before, now).await
    }

    async fn recover(&self, owner: &str) -> Result<u64, StoreError> {
        claim::recover(&self.pool, owner).await
    }

    async fn live_nodes(&self) -> Result<u32, StoreError> {
        node::live_nodes(&self.pool).await
    }

    async fn stats(&self) -> Result<satchel_core::model::StoreStats, StoreError> {
        read::stats(&self.pool).await
    }

    fn webhook_outbox(&self) -> Option<Arc<dyn satchel_core::webhooks::Outbox>> {
        Some(Arc::new(outbox::PostgresOutbox {
            pool: self.pool.clone(),
        }))
    }

    fn watch(&self, work_arrived: Arc<Notify>) {
        if let Ok(mut waker) = self.waker.lock() {
            *waker = Some(work_arrived);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_pick_the_engine_and_lose_their_password_in_logs() {
        assert!(is_postgres_url("postgres://u@h:5432/db"));
        assert!(is_postgres_url("postgresql://u@h/db"));
        assert!(!is_postgres_url("./satchel.db"));
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://h/db"), "postgres://h/db");
    }
}
