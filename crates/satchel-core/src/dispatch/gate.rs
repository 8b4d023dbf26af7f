//! Which batches may start requests, refreshed from the store at most every
//! [`GATE_FRESHNESS`]: cancel and expiry reach waiting requests at once, without a query per
//! request.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use satchel_wire::Timestamp;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::store::Store;

const GATE_FRESHNESS: Duration = Duration::from_millis(50);

pub(crate) struct Gate {
    store: Arc<dyn Store>,
    running: Mutex<(Option<Instant>, HashSet<i64>)>,
}

impl Gate {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            running: Mutex::new((None, HashSet::new())),
        }
    }

    pub async fn may_start(&self, batch: i64) -> bool {
        let mut running = self.running.lock().await;
        if running.0.is_none_or(|at| at.elapsed() > GATE_FRESHNESS) {
            match self.store.running_batches(Timestamp::now()).await {
                Ok(batches) => *running = (Some(Instant::now()), batches.into_iter().collect()),
                // Unknown: let it run rather than stall; the worst case is one extra result.
                Err(e) => {
                    tracing::warn!(error = %e, "could not check running batches");
                    return true;
                }
            }
        }
        running.1.contains(&batch)
    }
}
