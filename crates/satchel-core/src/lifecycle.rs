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
use crate::model::{BatchRecord, DeleteOutcome, ListCursor, NewBatch};
use crate::store::{ResultStream, Store, StoreError};

/// The lifecycle's windows and limits.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// From `created_at` to `expires_at` (24 h in the API).
    pub expiry: Duration,
    /// From `created_at` to the purge of results (29 days in the API).
    pub retention: Duration,
    /// Most requests in one batch.
    pub max_requests: usize,
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
    #[error(transparent)]
    Ingest(#[from] IngestError),
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
    store: Arc<dyn Store>,
    config: LifecycleConfig,
    /// Woken when new work arrives, so the dispatcher need not poll.
    work_arrived: Arc<Notify>,
}

impl Batches {
    pub fn new(store: Arc<dyn Store>, config: LifecycleConfig, work_arrived: Arc<Notify>) -> Self {
        Self {
            store,
            config,
            work_arrived,
        }
    }

    /// Creates a batch from a create body read from `body` as it arrives, keeping `headers`
    /// to send upstream with each of its requests. All or nothing.
    pub async fn create(
        &self,
        workspace: &str,
        headers: &UpstreamHeaders,
        body: impl AsyncRead + Unpin,
    ) -> Result<BatchRecord, BatchError> {
        let created_at = Timestamp::now();
        let batch = NewBatch {
            id: ids::new_batch_id(),
            workspace: workspace.to_owned(),
            created_at,
            expires_at: created_at.plus(self.config.expiry),
            upstream_headers: headers.to_stored(),
        };
        let (sink, chunks) = mpsc::channel(4);
        let max_requests = self.config.max_requests;
        // The sink is dropped when the parse ends, which tells the store no more is coming.
        let parse = async move { ingest::parse_create_body(body, max_requests, &sink).await };
        let (parsed, stored) = tokio::join!(parse, self.store.create_batch(batch, chunks));
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

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
