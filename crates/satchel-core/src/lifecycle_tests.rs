//! The lifecycle's results rule against a store whose batch changes between two reads: what
//! the caller sees when a batch is deleted or archived as its download starts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use satchel_wire::RequestCounts;

use super::*;
use crate::model::{
    ClaimedRequest, IngestChunk, ModelFilter, RequestKey, SettleCursor, SettledPage, Settlement,
    StoredRequest,
};

/// What the store's results stream does when read.
#[derive(Clone, Copy)]
enum Download {
    /// The batch is deleted just before the first page is read.
    Deleted,
    /// The batch is archived (its lines purged) just before the first page is read.
    Archived,
    /// The first read fails.
    Fails,
    /// Two pages.
    Lines,
}

/// A store holding one ended batch, for the results rule only.
struct OneBatch {
    batch: Mutex<Option<BatchRecord>>,
    download: Download,
}

impl OneBatch {
    fn new(download: Download) -> Arc<Self> {
        let batch = BatchRecord {
            id: "msgbatch_1".into(),
            workspace: "w".into(),
            status: ProcessingStatus::Ended,
            counts: RequestCounts {
                succeeded: 2,
                ..RequestCounts::default()
            },
            created_at: Timestamp::from_micros(0),
            expires_at: Timestamp::from_micros(1),
            ended_at: Some(Timestamp::from_micros(1)),
            cancel_initiated_at: None,
            archived_at: None,
        };
        Arc::new(Self {
            batch: Mutex::new(Some(batch)),
            download,
        })
    }
}

fn unused() -> StoreError {
    StoreError::Task("not used by this test".into())
}

#[async_trait]
impl Store for OneBatch {
    async fn create_batch(
        &self,
        _: NewBatch,
        _: mpsc::Receiver<IngestChunk>,
    ) -> Result<BatchRecord, StoreError> {
        Err(unused())
    }
    async fn get_batch(&self, _: &str, _: &str) -> Result<Option<BatchRecord>, StoreError> {
        Ok(self.batch.lock().unwrap().clone())
    }
    async fn list_batches(
        &self,
        _: &str,
        _: &ListCursor,
        _: u32,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        Err(unused())
    }
    async fn cancel_batch(
        &self,
        _: &str,
        _: &str,
        _: Timestamp,
    ) -> Result<Option<BatchRecord>, StoreError> {
        Err(unused())
    }
    async fn delete_batch(&self, _: &str, _: &str) -> Result<DeleteOutcome, StoreError> {
        Err(unused())
    }
    fn results(&self, _: &str, _: &str) -> ResultStream {
        // What happens "meanwhile", before the stream's first page is read.
        let mut batch = self.batch.lock().unwrap();
        match self.download {
            Download::Deleted => *batch = None,
            Download::Archived => {
                if let Some(b) = batch.as_mut() {
                    b.archived_at = Some(Timestamp::from_micros(2));
                }
            }
            Download::Fails => {
                return Box::pin(futures::stream::iter([Err(StoreError::engine(
                    "disk gone",
                    true,
                ))]));
            }
            Download::Lines => {
                return Box::pin(futures::stream::iter([
                    Ok(Bytes::from_static(b"one\n")),
                    Ok(Bytes::from_static(b"two\n")),
                ]));
            }
        }
        Box::pin(futures::stream::empty())
    }
    async fn settled_since(
        &self,
        _: &str,
        _: &str,
        _: SettleCursor,
        _: usize,
        _: usize,
    ) -> Result<Option<SettledPage>, StoreError> {
        Err(unused())
    }
    async fn stored_requests(
        &self,
        _: &str,
        _: &str,
        _: i64,
        _: usize,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        Err(unused())
    }
    async fn queued_requests(&self, _: &str) -> Result<u64, StoreError> {
        Err(unused())
    }
    async fn claim(
        &self,
        _: &str,
        _: usize,
        _: &ModelFilter,
        _: Timestamp,
        _: Timestamp,
    ) -> Result<Vec<ClaimedRequest>, StoreError> {
        Err(unused())
    }
    async fn models(&self) -> Result<Vec<(i64, String)>, StoreError> {
        Err(unused())
    }
    async fn renew(&self, _: Vec<RequestKey>, _: Timestamp) -> Result<Vec<RequestKey>, StoreError> {
        Err(unused())
    }
    async fn settle(&self, _: Arc<[Settlement]>, _: Timestamp) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn release(&self, _: Vec<RequestKey>) -> Result<(), StoreError> {
        Err(unused())
    }
    async fn running_batches(&self, _: Timestamp) -> Result<Vec<i64>, StoreError> {
        Err(unused())
    }
    async fn sweep_unrunnable(&self, _: Timestamp) -> Result<u64, StoreError> {
        Err(unused())
    }
    async fn archive(&self, _: Timestamp, _: Timestamp) -> Result<u64, StoreError> {
        Err(unused())
    }
    async fn recover(&self, _: &str) -> Result<u64, StoreError> {
        Err(unused())
    }
}

fn batches(download: Download) -> Batches {
    Batches::new(
        OneBatch::new(download),
        LifecycleConfig::default(),
        Arc::new(Notify::new()),
    )
}

#[tokio::test]
async fn a_batch_deleted_as_its_download_starts_is_not_found_not_an_empty_file() {
    let result = batches(Download::Deleted).results("w", "msgbatch_1").await;
    assert!(
        matches!(result, Err(BatchError::NotFound(ref id)) if id == "msgbatch_1"),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn a_batch_archived_as_its_download_starts_has_no_results() {
    let result = batches(Download::Archived).results("w", "msgbatch_1").await;
    assert!(
        matches!(result, Err(BatchError::NoResults(_))),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn a_first_page_that_cannot_be_read_is_an_error_before_any_status() {
    let result = batches(Download::Fails).results("w", "msgbatch_1").await;
    assert!(
        matches!(result, Err(BatchError::Store(_))),
        "{:?}",
        result.err()
    );
}

#[tokio::test]
async fn otherwise_every_page_arrives_in_order() {
    let pages: Vec<Bytes> = batches(Download::Lines)
        .results("w", "msgbatch_1")
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(pages, [&b"one\n"[..], &b"two\n"[..]]);
}
