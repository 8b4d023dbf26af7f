//! What keeps a route within what its model server can take: an adaptive concurrency cap
//! ([`concurrency`]), token buckets on requests and on estimated tokens per minute (here), a
//! breaker that pauses the route while its upstream is down ([`breaker`]), and the retry
//! policy ([`retry`]).
//!
//! When several nodes share a store, the configured limits hold for all of them together:
//! each node takes an equal share ([`RouteLimits::set_nodes`], from the live nodes the store
//! knows).

mod breaker;
mod concurrency;
mod retry;

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

pub use breaker::{Breaker, ProbeTurn};
pub use concurrency::{AdaptiveConcurrency, ConcurrencyPermit};
pub use retry::{DEFAULT_MAX_RETRIES, RetryPolicy};

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

/// Leave to make one attempt: a concurrency slot and, while the route is paused, the probe's
/// turn. Both are given back on drop.
pub struct Admission<'a> {
    _permit: ConcurrencyPermit,
    _probe: Option<ProbeTurn<'a>>,
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

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
