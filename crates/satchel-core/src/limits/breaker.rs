//! The breaker that pauses a route while its upstream cannot be reached, probing it one
//! request at a time until it answers.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;

/// Consecutive failures to reach the upstream after which its route pauses.
const TRIP_AFTER: u32 = 3;
/// The first wait before probing a paused route; it doubles after each failed probe.
const FIRST_PROBE_AFTER: Duration = Duration::from_secs(1);
const LONGEST_PROBE_WAIT: Duration = Duration::from_secs(30);

/// Pauses a route whose upstream is down, so that its requests wait in place rather than
/// spend their retries against it: after [`TRIP_AFTER`] consecutive attempts that could not
/// reach it, requests are held back; once the wait is over, one request goes as a probe; if it
/// reaches the upstream, everyone goes again, else the wait doubles (up to
/// [`LONGEST_PROBE_WAIT`]).
#[derive(Default)]
pub struct Breaker {
    state: Mutex<BreakerState>,
    changed: Notify,
}

#[derive(Default)]
struct BreakerState {
    consecutive: u32,
    /// Paused: no attempt before this instant, then one probe at a time.
    paused_until: Option<tokio::time::Instant>,
    wait: Duration,
    probing: bool,
}

/// The probe's turn on a paused route; if it is dropped before its outcome was told, the next
/// request may probe.
pub struct ProbeTurn<'a> {
    breaker: &'a Breaker,
}

impl Drop for ProbeTurn<'_> {
    fn drop(&mut self) {
        self.breaker.lock().probing = false;
        self.breaker.changed.notify_waiters();
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns at once while the route is up; while it is paused, when this request may go
    /// as the probe (with its turn).
    pub async fn ready(&self) -> Option<ProbeTurn<'_>> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let mut state = self.lock();
                match state.paused_until {
                    None => return None,
                    Some(until) => {
                        let now = tokio::time::Instant::now();
                        if now >= until && !state.probing {
                            state.probing = true;
                            return Some(ProbeTurn { breaker: self });
                        }
                        until.saturating_duration_since(now)
                    }
                }
            };
            if wait.is_zero() {
                changed.await;
            } else {
                let _ = tokio::time::timeout(wait, changed).await;
            }
        }
    }

    pub(super) fn reached(&self) {
        let mut state = self.lock();
        let was_paused = state.paused_until.is_some();
        *state = BreakerState::default();
        drop(state);
        if was_paused {
            tracing::info!("the upstream answers again; the route resumes");
            self.changed.notify_waiters();
        }
    }

    pub(super) fn unreachable(&self) {
        let mut state = self.lock();
        state.consecutive = state.consecutive.saturating_add(1);
        if state.consecutive < TRIP_AFTER {
            return;
        }
        state.wait = if state.paused_until.is_none() {
            tracing::warn!(
                failures = state.consecutive,
                "the upstream cannot be reached; pausing the route and probing"
            );
            FIRST_PROBE_AFTER
        } else {
            (state.wait * 2).min(LONGEST_PROBE_WAIT)
        };
        state.paused_until = Some(tokio::time::Instant::now() + state.wait);
    }

    pub(super) fn is_paused(&self) -> bool {
        self.lock().paused_until.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_route_pauses_after_failures_to_reach_it_and_probes_one_at_a_time() {
        let breaker = Breaker::default();
        for _ in 0..TRIP_AFTER - 1 {
            breaker.unreachable();
            assert!(breaker.ready().await.is_none(), "not paused yet");
        }
        breaker.unreachable();
        assert!(breaker.is_paused());
        let started = tokio::time::Instant::now();
        let probe = breaker
            .ready()
            .await
            .expect("the first after the wait probes");
        assert!(started.elapsed() >= FIRST_PROBE_AFTER);
        // While the probe is out, nobody else goes.
        assert!(
            tokio::time::timeout(Duration::from_secs(60), breaker.ready())
                .await
                .is_err()
        );
        // The probe fails: the wait doubles.
        breaker.unreachable();
        drop(probe);
        let started = tokio::time::Instant::now();
        let probe = breaker.ready().await.expect("a second probe");
        assert!(started.elapsed() >= FIRST_PROBE_AFTER * 2);
        // It gets through: everyone goes again at once.
        breaker.reached();
        drop(probe);
        assert!(!breaker.is_paused());
        assert!(breaker.ready().await.is_none());
    }
}
