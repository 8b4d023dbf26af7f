//! The dispatcher: leases runnable requests, runs each on its route, and records outcomes.
//!
//! Four parts:
//! - the claim loop leases at most as many requests as there are free run slots (so work that
//!   has not started stays cancellable), fairly across workspaces and batches (the store's
//!   round robin), each lease owned by this node and entered in the [`LeaseBook`];
//! - one task per leased request ([`run::run_one`]) picks its route by `model`, waits for the
//!   route's limits, makes attempts with retries, and sends its outcome on;
//! - the recorder ([`record::record`]) stores whatever has arrived in one transaction (group
//!   commit), retrying a failed write until it succeeds;
//! - the renewer extends every held lease each TTL/3, so a request that waits or runs for
//!   longer than the TTL is never taken over by another node, and marks the ones it lost.
//!
//! A request that waited for its route and finds its batch canceled or expired is not sent:
//! its lease is released and housekeeping ends it `canceled` / `expired`. A request already
//! sent finishes, retries included. On shutdown ([`DispatcherHandle::drain`]) claiming stops,
//! requests not in an attempt are given back at once, attempts in flight may finish within
//! the window and are stored; what is still running when it closes is given back (it will run
//! again, the one case where a request can be sent twice).

mod gate;
mod lanes;
mod leases;
mod record;
mod run;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use satchel_wire::Timestamp;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::ModelFilter;
use crate::routing::Routes;
use crate::store::Store;
use gate::Gate;
use lanes::Lanes;
use leases::LeaseBook;
use record::{Outcome, Tally};
use run::Signals;

/// Most requests leased and running at once, across all routes.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;
/// How long a lease lasts unless renewed; renewed every third of it.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(60);

/// How the dispatcher paces itself.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// The owner of this node's leases: stable across restarts, unique among live nodes.
    pub node_id: String,
    /// Most requests leased and running at once, across all routes.
    pub max_in_flight: usize,
    /// Most requests leased by one claim.
    pub claim_chunk: usize,
    /// How long a lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// How often to look for work when nothing wakes the dispatcher (leases that ran out).
    pub idle_poll: Duration,
    /// Most results stored in one transaction.
    pub settle_chunk: usize,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            node_id: "satchel".to_owned(),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            claim_chunk: 1024,
            lease_ttl: DEFAULT_LEASE_TTL,
            idle_poll: Duration::from_millis(500),
            settle_chunk: 4096,
        }
    }
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    routes: Arc<Routes>,
    config: DispatchConfig,
    work_arrived: Arc<Notify>,
}

/// What a drain did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Requests whose outcome was stored during the drain.
    pub settled: u64,
    /// Requests given back unfinished (they run again, here or on another node).
    pub released: u64,
    /// Of those, attempts still in flight when the window closed.
    pub cut: u64,
}

/// A running dispatcher.
pub struct DispatcherHandle {
    stopping: CancellationToken,
    cut: CancellationToken,
    stop_renewing: CancellationToken,
    requests: TaskTracker,
    book: Arc<LeaseBook>,
    tally: Arc<Tally>,
    claimer: JoinHandle<()>,
    recorder: JoinHandle<()>,
    renewer: JoinHandle<()>,
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

    /// Starts the claim loop, the recorder and the renewer.
    pub fn spawn(self) -> DispatcherHandle {
        let book = Arc::new(LeaseBook::new(self.config.lease_ttl));
        let tally = Arc::new(Tally::default());
        let (outcomes, received) = mpsc::channel(self.config.max_in_flight.max(1) * 2);
        let recorder = tokio::spawn(record::record(
            self.store.clone(),
            book.clone(),
            tally.clone(),
            received,
            self.config.settle_chunk,
        ));
        let stop_renewing = CancellationToken::new();
        let renewer = tokio::spawn(
            book.clone()
                .renew_until(self.store.clone(), stop_renewing.clone()),
        );
        let stopping = CancellationToken::new();
        let cut = CancellationToken::new();
        let requests = TaskTracker::new();
        let claimer = tokio::spawn(self.claim_loop(ClaimLoop {
            outcomes,
            book: book.clone(),
            stopping: stopping.clone(),
            cut: cut.clone(),
            requests: requests.clone(),
        }));
        DispatcherHandle {
            stopping,
            cut,
            stop_renewing,
            requests,
            book,
            tally,
            claimer,
            recorder,
            renewer,
        }
    }

    async fn claim_loop(self, parts: ClaimLoop) {
        let ClaimLoop {
            outcomes,
            book,
            stopping,
            cut,
            requests,
        } = parts;
        // Every request holds a slot of the whole node and one of its route's lane.
        let slots = Arc::new(Semaphore::new(self.config.max_in_flight.max(1)));
        let mut lanes = Lanes::new(&self.routes, self.config.max_in_flight);
        let slot_freed = Arc::new(Notify::new());
        let gate = Arc::new(Gate::new(self.store.clone()));
        let owner = self.config.node_id.as_str();
        let mut created = true;
        loop {
            if stopping.is_cancelled() {
                return;
            }
            // Wait for a free slot before leasing anything.
            let freed = slot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if slots.available_permits() == 0 || lanes.iter().all(|l| l.free() == 0) {
                tokio::select! {
                    () = &mut freed => {}
                    () = stopping.cancelled() => return,
                }
                continue;
            }
            if let Err(e) = lanes
                .refresh(&self.routes, self.store.as_ref(), created)
                .await
            {
                tracing::error!(error = %e, "reading the models of queued requests failed");
            }
            created = false;
            let mut claimed_any = false;
            let mut failed = false;
            for lane in lanes.iter() {
                let free = lane
                    .free()
                    .min(slots.available_permits())
                    .min(self.config.claim_chunk);
                if free == 0 || matches!(&lane.filter, ModelFilter::Only(ids) if ids.is_empty()) {
                    continue;
                }
                let claimed_at = tokio::time::Instant::now();
                let now = Timestamp::now();
                let until = now.plus(self.config.lease_ttl);
                let claimed = match self
                    .store
                    .claim(owner, free, &lane.filter, now, until)
                    .await
                {
                    Ok(claimed) => claimed,
                    Err(e) => {
                        tracing::error!(error = %e, "claiming requests failed; retrying in 1 s");
                        failed = true;
                        break;
                    }
                };
                claimed_any |= !claimed.is_empty();
                for request in claimed {
                    let lease = book.hold(request.request, claimed_at);
                    // Both are free: only this loop takes slots, and it counted them.
                    let (Some(lane_slot), Ok(node_slot)) =
                        (lane.take(), slots.clone().try_acquire_owned())
                    else {
                        tracing::error!("no free slot for a claimed request; giving it back");
                        let _ = outcomes.send(Outcome::Released(request.request)).await;
                        continue;
                    };
                    let (routes, gate, outcomes, book) = (
                        self.routes.clone(),
                        gate.clone(),
                        outcomes.clone(),
                        book.clone(),
                    );
                    let (stopping, cut, slot_freed) =
                        (stopping.clone(), cut.clone(), slot_freed.clone());
                    requests.spawn(async move {
                        let signals = Signals {
                            book: &book,
                            gate: &gate,
                            stopping: &stopping,
                            cut: &cut,
                        };
                        let outcome = run::run_one(&routes, &signals, &lease, request).await;
                        // The recorder outlives every request task (see `drain`).
                        let _ = outcomes.send(outcome).await;
                        drop((lane_slot, node_slot));
                        slot_freed.notify_one();
                    });
                }
            }
            if failed {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = stopping.cancelled() => return,
                }
            } else if !claimed_any {
                // Nothing runnable in any lane with room: wait for new work, a freed slot
                // (its lane may have runnable requests), or the poll (leases that ran out).
                tokio::select! {
                    r = tokio::time::timeout(self.config.idle_poll, self.work_arrived.notified()) => {
                        created = r.is_ok();
                    }
                    () = &mut freed => {}
                    () = stopping.cancelled() => return,
                }
            }
        }
    }
}

/// What the claim loop shares with the handle.
struct ClaimLoop {
    outcomes: mpsc::Sender<Outcome>,
    book: Arc<LeaseBook>,
    stopping: CancellationToken,
    cut: CancellationToken,
    requests: TaskTracker,
}

/// How long the recorder may take to store the last outcomes after the window closed.
const LAST_WRITE_GRACE: Duration = Duration::from_secs(5);

impl DispatcherHandle {
    /// Requests this node holds leases on right now.
    pub fn in_flight(&self) -> usize {
        self.book.len()
    }

    /// Stops claiming; gives back what has not started; lets attempts in flight finish within
    /// `window` and stores their outcomes; gives back what is still running then. Leases the
    /// recorder could not give back stay this node's, recovered at its next start.
    pub async fn drain(self, window: Duration) -> DrainReport {
        let settled_before = self.tally.settled.load(Ordering::Relaxed);
        let released_before = self.tally.released.load(Ordering::Relaxed);
        self.stopping.cancel();
        let _ = self.claimer.await;
        self.requests.close();
        let mut cut = 0;
        if tokio::time::timeout(window, self.requests.wait())
            .await
            .is_err()
        {
            cut = self.requests.len() as u64;
            self.cut.cancel();
            self.requests.wait().await;
        }
        // Every sender is gone once the request tasks are: the recorder ends when it has
        // stored what they sent.
        let mut recorder = self.recorder;
        if tokio::time::timeout(LAST_WRITE_GRACE, &mut recorder)
            .await
            .is_err()
        {
            tracing::error!(
                "the last outcomes could not be stored in time; those requests run again at the next start"
            );
            recorder.abort();
        }
        self.stop_renewing.cancel();
        let _ = self.renewer.await;
        DrainReport {
            settled: self.tally.settled.load(Ordering::Relaxed) - settled_before,
            released: self.tally.released.load(Ordering::Relaxed) - released_before,
            cut,
        }
    }

    /// Stops at once, without draining: leases stay in the store until recovered or run out.
    pub fn abort(self) {
        self.claimer.abort();
        self.recorder.abort();
        self.renewer.abort();
        self.stopping.cancel();
        self.cut.cancel();
    }
}
