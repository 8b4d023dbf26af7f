//! The seam between the dispatcher and whatever answers a request: a model server behind an
//! HTTP API, or the emulator. A backend makes one attempt at one request's `params` and says
//! how it went; it knows nothing of batches, and nothing of retries or limits (the dispatcher
//! applies those, per route, see [`crate::routing`]).

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

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Makes one attempt at a request. Never panics on bad `params`: they become a failure.
    /// `headers` are its batch's create-call headers that go upstream (see
    /// [`crate::forward`]); a backend that has no use for them ignores them.
    async fn send(&self, params: &RawValue, headers: &UpstreamHeaders) -> Attempt;
}
