//! The error envelope: `{"type":"error","error":{"type","message"},"request_id"}`.

use serde::{Deserialize, Serialize};

/// The `error.type` values the API uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    InvalidRequestError,
    AuthenticationError,
    BillingError,
    PermissionError,
    NotFoundError,
    RequestTooLarge,
    RateLimitError,
    TimeoutError,
    ApiError,
    OverloadedError,
}

impl ErrorType {
    /// The type an `errored` result line says for this error. Result lines are read through
    /// the SDKs' `ErrorObject` union, which is narrower than the API's error types: it has no
    /// `request_too_large` (an upstream's 413 is the request's own fault, so
    /// `invalid_request_error`, as strict validation of the line requires).
    pub fn for_result_line(self) -> Self {
        match self {
            Self::RequestTooLarge => Self::InvalidRequestError,
            other => other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequestError => "invalid_request_error",
            Self::AuthenticationError => "authentication_error",
            Self::BillingError => "billing_error",
            Self::PermissionError => "permission_error",
            Self::NotFoundError => "not_found_error",
            Self::RequestTooLarge => "request_too_large",
            Self::RateLimitError => "rate_limit_error",
            Self::TimeoutError => "timeout_error",
            Self::ApiError => "api_error",
            Self::OverloadedError => "overloaded_error",
        }
    }
}

/// The inner `error` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    #[serde(rename = "type")]
    pub kind: ErrorType,
    pub message: String,
}

/// The whole error body, also used inside `errored` result lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorResponse {
    #[serde(rename = "type")]
    pub kind: ErrorEnvelopeType,
    pub error: ErrorObject,
    pub request_id: Option<String>,
}

impl ErrorResponse {
    pub fn new(kind: ErrorType, message: impl Into<String>, request_id: Option<String>) -> Self {
        Self {
            kind: ErrorEnvelopeType::Error,
            error: ErrorObject {
                kind,
                message: message.into(),
            },
            request_id,
        }
    }
}

/// The constant `"error"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorEnvelopeType {
    #[serde(rename = "error")]
    Error,
}
