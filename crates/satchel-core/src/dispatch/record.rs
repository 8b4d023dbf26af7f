//! The recorder: stores outcomes in groups (whatever has arrived while the previous write
//! ran), so the store sees a few large writes, not one per request.
//!
//! A write that fails (a full disk, a busy or unreachable database) is tried again with
//! backoff, for as long as it takes: the group's leases stay in the [`LeaseBook`] meanwhile,
//! so they are renewed and no other node runs those requests again. Once the store takes the
//! write, the batch moves on without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use satchel_wire::Timestamp;
use tokio::sync::mpsc;

use super::leases::LeaseBook;
use crate::model::{RequestKey, Settlement};
use crate::store::{Store, StoreError};

/// What a request task hands the recorder.
pub(crate) enum Outcome {
    Settled(Settlement),
    /// Not run to the end here: its batch stopped while it waited, its lease was lost, or the
    /// node is shutting down. Given back so it can run again (or end canceled/expired).
    Released(RequestKey),
}

/// Counts of what the recorder stored, for the shutdown report.
#[derive(Default)]
pub(crate) struct Tally {
    pub settled: AtomicU64,
    pub released: AtomicU64,
}

const FIRST_RETRY: Duration = Duration::from_millis(100);
const LONGEST_RETRY: Duration = Duration::from_secs(5);

/// Calls `write` until it succeeds, waiting longer after each failure.
async fn until_stored<F, Fut>(what: &str, mut write: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut wait = FIRST_RETRY;
    let mut failures = 0u32;
    loop {
        match write().await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(failures, "{what}: stored after retrying");
                }
                return;
            }
            Err(e) => {
                failures += 1;
                tracing::error!(error = %e, transient = e.is_transient(), failures, "{what} failed; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(LONGEST_RETRY);
            }
        }
    }
}

pub(crate) async fn record(
    store: Arc<dyn Store>,
    book: Arc<LeaseBook>,
    tally: Arc<Tally>,
    mut received: mpsc::Receiver<Outcome>,
    chunk: usize,
) {
    let mut group = Vec::with_capacity(chunk);
    while received.recv_many(&mut group, chunk).await > 0 {
        let mut settled = Vec::with_capacity(group.len());
        let mut released = Vec::new();
        for outcome in group.drain(..) {
            match outcome {
                Outcome::Settled(s) => settled.push(s),
                Outcome::Released(key) => released.push(key),
            }
        }
        if !settled.is_empty() {
            // In request order, as results are stored: lines then mostly append to the
            // engines' b-trees (in arrival order, each landed mid-page and split it: a tenth
            // of a settled request's instructions on SQLite).
            settled.sort_unstable_by_key(|s| s.request.request);
            let keys: Vec<RequestKey> = settled.iter().map(|s| s.request).collect();
            let settled: Arc<[Settlement]> = settled.into();
            until_stored("storing results", || {
                store.settle(settled.clone(), Timestamp::now())
            })
            .await;
            tally
                .settled
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
            book.forget(keys);
        }
        if !released.is_empty() {
            until_stored("releasing requests", || async {
                store.release(released.clone()).await?;
                // Those of stopped batches end canceled / expired now rather than at the
                // next housekeeping tick.
                store.sweep_unrunnable(Timestamp::now()).await.map(|_| ())
            })
            .await;
            tally
                .released
                .fetch_add(released.len() as u64, Ordering::Relaxed);
            book.forget(released);
        }
    }
}
