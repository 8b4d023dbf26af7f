//! The [`Client`]: configuration, authentication, and the one place requests are sent and
//! retried.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use crate::batches::Messages;
use crate::error::{ApiError, Error, Result};
use crate::retry;

/// Where the client goes without `ANTHROPIC_BASE_URL` or [`ClientBuilder::base_url`].
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The `anthropic-version` header sent with every request.
pub const API_VERSION: &str = "2023-06-01";
/// Retries after the first attempt, as in the official SDKs.
pub const DEFAULT_MAX_RETRIES: u32 = 2;
/// Time allowed for a call (and, for results, between two reads of the body): 10 minutes,
/// as in the official SDKs.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);
/// Time allowed to establish a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of the Message Batches API. Cheap to clone (the connection pool is shared).
///
/// ```no_run
/// # async fn run() -> Result<(), satchel_client::Error> {
/// use std::time::Duration;
/// use satchel_client::Client;
///
/// // ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) and ANTHROPIC_BASE_URL, like the SDKs:
/// let client = Client::from_env()?;
///
/// // Or spelled out:
/// let client = Client::builder()
///     .api_key("sk-…")
///     .base_url("http://127.0.0.1:8080")
///     .max_retries(5)
///     .timeout(Duration::from_secs(60))
///     .build()?;
/// let batch = client.messages().batches().retrieve("msgbatch_…").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: Url,
    /// `x-api-key`, `authorization`, `anthropic-version`: sent with every request.
    headers: HeaderMap,
    max_retries: u32,
    timeout: Duration,
}

impl fmt::Debug for Client {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base_url.as_str())
            .field("max_retries", &self.inner.max_retries)
            .field("timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client configured from the environment, as the official SDKs are:
    /// `ANTHROPIC_API_KEY` (sent as `x-api-key`), `ANTHROPIC_AUTH_TOKEN` (sent as
    /// `Authorization: Bearer`), `ANTHROPIC_BASE_URL` (default [`DEFAULT_BASE_URL`]).
    ///
    /// Fails if neither a key nor a token is set.
    pub fn from_env() -> Result<Self> {
        ClientBuilder::from_env().build()
    }

    /// A builder starting from the defaults (nothing read from the environment).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The Messages API; batches live under it, as in the SDKs.
    pub fn messages(&self) -> Messages<'_> {
        Messages::new(self)
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.inner.base_url.as_str()
    }

    /// `base_url` followed by these path segments, each percent-encoded (so an id can never
    /// reach another route).
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.inner.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Config("the base URL cannot take a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// Sends `call`, retrying as the SDKs do, and parses the JSON body of the success.
    pub(crate) async fn json<T: DeserializeOwned>(&self, call: Call) -> Result<T> {
        let mut retries_done = 0;
        loop {
            let can_retry = retries_done < self.inner.max_retries;
            let wait_hint = match self.attempt(&call, can_retry, true).await {
                Attempt::Success(response) => {
                    let request_id = request_id(response.headers());
                    // Reading the body is part of the attempt: a connection that breaks off
                    // mid-body is retried like one that failed to connect.
                    match response.bytes().await {
                        Ok(bytes) => {
                            return serde_json::from_slice(&bytes).map_err(|source| {
                                Error::Decode {
                                    operation: call.operation,
                                    request_id,
                                    source,
                                }
                            });
                        }
                        Err(_) if can_retry => None,
                        Err(e) => return Err(Error::transport(e)),
                    }
                }
                Attempt::Retry(headers) => headers,
                Attempt::Failed(error) => return Err(error),
            };
            self.pause(retries_done, wait_hint.as_ref()).await;
            retries_done += 1;
        }
    }

    /// Sends `call`, retrying until a success status arrives, and hands back the response
    /// with its body unread, for streaming. Failures while streaming are not retried: the
    /// bytes already delivered cannot be taken back.
    pub(crate) async fn streaming(&self, call: Call) -> Result<reqwest::Response> {
        let mut retries_done = 0;
        loop {
            let can_retry = retries_done < self.inner.max_retries;
            let wait_hint = match self.attempt(&call, can_retry, false).await {
                Attempt::Success(response) => return Ok(response),
                Attempt::Retry(headers) => headers,
                Attempt::Failed(error) => return Err(error),
            };
            self.pause(retries_done, wait_hint.as_ref()).await;
            retries_done += 1;
        }
    }

    /// One attempt: a success status, a failure worth retrying (with the response's
    /// headers, which may say how long to wait), or a final error.
    async fn attempt(&self, call: &Call, can_retry: bool, whole_call_timeout: bool) -> Attempt {
        let inner = &self.inner;
        let mut request = inner
            .http
            .request(call.method.clone(), call.url.clone())
            .headers(inner.headers.clone())
            .header(header::ACCEPT, call.accept);
        if whole_call_timeout {
            // The whole call, body included. A streamed body instead has the client's read
            // timeout between reads, however long the download takes.
            request = request.timeout(inner.timeout);
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

    /// Sleeps before retry number `retries_done + 1`.
    async fn pause(&self, retries_done: u32, headers: Option<&HeaderMap>) {
        let delay = retry::retry_delay(retries_done, headers, fastrand::f64());
        tokio::time::sleep(delay).await;
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

enum Attempt {
    Success(reqwest::Response),
    /// Retry, after the wait these headers ask for (none: a connection failure).
    Retry(Option<HeaderMap>),
    Failed(Error),
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// Configures a [`Client`]. Start from [`Client::builder`] or [`ClientBuilder::from_env`].
#[derive(Clone)]
pub struct ClientBuilder {
    api_key: Option<String>,
    auth_token: Option<String>,
    base_url: Option<String>,
    max_retries: u32,
    timeout: Duration,
    connect_timeout: Duration,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            api_key: None,
            auth_token: None,
            base_url: None,
            max_retries: DEFAULT_MAX_RETRIES,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("api_key", &self.api_key.as_ref().map(|_| "…"))
            .field("auth_token", &self.auth_token.as_ref().map(|_| "…"))
            .field("base_url", &self.base_url)
            .field("max_retries", &self.max_retries)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

impl ClientBuilder {
    /// The defaults, then `ANTHROPIC_API_KEY`, `ANTHROPIC_AUTH_TOKEN` and
    /// `ANTHROPIC_BASE_URL` where set and not empty. Later calls override them.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        Self {
            api_key: get("ANTHROPIC_API_KEY"),
            auth_token: get("ANTHROPIC_AUTH_TOKEN"),
            base_url: get("ANTHROPIC_BASE_URL"),
            ..Self::default()
        }
    }

    /// The API key, sent as `x-api-key` (the default style).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// A token sent as `Authorization: Bearer <token>` (the newer SDKs' style; Satchel
    /// accepts its API keys either way). With both a key and a token set, both are sent,
    /// as the SDKs do.
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Where to send requests, e.g. `http://127.0.0.1:8080` for a local Satchel. A path
    /// prefix is kept (`https://gateway.example/anthropic`).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Retries after a retryable failure (default 2; 0 turns retries off).
    pub fn max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// Time allowed for each attempt of a call; for a streamed results body, the longest
    /// wait between two reads (default 10 minutes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Time allowed to connect (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Builds the client. Fails without a key or token, or with an unusable base URL.
    pub fn build(self) -> Result<Client> {
        let base = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL).trim();
        let base_url = Url::parse(base)
            .map_err(|e| Error::Config(format!("invalid base URL {base:?}: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") || base_url.cannot_be_a_base() {
            return Err(Error::Config(format!(
                "invalid base URL {base:?}: expected http:// or https://"
            )));
        }
        let mut headers = HeaderMap::new();
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        let secret = |value: String, what: &str| {
            let mut value = HeaderValue::from_str(value.trim())
                .map_err(|_| Error::Config(format!("the {what} is not a valid header value")))?;
            value.set_sensitive(true);
            Ok::<_, Error>(value)
        };
        if let Some(key) = self.api_key {
            headers.insert(
                HeaderName::from_static("x-api-key"),
                secret(key, "API key")?,
            );
        }
        if let Some(token) = self.auth_token {
            headers.insert(
                header::AUTHORIZATION,
                secret(format!("Bearer {}", token.trim()), "auth token")?,
            );
        }
        if !headers.contains_key("x-api-key") && !headers.contains_key(header::AUTHORIZATION) {
            return Err(Error::Config(
                "no API key: set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN), or pass one to \
                 the builder"
                    .into(),
            ));
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("satchel-client/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot set up HTTP: {e}")))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base_url,
                headers,
                max_retries: self.max_retries,
                timeout: self.timeout,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_sdk_variables() {
        let env = |name: &str| match name {
            "ANTHROPIC_API_KEY" => Some("sk-1".to_owned()),
            "ANTHROPIC_BASE_URL" => Some("http://127.0.0.1:9/".to_owned()),
            _ => None,
        };
        let client = ClientBuilder::from_lookup(env).build().unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:9/");
        assert_eq!(client.inner.headers["x-api-key"], "sk-1");
        assert!(!client.inner.headers.contains_key("authorization"));
        assert_eq!(client.inner.headers["anthropic-version"], API_VERSION);
        assert_eq!(client.inner.max_retries, 2);

        let token = |name: &str| (name == "ANTHROPIC_AUTH_TOKEN").then(|| "tok".to_owned());
        let client = ClientBuilder::from_lookup(token).build().unwrap();
        assert_eq!(client.base_url(), "https://api.anthropic.com/");
        assert_eq!(client.inner.headers["authorization"], "Bearer tok");
    }

    #[test]
    fn refuses_no_key_and_odd_base_urls() {
        let empty = |name: &str| (name == "ANTHROPIC_API_KEY").then(|| " ".to_owned());
        let e = ClientBuilder::from_lookup(empty).build().unwrap_err();
        assert!(e.to_string().contains("ANTHROPIC_API_KEY"), "{e}");
        for base in ["ftp://x", "not a url", "mailto:a@b"] {
            let e = Client::builder()
                .api_key("k")
                .base_url(base)
                .build()
                .unwrap_err();
            assert!(matches!(e, Error::Config(_)), "{base}: {e}");
        }
    }

    #[test]
    fn urls_keep_the_prefix_and_escape_segments() {
        let client = Client::builder()
            .api_key("k")
            .base_url("https://gw.example/anthropic/")
            .build()
            .unwrap();
        assert_eq!(
            client
                .url(&["v1", "messages", "batches", "a/../b?c"])
                .unwrap()
                .as_str(),
            "https://gw.example/anthropic/v1/messages/batches/a%2F..%2Fb%3Fc"
        );
        let client = Client::builder()
            .api_key("k")
            .base_url("http://h:1")
            .build()
            .unwrap();
        assert_eq!(
            client.url(&["v1", "x"]).unwrap().as_str(),
            "http://h:1/v1/x"
        );
    }
}
