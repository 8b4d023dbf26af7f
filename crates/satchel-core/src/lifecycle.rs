//! The batch lifecycle: the one place that decides what each operation may do.
//!
//! `in_progress` → (`canceling` once cancelled) → `ended`, nothing else. A batch ends when its
//! last request settles (succeeded, errored, canceled or expired). It can be deleted only once
//! ended; its results can be read only once ended and until archived. Every lookup is scoped
//! to the caller's workspace: another workspace's batch does not exist.
//!
//! The store carries out each transition atomically; this module decides which transition a
//! request asks for and what the caller sees when it is not allowed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use satchel_wire::{ProcessingStatus, Timestamp, ids};
use tokio::io::AsyncRead;
use tokio::sync::{Notify, mpsc};

use crate::forward::UpstreamHeaders;
use crate::ingest::{self, IngestError};
use crate::model::{BatchRecord, DeleteOutcome, IngestChunk, ListCursor, NewBatch};
use crate::store::{ResultStream, Store, StoreError};
use crate::workspace_limits::{OverLimit, QUEUE_FULL_RETRY_AFTER, WorkspaceLimits};

/// The lifecycle's windows and limits.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// From `created_at` to `expires_at` (24 h in the API).
    pub expiry: Duration,
    /// From `created_at` to the purge of results (29 days in the API).
    pub retention: Duration,
    /// Most requests in one batch.
    pub max_requests: usize,
    /// Run requests that share a prompt prefix together (see [`crate::prefix`]): worth it
    /// in front of a model server that caches prefixes, not for the emulator.
    pub group_by_prefix: bool,
}

/// A batch's processing window, as in the API: 24 hours.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// How long results are kept, as in the API: 29 days.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(29 * 24 * 3600);

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            expiry: DEFAULT_EXPIRY,
            retention: DEFAULT_RETENTION,
            max_requests: satchel_wire::MAX_REQUESTS_PER_BATCH,
            group_by_prefix: false,
        }
    }
}

/// Why an operation on batches failed. The API maps each to its wire error in one place.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("Message Batch {0} not found.")]
    NotFound(String),
    #[error("Message Batch {0} has no available results.")]
    NoResults(String),
    #[error("In progress batches cannot be deleted. Consider canceling the batch instead.")]
    DeleteInProgress,
    #[error("Message Batch {id} is still {status}; only an ended batch can be retried.")]
    RetryNotEnded { id: String, status: &'static str },
    #[error("Message Batch {0} has no requests to retry: {1}")]
    NothingToRetry(String, String),
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The workspace's limits refuse the call (see [`crate::workspace_limits`]).
    #[error(transparent)]
    OverLimit(#[from] OverLimit),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A page of batches, newest first, and whether more exist in the direction of paging.
#[derive(Debug)]
pub struct BatchPage {
    pub batches: Vec<BatchRecord>,
    pub has_more: bool,
}

/// The operations the API offers on batches.
#[derive(Clone)]
pub struct Batches {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) config: LifecycleConfig,
    /// Woken when new work arrives, so the dispatcher need not poll.
    pub(crate) work_arrived: Arc<Notify>,
    limits: Arc<WorkspaceLimits>,
}

impl Batches {
    pub fn new(store: Arc<dyn Store>, config: LifecycleConfig, work_arrived: Arc<Notify>) -> Self {
        Self {
            store,
            config,
            work_arrived,
            limits: Arc::default(),
        }
    }

    /// A new batch's head, created now in `workspace`.
    pub(crate) fn new_batch(&self, workspace: &str, headers: &UpstreamHeaders) -> NewBatch {
        let created_at = Timestamp::now();
        NewBatch {
            id: ids::new_batch_id(),
            workspace: workspace.to_owned(),
            created_at,
            expires_at: created_at.plus(self.config.expiry),
            upstream_headers: headers.to_stored(),
            group_by_prefix: self.config.group_by_prefix,
        }
    }

    /// With per-workspace limits (none by default).
    pub fn with_workspace_limits(mut self, limits: Arc<WorkspaceLimits>) -> Self {
        self.limits = limits;
        self
    }

    /// Counts a call of `workspace` to the batch routes against its rate, or refuses it.
    pub fn admit_call(&self, workspace: &str) -> Result<(), BatchError> {
        Ok(self.limits.admit_call(workspace)?)
    }

    /// Creates a batch from a create body read from `body` as it arrives, keeping `headers`
    /// to send upstream with each of its requests. All or nothing.
    pub async fn create(
        &self,
        workspace: &str,
        headers: &UpstreamHeaders,
        body: impl AsyncRead + Unpin,
    ) -> Result<BatchRecord, BatchError> {
        let batch = self.new_batch(workspace, headers);
        let (sink, chunks) = mpsc::channel(4);
        let max_requests = self.config.max_requests;
        // The sink is dropped when the parse ends, which tells the store no more is coming.
        let parse = async move { ingest::parse_create_body(body, max_requests, &sink).await };
        let (parsed, stored) = tokio::join!(parse, self.store_batch(workspace, batch, chunks));
        let stored = stored?;
        // A refused body explains the failure better than the store's "aborted".
        match (parsed, stored) {
            (Err(IngestError::StoreGone), Err(store_error)) => Err(store_error.into()),
            (Err(ingest_error), _) => Err(ingest_error.into()),
            (Ok(_), Err(store_error)) => Err(store_error.into()),
            (Ok(_), Ok(record)) => {
                self.work_arrived.notify_one();
                Ok(record)
            }
        }
    }

    /// Has the store create `batch` from `chunks`, through the workspace's queue gate when it
    /// has a limit: a refusal by the gate (the store then discards what it received) is the
    /// outer error; the store's own outcome is the inner result.
    pub(crate) async fn store_batch(
        &self,
        workspace: &str,
        batch: NewBatch,
        chunks: mpsc::Receiver<IngestChunk>,
    ) -> Result<Result<BatchRecord, StoreError>, BatchError> {
        let Some(limit) = self.limits.max_queued(workspace) else {
            return Ok(self.store.create_batch(batch, chunks).await);
        };
        let (to_store, gated) = mpsc::channel(4);
        let lock = self.limits.commit_lock(workspace);
        let gate = gate_commit(&*self.store, workspace, limit, chunks, to_store, &lock);
        let (gate, stored) = tokio::join!(gate, self.store.create_batch(batch, gated));
        // The commit lock is held (in `gate`'s guard) until the store has committed.
        let _held = gate?;
        Ok(stored)
    }

    pub async fn get(&self, workspace: &str, id: &str) -> Result<BatchRecord, BatchError> {
        self.store
            .get_batch(workspace, id)
            .await?
            .ok_or_else(|| BatchError::NotFound(id.to_owned()))
    }

    pub async fn list(
        &self,
        workspace: &str,
        cursor: &ListCursor,
        limit: u32,
    ) -> Result<BatchPage, BatchError> {
        let mut batches = self.store.list_batches(workspace, cursor, limit).await?;
        let has_more = batches.len() > limit as usize;
        batches.truncate(limit as usize);
        Ok(BatchPage { batches, has_more })
    }

    /// Cancels a batch: requests not yet started end `canceled`, requests in flight finish.
    /// Cancelling a batch that is already canceling or ended returns it unchanged.
    pub async fn cancel(&self, workspace: &str, id: &str) -> Result<BatchRecord, BatchError> {
        self.store
            .cancel_batch(workspace, id, Timestamp::now())
            .await?
            .ok_or_else(|| BatchError::NotFound(id.to_owned()))
    }

    /// Deletes an ended batch with its requests and results.
    pub async fn delete(&self, workspace: &str, id: &str) -> Result<(), BatchError> {
        match self.store.delete_batch(workspace, id).await? {
            DeleteOutcome::Deleted => Ok(()),
            DeleteOutcome::NotFound => Err(BatchError::NotFound(id.to_owned())),
            DeleteOutcome::NotEnded => Err(BatchError::DeleteInProgress),
        }
    }

    /// The results of an ended, unarchived batch, in submission order.
    pub async fn results(&self, workspace: &str, id: &str) -> Result<ResultStream, BatchError> {
        let batch = self.get(workspace, id).await?;
        if batch.status != ProcessingStatus::Ended || batch.archived_at.is_some() {
            return Err(BatchError::NoResults(id.to_owned()));
        }
        let mut lines = self.store.results(workspace, id);
        // The batch may be deleted or archived between the check above and the first read.
        // An ended batch has a line for each of its (one or more) requests, so a stream with
        // nothing in it means that happened: say so (404, or no results), never an empty 200.
        // A failure to read the first page is answered as the error it is, before any status.
        match lines.next().await {
            Some(Ok(first)) => Ok(futures::stream::once(async { Ok(first) })
                .chain(lines)
                .boxed()),
            Some(Err(e)) => Err(BatchError::Store(e)),
            None => {
                self.get(workspace, id).await?;
                Err(BatchError::NoResults(id.to_owned()))
            }
        }
    }
}

/// Passes a create's chunks on to the store, but its commit only if the workspace's queue
/// has room for its requests; else the store gets no commit (so it discards everything)
/// and the create is refused. Returns the workspace's commit lock, to be held until the
/// store has committed, so the next create of the workspace on this node counts this one.
async fn gate_commit<'a>(
    store: &dyn Store,
    workspace: &str,
    limit: u64,
    mut from_parse: mpsc::Receiver<IngestChunk>,
    to_store: mpsc::Sender<IngestChunk>,
    lock: &'a tokio::sync::Mutex<()>,
) -> Result<Option<tokio::sync::MutexGuard<'a, ()>>, BatchError> {
    let mut batch = 0u64;
    while let Some(chunk) = from_parse.recv().await {
        if let IngestChunk::Requests(requests) = &chunk {
            batch += requests.len() as u64;
        } else {
            let held = lock.lock().await;
            let queued = store.queued_requests(workspace).await?;
            if queued.saturating_add(batch) > limit {
                return Err(OverLimit::Queue {
                    batch,
                    limit,
                    queued,
                    retry_after: QUEUE_FULL_RETRY_AFTER,
                }
                .into());
            }
            // A store that stopped taking chunks says why itself.
            let _ = to_store.send(chunk).await;
            return Ok(Some(held));
        }
        if to_store.send(chunk).await.is_err() {
            break;
        }
    }
    Ok(None)
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
