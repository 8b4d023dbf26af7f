//! Errors: what the API answered, what the connection did, what could not be read.
//!
//! Every error the client returns is an [`Error`]; an error status from the API is an
//! [`ApiError`] inside it, carrying the status, the `error.type`, the message and the
//! `request-id`, which is what a support request (or a bug report against Satchel) needs.

use std::fmt;

use satchel_wire::{ErrorResponse, ErrorType, ProcessingStatus};

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Anything that can go wrong in a call.
///
/// Retryable failures (see [`crate::ClientBuilder::max_retries`]) surface only once the
/// retries are spent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with an error status.
    #[error(transparent)]
    Api(#[from] ApiError),

    /// The request did not complete within the timeout.
    #[error("request timed out: {message}")]
    Timeout {
        /// What timed out, with its causes.
        message: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// The server could not be reached, or the connection failed or broke off mid-body.
    #[error("connection error: {message}")]
    Connection {
        /// What failed, with its causes (e.g. "Connection refused").
        message: String,
        /// The underlying error.
        #[source]
        source: reqwest::Error,
    },

    /// A success response whose body is not what the API sends.
    #[error("unexpected response to {operation}: {source}{}", RequestIdSuffix(request_id.as_deref()))]
    Decode {
        /// The call: `create`, `retrieve`, `list`, `cancel` or `delete`.
        operation: &'static str,
        /// The response's `request-id`.
        request_id: Option<String>,
        /// What did not parse.
        #[source]
        source: serde_json::Error,
    },

    /// The server's answer breaks the API's contract in some other way (a `results_url`
    /// that is not a URL, say).
    #[error("unexpected response: {0}")]
    Protocol(String),

    /// One line of a results file that is not a result line. The results stream goes on
    /// after it: the lines around it are still delivered.
    #[error("results line {line}: {reason}")]
    ResultLine {
        /// The line's number in the file, from 1.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// A results line longer than the client accepts; the stream ends here.
    #[error("results line {line} is longer than {limit} bytes")]
    ResultLineTooLong {
        /// The line's number in the file, from 1.
        line: u64,
        /// [`crate::MAX_LINE_BYTES`].
        limit: usize,
    },

    /// Results were asked for a batch that has none yet (`results_url` is null until the
    /// batch has ended).
    #[error(
        "Message Batch {id} has no results yet: it is {}; results are available once it has ended",
        processing_status.as_str()
    )]
    ResultsNotReady {
        /// The batch.
        id: String,
        /// Where it is now: `in_progress` or `canceling`.
        processing_status: ProcessingStatus,
    },

    /// The client is misconfigured (no key, an unusable base URL).
    #[error("{0}")]
    Config(String),

    /// A request body could not be serialised.
    #[error("cannot serialise the request body: {0}")]
    Encode(#[source] serde_json::Error),
}

impl Error {
    /// The HTTP status, when the API answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(e) => Some(e.status),
            _ => None,
        }
    }

    /// The `request-id` of the response that caused this error, when there was one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Self::Api(e) => e.request_id.as_deref(),
            Self::Decode { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }

    /// Wraps a transport error, telling timeouts from the rest and naming the root cause
    /// (reqwest's own message is only "error sending request").
    pub(crate) fn transport(source: reqwest::Error) -> Self {
        let message = chain(&source);
        if source.is_timeout() {
            Self::Timeout { message, source }
        } else {
            Self::Connection { message, source }
        }
    }
}

/// An error status from the API, with the parts of its `{"type":"error","error":{…}}` body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {}: {message}{}", error_type.as_deref().unwrap_or("error"), RequestIdSuffix(request_id.as_deref()))]
pub struct ApiError {
    /// The HTTP status, e.g. 404.
    pub status: u16,
    /// `error.type` as sent (`not_found_error`, …); `None` when the body was not the API's
    /// error envelope (a proxy's page, say).
    pub error_type: Option<String>,
    /// `error.message`, or the start of the body when it was not the envelope.
    pub message: String,
    /// The `request-id` header (or the body's `request_id`).
    pub request_id: Option<String>,
}

impl ApiError {
    /// `error.type` as a known [`ErrorType`], if it is one.
    pub fn kind(&self) -> Option<ErrorType> {
        let name = self.error_type.as_deref()?;
        serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
    }

    /// Builds the error from a response's status, `request-id` header and body.
    pub(crate) fn from_parts(status: u16, header_request_id: Option<String>, body: &[u8]) -> Self {
        /// The envelope without insisting on a known `error.type`, so new types still read.
        #[derive(serde::Deserialize)]
        struct Envelope {
            error: Inner,
            request_id: Option<String>,
        }
        #[derive(serde::Deserialize)]
        struct Inner {
            #[serde(rename = "type")]
            kind: String,
            message: String,
        }
        match serde_json::from_slice::<Envelope>(body) {
            Ok(envelope) => Self {
                status,
                error_type: Some(envelope.error.kind),
                message: envelope.error.message,
                request_id: header_request_id.or(envelope.request_id),
            },
            Err(_) => {
                let text = String::from_utf8_lossy(body);
                let text = text.trim();
                let message = if text.is_empty() {
                    "(empty body)".to_owned()
                } else {
                    // A whole HTML error page is no use in one line.
                    let mut end = text.len().min(300);
                    while !text.is_char_boundary(end) {
                        end -= 1;
                    }
                    text[..end].replace(['\r', '\n'], " ")
                };
                Self {
                    status,
                    error_type: None,
                    message,
                    request_id: header_request_id,
                }
            }
        }
    }
}

impl From<ErrorResponse> for ApiError {
    /// The error of an `errored` result line, seen as an API error without a status.
    fn from(response: ErrorResponse) -> Self {
        Self {
            status: 0,
            error_type: Some(response.error.kind.as_str().to_owned()),
            message: response.error.message,
            request_id: response.request_id,
        }
    }
}

struct RequestIdSuffix<'a>(Option<&'a str>);

impl fmt::Display for RequestIdSuffix<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, " (request-id: {id})"),
            None => Ok(()),
        }
    }
}

/// The error and its causes on one line, without repeats.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut next = error.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_envelope_and_prefers_the_header_request_id() {
        let body = br#"{"type":"error","error":{"type":"not_found_error","message":"Message Batch x not found."},"request_id":"req_body"}"#;
        let e = ApiError::from_parts(404, Some("req_header".into()), body);
        assert_eq!(e.kind(), Some(ErrorType::NotFoundError));
        assert_eq!(
            e.to_string(),
            "404 not_found_error: Message Batch x not found. (request-id: req_header)"
        );
        let e = ApiError::from_parts(404, None, body);
        assert_eq!(e.request_id.as_deref(), Some("req_body"));
    }

    #[test]
    fn keeps_unknown_types_and_non_json_bodies() {
        let e = ApiError::from_parts(
            418,
            None,
            br#"{"type":"error","error":{"type":"teapot_error","message":"short and stout"}}"#,
        );
        assert_eq!(e.error_type.as_deref(), Some("teapot_error"));
        assert_eq!(e.kind(), None);
        let e = ApiError::from_parts(502, None, b"<html>\n<body>Bad gateway</body></html>");
        assert_eq!(e.error_type, None);
        assert_eq!(
            e.to_string(),
            "502 error: <html> <body>Bad gateway</body></html>"
        );
        let e = ApiError::from_parts(503, None, b"");
        assert_eq!(e.message, "(empty body)");
    }
}
