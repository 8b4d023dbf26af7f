//! What one attempt's outcome means for its delivery: delivered, due again when, or failed.
//! 2xx delivers; 408, 429 and 5xx, timeouts and connection failures are retried (a
//! `retry-after` is honoured, up to the backoff ceiling); any other answer is final, and so
//! is a target the SSRF policy refuses. Out of attempts or past the age limit: failed.

use std::time::Duration;

use satchel_wire::Timestamp;

use super::WebhookConfig;
use super::outbox::{AttemptRecord, DeliveryState};
use super::worker::SendOutcome;

/// Judges `outcome` of attempt number `attempt` of a delivery whose event was created at
/// `event_at`.
pub fn judge(
    config: &WebhookConfig,
    outcome: &SendOutcome,
    attempt: i64,
    event_at: Timestamp,
    now: Timestamp,
) -> AttemptRecord {
    let (status, error, retry_after) = match outcome {
        SendOutcome::Answered {
            status,
            retry_after,
        } => {
            if (200..300).contains(status) {
                return AttemptRecord {
                    status: Some(*status),
                    error: None,
                    state: DeliveryState::Delivered,
                    next_attempt_at: None,
                };
            }
            let error = format!("the endpoint answered {status}");
            if !retryable_status(*status) {
                return failed(Some(*status), error);
            }
            (Some(*status), error, *retry_after)
        }
        SendOutcome::Unreachable { error } => (None, error.clone(), None),
        SendOutcome::Refused { reason } => return failed(None, reason.clone()),
    };
    let delay = retry_after
        .unwrap_or_else(|| backoff(config, attempt))
        .min(config.max_backoff);
    let next = now.plus(delay);
    let out_of_attempts = attempt >= i64::from(config.max_attempts);
    let too_old = next > event_at.plus(config.max_age);
    if out_of_attempts || too_old {
        let why = if out_of_attempts {
            "out of attempts"
        } else {
            "past the age limit"
        };
        return failed(status, format!("{error}; {why}"));
    }
    AttemptRecord {
        status,
        error: Some(error),
        state: DeliveryState::Pending,
        next_attempt_at: Some(next),
    }
}

fn failed(status: Option<u16>, error: String) -> AttemptRecord {
    AttemptRecord {
        status,
        error: Some(error),
        state: DeliveryState::Failed,
        next_attempt_at: None,
    }
}

fn retryable_status(status: u16) -> bool {
    status == 408 || status == 429 || status >= 500
}

/// The delay after attempt `attempt` (1-based): `initial_backoff` doubling, up to
/// `max_backoff`, with up to 25% less at random so retries of many deliveries spread out.
fn backoff(config: &WebhookConfig, attempt: i64) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
    let full = config
        .initial_backoff
        .saturating_mul(1u32 << doublings)
        .min(config.max_backoff);
    full.mul_f64(1.0 - fastrand::f64() * 0.25)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WebhookConfig {
        WebhookConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            ..WebhookConfig::default()
        }
    }

    fn answered(status: u16, retry_after: Option<Duration>) -> SendOutcome {
        SendOutcome::Answered {
            status,
            retry_after,
        }
    }

    #[test]
    fn statuses_are_judged() {
        let (c, t) = (config(), Timestamp::from_micros(0));
        assert_eq!(
            judge(&c, &answered(204, None), 1, t, t).state,
            DeliveryState::Delivered
        );
        for status in [408, 429, 500, 503] {
            let r = judge(&c, &answered(status, None), 1, t, t);
            assert_eq!(r.state, DeliveryState::Pending, "{status}");
            assert_eq!(r.status, Some(status));
        }
        for status in [301, 400, 401, 404, 410] {
            assert_eq!(
                judge(&c, &answered(status, None), 1, t, t).state,
                DeliveryState::Failed,
                "{status}"
            );
        }
        let refused = SendOutcome::Refused {
            reason: "private".into(),
        };
        assert_eq!(judge(&c, &refused, 1, t, t).state, DeliveryState::Failed);
        let down = SendOutcome::Unreachable {
            error: "refused".into(),
        };
        assert_eq!(judge(&c, &down, 1, t, t).state, DeliveryState::Pending);
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_ceiling_and_attempts_run_out() {
        let (c, t) = (config(), Timestamp::from_micros(0));
        let r = judge(&c, &answered(429, Some(Duration::from_secs(7))), 1, t, t);
        assert_eq!(r.next_attempt_at, Some(t.plus(Duration::from_secs(7))));
        let r = judge(&c, &answered(429, Some(Duration::from_secs(7200))), 1, t, t);
        assert_eq!(r.next_attempt_at, Some(t.plus(Duration::from_secs(60))));
        let r = judge(&c, &answered(500, None), 3, t, t);
        assert_eq!(r.state, DeliveryState::Failed);
        assert!(r.error.unwrap().contains("out of attempts"));
        let late = t.plus(Duration::from_secs(3600));
        assert_eq!(
            judge(&c, &answered(500, None), 1, t, late).state,
            DeliveryState::Failed
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let c = config();
        for attempt in 1..10 {
            let full = Duration::from_secs(1 << (attempt - 1)).min(c.max_backoff);
            let d = backoff(&c, attempt);
            assert!(d <= full && d >= full.mul_f64(0.75), "{attempt}: {d:?}");
        }
    }
}
