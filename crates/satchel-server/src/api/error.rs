//! [`ApiError`]: every way a request can fail, and the one function that maps each to its
//! HTTP status, `error.type` and message.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use satchel_core::BatchError;
use satchel_core::ingest::IngestError;
use satchel_wire::{ErrorType, quote_short};

use crate::http::{MAX_HEAD_BYTES, MAX_HEADERS, MAX_REQUEST_LINE_BYTES};

/// Longest message sent, in characters: a backstop for messages built elsewhere that may
/// quote client input in full (each quote should already be cut by `quote_short`).
const MESSAGE_MAX_CHARS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("x-api-key header is required")]
    MissingKey,
    #[error("invalid x-api-key")]
    UnknownKey,
    #[error("anthropic-version: header is required")]
    MissingVersion,
    /// A browser request (it names an `Origin`) without the SDK's browser header, from an
    /// origin not allowed by configuration.
    #[error("CORS requests must set 'anthropic-dangerous-direct-browser-access' header")]
    CorsHeaderRequired,
    /// The version as received, cut short (see [`ApiError::bad_version`]).
    #[error("anthropic-version: {0:?} is not a valid version; expected a date such as 2023-06-01")]
    BadVersion(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("Request exceeds the maximum size")]
    TooLarge,
    /// A `Content-Encoding` we cannot decode (quoted, cut short).
    #[error(
        "Content-Encoding {0:?} is not supported; send the body as is, or as gzip, deflate or zstd"
    )]
    UnsupportedEncoding(String),
    /// The upload stopped: no byte of the body for this long.
    #[error("The request body stalled: no data arrived for {}", humantime::format_duration(*.0))]
    BodyStalled(std::time::Duration),
    #[error("Not found")]
    UnknownRoute,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error(
        "Request URI is too long: the request line may be at most {} bytes",
        MAX_REQUEST_LINE_BYTES
    )]
    UriTooLong,
    #[error(
        "Request headers are too large: at most {} headers and {} bytes",
        MAX_HEADERS,
        MAX_HEAD_BYTES
    )]
    HeadersTooLarge,
    #[error("Malformed HTTP request: {0}")]
    MalformedRequest(&'static str),
    #[error(transparent)]
    Batch(#[from] BatchError),
}

/// The wire form of an error: status, type and message. The body is rendered (with the
/// request id) by [`super::context::layer`].
#[derive(Debug, Clone)]
pub struct WireError {
    pub status: StatusCode,
    pub kind: ErrorType,
    pub message: String,
}

impl ApiError {
    /// A bad `anthropic-version`, quoting the value cut short.
    pub fn bad_version(received: &str) -> Self {
        Self::BadVersion(quote_short(received))
    }

    /// The one mapping from errors to the wire. Client mistakes are never 409 or 5xx: the
    /// SDKs retry those.
    pub fn to_wire(&self) -> WireError {
        use ErrorType as T;
        let (status, kind) = match self {
            Self::MissingKey | Self::UnknownKey | Self::CorsHeaderRequired => {
                (StatusCode::UNAUTHORIZED, T::AuthenticationError)
            }
            Self::MissingVersion
            | Self::BadVersion(_)
            | Self::InvalidRequest(_)
            | Self::UnsupportedEncoding(_) => (StatusCode::BAD_REQUEST, T::InvalidRequestError),
            Self::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, T::RequestTooLarge),
            Self::BodyStalled(_) => (StatusCode::REQUEST_TIMEOUT, T::TimeoutError),
            Self::UnknownRoute => (StatusCode::NOT_FOUND, T::NotFoundError),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, T::InvalidRequestError),
            Self::UriTooLong => (StatusCode::URI_TOO_LONG, T::InvalidRequestError),
            Self::HeadersTooLarge => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                T::InvalidRequestError,
            ),
            Self::MalformedRequest(_) => (StatusCode::BAD_REQUEST, T::InvalidRequestError),
            Self::Batch(e) => match e {
                BatchError::NotFound(_) | BatchError::NoResults(_) => {
                    (StatusCode::NOT_FOUND, T::NotFoundError)
                }
                BatchError::DeleteInProgress
                | BatchError::RetryNotEnded { .. }
                | BatchError::NothingToRetry(..) => {
                    (StatusCode::BAD_REQUEST, T::InvalidRequestError)
                }
                BatchError::Ingest(
                    IngestError::Invalid(_) | IngestError::NotJson(_) | IngestError::Read(_),
                ) => (StatusCode::BAD_REQUEST, T::InvalidRequestError),
                BatchError::OverLimit(_) => (StatusCode::TOO_MANY_REQUESTS, T::RateLimitError),
                BatchError::Ingest(IngestError::StoreGone) | BatchError::Store(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, T::ApiError)
                }
            },
        };
        let message = if status.is_server_error() {
            // The detail goes to the log, not to the client.
            tracing::error!(error = %self, "internal error");
            "Internal server error".to_owned()
        } else {
            cap_message(self.to_string())
        };
        WireError {
            status,
            kind,
            message,
        }
    }
}

fn cap_message(message: String) -> String {
    match message.char_indices().nth(MESSAGE_MAX_CHARS) {
        None => message,
        Some((cut, _)) => format!("{}…", &message[..cut]),
    }
}

impl ApiError {
    /// How long the client should wait before trying again, for errors that say so (the
    /// `retry-after` header, whole seconds).
    fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Self::Batch(BatchError::OverLimit(over)) => Some(over.retry_after()),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let wire = self.to_wire();
        let mut response = wire.status.into_response();
        if let Some(after) = self.retry_after() {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, after.as_secs().into());
        }
        response.extensions_mut().insert(wire);
        response
    }
}
