//! When to retry a failed call and how long to wait first: the official SDKs' rules for
//! what is retried, and the project's one wait rule ([`satchel_wire::retry`], shared with
//! Satchel's upstream backends).
//!
//! Retried: connection failures and timeouts, and the statuses 408, 409, 429 and 5xx, unless
//! the server says otherwise with `x-should-retry: true|false`. The wait is what the server
//! asks for (`retry-after-ms`, else `retry-after` in seconds or as an HTTP date) when that is
//! more than 0, capped at 60 s; otherwise exponential backoff, 0.5 s doubling up to 8 s,
//! shortened by a random jitter of up to 25 % so that many clients do not retry in step.
//! Kept free of I/O so the rules are unit-tested exactly.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use satchel_wire::retry::{self as rule, Backoff};

/// The first backoff delay.
pub const INITIAL_RETRY_DELAY: Duration = rule::INITIAL_BACKOFF;
/// The longest backoff delay.
pub const MAX_RETRY_DELAY: Duration = rule::MAX_BACKOFF;

/// Whether a response with this status and headers should be retried (retries permitting).
pub fn should_retry(status: StatusCode, headers: &HeaderMap) -> bool {
    if let Some(explicit) = rule::should_retry_header(text(headers, "x-should-retry")) {
        return explicit;
    }
    matches!(status.as_u16(), 408 | 409 | 429) || status.is_server_error()
}

/// How long to wait before retry number `retries_done + 1`, given the failed response's
/// headers (none for a connection failure) and a `jitter` in `[0, 1)`.
pub fn retry_delay(retries_done: u32, headers: Option<&HeaderMap>, jitter: f64) -> Duration {
    let asked = headers.and_then(|h| retry_after(h, SystemTime::now()));
    Backoff::default().delay(retries_done, asked, jitter)
}

/// The wait the server asks for: `retry-after-ms` (milliseconds), else `retry-after`
/// (seconds, possibly fractional, or an HTTP date).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    rule::retry_after(
        text(headers, "retry-after-ms"),
        text(headers, "retry-after"),
        now,
    )
}

fn text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn retries_the_sdk_statuses_and_obeys_x_should_retry() {
        let none = HeaderMap::new();
        for code in [408, 409, 429, 500, 502, 503, 529] {
            assert!(
                should_retry(StatusCode::from_u16(code).unwrap(), &none),
                "{code}"
            );
        }
        for code in [400, 401, 403, 404, 413, 422] {
            assert!(
                !should_retry(StatusCode::from_u16(code).unwrap(), &none),
                "{code}"
            );
        }
        let yes = headers(&[("x-should-retry", "true")]);
        let no = headers(&[("x-should-retry", "false")]);
        assert!(should_retry(StatusCode::BAD_REQUEST, &yes));
        assert!(!should_retry(StatusCode::SERVICE_UNAVAILABLE, &no));
        assert!(should_retry(
            StatusCode::SERVICE_UNAVAILABLE,
            &headers(&[("x-should-retry", "maybe")])
        ));
    }

    #[test]
    fn backoff_doubles_from_half_a_second_to_eight_with_jitter() {
        let ms = |n, jitter| retry_delay(n, None, jitter).as_millis();
        assert_eq!(ms(0, 0.0), 500);
        assert_eq!(ms(1, 0.0), 1_000);
        assert_eq!(ms(2, 0.0), 2_000);
        assert_eq!(ms(4, 0.0), 8_000);
        assert_eq!(ms(30, 0.0), 8_000);
        assert_eq!(ms(u32::MAX, 0.0), 8_000);
        assert_eq!(ms(0, 1.0), 375);
        assert_eq!(ms(1, 0.5), 875);
    }

    #[test]
    fn obeys_retry_after_ms_then_retry_after_capped_at_a_minute() {
        let d = |pairs: &[(&'static str, &str)]| retry_delay(0, Some(&headers(pairs)), 0.0);
        assert_eq!(d(&[("retry-after-ms", "250")]), Duration::from_millis(250));
        assert_eq!(
            d(&[("retry-after-ms", "20"), ("retry-after", "30")]),
            Duration::from_millis(20)
        );
        assert_eq!(d(&[("retry-after", "3")]), Duration::from_secs(3));
        assert_eq!(d(&[("retry-after", "0.25")]), Duration::from_millis(250));
        assert_eq!(d(&[("retry-after", "60")]), Duration::from_secs(60));
        // Longer than a minute: a minute.
        assert_eq!(d(&[("retry-after", "61")]), Duration::from_secs(60));
        assert_eq!(d(&[("retry-after", "3600")]), Duration::from_secs(60));
        // No wait asked for: backoff.
        assert_eq!(d(&[("retry-after", "0")]), Duration::from_millis(500));
        assert_eq!(d(&[("retry-after", "-5")]), Duration::from_millis(500));
        assert_eq!(d(&[("retry-after", "soon")]), Duration::from_millis(500));
    }

    #[test]
    fn retry_after_may_be_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let in_ten = httpdate::fmt_http_date(now + Duration::from_secs(10));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &in_ten)]), now),
            Some(Duration::from_secs(10))
        );
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &past)]), now),
            Some(Duration::ZERO)
        );
    }
}
