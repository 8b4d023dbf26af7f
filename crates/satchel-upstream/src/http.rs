//! The HTTP side shared by the upstream backends: one pooled client per backend, and the
//! classification of an upstream's answer into success, retryable or final failure.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use satchel_core::Failure;
use satchel_wire::ErrorType;
use serde::Deserialize;

/// How long one attempt may take by default, queueing in the model server included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// How long connecting to a model server may take by default.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connection settings of one backend.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Whole-request timeout.
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("`{0}` is not a valid upstream URL: {1}")]
    Url(String, url::ParseError),
}

/// One upstream endpoint: its URL, the key to send, and a pooled client.
pub(crate) struct Endpoint {
    pub http: reqwest::Client,
    /// Parsed once: a request built from a `&str` parses it again each time.
    pub url: reqwest::Url,
    pub api_key: Option<String>,
    pub options: HttpOptions,
}

impl Endpoint {
    /// The endpoint `path` (e.g. `messages`) of the server at `base_url`.
    pub fn new(
        base_url: &str,
        path: &str,
        api_key: Option<String>,
        options: HttpOptions,
    ) -> Result<Self, UpstreamError> {
        let url = crate::endpoint(base_url, path);
        let url = reqwest::Url::parse(&url).map_err(|e| UpstreamError::Url(url, e))?;
        Ok(Self {
            http: client(&options)?,
            url,
            api_key,
            options,
        })
    }

    /// A JSON POST of `body` to the endpoint.
    pub fn post(&self, body: String) -> reqwest::RequestBuilder {
        self.http
            .post(self.url.clone())
            .header("content-type", "application/json")
            .body(body)
    }
}

fn client(options: &HttpOptions) -> Result<reqwest::Client, UpstreamError> {
    Ok(reqwest::Client::builder()
        .timeout(options.timeout)
        .connect_timeout(options.connect_timeout)
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .build()?)
}

/// Sends `request` and returns the body of a 2xx answer; a transport failure or any other
/// status comes back classified.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
    options: &HttpOptions,
) -> Result<bytes::Bytes, Failure> {
    let response = request
        .send()
        .await
        .map_err(|e| transport_failure(&e, options))?;
    let status = response.status();
    if status.is_success() {
        return response
            .bytes()
            .await
            .map_err(|e| transport_failure(&e, options));
    }
    let headers = response.headers().clone();
    let body = response
        .bytes()
        .await
        .map_err(|e| transport_failure(&e, options))?;
    Err(status_failure(status, &headers, &body))
}

/// A transport failure: the connection failed, was reset, or the upstream did not answer in
/// time. Always worth another attempt.
pub(crate) fn transport_failure(e: &reqwest::Error, options: &HttpOptions) -> Failure {
    if e.is_timeout() {
        Failure::transient(
            ErrorType::TimeoutError,
            format!(
                "the upstream did not answer within {}s",
                options.timeout.as_secs_f64()
            ),
            None,
        )
    } else {
        // The error's chain says what went wrong (refused, reset, closed early). reqwest's own
        // message names the URL, an internal address the result line must not expose, so it
        // is left out: only the causes are kept.
        let mut detail = String::new();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            if !detail.is_empty() {
                detail.push_str(": ");
            }
            detail.push_str(&inner.to_string());
            source = inner.source();
        }
        if detail.is_empty() {
            detail.push_str("the connection failed");
        }
        if e.is_connect() {
            Failure::unreachable(
                ErrorType::ApiError,
                format!("could not connect to the upstream: {detail}"),
                None,
            )
        } else {
            Failure::transient(
                ErrorType::ApiError,
                format!("upstream connection failed: {detail}"),
                None,
            )
        }
    }
}

/// The error bodies upstreams send: Anthropic's `{"type":"error","error":{"type","message"}}`
/// and OpenAI's `{"error":{"message","type"}}` both fit.
#[derive(Deserialize)]
struct ErrorBody {
    error: Option<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// A non-success status, with its headers and body, as a failure.
pub(crate) fn status_failure(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Failure {
    let detail = serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .and_then(|b| b.error);
    let upstream_kind = detail
        .as_ref()
        .and_then(|d| d.kind.as_deref())
        .and_then(|k| {
            serde_json::from_value::<ErrorType>(serde_json::Value::String(k.to_owned())).ok()
        });
    let message = detail
        .and_then(|d| d.message)
        .unwrap_or_else(|| format!("upstream answered {status}"));
    let kind = upstream_kind.unwrap_or_else(|| kind_for_status(status));
    let after = retry_after(headers);
    let mut failure = match status.as_u16() {
        429 | 529 => Failure::throttled(kind, message, after),
        // A gateway or the server itself says it is not there: the route is down.
        502..=504 => Failure::unreachable(kind, message, after),
        408 | 409 | 500..=599 => Failure::transient(kind, message, after),
        _ => Failure::fatal(kind, message),
    };
    // The upstream's explicit word beats the status, as in the official SDKs.
    match satchel_wire::retry::should_retry_header(header_text(headers, "x-should-retry")) {
        Some(true) if !failure.is_retryable() => {
            failure = Failure::transient(failure.kind, failure.message, after)
        }
        Some(false) => failure = Failure::fatal(failure.kind, failure.message),
        _ => {}
    }
    failure
}

fn kind_for_status(status: StatusCode) -> ErrorType {
    match status.as_u16() {
        401 => ErrorType::AuthenticationError,
        402 => ErrorType::BillingError,
        403 => ErrorType::PermissionError,
        404 => ErrorType::NotFoundError,
        408 | 504 => ErrorType::TimeoutError,
        413 => ErrorType::RequestTooLarge,
        429 => ErrorType::RateLimitError,
        529 | 503 => ErrorType::OverloadedError,
        400..=499 => ErrorType::InvalidRequestError,
        _ => ErrorType::ApiError,
    }
}

/// `retry-after-ms`, else `retry-after` (seconds, or an HTTP date): the SDKs' reading, the
/// project's one rule ([`satchel_wire::retry`], the Rust client's too).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    satchel_wire::retry::retry_after(
        header_text(headers, "retry-after-ms"),
        header_text(headers, "retry-after"),
        SystemTime::now(),
    )
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A 2xx body that is not what the upstream promised: worth another attempt.
pub(crate) fn malformed(detail: impl std::fmt::Display) -> Failure {
    Failure::transient(
        ErrorType::ApiError,
        format!("the upstream returned a malformed response: {detail}"),
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use satchel_core::Retry;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn statuses_are_classified_like_the_sdks() {
        let none = HeaderMap::new();
        let f = status_failure(
            StatusCode::TOO_MANY_REQUESTS,
            &headers(&[("retry-after", "2")]),
            b"",
        );
        assert_eq!(
            f.retry,
            Retry::Throttled {
                after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(f.kind, ErrorType::RateLimitError);
        let f = status_failure(
            StatusCode::from_u16(529).unwrap(),
            &none,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        );
        assert_eq!(
            (f.kind, f.message.as_str()),
            (ErrorType::OverloadedError, "Overloaded")
        );
        assert!(matches!(f.retry, Retry::Throttled { .. }));
        assert!(status_failure(StatusCode::INTERNAL_SERVER_ERROR, &none, b"oops").is_retryable());
        assert!(status_failure(StatusCode::CONFLICT, &none, b"").is_retryable());
        let f = status_failure(StatusCode::BAD_REQUEST, &none, br#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}"#);
        assert_eq!(
            f,
            Failure::fatal(ErrorType::InvalidRequestError, "max_tokens: Field required")
        );
        let f = status_failure(
            StatusCode::NOT_FOUND,
            &none,
            br#"{"error":{"message":"The model `x` does not exist.","type":"NotFoundError"}}"#,
        );
        assert_eq!(
            f,
            Failure::fatal(ErrorType::NotFoundError, "The model `x` does not exist.")
        );
        assert!(
            !status_failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                &headers(&[("x-should-retry", "false")]),
                b""
            )
            .is_retryable()
        );
        assert!(
            status_failure(
                StatusCode::BAD_REQUEST,
                &headers(&[("x-should-retry", "true")]),
                b""
            )
            .is_retryable()
        );
    }

    #[test]
    fn retry_after_in_all_its_forms() {
        assert_eq!(
            retry_after(&headers(&[("retry-after-ms", "1500")])),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "0.25")])),
            Some(Duration::from_millis(250))
        );
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
        let d = retry_after(&headers(&[("retry-after", &later)])).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
    }

    /// The emulator's fixtures classify a made-up error by its type
    /// (`Failure::as_upstream_would`) as this module classifies an upstream's answer of
    /// that type at its usual status: the two must agree.
    #[test]
    fn made_up_errors_are_classified_as_received_ones() {
        let usual_status = [
            (ErrorType::InvalidRequestError, 400),
            (ErrorType::AuthenticationError, 401),
            (ErrorType::BillingError, 402),
            (ErrorType::PermissionError, 403),
            (ErrorType::NotFoundError, 404),
            (ErrorType::TimeoutError, 408),
            (ErrorType::RequestTooLarge, 413),
            (ErrorType::RateLimitError, 429),
            (ErrorType::ApiError, 500),
            (ErrorType::OverloadedError, 529),
        ];
        for (kind, status) in usual_status {
            let body = format!(
                r#"{{"type":"error","error":{{"type":"{}","message":"m"}}}}"#,
                kind.as_str()
            );
            let received = status_failure(
                StatusCode::from_u16(status).unwrap(),
                &HeaderMap::new(),
                body.as_bytes(),
            );
            assert_eq!(received, Failure::as_upstream_would(kind, "m"), "{kind:?}");
        }
    }
}
