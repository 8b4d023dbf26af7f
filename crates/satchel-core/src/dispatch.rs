//! The dispatcher: leases runnable requests, runs each on the backend, and records outcomes.
//!
//! Three parts, joined by channels:
//! - the claim loop leases at most as many requests as there are free run slots (so work that
//!   has not started stays cancellable), fairly across batches (the store's round robin);
//! - one task per leased request runs it on the backend and sends its final line on;
//! - the recorder takes whatever lines have arrived and settles them in one store transaction
//!   (group commit), so the store sees a few large writes, not one per request.
//!
//! A lease is a fencing token: if the process dies, the leases are released at the next start
//! (or run out, on a shared store), the requests run again, and a stale outcome can never be
//! stored twice.

use std::sync::Arc;
use std::time::Duration;

use satchel_wire::Timestamp;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::backend::{Backend, BackendOutcome};
use crate::model::{ClaimedRequest, OutcomeKind, Settlement};
use crate::result_line;
use crate::store::Store;

/// How the dispatcher paces itself.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Most requests running at once.
    pub max_in_flight: usize,
    /// Most requests leased by one claim.
    pub claim_chunk: usize,
    /// How long a lease lasts before another worker may take the request over.
    pub lease: Duration,
    /// How often to look for work when nothing wakes the dispatcher (leases that ran out).
    pub idle_poll: Duration,
    /// Most results stored in one transaction.
    pub settle_chunk: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            max_in_flight: 512,
            claim_chunk: 1024,
            lease: Duration::from_secs(600),
            idle_poll: Duration::from_millis(500),
            settle_chunk: 4096,
        }
    }
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    backend: Arc<dyn Backend>,
    config: DispatchConfig,
    work_arrived: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        backend: Arc<dyn Backend>,
        config: DispatchConfig,
        work_arrived: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            backend,
            config,
            work_arrived,
        }
    }

    /// Starts the claim loop and the recorder; they run until the handles are aborted.
    pub fn spawn(self) -> Vec<JoinHandle<()>> {
        let (outcomes, received) = mpsc::channel(self.config.max_in_flight.max(1) * 2);
        let recorder = tokio::spawn(record(
            self.store.clone(),
            received,
            self.config.settle_chunk,
        ));
        let claimer = tokio::spawn(self.claim_loop(outcomes));
        vec![claimer, recorder]
    }

    async fn claim_loop(self, outcomes: mpsc::Sender<Settlement>) {
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        loop {
            // Wait for a free slot before leasing anything.
            match slots.clone().acquire_owned().await {
                Ok(permit) => drop(permit),
                Err(_) => return,
            }
            let free = slots.available_permits().min(self.config.claim_chunk);
            let now = Timestamp::now();
            let claimed = match self
                .store
                .claim(free, now, now.plus(self.config.lease))
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::error!(error = %e, "claiming requests failed; retrying in 1 s");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if claimed.is_empty() {
                let _ =
                    tokio::time::timeout(self.config.idle_poll, self.work_arrived.notified()).await;
                continue;
            }
            for request in claimed {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let backend = self.backend.clone();
                let outcomes = outcomes.clone();
                tokio::spawn(async move {
                    let settlement = run_one(backend.as_ref(), request).await;
                    // The recorder only stops at shutdown; the lease then covers the request.
                    let _ = outcomes.send(settlement).await;
                    drop(permit);
                });
            }
        }
    }
}

/// Runs one request and builds its final line.
pub async fn run_one(backend: &dyn Backend, request: ClaimedRequest) -> Settlement {
    let (kind, line) = match backend.run(&request.params).await {
        BackendOutcome::Message(message) => (
            OutcomeKind::Succeeded,
            result_line::succeeded(&request.custom_id, &message),
        ),
        BackendOutcome::Error { kind, message } => (
            OutcomeKind::Errored,
            result_line::errored(&request.custom_id, kind, &message),
        ),
    };
    Settlement {
        request: request.request,
        kind,
        line,
    }
}

/// Settles outcomes in groups: whatever has arrived while the previous write ran.
async fn record(store: Arc<dyn Store>, mut received: mpsc::Receiver<Settlement>, chunk: usize) {
    let mut group = Vec::with_capacity(chunk);
    while received.recv_many(&mut group, chunk).await > 0 {
        let settled = std::mem::replace(&mut group, Vec::with_capacity(chunk));
        if let Err(e) = store.settle(settled, Timestamp::now()).await {
            // The leases stay in place, so these requests run again once they run out.
            tracing::error!(error = %e, "storing results failed; the requests will run again");
        }
    }
}
