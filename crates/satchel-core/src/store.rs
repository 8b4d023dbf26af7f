//! The storage seam: what every engine (embedded SQLite, shared PostgreSQL) must provide.
//!
//! An implementation keeps batches, their requests, the queue of requests still to run, and
//! the final result lines. It must make each method atomic and honour these rules, which the
//! rest of Satchel relies on:
//!
//! - A batch and all its requests appear together or not at all ([`Store::create_batch`]).
//! - A request's result is written in the same transaction that removes it from the queue and
//!   moves the batch's counts; a request that already has a result is never leased again, and
//!   a settlement whose lease is no longer current is ignored ([`Store::settle`]).
//! - A batch whose `processing` count reaches zero becomes `ended` in that same transaction.
//! - Every query is scoped by workspace; another workspace's batch is simply absent.
//!
//! Leases are a contract between a node and the store. A lease has an owner (the node id),
//! a token (strictly increasing, from a counter: the fencing token) and an end (`until`). The
//! holder renews it ([`Store::renew`]) while the request waits for its route or runs; only the
//! current token may renew, settle or release; once `until` has passed, any node may claim the
//! request again. At start a node recovers only the leases it owns ([`Store::recover`]):
//! those of its previous life. Leases of other nodes are left to run out.

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use satchel_wire::Timestamp;
use tokio::sync::mpsc;

use crate::model::{
    BatchRecord, ClaimedRequest, DeleteOutcome, IngestChunk, ListCursor, ModelFilter, NewBatch,
    RequestKey, SettleCursor, SettledPage, Settlement, StoreStats, StoredRequest,
};

/// Failures of the storage engine itself (never a client's mistake).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed. `transient`: the same call may succeed later (the disk is full, the
    /// database is busy, an I/O error, a lost connection); otherwise retrying will not help.
    #[error("storage engine error: {source}")]
    Engine {
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        transient: bool,
    },
    #[error("the create body ended before it was committed")]
    IngestAborted,
    #[error("storage task failed: {0}")]
    Task(String),
}

impl StoreError {
    pub fn engine(
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
        transient: bool,
    ) -> Self {
        Self::Engine {
            source: source.into(),
            transient,
        }
    }

    /// Whether the same call may succeed if tried again later.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Engine { transient, .. } => *transient,
            Self::IngestAborted => false,
            Self::Task(_) => true,
        }
    }
}

/// Where results are read from: a byte stream of JSONL lines, each ending in `\n`.
pub type ResultStream = BoxStream<'static, Result<bytes::Bytes, StoreError>>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Creates `batch` from the requests that arrive on `chunks`, all or nothing: the batch
    /// becomes visible (and its requests runnable) only once [`IngestChunk::Commit`] arrives.
    /// If the channel closes before that, everything received is discarded and
    /// [`StoreError::IngestAborted`] is returned.
    async fn create_batch(
        &self,
        batch: NewBatch,
        chunks: mpsc::Receiver<IngestChunk>,
    ) -> Result<BatchRecord, StoreError>;

    async fn get_batch(&self, workspace: &str, id: &str)
    -> Result<Option<BatchRecord>, StoreError>;

    /// Up to `limit` batches of `workspace` in the cursor's direction, newest first.
    /// Returns one extra batch when more exist, so the caller can tell `has_more`.
    async fn list_batches(
        &self,
        workspace: &str,
        cursor: &ListCursor,
        limit: u32,
    ) -> Result<Vec<BatchRecord>, StoreError>;

    /// Starts cancelling: sets `cancel_initiated_at` (first time only) and status `canceling`,
    /// turns every request not leased into a `canceled` result, and ends the batch if nothing
    /// is left in flight. A batch already canceling or ended is returned unchanged.
    async fn cancel_batch(
        &self,
        workspace: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<BatchRecord>, StoreError>;

    /// Deletes an ended batch with its requests and results.
    async fn delete_batch(&self, workspace: &str, id: &str) -> Result<DeleteOutcome, StoreError>;

    /// The requests of `workspace` in the processing queue: those of its visible batches
    /// that have not ended yet (the sum of their `processing` counts).
    async fn queued_requests(&self, workspace: &str) -> Result<u64, StoreError>;

    /// The batch's result lines in submission order, streamed without loading them all.
    fn results(&self, workspace: &str, id: &str) -> ResultStream;

    /// The result lines of `workspace`'s batch `id` committed after `after`, in settle order
    /// ([`SettleCursor`]), read in one snapshot: at most `max_lines` lines, and no more once
    /// `max_bytes` are read (but at least one line). `None`: no such batch.
    /// A line is handed out only once every line before it in settle order is visible, so a
    /// reader going on from `next` never misses one that commits later with a smaller cursor.
    async fn settled_since(
        &self,
        workspace: &str,
        id: &str,
        after: SettleCursor,
        max_lines: usize,
        max_bytes: usize,
    ) -> Result<Option<SettledPage>, StoreError>;

    /// Up to `limit` of the batch's stored requests from position `from` (0: its first), in
    /// submission order. Empty past the end or if there is no such batch.
    async fn stored_requests(
        &self,
        workspace: &str,
        id: &str,
        from: i64,
        limit: usize,
    ) -> Result<Vec<StoredRequest>, StoreError>;

    /// Leases up to `max` runnable requests to `owner` until `until`, spread fairly across
    /// workspaces and, within each, across batches (round robin, so a small batch is not
    /// starved by a large one). All leases of one claim share a fresh token, greater than any
    /// token handed out before.
    /// Runnable: no result yet, not leased (or its lease ran out), in a batch that is
    /// `in_progress` and not past `expires_at`. A runnable request whose stored params cannot
    /// be read is not handed out: it ends `errored` (`api_error`) in the same transaction.
    /// Only requests that `models` admits are taken (claims are made per route).
    async fn claim(
        &self,
        owner: &str,
        max: usize,
        models: &ModelFilter,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ClaimedRequest>, StoreError>;

    /// Every model recorded at ingest so far, with its id (for [`ModelFilter::Only`]).
    async fn models(&self) -> Result<Vec<(i64, String)>, StoreError>;

    /// Extends the leases that are still current (same token, not yet settled or released)
    /// to `until`, in one transaction. Returns the ones that could not be renewed: lost
    /// (settled, released, or taken over after running out), so their holder must not start
    /// another attempt.
    async fn renew(
        &self,
        leases: Vec<RequestKey>,
        until: Timestamp,
    ) -> Result<Vec<RequestKey>, StoreError>;

    /// Stores finished requests (one transaction for all of them): each result line is
    /// written only if its lease is still current, and counts move with it.
    /// (Shared, so a write that failed can be tried again with the same outcomes.)
    async fn settle(
        &self,
        settlements: Arc<[Settlement]>,
        now: Timestamp,
    ) -> Result<(), StoreError>;

    /// Gives leased requests back unrun (their batch stopped while they waited for a slot):
    /// each lease that is still current is cleared, so the request is runnable again or,
    /// in a stopped batch, ended by the next [`Store::sweep_unrunnable`].
    async fn release(&self, requests: Vec<RequestKey>) -> Result<(), StoreError>;

    /// The batches whose requests may start now: `in_progress` and before `expires_at`.
    async fn running_batches(&self, now: Timestamp) -> Result<Vec<i64>, StoreError>;

    /// For batches past `expires_at`, and for canceling batches, turns the unleased requests
    /// into `expired` / `canceled` results. Returns how many requests it settled.
    async fn sweep_unrunnable(&self, now: Timestamp) -> Result<u64, StoreError>;

    /// Purges the results of ended batches created before `created_before` and sets their
    /// `archived_at`. Returns how many batches it archived.
    async fn archive(&self, created_before: Timestamp, now: Timestamp) -> Result<u64, StoreError>;

    /// Releases every lease held by `owner`, at that node's start: they are its previous
    /// life's, so their requests may run again at once. Other owners' leases are left alone
    /// (they run out by themselves if their node is gone). Returns how many it released.
    async fn recover(&self, owner: &str) -> Result<u64, StoreError>;

    /// Wakes `work_arrived` when another node sharing the store created or canceled a batch,
    /// so this node's dispatcher looks sooner than its next poll (which stays the guarantee).
    /// An engine only one node can use has nothing to do.
    fn watch(&self, work_arrived: Arc<tokio::sync::Notify>) {
        let _ = work_arrived;
    }

    /// How many nodes share this store now (at least 1: this one), so that each takes an
    /// equal share of the backends' limits. An engine only one node can use says 1.
    async fn live_nodes(&self) -> Result<u32, StoreError> {
        Ok(1)
    }

    /// Whether the engine answers: the readiness probe. The default makes the cheapest
    /// read every engine has; an engine may override it with something cheaper.
    async fn ping(&self) -> Result<(), StoreError> {
        self.models().await.map(|_| ())
    }

    /// Batches by status, the counts summed, and the oldest waiting batch, over every
    /// workspace: for the metrics. An engine without it leaves those series out.
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Err(StoreError::Task(
            "this storage engine does not report statistics".into(),
        ))
    }

    // ---- webhooks (see crate::webhooks::outbox) ----

    /// The engine's webhook outbox, on the same database: its events are recorded in the
    /// transactions that end batches. None: the engine keeps no outbox (no webhooks).
    fn webhook_outbox(&self) -> Option<Arc<dyn crate::webhooks::Outbox>> {
        None
    }
}
