//! The dispatcher: leases runnable requests, runs each on its route, and records outcomes.
//!
//! Three parts, joined by channels:
//! - the claim loop leases at most as many requests as there are free run slots (so work that
//!   has not started stays cancellable), fairly across batches (the store's round robin);
//! - one task per leased request picks its route by `model`, waits for the route's
//!   concurrency and rate limits, makes attempts with retries, and sends the final line on;
//! - the recorder takes whatever has arrived and settles it in one store transaction (group
//!   commit), so the store sees a few large writes, not one per request.
//!
//! A request that waited for its route and finds its batch canceled or expired is not sent:
//! its lease is released and housekeeping ends it `canceled` / `expired`. A request already
//! sent finishes, retries included. A lease is a fencing token: if the process dies the
//! leases are released at the next start (or run out, on a shared store), the requests run
//! again, and a stale outcome can never be stored twice.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use satchel_wire::Timestamp;
use tokio::sync::{Mutex, Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;

use crate::backend::{Attempt, Retry};
use crate::model::{ClaimedRequest, OutcomeKind, RequestKey, Settlement};
use crate::result_line;
use crate::routing::Routes;
use crate::store::Store;

/// How the dispatcher paces itself.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Most requests leased and running at once, across all routes.
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
            lease: Duration::from_secs(3600),
            idle_poll: Duration::from_millis(500),
            settle_chunk: 4096,
        }
    }
}

/// What a request task hands the recorder.
enum Outcome {
    Settled(Settlement),
    /// Not run: its batch stopped while it waited.
    Released(RequestKey),
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    routes: Arc<Routes>,
    config: DispatchConfig,
    work_arrived: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        routes: Arc<Routes>,
        config: DispatchConfig,
        work_arrived: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            routes,
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

    async fn claim_loop(self, outcomes: mpsc::Sender<Outcome>) {
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        let gate = Arc::new(Gate::new(self.store.clone()));
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
                let (routes, gate, outcomes) =
                    (self.routes.clone(), gate.clone(), outcomes.clone());
                tokio::spawn(async move {
                    let outcome = run_one(&routes, &gate, request).await;
                    // The recorder only stops at shutdown; the lease then covers the request.
                    let _ = outcomes.send(outcome).await;
                    drop(permit);
                });
            }
        }
    }
}

/// How often a request waiting for its route checks that its batch still runs.
const RECHECK_WHILE_WAITING: Duration = Duration::from_millis(100);

/// Runs one request on its route, with retries, and builds its final line.
async fn run_one(routes: &Routes, gate: &Gate, request: ClaimedRequest) -> Outcome {
    let routed = match routes.route(&request.params) {
        Ok(routed) => routed,
        Err(failure) => return errored(&request, failure.kind, &failure.message),
    };
    let route = routed.route;
    let mut retries = 0;
    loop {
        let admitted = route.limits.admit(routed.estimated_tokens);
        tokio::pin!(admitted);
        // While a request that has not started waits for its route, its batch may be
        // canceled or expire: look now and then, and give it back if so.
        let permit = loop {
            tokio::select! {
                permit = &mut admitted => break permit,
                () = tokio::time::sleep(RECHECK_WHILE_WAITING), if retries == 0 => {
                    if !gate.may_start(request.request.batch).await {
                        return Outcome::Released(request.request);
                    }
                }
            }
        };
        let attempt = route.backend.send(&request.params).await;
        drop(permit);
        let failure = match attempt {
            Attempt::Message(message) => {
                route.limits.succeeded();
                let line = result_line::succeeded(&request.custom_id, &message);
                return Outcome::Settled(Settlement {
                    request: request.request,
                    kind: OutcomeKind::Succeeded,
                    line,
                });
            }
            Attempt::Failed(failure) => failure,
        };
        if matches!(failure.retry, Retry::Throttled { .. }) {
            route.limits.throttled();
        }
        if !failure.is_retryable() || retries >= route.retry.max_retries {
            if failure.is_retryable() {
                tracing::warn!(route = %route.name, kind = failure.kind.as_str(), attempts = retries + 1, "giving up on a request");
            }
            return errored(&request, failure.kind, &failure.message);
        }
        tokio::time::sleep(route.retry.delay(retries, failure.retry_after())).await;
        retries += 1;
    }
}

fn errored(request: &ClaimedRequest, kind: satchel_wire::ErrorType, message: &str) -> Outcome {
    let line = result_line::errored(&request.custom_id, kind, message);
    Outcome::Settled(Settlement {
        request: request.request,
        kind: OutcomeKind::Errored,
        line,
    })
}

/// Which batches may start requests, refreshed from the store at most every 50 ms: cancel
/// and expiry reach waiting requests at once, without a query per request.
struct Gate {
    store: Arc<dyn Store>,
    running: Mutex<(Option<Instant>, HashSet<i64>)>,
}

const GATE_FRESHNESS: Duration = Duration::from_millis(50);

impl Gate {
    fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            running: Mutex::new((None, HashSet::new())),
        }
    }

    async fn may_start(&self, batch: i64) -> bool {
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

/// Settles outcomes in groups: whatever has arrived while the previous write ran.
async fn record(store: Arc<dyn Store>, mut received: mpsc::Receiver<Outcome>, chunk: usize) {
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
        let now = Timestamp::now();
        if !settled.is_empty()
            && let Err(e) = store.settle(settled, now).await
        {
            // The leases stay in place, so these requests run again once they run out.
            tracing::error!(error = %e, "storing results failed; the requests will run again");
        }
        if !released.is_empty() {
            let result = async {
                store.release(released).await?;
                store.sweep_unrunnable(now).await
            };
            if let Err(e) = result.await {
                tracing::error!(error = %e, "releasing requests of stopped batches failed");
            }
        }
    }
}
