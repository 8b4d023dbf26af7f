//! The seam between the dispatcher and whatever answers a request: a model server behind an
//! HTTP API, or the emulator. A backend makes one attempt at one request's `params` and says
//! how it went; it knows nothing of batches beyond the [`RequestContext`] it is handed, and
//! nothing of retries or limits (the dispatcher applies those, per route, see
//! [`crate::routing`]).

use std::time::Duration;

use async_trait::async_trait;
use satchel_wire::ErrorType;

use crate::forward::UpstreamHeaders;
use serde_json::value::RawValue;

/// How one attempt went.
#[derive(Debug)]
pub enum Attempt {
    /// The `Message` the model returned, as bytes, stored and served unchanged.
    Message(Box<RawValue>),
    /// The attempt failed; [`Failure::retry`] says whether another may succeed.
    Failed(Failure),
}

/// A failed attempt, with what the errored line would say if it is the last.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub kind: ErrorType,
    pub message: String,
    pub retry: Retry,
}

/// Whether a failure is worth another attempt, and what the upstream asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Retry {
    /// Deterministic (a 4xx other than 408/409/429, bad params): never retried.
    Never,
    /// Transient (5xx, timeout, connection error, malformed reply).
    Transient { after: Option<Duration> },
    /// The upstream is saturated (429, 529): retried, and the route's concurrency backs off.
    Throttled { after: Option<Duration> },
    /// The upstream could not be reached or said it is down (connection refused or failed,
    /// 502, 503, 504): the route failed, not the request. It costs the request none of its
    /// retries; the route pauses and probes until the upstream is back (see
    /// [`crate::limits::Breaker`]).
    Unreachable { after: Option<Duration> },
}

impl Failure {
    /// A failure that no retry can fix.
    pub fn fatal(kind: ErrorType, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry: Retry::Never,
        }
    }

    pub fn transient(kind: ErrorType, message: impl Into<String>, after: Option<Duration>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry: Retry::Transient { after },
        }
    }

    pub fn throttled(kind: ErrorType, message: impl Into<String>, after: Option<Duration>) -> Self {
        Self {
            kind,
            message: message.into(),
            retry: Retry::Throttled { after },
        }
    }

    pub fn unreachable(
        kind: ErrorType,
        message: impl Into<String>,
        after: Option<Duration>,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            retry: Retry::Unreachable { after },
        }
    }

    pub fn is_retryable(&self) -> bool {
        !matches!(self.retry, Retry::Never)
    }

    /// A failure of type `kind` classified as an upstream's answer of that type is (see
    /// `satchel-upstream`'s `status_failure`, which classifies by status): `rate_limit_error`
    /// (429) and `overloaded_error` (529) are throttled, `api_error` (500) and
    /// `timeout_error` (408) transient, every other type final. For failures made up rather
    /// than received (the emulator's fixtures), so they are retried as a real one would be.
    pub fn as_upstream_would(kind: ErrorType, message: impl Into<String>) -> Self {
        match kind {
            ErrorType::RateLimitError | ErrorType::OverloadedError => {
                Self::throttled(kind, message, None)
            }
            ErrorType::ApiError | ErrorType::TimeoutError => Self::transient(kind, message, None),
            ErrorType::InvalidRequestError
            | ErrorType::AuthenticationError
            | ErrorType::BillingError
            | ErrorType::PermissionError
            | ErrorType::NotFoundError
            | ErrorType::RequestTooLarge => Self::fatal(kind, message),
        }
    }

    /// The delay the upstream asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.retry {
            Retry::Never => None,
            Retry::Transient { after }
            | Retry::Throttled { after }
            | Retry::Unreachable { after } => after,
        }
    }
}

/// What a backend is told about the request it attempts, besides its `params`.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext<'a> {
    /// The store's key of the request's batch: opaque, the same for every request and
    /// attempt of one batch. Lets a backend tell attempts of the same request apart from
    /// a request of another batch with the same `custom_id` (the emulator's fixtures count
    /// attempts with it).
    pub batch: i64,
    pub custom_id: &'a str,
    /// The batch's create-call headers that go upstream (see [`crate::forward`]).
    pub headers: &'a UpstreamHeaders,
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Makes one attempt at a request whose `params` are the JSON text received at create
    /// ([`ClaimedRequest::params`](crate::model::ClaimedRequest::params)). Never panics on bad
    /// `params`: they become a failure. A backend uses of `request` what it needs (the HTTP
    /// backends send its headers).
    async fn send(&self, params: &str, request: &RequestContext<'_>) -> Attempt;

    /// Re-reads whatever the backend reads from files (on SIGHUP). A reload that fails keeps
    /// what was loaded before and says why in the log. Most backends read nothing.
    fn reload(&self) {}
}
