//! What keeps a route within what its model server can take: an adaptive concurrency cap,
//! token buckets on requests and on estimated tokens per minute, a breaker that pauses the
//! route while its upstream is down, and the retry policy.
//!
//! When several nodes share a store, the configured limits hold for all of them together:
//! each node takes an equal share ([`RouteLimits::set_nodes`], from the live nodes the store
//! knows).

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use satchel_wire::retry::Backoff;
use tokio::sync::Notify;

/// A route's concurrency when none is configured.
pub const DEFAULT_MAX_CONCURRENCY: usize = 64;

/// A route's limits as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitsConfig {
    /// Most requests in flight to the route at once (the adaptive cap never exceeds it).
    pub max_concurrency: usize,
    /// Requests per minute, if limited.
    pub requests_per_minute: Option<NonZeroU32>,
    /// Estimated tokens (input estimate + `max_tokens`) per minute, if limited.
    pub tokens_per_minute: Option<NonZeroU32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_concurrency: DEFAULT_MAX_CONCURRENCY,
            requests_per_minute: None,
            tokens_per_minute: None,
        }
    }
}

/// The live limits of one route.
pub struct RouteLimits {
    config: LimitsConfig,
    breaker: Breaker,
    concurrency: Arc<AdaptiveConcurrency>,
    buckets: Mutex<Buckets>,
}

/// The rate limiters of this node's share (rebuilt when the number of nodes changes).
#[derive(Clone)]
struct Buckets {
    nodes: u32,
    requests: Option<Arc<DefaultDirectRateLimiter>>,
    tokens: Option<(Arc<DefaultDirectRateLimiter>, NonZeroU32)>,
}

impl Buckets {
    /// The buckets of one node's share of `config` among `nodes`.
    fn new(config: &LimitsConfig, nodes: u32) -> Self {
        let share = |per_minute: NonZeroU32| {
            NonZeroU32::new(per_minute.get() / nodes.max(1)).unwrap_or(NonZeroU32::MIN)
        };
        Self {
            nodes,
            // Requests are spaced evenly: never more than one ahead of the configured rate.
            requests: config.requests_per_minute.map(|rpm| {
                Arc::new(RateLimiter::direct(smooth_quota(
                    share(rpm),
                    NonZeroU32::MIN,
                )))
            }),
            // Tokens come in lumps (one request's worth), so their bucket holds a second's
            // worth, and a request never asks for more than that.
            tokens: config.tokens_per_minute.map(|tpm| {
                let tpm = share(tpm);
                let burst = NonZeroU32::new(tpm.get() / 60).unwrap_or(NonZeroU32::MIN);
                (
                    Arc::new(RateLimiter::direct(smooth_quota(tpm, burst))),
                    burst,
                )
            }),
        }
    }
}

/// A quota of `per_minute` spread evenly with a burst of `burst`: the count over any window
/// of `w` stays under `burst + rate × w` (a full minute's burst would allow a minute's worth
/// at once).
fn smooth_quota(per_minute: NonZeroU32, burst: NonZeroU32) -> Quota {
    let period = Duration::from_secs(60) / per_minute.get();
    Quota::with_period(period.max(Duration::from_nanos(1)))
        .unwrap_or_else(|| Quota::per_minute(per_minute))
        .allow_burst(burst)
}

impl RouteLimits {
    pub fn new(config: &LimitsConfig) -> Self {
        Self {
            config: config.clone(),
            breaker: Breaker::default(),
            concurrency: Arc::new(AdaptiveConcurrency::new(config.max_concurrency)),
            buckets: Mutex::new(Buckets::new(config, 1)),
        }
    }

    /// Takes this node's equal share of the configured limits among `nodes` live nodes
    /// (rates divided, concurrency divided rounding up). Changing it starts the buckets
    /// afresh.
    pub fn set_nodes(&self, nodes: u32) {
        let nodes = nodes.max(1);
        {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            if buckets.nodes == nodes {
                return;
            }
            *buckets = Buckets::new(&self.config, nodes);
        }
        self.concurrency.set_share(nodes as usize);
    }

    /// Waits until the route is up (or this request is its probe), for a concurrency slot,
    /// and for the rate limits to allow one request of about `estimated_tokens`. Hold the
    /// permit for the duration of the attempt.
    pub async fn admit(&self, estimated_tokens: u32) -> Admission<'_> {
        let probe = self.breaker.ready().await;
        let permit = self.concurrency.clone().acquire().await;
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(requests) = &buckets.requests {
            requests.until_ready().await;
        }
        if let Some((tokens, burst)) = &buckets.tokens {
            // A request larger than the bucket waits for a full bucket rather than forever.
            let n =
                NonZeroU32::new(estimated_tokens.clamp(1, burst.get())).unwrap_or(NonZeroU32::MIN);
            let _ = tokens.until_n_ready(n).await;
        }
        Admission {
            _permit: permit,
            _probe: probe,
        }
    }

    /// An attempt succeeded: the cap may grow back.
    pub fn succeeded(&self) {
        self.breaker.reached();
        self.concurrency.grow();
    }

    /// The upstream answered (whatever it said): it is up.
    pub fn reached(&self) {
        self.breaker.reached();
    }

    /// The upstream could not be reached: counts towards pausing the route.
    pub fn unreachable(&self) {
        self.breaker.unreachable();
    }

    /// Whether the route is paused because its upstream is down.
    pub fn is_paused(&self) -> bool {
        self.breaker.is_paused()
    }

    /// The upstream said it is saturated: back off.
    pub fn throttled(&self) {
        self.concurrency.shrink();
    }

    /// The configured concurrency (the adaptive cap never exceeds it).
    pub fn max_concurrency(&self) -> usize {
        self.concurrency.max
    }

    /// The adaptive concurrency cap now.
    pub fn concurrency_limit(&self) -> usize {
        self.concurrency.limit()
    }

    /// Attempts holding a concurrency slot now.
    pub fn in_flight(&self) -> usize {
        self.concurrency.lock().in_use
    }

    pub(crate) fn limits_tokens(&self) -> bool {
        self.config.tokens_per_minute.is_some()
    }
}

/// A concurrency cap that shrinks multiplicatively on throttling and grows back additively
/// on success (AIMD), between 1 and the configured maximum.
pub struct AdaptiveConcurrency {
    max: usize,
    state: Mutex<ConcurrencyState>,
    freed: Notify,
}

struct ConcurrencyState {
    limit: f64,
    /// This node's share of `max` (all of it on a node alone).
    cap: usize,
    in_use: usize,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, ConcurrencyState> {
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

    fn grow(&self) {
        let mut state = self.lock();
        state.limit = (state.limit + 1.0 / state.limit).min(state.cap as f64);
    }

    /// Caps this node at its share of the maximum among `nodes`.
    fn set_share(&self, nodes: usize) {
        let mut state = self.lock();
        state.cap = self.max.div_ceil(nodes.max(1)).max(1);
        state.limit = state.limit.min(state.cap as f64).max(1.0);
    }

    fn shrink(&self) {
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

/// Leave to make one attempt: a concurrency slot and, while the route is paused, the probe's
/// turn. Both are given back on drop.
pub struct Admission<'a> {
    _permit: ConcurrencyPermit,
    _probe: Option<ProbeTurn<'a>>,
}

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

    fn reached(&self) {
        let mut state = self.lock();
        let was_paused = state.paused_until.is_some();
        *state = BreakerState::default();
        drop(state);
        if was_paused {
            tracing::info!("the upstream answers again; the route resumes");
            self.changed.notify_waiters();
        }
    }

    fn unreachable(&self) {
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

    fn is_paused(&self) -> bool {
        self.lock().paused_until.is_some()
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

/// How a route's failed attempts are retried: how many times, and the waits (the one wait
/// rule of [`satchel_wire::retry`], shared with the Rust client).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff; doubles each retry.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// The longest `retry-after` honoured; longer requests are capped to it.
    pub max_retry_after: Duration,
}

/// A route's retries after the first attempt when none are configured.
pub const DEFAULT_MAX_RETRIES: u32 = 4;

impl Default for RetryPolicy {
    fn default() -> Self {
        let backoff = Backoff::default();
        Self {
            max_retries: DEFAULT_MAX_RETRIES,
            initial_backoff: backoff.initial,
            max_backoff: backoff.max,
            max_retry_after: backoff.max_retry_after,
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (0 for the first retry): what the upstream asked
    /// for if it did (capped), else exponential backoff with jitter (×0.75–1).
    pub fn delay(&self, retry: u32, asked: Option<Duration>) -> Duration {
        let backoff = Backoff {
            initial: self.initial_backoff,
            max: self.max_backoff,
            max_retry_after: self.max_retry_after,
        };
        backoff.delay(retry, asked, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_takes_an_equal_share_of_the_concurrency() {
        let limits = RouteLimits::new(&LimitsConfig {
            max_concurrency: 10,
            requests_per_minute: NonZeroU32::new(600),
            tokens_per_minute: None,
        });
        assert_eq!(limits.concurrency.limit(), 10);
        limits.set_nodes(3);
        assert_eq!(limits.concurrency.limit(), 4, "10 among 3, rounded up");
        for _ in 0..100 {
            limits.succeeded();
        }
        assert_eq!(limits.concurrency.limit(), 4, "never grows past the share");
        limits.set_nodes(1);
        for _ in 0..200 {
            limits.succeeded();
        }
        assert_eq!(
            limits.concurrency.limit(),
            10,
            "alone again: grows back to all of it"
        );
    }

    #[test]
    fn retry_delay_honours_retry_after_then_backs_off_with_jitter() {
        let policy = RetryPolicy::default();
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.delay(0, Some(Duration::from_secs(600))),
            Duration::from_secs(60)
        );
        for retry in 0..8 {
            let d = policy.delay(retry, None);
            let full = Duration::from_millis(500)
                .saturating_mul(1 << retry)
                .min(Duration::from_secs(8));
            assert!(d <= full && d >= full.mul_f64(0.75), "{retry}: {d:?}");
        }
    }

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

    #[tokio::test]
    async fn requests_per_minute_are_spread_evenly() {
        let limits = RouteLimits::new(&LimitsConfig {
            max_concurrency: 100,
            requests_per_minute: NonZeroU32::new(1200), // 20/s, evenly spaced
            tokens_per_minute: None,
        });
        let started = Instant::now();
        for _ in 0..21 {
            drop(limits.admit(1).await);
        }
        // One at once, then 20 more at 20/s: a second, never less.
        assert!(
            started.elapsed() >= Duration::from_millis(990),
            "{:?}",
            started.elapsed()
        );
    }
}
