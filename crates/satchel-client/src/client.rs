//! The [`Client`]: configuration and authentication, over the transport that sends and
//! retries every call ([`crate::transport`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::batches::Messages;
use crate::error::{Error, Result};
use crate::transport::Transport;

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
    inner: Arc<Transport>,
}

impl fmt::Debug for Client {
    // Never prints the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
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
        Messages::new(&self.inner)
    }

    /// The base URL requests go to.
    pub fn base_url(&self) -> &str {
        self.inner.base_url.as_str()
    }
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
            inner: Arc::new(Transport {
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
                .inner
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
            client.inner.url(&["v1", "x"]).unwrap().as_str(),
            "http://h:1/v1/x"
        );
    }
}
