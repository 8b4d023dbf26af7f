//! How a route's failed attempts are retried: the count is the route's, the waits are the
//! project's one rule ([`satchel_wire::retry`]).

use std::time::Duration;

use satchel_wire::retry::Backoff;

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
}
