//! The adaptive concurrency cap of a route: shrinks multiplicatively when the upstream
//! throttles, grows back additively on success (AIMD), between 1 and the configured maximum.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// A concurrency cap that shrinks multiplicatively on throttling and grows back additively
/// on success (AIMD), between 1 and the configured maximum.
pub struct AdaptiveConcurrency {
    pub(super) max: usize,
    state: Mutex<ConcurrencyState>,
    freed: Notify,
}

pub(super) struct ConcurrencyState {
    limit: f64,
    /// This node's share of `max` (all of it on a node alone).
    cap: usize,
    pub(super) in_use: usize,
    last_shrink: Option<Instant>,
}

/// Shrinking again sooner than this would punish one burst of 429s many times over.
const SHRINK_SPACING: Duration = Duration::from_millis(250);

impl AdaptiveConcurrency {
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            max,
            state: Mutex::new(ConcurrencyState {
                limit: max as f64,
                cap: max,
                in_use: 0,
                last_shrink: None,
            }),
            freed: Notify::new(),
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, ConcurrencyState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn limit(&self) -> usize {
        (self.lock().limit as usize).max(1)
    }

    pub async fn acquire(self: Arc<Self>) -> ConcurrencyPermit {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut state = self.lock();
                if state.in_use < (state.limit as usize).max(1) {
                    state.in_use += 1;
                    return ConcurrencyPermit {
                        owner: self.clone(),
                    };
                }
            }
            freed.await;
        }
    }

    pub(super) fn grow(&self) {
        let mut state = self.lock();
        state.limit = (state.limit + 1.0 / state.limit).min(state.cap as f64);
    }

    /// Caps this node at its share of the maximum among `nodes`.
    pub(super) fn set_share(&self, nodes: usize) {
        let mut state = self.lock();
        state.cap = self.max.div_ceil(nodes.max(1)).max(1);
        state.limit = state.limit.min(state.cap as f64).max(1.0);
    }

    pub(super) fn shrink(&self) {
        let mut state = self.lock();
        let now = Instant::now();
        if state
            .last_shrink
            .is_some_and(|at| now.duration_since(at) < SHRINK_SPACING)
        {
            return;
        }
        state.last_shrink = Some(now);
        state.limit = (state.limit * 0.7).max(1.0);
    }
}

/// A slot of an [`AdaptiveConcurrency`], given back on drop.
pub struct ConcurrencyPermit {
    owner: Arc<AdaptiveConcurrency>,
}

impl Drop for ConcurrencyPermit {
    fn drop(&mut self) {
        self.owner.lock().in_use -= 1;
        self.owner.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrency_shrinks_on_throttle_and_grows_back() {
        let cap = Arc::new(AdaptiveConcurrency::new(10));
        cap.shrink();
        assert_eq!(cap.limit(), 7);
        cap.shrink(); // too soon: one burst of throttling shrinks once
        assert_eq!(cap.limit(), 7);
        for _ in 0..200 {
            cap.grow();
        }
        assert_eq!(cap.limit(), 10);
    }

    // Under paused time: "must wait" is checked by letting (virtual) time run out, not by
    // hoping 50 ms of wall clock is enough.
    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_cap_at_once() {
        let cap = Arc::new(AdaptiveConcurrency::new(3));
        let held: Vec<_> = futures::future::join_all((0..3).map(|_| cap.clone().acquire())).await;
        let fourth = tokio::time::timeout(Duration::from_secs(60), cap.clone().acquire()).await;
        assert!(fourth.is_err(), "a fourth slot must wait");
        drop(held);
        let fourth = tokio::time::timeout(Duration::from_secs(60), cap.clone().acquire()).await;
        assert!(fourth.is_ok());
    }
}
