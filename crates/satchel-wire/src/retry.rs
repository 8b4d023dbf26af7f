//! When a failed call may be tried again, and how long to wait first: one rule for both
//! callers in this project, the Rust client (`satchel-client`, calling Satchel or Anthropic's
//! API) and the server's upstream backends (calling model servers).
//!
//! - **Asked wait.** A server may ask for a wait: `retry-after-ms` (milliseconds), else
//!   `retry-after` (seconds, possibly fractional, or an HTTP date), as the official SDKs read
//!   them. A wait longer than zero is obeyed, capped at [`MAX_RETRY_AFTER`] (60 s): a server
//!   asking for ten minutes is tried again after one, not hammered with a short backoff nor
//!   waited on for ten minutes.
//! - **Backoff.** With no asked wait (or a zero or unreadable one): exponential backoff from
//!   [`INITIAL_BACKOFF`] (0.5 s) doubling to [`MAX_BACKOFF`] (8 s), shortened by a random
//!   jitter of up to 25 % so that many callers do not retry in step.
//! - **`x-should-retry`**: `true` or `false` from the server beats the status.
//!
//! Free of I/O and of any HTTP crate (header values come in as text), so it is unit-tested
//! exactly and sits low enough for everyone to use.

use std::time::{Duration, SystemTime};

/// The first backoff delay.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(500);
/// The longest backoff delay.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// The longest asked-for wait obeyed; longer ones are waited as this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);
/// The longest wait a header is read as (a day), so absurd values stay representable.
const LONGEST_READ: f64 = 86_400.0;

/// How the waits between attempts grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// First backoff; doubles each retry.
    pub initial: Duration,
    /// The backoff never exceeds this.
    pub max: Duration,
    /// The longest asked-for wait obeyed (longer ones are cut to it).
    pub max_retry_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: INITIAL_BACKOFF,
            max: MAX_BACKOFF,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }
}

impl Backoff {
    /// The wait before retry number `retries_done + 1`: the `asked` wait if the server asked
    /// for one longer than zero (capped), else exponential backoff shortened by `jitter`, a
    /// number in `[0, 1)` (0: the full backoff; 1 would take a quarter off).
    pub fn delay(&self, retries_done: u32, asked: Option<Duration>, jitter: f64) -> Duration {
        if let Some(asked) = asked
            && !asked.is_zero()
        {
            return asked.min(self.max_retry_after);
        }
        let exponential = self
            .initial
            .saturating_mul(2u32.saturating_pow(retries_done))
            .min(self.max);
        exponential.mul_f64(1.0 - 0.25 * jitter.clamp(0.0, 1.0))
    }
}

/// The wait a server asks for, from the values of its `retry-after-ms` and `retry-after`
/// headers (`retry-after-ms` wins). An HTTP date in the past asks for no wait (zero).
pub fn retry_after(
    retry_after_ms: Option<&str>,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(|v| v.trim().parse::<f64>().ok()) {
        return seconds(ms / 1000.0);
    }
    let value = retry_after?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The server's explicit word from its `x-should-retry` header: `Some(true)`, `Some(false)`,
/// or none when absent or anything else.
pub fn should_retry_header(value: Option<&str>) -> Option<bool> {
    match value.map(str::trim) {
        Some("true") => Some(true),
        Some("false") => Some(false),
        _ => None,
    }
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(LONGEST_READ)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(d: Duration) -> u128 {
        d.as_millis()
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_eight_with_jitter() {
        let b = Backoff::default();
        assert_eq!(ms(b.delay(0, None, 0.0)), 500);
        assert_eq!(ms(b.delay(1, None, 0.0)), 1_000);
        assert_eq!(ms(b.delay(2, None, 0.0)), 2_000);
        assert_eq!(ms(b.delay(4, None, 0.0)), 8_000);
        assert_eq!(ms(b.delay(30, None, 0.0)), 8_000);
        assert_eq!(ms(b.delay(u32::MAX, None, 0.0)), 8_000);
        assert_eq!(ms(b.delay(0, None, 1.0)), 375);
        assert_eq!(ms(b.delay(1, None, 0.5)), 875);
    }

    #[test]
    fn an_asked_wait_is_obeyed_up_to_a_minute_then_capped() {
        let b = Backoff::default();
        let s = Duration::from_secs;
        assert_eq!(b.delay(3, Some(s(3)), 0.9), s(3));
        assert_eq!(b.delay(0, Some(s(60)), 0.0), s(60));
        assert_eq!(b.delay(0, Some(s(61)), 0.0), s(60));
        assert_eq!(b.delay(0, Some(s(600)), 0.0), s(60));
        // A zero wait is no wait asked for: backoff.
        assert_eq!(ms(b.delay(0, Some(Duration::ZERO), 0.0)), 500);
        let custom = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(40),
            max_retry_after: s(5),
        };
        assert_eq!(custom.delay(0, Some(s(9)), 0.0), s(5));
        assert_eq!(ms(custom.delay(5, None, 0.0)), 40);
    }

    #[test]
    fn retry_after_ms_then_retry_after_in_seconds_or_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let read = |ms: Option<&str>, after: Option<&str>| retry_after(ms, after, now);
        assert_eq!(read(Some("250"), None), Some(Duration::from_millis(250)));
        assert_eq!(
            read(Some("20"), Some("30")),
            Some(Duration::from_millis(20))
        );
        assert_eq!(read(None, Some(" 3 ")), Some(Duration::from_secs(3)));
        assert_eq!(read(None, Some("0.25")), Some(Duration::from_millis(250)));
        assert_eq!(read(None, Some("-5")), None);
        assert_eq!(read(None, Some("soon")), None);
        assert_eq!(read(Some("x"), Some("2")), Some(Duration::from_secs(2)));
        assert_eq!(read(None, None), None);
        assert_eq!(read(None, Some("1e300")), Some(Duration::from_secs(86_400)));
        let in_ten = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert_eq!(read(None, Some(&in_ten)), Some(Duration::from_secs(10)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(read(None, Some(&past)), Some(Duration::ZERO));
    }

    #[test]
    fn x_should_retry_is_true_false_or_nothing() {
        assert_eq!(should_retry_header(Some("true")), Some(true));
        assert_eq!(should_retry_header(Some(" false")), Some(false));
        assert_eq!(should_retry_header(Some("maybe")), None);
        assert_eq!(should_retry_header(None), None);
    }
}
