//! The store with each call timed (`satchel_store_operation_duration_seconds{op}`) and its
//! failures counted (`satchel_store_errors_total{op}`), whatever the engine: a decorator
//! over the [`Store`] seam, so engines know nothing of metrics.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use satchel_core::model::{
    BatchRecord, ClaimedRequest, DeleteOutcome, IngestChunk, ListCursor, ModelFilter, NewBatch,
    RequestKey, SettleCursor, SettledPage, Settlement, StoreStats, StoredRequest,
};
use satchel_core::observe as names;
use satchel_core::store::ResultStream;
use satchel_core::{Store, StoreError};
use satchel_wire::Timestamp;
use tokio::sync::mpsc;

/// `inner`, timed.
pub struct MeteredStore {
    inner: Arc<dyn Store>,
}

impl MeteredStore {
    pub fn wrap(inner: Arc<dyn Store>) -> Arc<dyn Store> {
        Arc::new(Self { inner })
    }
}

async fn timed<T>(
    op: &'static str,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let result = call.await;
    metrics::histogram!(names::STORE_DURATION, "op" => op).record(started.elapsed().as_secs_f64());
    if result.is_err() {
        metrics::counter!(names::STORE_ERRORS, "op" => op).increment(1);
    }
    result
}

#[async_trait]
impl Store for MeteredStore {
    async fn create_batch(
        &self,
        batch: NewBatch,
        chunks: mpsc::Receiver<IngestChunk>,
    ) -> Result<BatchRecord, StoreError> {
        timed("create_batch", self.inner.create_batch(batch, chunks)).await
    }

    async fn get_batch(
        &self,
        workspace: &str,
        id: &str,
    ) -> Result<Option<BatchRecord>, StoreError> {
        timed("get_batch", self.inner.get_batch(workspace, id)).await
    }

    async fn queued_requests(&self, workspace: &str) -> Result<u64, StoreError> {
        timed("queued_requests", self.inner.queued_requests(workspace)).await
    }

    async fn list_batches(
        &self,
        workspace: &str,
        cursor: &ListCursor,
        limit: u32,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        timed(
            "list_batches",
            self.inner.list_batches(workspace, cursor, limit),
        )
        .await
    }

    async fn cancel_batch(
        &self,
        workspace: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<BatchRecord>, StoreError> {
        timed("cancel_batch", self.inner.cancel_batch(workspace, id, now)).await
    }

    async fn delete_batch(&self, workspace: &str, id: &str) -> Result<DeleteOutcome, StoreError> {
        timed("delete_batch", self.inner.delete_batch(workspace, id)).await
    }

    /// Not timed: a stream whose pace is its reader's (its bytes are counted by the API).
    fn results(&self, workspace: &str, id: &str) -> ResultStream {
        self.inner.results(workspace, id)
    }

    async fn settled_since(
        &self,
        workspace: &str,
        id: &str,
        after: SettleCursor,
        max_lines: usize,
        max_bytes: usize,
    ) -> Result<Option<SettledPage>, StoreError> {
        timed(
            "settled_since",
            self.inner
                .settled_since(workspace, id, after, max_lines, max_bytes),
        )
        .await
    }

    async fn stored_requests(
        &self,
        workspace: &str,
        id: &str,
        from: i64,
        limit: usize,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        timed(
            "stored_requests",
            self.inner.stored_requests(workspace, id, from, limit),
        )
        .await
    }

    async fn claim(
        &self,
        owner: &str,
        max: usize,
        models: &ModelFilter,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ClaimedRequest>, StoreError> {
        timed("claim", self.inner.claim(owner, max, models, now, until)).await
    }

    async fn models(&self) -> Result<Vec<(i64, String)>, StoreError> {
        timed("models", self.inner.models()).await
    }

    async fn renew(
        &self,
        leases: Vec<RequestKey>,
        until: Timestamp,
    ) -> Result<Vec<RequestKey>, StoreError> {
        timed("renew", self.inner.renew(leases, until)).await
    }

    async fn settle(
        &self,
        settlements: Arc<[Settlement]>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        timed("settle", self.inner.settle(settlements, now)).await
    }

    async fn release(&self, requests: Vec<RequestKey>) -> Result<(), StoreError> {
        timed("release", self.inner.release(requests)).await
    }

    async fn running_batches(&self, now: Timestamp) -> Result<Vec<i64>, StoreError> {
        timed("running_batches", self.inner.running_batches(now)).await
    }

    async fn sweep_unrunnable(&self, now: Timestamp) -> Result<u64, StoreError> {
        timed("sweep_unrunnable", self.inner.sweep_unrunnable(now)).await
    }

    async fn archive(&self, created_before: Timestamp, now: Timestamp) -> Result<u64, StoreError> {
        timed("archive", self.inner.archive(created_before, now)).await
    }

    async fn recover(&self, owner: &str) -> Result<u64, StoreError> {
        timed("recover", self.inner.recover(owner)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", self.inner.ping()).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        timed("stats", self.inner.stats()).await
    }

    // Not timed: a registration, not an operation; but it must reach the engine, or a node
    // with metrics on would miss other nodes' wake-ups.
    fn watch(&self, work_arrived: Arc<tokio::sync::Notify>) {
        self.inner.watch(work_arrived);
    }

    async fn live_nodes(&self) -> Result<u32, StoreError> {
        timed("live_nodes", self.inner.live_nodes()).await
    }

    // The engine's own outbox (not timed): without it a node with metrics on sends no webhooks.
    fn webhook_outbox(&self) -> Option<Arc<dyn satchel_core::webhooks::Outbox>> {
        self.inner.webhook_outbox()
    }
}
