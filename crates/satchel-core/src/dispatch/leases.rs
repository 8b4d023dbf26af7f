//! The leases this node holds, and the task that keeps them alive.
//!
//! Every request the claim loop leases is entered here until its outcome is stored (or its
//! lease given back). Every third of the lease TTL the renewer extends all of them in one
//! store call; a lease the store reports lost (taken over after running out, or already
//! settled) is marked so, and a lease whose last renewal is too old (the store could not be
//! reached) counts as lost too. A request task asks [`Lease::may_start`] before each attempt:
//! that is what keeps a request from being sent upstream by two nodes at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use satchel_wire::Timestamp;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::RequestKey;
use crate::store::Store;

/// One held lease, as its request task sees it.
pub(crate) struct Lease {
    key: RequestKey,
    /// When the lease stops being safe to start an attempt under, in milliseconds since the
    /// book's epoch: its end as last granted or renewed, less a margin.
    safe_until_ms: AtomicU64,
    lost: AtomicBool,
}

impl Lease {
    pub fn key(&self) -> RequestKey {
        self.key
    }

    /// Whether an attempt may start now: the lease is still ours and will stay so for a while
    /// even if the next renewal fails.
    pub fn may_start(&self, book: &LeaseBook) -> bool {
        !self.lost.load(Ordering::Acquire)
            && book.elapsed_ms() < self.safe_until_ms.load(Ordering::Acquire)
    }
}

/// The leases held by this node.
pub(crate) struct LeaseBook {
    ttl: Duration,
    epoch: Instant,
    held: Mutex<HashMap<i64, Arc<Lease>>>,
}

impl LeaseBook {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            epoch: Instant::now(),
            held: Mutex::new(HashMap::new()),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The time, on the book's clock, until which a lease granted or renewed at `at` is safe:
    /// two thirds of the TTL, so an attempt never starts in the last third of a lease.
    fn safe_until(&self, at: Instant) -> u64 {
        let granted = at.saturating_duration_since(self.epoch);
        (granted + self.ttl * 2 / 3).as_millis() as u64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Arc<Lease>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enters a lease granted by a claim that started at `claimed_at`.
    pub fn hold(&self, key: RequestKey, claimed_at: Instant) -> Arc<Lease> {
        let lease = Arc::new(Lease {
            key,
            safe_until_ms: AtomicU64::new(self.safe_until(claimed_at)),
            lost: AtomicBool::new(false),
        });
        self.lock().insert(key.request, lease.clone());
        lease
    }

    /// Forgets leases whose outcome is stored or that were given back.
    pub fn forget(&self, keys: impl IntoIterator<Item = RequestKey>) {
        let mut held = self.lock();
        for key in keys {
            if held.get(&key.request).is_some_and(|l| l.key == key) {
                held.remove(&key.request);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn snapshot(&self) -> Vec<Arc<Lease>> {
        self.lock().values().cloned().collect()
    }

    /// Renews every held lease once. Returns how many were lost.
    pub async fn renew_all(&self, store: &dyn Store) -> Result<usize, crate::StoreError> {
        let leases = self.snapshot();
        if leases.is_empty() {
            return Ok(0);
        }
        let started = Instant::now();
        let until = Timestamp::now().plus(self.ttl);
        let keys = leases.iter().map(|l| l.key).collect();
        let lost = store.renew(keys, until).await?;
        let lost: std::collections::HashSet<RequestKey> = lost.into_iter().collect();
        let safe_until = self.safe_until(started);
        for lease in &leases {
            if lost.contains(&lease.key) {
                lease.lost.store(true, Ordering::Release);
            } else {
                lease.safe_until_ms.fetch_max(safe_until, Ordering::AcqRel);
            }
        }
        if !lost.is_empty() {
            tracing::warn!(
                lost = lost.len(),
                "leases lost (taken over or already ended); those requests will not start here"
            );
        }
        Ok(lost.len())
    }

    /// Renews every TTL/3 until `stop` is cancelled.
    pub async fn renew_until(self: Arc<Self>, store: Arc<dyn Store>, stop: CancellationToken) {
        let every = (self.ttl / 3).max(Duration::from_millis(10));
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            if let Err(e) = self.renew_all(store.as_ref()).await {
                tracing::error!(error = %e, held = self.len(), "renewing leases failed; no new attempts start under leases that may run out");
            }
        }
    }
}
