//! Results while a batch runs, against a transaction held open elsewhere in the cluster.
//!
//! The settle order is the writing transaction's id, and a read hands out only lines below
//! its snapshot's xmin (see `partial.rs`). So a transaction that holds an assigned xid, in
//! any database of the cluster, holds back every line settled after it began: those lines
//! must be withheld (not lost, not skipped by a cursor that moves past them), and arrive
//! exactly once as soon as it ends.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use satchel_core::Store;
use satchel_core::model::{
    ClaimedRequest, IngestChunk, ModelFilter, NewBatch, NewRequest, OutcomeKind, SettleCursor,
    SettledPage, Settlement,
};
use satchel_store_postgres::{Options, PostgresStore};
use satchel_wire::{ProcessingStatus, Timestamp};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

const REQUESTS: usize = 40;

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

async fn create(store: &PostgresStore, n: usize, now: Timestamp) -> String {
    let (tx, rx) = mpsc::channel(2);
    let batch = NewBatch {
        id: "msgbatch_held".into(),
        workspace: "w".into(),
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
        upstream_headers: None,
        group_by_prefix: false,
    };
    let requests = (0..n)
        .map(|i| NewRequest {
            custom_id: format!("r{i}"),
            params: RawValue::from_string(r#"{"model":"m"}"#.into())
                .unwrap()
                .into(),
        })
        .collect();
    tx.send(IngestChunk::Requests(requests)).await.unwrap();
    tx.send(IngestChunk::Commit).await.unwrap();
    drop(tx);
    store.create_batch(batch, rx).await.unwrap().id
}

fn succeeded(claimed: &[ClaimedRequest]) -> Arc<[Settlement]> {
    claimed
        .iter()
        .map(|c| Settlement {
            request: c.request,
            kind: OutcomeKind::Succeeded,
            line: format!(
                r#"{{"custom_id":"{}","result":{{"type":"succeeded"}}}}"#,
                c.custom_id
            )
            .into_bytes(),
        })
        .collect()
}

fn custom_ids(page: &SettledPage) -> Vec<String> {
    let ids: Vec<String> = std::str::from_utf8(&page.lines)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), page.count);
    ids
}

/// A reader going on from its cursor, `max_lines` a page, keeping every line it was given.
struct Reader {
    after: SettleCursor,
    max_lines: usize,
    seen: Vec<String>,
}

impl Reader {
    fn new(max_lines: usize) -> Self {
        Self {
            after: SettleCursor::START,
            max_lines,
            seen: Vec::new(),
        }
    }

    /// One page: its lines are kept and the cursor moves past them.
    async fn page(&mut self, store: &PostgresStore, id: &str) -> SettledPage {
        let page = store
            .settled_since("w", id, self.after, self.max_lines, usize::MAX)
            .await
            .unwrap()
            .expect("the batch exists");
        assert!(page.count <= self.max_lines);
        if page.count > 0 {
            assert!(page.next > self.after, "a page moves its cursor on");
        } else {
            assert_eq!(page.next, self.after, "an empty page keeps the cursor");
        }
        self.seen.extend(custom_ids(&page));
        self.after = page.next;
        page
    }

    /// Pages until an empty one: everything that can be handed out now.
    async fn drain(&mut self, store: &PostgresStore, id: &str) -> SettledPage {
        loop {
            let page = self.page(store, id).await;
            if page.count == 0 {
                return page;
            }
        }
    }

    /// Pages until the store says the batch's lines are complete (a generous deadline).
    async fn read_to_the_end(&mut self, store: &PostgresStore, id: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.page(store, id).await.complete {
            assert!(Instant::now() < deadline, "the lines never completed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Each line once, and exactly `expected`.
    fn assert_exactly(&self, expected: &HashSet<String>) {
        let unique: HashSet<String> = self.seen.iter().cloned().collect();
        assert_eq!(unique.len(), self.seen.len(), "a line handed out twice");
        assert_eq!(&unique, expected, "lines missing or unexpected");
    }
}

fn names(claimed: &[ClaimedRequest]) -> HashSet<String> {
    claimed.iter().map(|c| c.custom_id.clone()).collect()
}

#[tokio::test]
async fn lines_settled_while_a_transaction_holds_an_xid_are_withheld_until_it_ends() {
    let Some(cluster) = satchel_pg_test::shared("held_xmin") else {
        return;
    };
    let url = cluster.create_database();
    let store = PostgresStore::open(&url, "node", Options::default())
        .await
        .unwrap();
    let now = Timestamp::now();
    let id = create(&store, REQUESTS, now).await;
    let claimed = store
        .claim(
            "node",
            REQUESTS,
            &ModelFilter::Any,
            now,
            now.plus(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), REQUESTS);
    let (before, rest) = claimed.split_at(10);
    let (during, last) = rest.split_at(15);

    // Settled before the holder began: readable at once, by any reader.
    store.settle(succeeded(before), now).await.unwrap();
    let mut steady = Reader::new(1_000);
    steady.drain(&store, &id).await;
    steady.assert_exactly(&names(before));

    // A writing transaction in another database of the same cluster: xids are cluster-wide.
    let holder = sql(&cluster.create_database()).await;
    holder
        .batch_execute("BEGIN; SELECT txid_current();")
        .await
        .unwrap();

    // Settled while it is open, the batch ending with the last group: committed (the counts
    // say so, the rows are there) but withheld from every reader, wherever its cursor is.
    store.settle(succeeded(during), now).await.unwrap();
    let mut paged = Reader::new(3);
    paged.drain(&store, &id).await;
    paged.assert_exactly(&names(before));
    store.settle(succeeded(last), now).await.unwrap();
    let batch = store.get_batch("w", &id).await.unwrap().unwrap();
    assert_eq!(batch.status, ProcessingStatus::Ended);
    assert_eq!(batch.counts.succeeded, REQUESTS as u64);
    let stored: i64 = sql(&url)
        .await
        .query_one("SELECT count(*) FROM results", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, REQUESTS as i64, "every line is stored");
    for reader in [&mut steady, &mut paged] {
        let page = reader.drain(&store, &id).await;
        assert!(
            !page.complete,
            "complete while lines are still withheld: the reader would stop short"
        );
        reader.assert_exactly(&names(before));
    }
    let mut fresh = Reader::new(7);
    let page = fresh.drain(&store, &id).await;
    assert!(!page.complete);
    fresh.assert_exactly(&names(before));

    // Once it ends (a rollback: it wrote nothing), each reader gets every line exactly once.
    holder.batch_execute("ROLLBACK").await.unwrap();
    let all = names(&claimed);
    for reader in [&mut steady, &mut paged, &mut fresh] {
        reader.read_to_the_end(&store, &id).await;
        reader.assert_exactly(&all);
    }
    let mut late = Reader::new(1);
    late.read_to_the_end(&store, &id).await;
    late.assert_exactly(&all);
}
