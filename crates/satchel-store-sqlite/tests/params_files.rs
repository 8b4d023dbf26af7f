//! Batches of more than one ingest chunk keep their params in a file beside the database:
//! claims read them back exactly, and the file goes with the batch (delete, archive, an
//! aborted create, or a crash that left it behind). Files from older versions upgrade in
//! place.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use satchel_core::Store;
use satchel_core::model::{
    IngestChunk, ModelFilter, NewBatch, NewRequest, OutcomeKind, Settlement,
};
use satchel_core::store::StoreError;
use satchel_store_sqlite::SqliteStore;
use satchel_wire::{Timestamp, ids};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

fn params_dir(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}.params", db.display()))
}

fn files(db: &Path) -> usize {
    std::fs::read_dir(params_dir(db)).map_or(0, |d| d.count())
}

fn new_batch(now: Timestamp) -> NewBatch {
    NewBatch {
        id: ids::new_batch_id(),
        workspace: "w".into(),
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
        upstream_headers: None,
        group_by_prefix: false,
    }
}

/// Params of varied sizes, with escapes and non-ASCII text.
fn params(i: usize) -> String {
    format!(
        r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"n°{i} \"q\" {}"}}]}}"#,
        "x".repeat(i % 97)
    )
}

fn requests(range: std::ops::Range<usize>) -> Vec<NewRequest> {
    range
        .map(|i| NewRequest {
            custom_id: format!("r{i}"),
            params: RawValue::from_string(params(i)).unwrap().into(),
        })
        .collect()
}

/// Sends `n` requests in chunks of 250, then commits unless `abort`.
async fn create(store: &SqliteStore, n: usize, abort: bool) -> Result<String, StoreError> {
    let batch = new_batch(Timestamp::now());
    let id = batch.id.clone();
    let (tx, rx) = mpsc::channel(4);
    let feed = async move {
        for start in (0..n).step_by(250) {
            tx.send(IngestChunk::Requests(requests(start..(start + 250).min(n))))
                .await
                .unwrap();
        }
        if !abort {
            tx.send(IngestChunk::Commit).await.unwrap();
        }
    };
    let (record, ()) = tokio::join!(store.create_batch(batch, rx), feed);
    record.map(|_| id)
}

async fn run_all(store: &SqliteStore, n: usize) {
    let mut seen = 0;
    while seen < n {
        let now = Timestamp::now();
        let claimed = store
            .claim(
                "node-a",
                100,
                &ModelFilter::Any,
                now,
                now.plus(Duration::from_secs(60)),
            )
            .await
            .unwrap();
        assert!(!claimed.is_empty());
        for c in &claimed {
            let i: usize = c.custom_id[1..].parse().unwrap();
            assert_eq!(&*c.params, params(i), "params of {}", c.custom_id);
        }
        seen += claimed.len();
        let settled = claimed
            .iter()
            .map(|c| Settlement {
                request: c.request,
                kind: OutcomeKind::Succeeded,
                line: br#"{"custom_id":"x","result":{"type":"canceled"}}"#.to_vec(),
            })
            .collect::<Vec<_>>();
        store
            .settle(settled.into(), Timestamp::now())
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_multi_chunk_batch_reads_its_params_back_and_its_file_goes_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = SqliteStore::open(&db).unwrap();

    // One chunk: inline, no file.
    let small = create(&store, 200, false).await.unwrap();
    assert_eq!(files(&db), 0);
    // Several chunks: one file.
    let big = create(&store, 1_000, false).await.unwrap();
    assert_eq!(files(&db), 1);
    run_all(&store, 1_200).await;

    store.delete_batch("w", &small).await.unwrap();
    assert_eq!(files(&db), 1);
    store.delete_batch("w", &big).await.unwrap();
    assert_eq!(files(&db), 0, "deleting the batch removes its file");

    let archived = create(&store, 600, false).await.unwrap();
    run_all(&store, 600).await;
    assert_eq!(files(&db), 1);
    let later = Timestamp::now().plus(Duration::from_secs(1));
    assert_eq!(store.archive(later, later).await.unwrap(), 1);
    assert_eq!(files(&db), 0, "archiving purges the params file");
    assert!(store.get_batch("w", &archived).await.unwrap().is_some());
}

#[tokio::test]
async fn an_aborted_create_and_a_crash_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    {
        let store = SqliteStore::open(&db).unwrap();
        assert!(matches!(
            create(&store, 900, true).await,
            Err(StoreError::IngestAborted)
        ));
        assert_eq!(files(&db), 0, "an aborted create removes its file");
        create(&store, 900, false).await.unwrap();
        assert_eq!(files(&db), 1);
    }
    // A file no batch points to (as a crash between a commit and a removal would leave).
    std::fs::write(params_dir(&db).join("77"), b"{}").unwrap();
    let store = Arc::new(SqliteStore::open(&db).unwrap());
    assert_eq!(
        files(&db),
        1,
        "the orphan is swept at start, the live file stays"
    );
    run_all(&store, 900).await;
}

#[tokio::test]
async fn a_file_from_before_params_files_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    drop(SqliteStore::open(&db).unwrap());
    {
        // The `requests` table as older versions made it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "ALTER TABLE requests DROP COLUMN params_len;
             ALTER TABLE requests DROP COLUMN params_at;",
        )
        .unwrap();
    }
    let store = SqliteStore::open(&db).unwrap();
    create(&store, 600, false).await.unwrap();
    run_all(&store, 600).await;
}

#[tokio::test]
async fn a_file_from_before_upstream_headers_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    {
        let store = SqliteStore::open(&db).unwrap();
        create(&store, 300, false).await.unwrap();
    }
    {
        // The `batches` table as older versions made it, with a batch waiting in it.
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch("ALTER TABLE batches DROP COLUMN upstream_headers;")
            .unwrap();
    }
    let store = SqliteStore::open(&db).unwrap();
    let now = Timestamp::now();
    let claimed = store
        .claim(
            "node-a",
            1_000,
            &ModelFilter::Any,
            now,
            now.plus(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 300);
    assert!(claimed.iter().all(|c| c.upstream_headers.is_none()));
    // New batches keep theirs.
    let (tx, rx) = mpsc::channel(4);
    tx.send(IngestChunk::Requests(requests(0..3)))
        .await
        .unwrap();
    tx.send(IngestChunk::Commit).await.unwrap();
    let headers = r#"{"anthropic-beta":"b"}"#;
    store
        .create_batch(
            NewBatch {
                upstream_headers: Some(headers.into()),
                ..new_batch(now)
            },
            rx,
        )
        .await
        .unwrap();
    let claimed = store
        .claim(
            "node-a",
            1_000,
            &ModelFilter::Any,
            now,
            now.plus(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    assert!(
        claimed
            .iter()
            .all(|c| c.upstream_headers.as_deref() == Some(headers))
    );
}

#[tokio::test]
async fn a_lost_params_file_does_not_stop_other_batches() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let store = SqliteStore::open(&db).unwrap();
    create(&store, 600, false).await.unwrap();
    for entry in std::fs::read_dir(params_dir(&db)).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    create(&store, 100, false).await.unwrap();
    let mut claimed = Vec::new();
    for _ in 0..5 {
        let now = Timestamp::now();
        claimed.extend(
            store
                .claim(
                    "node-a",
                    1_000,
                    &ModelFilter::Any,
                    now,
                    now.plus(Duration::from_secs(60)),
                )
                .await
                .unwrap(),
        );
    }
    // The small batch runs; the broken one's requests stay leased, not retried at once.
    assert_eq!(claimed.len(), 100);
    assert!(
        claimed
            .iter()
            .all(|c| *c.params == params(c.custom_id[1..].parse().unwrap()))
    );
}
