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
            claims_take_an_ordered_batch_prefix_group_by_group_in_turn,
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
mod leases;
mod lifecycle;
mod partial;
pub mod two_nodes;
// The webhook outbox's cases (their own macros: outbox_conformance!, outbox_conformance_two_nodes!).
pub mod outbox;

pub use grouping::*;
pub use leases::*;
pub use lifecycle::*;
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
        params: RawValue::from_string(params).unwrap().into(),
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
