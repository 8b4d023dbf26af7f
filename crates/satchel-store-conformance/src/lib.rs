//! The store conformance suite: what every [`Store`] engine must do, written once.
//!
//! Each behaviour is a `pub async fn` taking a fresh store; [`store_conformance!`] expands to
//! one `#[tokio::test]` per behaviour for an engine, given an expression that opens a fresh,
//! empty store. Both engines run it; [`store_conformance_two_nodes!`] adds the cases of two
//! nodes sharing one store.
//!
//! These functions panic on a broken rule (they are tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use satchel_core::Store;
use satchel_core::model::{
    ClaimedRequest, DeleteOutcome, IngestChunk, ListCursor, ModelFilter, NewBatch, NewRequest,
    OutcomeKind, Settlement,
};
use satchel_core::result_line;
use satchel_wire::{ProcessingStatus, Timestamp, ids};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

mod queue;
pub use queue::queued_requests_count_what_has_not_ended;

/// Expands to one test per behaviour; `$open` is an async expression giving a fresh store
/// (`Arc<dyn Store>`) and anything that must live as long as it.
#[macro_export]
macro_rules! store_conformance {
    ($open:expr) => {
        $crate::store_conformance!(@tests $open;
            create_is_all_or_nothing,
            batches_are_scoped_to_their_workspace,
            list_pages_newest_first_both_ways,
            every_request_settles_exactly_once,
            a_stale_lease_cannot_settle,
            claims_are_fair_across_batches,
            cancel_ends_unleased_requests_and_in_flight_ones_finish,
            expiry_ends_what_has_not_started,
            released_requests_of_a_canceled_batch_end_canceled,
            delete_only_when_ended,
            archive_purges_results_and_keeps_the_batch,
            a_node_recovers_only_its_own_leases,
            renewals_keep_a_lease_and_report_lost_ones,
            lease_tokens_strictly_increase,
            claims_take_only_the_models_asked_for,
            claims_carry_their_batch_upstream_headers,
            stats_sum_batches_and_requests_over_workspaces,
            settled_lines_are_read_once_while_the_batch_runs,
            canceled_lines_are_read_as_they_settle,
            settled_pages_stop_at_their_byte_budget,
            stored_requests_come_back_as_received,
            claims_take_a_grouped_batch_prefix_by_prefix,
            claims_take_an_ungrouped_batch_in_submission_order,
            queued_requests_count_what_has_not_ended,
        );
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $open;
                $crate::$name(store).await;
            }
        )*
    };
}

/// Expands to one test per behaviour of two nodes sharing one store; `$open` is an async
/// expression giving two handles on the same fresh store (`Arc<dyn Store>` each) and
/// anything that must live as long as they do. PostgreSQL opens two stores on one database,
/// as two nodes would. SQLite allows one process per file, so it passes the same handle
/// twice: the cases then check the store's rules between two node ids (owners) rather than
/// between two connections.
#[macro_export]
macro_rules! store_conformance_two_nodes {
    ($open:expr) => {
        $crate::store_conformance_two_nodes!(@tests $open;
            two_nodes_never_claim_the_same_request,
            two_nodes_a_stale_settle_from_the_other_is_ignored,
            two_nodes_recovery_leaves_the_others_leases_alone,
            two_nodes_concurrent_final_settles_end_the_batch_once,
            two_nodes_renewals_hold_against_the_other,
            two_nodes_concurrent_sweeps_end_each_request_once,
        );
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (a, b, _guard) = $open;
                $crate::two_nodes::$name(a, b).await;
            }
        )*
    };
}

mod grouping;
mod partial;
pub mod two_nodes;
// The webhook outbox's cases (their own macros: outbox_conformance!, outbox_conformance_two_nodes!).
pub mod outbox;

pub use grouping::*;
pub use partial::*;

const HOUR: Duration = Duration::from_secs(3600);

/// The node that claims in these tests; [`OTHER_NODE`] is a second one sharing the store.
const NODE: &str = "node-a";
const OTHER_NODE: &str = "node-b";

fn new_batch(workspace: &str, now: Timestamp) -> NewBatch {
    NewBatch {
        id: ids::new_batch_id(),
        workspace: workspace.into(),
        created_at: now,
        expires_at: now.plus(24 * HOUR),
        upstream_headers: None,
        group_by_prefix: false,
    }
}

fn request(i: usize) -> NewRequest {
    let params = format!(
        r#"{{"model":"m","max_tokens":5,"messages":[{{"role":"user","content":"hi {i}"}}]}}"#
    );
    NewRequest {
        custom_id: format!("r{i}"),
        params: RawValue::from_string(params).unwrap(),
    }
}

/// Creates a committed batch of `n` requests, sent in chunks of 300.
async fn create(store: &Arc<dyn Store>, workspace: &str, n: usize, now: Timestamp) -> String {
    create_batch(store, new_batch(workspace, now), n).await
}

/// Creates `batch`, committed, with `n` requests sent in chunks of 300.
async fn create_batch(store: &Arc<dyn Store>, batch: NewBatch, n: usize) -> String {
    let id = batch.id.clone();
    let (tx, rx) = mpsc::channel(4);
    let feed = async move {
        let mut chunk = Vec::new();
        for i in 0..n {
            chunk.push(request(i));
            if chunk.len() == 300 {
                tx.send(IngestChunk::Requests(std::mem::take(&mut chunk)))
                    .await
                    .unwrap();
            }
        }
        if !chunk.is_empty() {
            tx.send(IngestChunk::Requests(chunk)).await.unwrap();
        }
        tx.send(IngestChunk::Commit).await.unwrap();
    };
    let (record, ()) = tokio::join!(store.create_batch(batch, rx), feed);
    let record = record.unwrap();
    assert_eq!(record.status, ProcessingStatus::InProgress);
    assert_eq!(record.counts.processing, n as u64);
    id
}

fn settle_ok(claimed: &[ClaimedRequest]) -> Arc<[Settlement]> {
    claimed
        .iter()
        .map(|c| Settlement {
            request: c.request,
            kind: OutcomeKind::Succeeded,
            line: result_line::succeeded(
                &c.custom_id,
                &RawValue::from_string("{}".into()).unwrap(),
            ),
        })
        .collect::<Vec<_>>()
        .into()
}

async fn lines(store: &Arc<dyn Store>, workspace: &str, id: &str) -> Vec<serde_json::Value> {
    let mut body = Vec::new();
    let mut stream = store.results(workspace, id);
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// How many result lines of the batch are of `kind` (`succeeded`, `canceled`…).
async fn count_lines(store: &Arc<dyn Store>, workspace: &str, id: &str, kind: &str) -> usize {
    lines(store, workspace, id)
        .await
        .iter()
        .filter(|l| l["result"]["type"] == kind)
        .count()
}

async fn get(
    store: &Arc<dyn Store>,
    workspace: &str,
    id: &str,
) -> satchel_core::model::BatchRecord {
    store
        .get_batch(workspace, id)
        .await
        .unwrap()
        .expect("batch exists")
}

/// Runs every runnable request to success.
async fn drain(store: &Arc<dyn Store>, now: Timestamp) {
    loop {
        let claimed = store
            .claim(NODE, 500, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap();
        if claimed.is_empty() {
            return;
        }
        store.settle(settle_ok(&claimed), now).await.unwrap();
    }
}

pub async fn create_is_all_or_nothing(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let batch = new_batch("w", now);
    let id = batch.id.clone();
    let (tx, rx) = mpsc::channel(4);
    let feed = async move {
        tx.send(IngestChunk::Requests((0..500).map(request).collect()))
            .await
            .unwrap();
        // Dropped without Commit: the body turned out bad.
    };
    let (outcome, ()) = tokio::join!(store.create_batch(batch, rx), feed);
    assert!(outcome.is_err());
    assert!(store.get_batch("w", &id).await.unwrap().is_none());
    assert!(
        store
            .list_batches("w", &ListCursor::Start, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim(NODE, 100, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap()
            .is_empty(),
        "nothing runnable"
    );
}

pub async fn batches_are_scoped_to_their_workspace(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "a", 3, now).await;
    assert!(store.get_batch("b", &id).await.unwrap().is_none());
    assert!(store.cancel_batch("b", &id, now).await.unwrap().is_none());
    assert_eq!(
        store.delete_batch("b", &id).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert!(
        store
            .list_batches("b", &ListCursor::Start, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(get(&store, "a", &id).await.workspace, "a");
}

pub async fn list_pages_newest_first_both_ways(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(&store, "w", 1, now).await);
    }
    ids.reverse(); // newest first
    let page = |batches: Vec<satchel_core::model::BatchRecord>| {
        batches.into_iter().map(|b| b.id).collect::<Vec<_>>()
    };
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Start, 10)
                .await
                .unwrap()
        ),
        ids
    );
    // One extra when more exist.
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Start, 2)
                .await
                .unwrap()
        ),
        ids[..3]
    );
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::After(ids[1].clone()), 2)
                .await
                .unwrap()
        ),
        ids[2..5]
    );
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Before(ids[3].clone()), 2)
                .await
                .unwrap()
        )
        .len(),
        3
    );
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Before(ids[3].clone()), 2)
                .await
                .unwrap()
        )[..2],
        ids[1..3]
    );
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Before(ids[1].clone()), 5)
                .await
                .unwrap()
        ),
        ids[..1]
    );
    // Both cursors: strictly between them, newest first, one extra when more exist.
    let between = |after: usize, before: usize| ListCursor::Between {
        after: ids[after].clone(),
        before: ids[before].clone(),
    };
    assert_eq!(
        page(store.list_batches("w", &between(0, 4), 10).await.unwrap()),
        ids[1..4]
    );
    assert_eq!(
        page(store.list_batches("w", &between(0, 4), 2).await.unwrap()),
        ids[1..4]
    );
    assert_eq!(
        page(store.list_batches("w", &between(1, 2), 10).await.unwrap()),
        Vec::<String>::new()
    );
}

pub async fn every_request_settles_exactly_once(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 1_000, now).await;
    let first = store
        .claim(NODE, 400, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(first.len(), 400);
    // Leased requests are not claimed again while the lease holds.
    let second = store
        .claim(NODE, 1_000, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(second.len(), 600);
    store.settle(settle_ok(&first), now).await.unwrap();
    // Settling the same outcomes again changes nothing.
    store.settle(settle_ok(&first), now).await.unwrap();
    let mid = get(&store, "w", &id).await;
    assert_eq!((mid.counts.succeeded, mid.counts.processing), (400, 600));
    assert_eq!(mid.status, ProcessingStatus::InProgress);
    store.settle(settle_ok(&second), now).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(ended.status, ProcessingStatus::Ended);
    assert_eq!(ended.counts.succeeded, 1_000);
    assert!(ended.ended_at.is_some());
    let lines = lines(&store, "w", &id).await;
    assert_eq!(lines.len(), 1_000);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("r{i}"), "submission order");
    }
    assert!(
        store
            .claim(NODE, 10, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_stale_lease_cannot_settle(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 1, now).await;
    let old = store
        .claim(
            NODE,
            1,
            &ModelFilter::Any,
            now,
            now.plus(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    // The lease runs out and another worker takes the request over.
    let later = now.plus(Duration::from_secs(2));
    let new = store
        .claim(NODE, 1, &ModelFilter::Any, later, later.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(new.len(), 1, "an expired lease is claimable again");
    assert_ne!(old[0].request.lease, new[0].request.lease);
    store.settle(settle_ok(&old), later).await.unwrap();
    assert_eq!(
        get(&store, "w", &id).await.counts.processing,
        1,
        "the stale outcome was ignored"
    );
    store.settle(settle_ok(&new), later).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!((ended.counts.succeeded, ended.counts.processing), (1, 0));
    assert_eq!(lines(&store, "w", &id).await.len(), 1);
}

pub async fn claims_are_fair_across_batches(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let first = create(&store, "w", 1_000, now).await;
    let second = create(&store, "w", 1_000, now).await;
    let other = create(&store, "x", 1_000, now).await;
    let claimed = store
        .claim(NODE, 40, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 40);
    let mut shares: Vec<u64> = Vec::new();
    for (id, workspace) in [(&first, "w"), (&second, "w"), (&other, "x")] {
        let batch = get(&store, workspace, id).await;
        shares.push(batch.counts.processing);
    }
    // Each workspace gets half the room; the two batches of w split theirs.
    let mut per_batch = std::collections::BTreeMap::<i64, u64>::new();
    for c in &claimed {
        *per_batch.entry(c.request.batch).or_default() += 1;
    }
    let mut per_batch: Vec<u64> = per_batch.into_values().collect();
    per_batch.sort_unstable();
    assert_eq!(
        per_batch,
        [10, 10, 20],
        "x gets half, w's half is split between its batches"
    );
    assert_eq!(shares, [1_000, 1_000, 1_000], "leasing moves no counts");
}

pub async fn cancel_ends_unleased_requests_and_in_flight_ones_finish(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 100, now).await;
    let in_flight = store
        .claim(NODE, 10, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let canceled = store.cancel_batch("w", &id, now).await.unwrap().unwrap();
    assert_eq!(canceled.status, ProcessingStatus::Canceling);
    assert_eq!(
        (canceled.counts.canceled, canceled.counts.processing),
        (90, 10)
    );
    assert_eq!(canceled.cancel_initiated_at, Some(now));
    assert!(
        store
            .claim(NODE, 100, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap()
            .is_empty(),
        "a canceling batch runs nothing new"
    );
    // Cancel again: unchanged.
    let again = store
        .cancel_batch("w", &id, now.plus(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, canceled);
    store.settle(settle_ok(&in_flight), now).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(ended.status, ProcessingStatus::Ended);
    assert_eq!((ended.counts.succeeded, ended.counts.canceled), (10, 90));
    assert_eq!(lines(&store, "w", &id).await.len(), 100);
    assert_eq!(count_lines(&store, "w", &id, "canceled").await, 90);
}

pub async fn expiry_ends_what_has_not_started(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 50, now).await;
    let in_flight = store
        .claim(NODE, 5, &ModelFilter::Any, now, now.plus(48 * HOUR))
        .await
        .unwrap();
    let after_expiry = now.plus(25 * HOUR);
    assert!(
        store
            .claim(
                NODE,
                10,
                &ModelFilter::Any,
                after_expiry,
                after_expiry.plus(HOUR)
            )
            .await
            .unwrap()
            .is_empty(),
        "nothing starts after expires_at"
    );
    assert_eq!(store.sweep_unrunnable(after_expiry).await.unwrap(), 45);
    let batch = get(&store, "w", &id).await;
    assert_eq!((batch.counts.expired, batch.counts.processing), (45, 5));
    assert_eq!(
        batch.status,
        ProcessingStatus::InProgress,
        "in-flight requests still finish"
    );
    store
        .settle(settle_ok(&in_flight), after_expiry)
        .await
        .unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(ended.status, ProcessingStatus::Ended);
    assert_eq!(ended.ended_at, Some(after_expiry));
    assert_eq!(count_lines(&store, "w", &id, "expired").await, 45);
}

pub async fn released_requests_of_a_canceled_batch_end_canceled(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 20, now).await;
    let waiting = store
        .claim(NODE, 20, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(store.running_batches(now).await.unwrap().len(), 1);
    store.cancel_batch("w", &id, now).await.unwrap();
    assert!(store.running_batches(now).await.unwrap().is_empty());
    // The dispatcher gives back the ones that had not started.
    store
        .release(waiting.iter().map(|c| c.request).collect())
        .await
        .unwrap();
    assert_eq!(store.sweep_unrunnable(now).await.unwrap(), 20);
    let ended = get(&store, "w", &id).await;
    assert_eq!(
        (ended.status, ended.counts.canceled),
        (ProcessingStatus::Ended, 20)
    );
}

pub async fn delete_only_when_ended(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 5, now).await;
    assert_eq!(
        store.delete_batch("w", &id).await.unwrap(),
        DeleteOutcome::NotEnded
    );
    drain(&store, now).await;
    assert_eq!(
        store.delete_batch("w", &id).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(store.get_batch("w", &id).await.unwrap().is_none());
    assert_eq!(
        store.delete_batch("w", &id).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert!(lines(&store, "w", &id).await.is_empty());
}

pub async fn archive_purges_results_and_keeps_the_batch(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 5, now).await;
    drain(&store, now).await;
    let later = now.plus(30 * 24 * HOUR);
    assert_eq!(
        store
            .archive(now.minus(Duration::from_secs(1)), later)
            .await
            .unwrap(),
        0,
        "not yet due"
    );
    assert_eq!(store.archive(now, later).await.unwrap(), 1);
    let batch = get(&store, "w", &id).await;
    assert_eq!(batch.archived_at, Some(later));
    assert_eq!(batch.counts.succeeded, 5);
    assert!(lines(&store, "w", &id).await.is_empty());
    assert_eq!(store.archive(now, later).await.unwrap(), 0, "archived once");
}

pub async fn a_node_recovers_only_its_own_leases(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 10, now).await;
    let lost = store
        .claim(NODE, 6, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let others = store
        .claim(OTHER_NODE, 4, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!((lost.len(), others.len()), (6, 4));
    // NODE restarts: its previous life's leases run again at once; OTHER_NODE's do not.
    assert_eq!(store.recover(NODE).await.unwrap(), 6);
    let again = store
        .claim(NODE, 10, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let mut again_ids: Vec<i64> = again.iter().map(|c| c.request.request).collect();
    let mut lost_ids: Vec<i64> = lost.iter().map(|c| c.request.request).collect();
    again_ids.sort_unstable();
    lost_ids.sort_unstable();
    assert_eq!(
        again_ids, lost_ids,
        "exactly the recovered requests run again"
    );
    // The previous life's outcomes are stale; the other node's still count.
    store.settle(settle_ok(&lost), now).await.unwrap();
    assert_eq!(get(&store, "w", &id).await.counts.succeeded, 0);
    store.settle(settle_ok(&others), now).await.unwrap();
    store.settle(settle_ok(&again), now).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(ended.counts.succeeded, 10);
    assert_eq!(lines(&store, "w", &id).await.len(), 10);
}

pub async fn renewals_keep_a_lease_and_report_lost_ones(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 3, now).await;
    let ttl = Duration::from_secs(60);
    let held = store
        .claim(NODE, 3, &ModelFilter::Any, now, now.plus(ttl))
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    let keys: Vec<_> = held.iter().map(|c| c.request).collect();
    // Renewed before running out: another node finds nothing to claim after the first end.
    let renewed_at = now.plus(Duration::from_secs(40));
    let lost = store
        .renew(keys.clone(), renewed_at.plus(ttl))
        .await
        .unwrap();
    assert!(lost.is_empty(), "all three are still held");
    let past_first_end = now.plus(Duration::from_secs(70));
    assert!(
        store
            .claim(
                OTHER_NODE,
                3,
                &ModelFilter::Any,
                past_first_end,
                past_first_end.plus(ttl)
            )
            .await
            .unwrap()
            .is_empty(),
        "a renewed lease is not claimable"
    );
    // One settles, one is released: renewing those reports them lost.
    store
        .settle(settle_ok(&held[..1]), past_first_end)
        .await
        .unwrap();
    store.release(vec![keys[1]]).await.unwrap();
    let lost = store
        .renew(keys.clone(), past_first_end.plus(ttl))
        .await
        .unwrap();
    assert_eq!(lost, vec![keys[0], keys[1]]);
    // The third runs out without renewal and is taken over: its old holder has lost it.
    let late = past_first_end.plus(2 * ttl);
    let taken = store
        .claim(OTHER_NODE, 3, &ModelFilter::Any, late, late.plus(ttl))
        .await
        .unwrap();
    assert_eq!(taken.len(), 2, "the released one and the one that ran out");
    let lost = store.renew(vec![keys[2]], late.plus(ttl)).await.unwrap();
    assert_eq!(lost, vec![keys[2]]);
    store.settle(settle_ok(&held[2..]), late).await.unwrap();
    store.settle(settle_ok(&taken), late).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(
        (ended.counts.succeeded, ended.status),
        (3, ProcessingStatus::Ended)
    );
    assert_eq!(lines(&store, "w", &id).await.len(), 3);
}

pub async fn lease_tokens_strictly_increase(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    create(&store, "w", 30, now).await;
    let mut last = 0;
    for i in 0..10 {
        // The same clock reading every time: tokens do not come from the clock.
        let node = if i % 2 == 0 { NODE } else { OTHER_NODE };
        let claimed = store
            .claim(node, 3, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 3);
        for c in &claimed {
            assert!(
                c.request.lease > last,
                "token {} after {last}",
                c.request.lease
            );
        }
        last = claimed[0].request.lease;
    }
}

pub async fn claims_take_only_the_models_asked_for(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let batch = new_batch("w", now);
    let (tx, rx) = mpsc::channel(4);
    let feed = async move {
        let requests = (0..30)
            .map(|i| {
                let model = ["alpha", "beta", "gamma"][i % 3];
                let params = format!(r#"{{"model":"{model}","max_tokens":5,"messages":[]}}"#);
                NewRequest {
                    custom_id: format!("r{i}"),
                    params: RawValue::from_string(params).unwrap(),
                }
            })
            .collect();
        tx.send(IngestChunk::Requests(requests)).await.unwrap();
        tx.send(IngestChunk::Commit).await.unwrap();
    };
    let (record, ()) = tokio::join!(store.create_batch(batch, rx), feed);
    record.unwrap();
    let models = store.models().await.unwrap();
    let id_of = |name: &str| models.iter().find(|(_, n)| n == name).unwrap().0;
    let only = ModelFilter::Only(vec![id_of("alpha"), id_of("gamma")]);
    let claimed = store
        .claim(NODE, 100, &only, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 20);
    for c in &claimed {
        let i: usize = c.custom_id[1..].parse().unwrap();
        assert_ne!(i % 3, 1, "{} is a beta request", c.custom_id);
    }
    let none = ModelFilter::Only(vec![satchel_core::model::NO_MODEL]);
    assert!(
        store
            .claim(NODE, 100, &none, now, now.plus(HOUR))
            .await
            .unwrap()
            .is_empty()
    );
    let rest = store
        .claim(NODE, 100, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(rest.len(), 10, "the beta requests");
}

/// The create call's headers kept with a batch come back, as given, with every request of it
/// that is claimed, whether its params sit in the row or (past one chunk) elsewhere; a batch
/// without them gives `None`.
pub async fn claims_carry_their_batch_upstream_headers(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let headers = r#"{"anthropic-version":"2023-06-01","anthropic-beta":"files-api-2025-04-14,context-1m-2025-08-07","anthropic-user-profile-id":"prof_é"}"#;
    let with = create_batch(
        &store,
        NewBatch {
            upstream_headers: Some(headers.to_owned()),
            ..new_batch("w", now)
        },
        700,
    )
    .await;
    let without = create(&store, "w", 5, now).await;
    let mut seen = std::collections::HashMap::<i64, Vec<Option<String>>>::new();
    loop {
        let claimed = store
            .claim(NODE, 200, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        for c in &claimed {
            seen.entry(c.request.batch)
                .or_default()
                .push(c.upstream_headers.clone());
        }
        store.settle(settle_ok(&claimed), now).await.unwrap();
    }
    assert_eq!(seen.len(), 2, "both batches were claimed");
    let mut sizes: Vec<usize> = seen.values().map(Vec::len).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [5, 700]);
    for claimed in seen.values() {
        let expected = if claimed.len() == 700 {
            Some(headers.to_owned())
        } else {
            None
        };
        assert!(
            claimed.iter().all(|h| *h == expected),
            "{:?}",
            &claimed[..3.min(claimed.len())]
        );
    }
    assert_eq!(get(&store, "w", &with).await.counts.succeeded, 700);
    assert_eq!(get(&store, "w", &without).await.counts.succeeded, 5);
}

/// The figures behind the metrics: batches by state and the five counts, over every
/// workspace, and when the oldest batch with requests still to run was created.
pub async fn stats_sum_batches_and_requests_over_workspaces(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let running = create(&store, "w", 4, now).await;
    let canceled = create(&store, "v", 3, now.plus(Duration::from_secs(1))).await;
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.in_progress, stats.canceling, stats.ended), (2, 0, 0));
    assert_eq!(stats.requests.processing, 7);
    assert_eq!(stats.oldest_waiting, Some(now));
    store.cancel_batch("v", &canceled, now).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.in_progress, stats.canceling, stats.ended), (1, 0, 1));
    assert_eq!(stats.requests.processing, 4);
    assert_eq!(stats.requests.canceled, 3);
    assert!(store.get_batch("w", &running).await.unwrap().is_some());
}
