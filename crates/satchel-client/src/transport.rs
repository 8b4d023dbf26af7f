//! The bottom of the client: one configured HTTP connection pool, and the one place a call
//! is sent and retried ([`Transport::send`]). JSON calls and streamed downloads differ only
//! in what finishes a successful attempt.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Error, Result};
use crate::retry;

/// What every call shares: the pool, where to go, the credentials and the retry budget.
pub(crate) struct Transport {
    pub http: reqwest::Client,
    pub base_url: Url,
    /// `x-api-key`, `authorization`, `anthropic-version`: sent with every request.
    pub headers: HeaderMap,
    pub max_retries: u32,
    pub timeout: Duration,
}

impl fmt::Debug for Transport {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url.as_str())
            .field("max_retries", &self.max_retries)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// One API call, rebuilt for each attempt.
pub(crate) struct Call {
    pub method: Method,
    pub url: Url,
    pub body: Option<Bytes>,
    pub accept: &'static str,
    /// Named in decode errors: "retrieve", "list", …
    pub operation: &'static str,
}

impl Call {
    pub fn new(operation: &'static str, method: Method, url: Url) -> Self {
        Self {
            method,
            url,
            body: None,
            accept: "application/json",
            operation,
        }
    }
}

/// How a successful attempt ended once its finisher ran.
enum Finished<T> {
    Done(T),
    /// Worth another attempt (a body that broke off), retries permitting.
    Retry,
    Failed(Error),
}

/// The timeout an attempt runs under.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timeout {
    /// The whole call, body included.
    WholeCall,
    /// Only the pool's read timeout between reads: a streamed body may take as long as it
    /// takes.
    BetweenReads,
}

enum Attempt {
    Success(reqwest::Response),
    /// Retry, after the wait these headers ask for (none: a connection failure).
    Retry(Option<HeaderMap>),
    Failed(Error),
}

impl Transport {
    /// `base_url` followed by these path segments, each percent-encoded (so an id can never
    /// reach another route).
    pub fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Config("the base URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends `call`, retrying as the SDKs do, and parses the JSON body of the success.
    /// Reading the body is part of the attempt: a connection that breaks off mid-body is
    /// retried like one that failed to connect.
    pub async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        let operation = call.operation;
        self.send(
            &call,
            Timeout::WholeCall,
            |response, can_retry| async move {
                let request_id = request_id(response.headers());
                match response.bytes().await {
                    Ok(bytes) => match serde_json::from_slice(&bytes) {
                        Ok(value) => Finished::Done(value),
                        Err(source) => Finished::Failed(Error::Decode {
                            operation,
                            request_id,
                            source,
                        }),
                    },
                    Err(_) if can_retry => Finished::Retry,
                    Err(e) => Finished::Failed(Error::transport(e)),
                }
            },
        )
        .await
    }

    /// Sends `call`, retrying until a success status arrives, and hands back the response
    /// with its body unread, for streaming. Failures while streaming are not retried: the
    /// bytes already delivered cannot be taken back.
    pub async fn streaming(&self, call: Call) -> Result<reqwest::Response> {
        self.send(&call, Timeout::BetweenReads, |response, _| async move {
            Finished::Done(response)
        })
        .await
    }

    /// The one send-with-retries: attempts `call` until a success status arrives and
    /// `finish` makes something of it, a failure is final, or the retries run out; waiting
    /// between attempts as the retry rule says.
    async fn send<T, F, Fut>(&self, call: &Call, timeout: Timeout, finish: F) -> Result<T>
    where
        F: Fn(reqwest::Response, bool) -> Fut,
        Fut: Future<Output = Finished<T>>,
    {
        let mut retries_done = 0;
        loop {
            let can_retry = retries_done < self.max_retries;
            let wait_hint = match self.attempt(call, can_retry, timeout).await {
                Attempt::Success(response) => match finish(response, can_retry).await {
                    Finished::Done(value) => return Ok(value),
                    Finished::Retry => None,
                    Finished::Failed(error) => return Err(error),
                },
                Attempt::Retry(headers) => headers,
                Attempt::Failed(error) => return Err(error),
            };
            let delay = retry::retry_delay(retries_done, wait_hint.as_ref(), fastrand::f64());
            tokio::time::sleep(delay).await;
            retries_done += 1;
        }
    }

    /// One attempt: a success status, a failure worth retrying (with the response's
    /// headers, which may say how long to wait), or a final error.
    async fn attempt(&self, call: &Call, can_retry: bool, timeout: Timeout) -> Attempt {
        let mut request = self
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(self.headers.clone())
            .header(header::ACCEPT, call.accept);
        if timeout == Timeout::WholeCall {
            request = request.timeout(self.timeout);
        }
        if let Some(body) = &call.body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone());
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Attempt::Success(response),
            Ok(response) => {
                let status = response.status();
                if can_retry && retry::should_retry(status, response.headers()) {
                    return Attempt::Retry(Some(response.headers().clone()));
                }
                let request_id = request_id(response.headers());
                // The error body is small; a failure to read it still leaves the status to
                // report.
                let body = response.bytes().await.unwrap_or_default();
                Attempt::Failed(ApiError::from_parts(status.as_u16(), request_id, &body).into())
            }
            // A request that could not even be built will not build next time either.
            Err(e) if e.is_builder() => Attempt::Failed(Error::transport(e)),
            Err(_) if can_retry => Attempt::Retry(None),
            Err(e) => Attempt::Failed(Error::transport(e)),
        }
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
