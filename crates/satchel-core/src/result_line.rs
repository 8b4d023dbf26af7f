//! The final JSONL lines, serialised once, when a request settles.
//!
//! `custom_id`s are validated at ingest (`^[a-zA-Z0-9_-]{1,64}$`), so they never need escaping;
//! they still go through serde here so that the line is valid JSON by construction.

use satchel_wire::{BatchResult, BatchResultLine, ErrorResponse, ErrorType};
use serde_json::value::RawValue;

fn serialise(custom_id: &str, result: BatchResult) -> Vec<u8> {
    let line = BatchResultLine {
        custom_id: custom_id.to_owned(),
        result,
    };
    match serde_json::to_vec(&line) {
        Ok(bytes) => bytes,
        Err(error) => unserialisable(custom_id, &error),
    }
}

/// The line of a result that could not be serialised. serde_json cannot fail on these types
/// (strings and enums, no maps with non-string keys, no foreign `Serialize`); were it ever to,
/// the failure is logged and the request still ends with one valid line saying so, never an
/// empty one. Built from fixed text: `custom_id`s are validated at ingest and need no
/// escaping (as [`terminal_line_parts`] relies on too).
fn unserialisable(custom_id: &str, error: &serde_json::Error) -> Vec<u8> {
    tracing::error!(custom_id, %error, "a result line could not be serialised");
    format!(
        r#"{{"custom_id":"{custom_id}","result":{{"type":"errored","error":{{"type":"error","error":{{"type":"api_error","message":"the result could not be serialised"}},"request_id":null}}}}}}"#
    )
    .into_bytes()
}

/// `custom_id` as a JSON string.
fn quoted(custom_id: &str) -> Vec<u8> {
    match serde_json::to_vec(custom_id) {
        Ok(bytes) => bytes,
        Err(error) => {
            // As in [`unserialisable`]: cannot happen for a string, loud if it ever does.
            tracing::error!(custom_id, %error, "a custom_id could not be serialised");
            format!("\"{custom_id}\"").into_bytes()
        }
    }
}

/// `{"custom_id":…,"result":{"type":"succeeded","message":…}}`, with the message bytes as given.
pub fn succeeded(custom_id: &str, message: &RawValue) -> Vec<u8> {
    let mut line = Vec::with_capacity(message.get().len() + custom_id.len() + 64);
    line.extend_from_slice(br#"{"custom_id":"#);
    line.extend_from_slice(&quoted(custom_id));
    line.extend_from_slice(br#","result":{"type":"succeeded","message":"#);
    line.extend_from_slice(message.get().as_bytes());
    line.extend_from_slice(b"}}");
    line
}

/// `{"custom_id":…,"result":{"type":"errored","error":{…}}}`, with `kind` as result lines
/// may say it ([`ErrorType::for_result_line`]).
pub fn errored(custom_id: &str, kind: ErrorType, message: &str) -> Vec<u8> {
    serialise(
        custom_id,
        BatchResult::Errored {
            error: ErrorResponse::new(kind.for_result_line(), message, None),
        },
    )
}

/// `{"custom_id":…,"result":{"type":"canceled"}}`.
pub fn canceled(custom_id: &str) -> Vec<u8> {
    serialise(custom_id, BatchResult::Canceled)
}

/// `{"custom_id":…,"result":{"type":"expired"}}`.
pub fn expired(custom_id: &str) -> Vec<u8> {
    serialise(custom_id, BatchResult::Expired)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeded_embeds_the_message_unchanged_and_parses() {
        let message = RawValue::from_string(r#"{"id":"msg_1", "content":[]}"#.into()).unwrap();
        let line = succeeded("a", &message);
        assert_eq!(
            std::str::from_utf8(&line).unwrap(),
            r#"{"custom_id":"a","result":{"type":"succeeded","message":{"id":"msg_1", "content":[]}}}"#
        );
        let parsed: BatchResultLine = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed.custom_id, "a");
    }

    #[test]
    fn errored_lines_say_only_the_sdks_error_object_types() {
        // The members of `ErrorObject` in the Python SDK (types/shared/error_object.py).
        const UNION: [&str; 9] = [
            "invalid_request_error",
            "authentication_error",
            "billing_error",
            "permission_error",
            "not_found_error",
            "rate_limit_error",
            "timeout_error",
            "api_error",
            "overloaded_error",
        ];
        let all = [
            ErrorType::InvalidRequestError,
            ErrorType::AuthenticationError,
            ErrorType::BillingError,
            ErrorType::PermissionError,
            ErrorType::NotFoundError,
            ErrorType::RequestTooLarge,
            ErrorType::RateLimitError,
            ErrorType::TimeoutError,
            ErrorType::ApiError,
            ErrorType::OverloadedError,
        ];
        for kind in all {
            let line: serde_json::Value =
                serde_json::from_slice(&errored("e", kind, "why")).unwrap();
            let said = line["result"]["error"]["error"]["type"].as_str().unwrap();
            assert!(UNION.contains(&said), "{kind:?} became {said}");
        }
        let line = String::from_utf8(errored("e", ErrorType::RequestTooLarge, "413")).unwrap();
        assert!(line.contains(r#""type":"invalid_request_error""#), "{line}");
    }

    #[test]
    fn a_line_that_cannot_be_serialised_is_an_errored_line_not_an_empty_one() {
        let error = serde_json::from_str::<u8>("x").unwrap_err();
        let line = unserialisable("req-1", &error);
        let parsed: BatchResultLine = serde_json::from_slice(&line).unwrap();
        assert_eq!(parsed.custom_id, "req-1");
        let BatchResult::Errored { error } = parsed.result else {
            panic!("{}", String::from_utf8_lossy(&line))
        };
        assert_eq!(error.error.kind, ErrorType::ApiError);
        assert_eq!(error.error.message, "the result could not be serialised");
        assert_eq!(
            line,
            errored(
                "req-1",
                ErrorType::ApiError,
                "the result could not be serialised"
            ),
            "the same shape as every errored line"
        );
        assert_eq!(quoted("req-1"), br#""req-1""#);
    }

    #[test]
    fn terminal_lines() {
        assert_eq!(
            canceled("c"),
            br#"{"custom_id":"c","result":{"type":"canceled"}}"#
        );
        assert_eq!(
            expired("d"),
            br#"{"custom_id":"d","result":{"type":"expired"}}"#
        );
    }
}

/// The ends of a `canceled` or `expired` line around the `custom_id`, for engines that build
/// those lines in bulk inside the database: `prefix + custom_id + suffix` is the whole line.
/// Valid because `custom_id`s never need JSON escaping.
pub fn terminal_line_parts(kind: TerminalKind) -> (&'static str, &'static str) {
    match kind {
        TerminalKind::Canceled => (r#"{"custom_id":""#, r#"","result":{"type":"canceled"}}"#),
        TerminalKind::Expired => (r#"{"custom_id":""#, r#"","result":{"type":"expired"}}"#),
    }
}

/// Requests that end without running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminalKind {
    Canceled,
    Expired,
}

#[cfg(test)]
mod parts_tests {
    use super::*;

    #[test]
    fn parts_build_the_same_line_as_serde() {
        for (kind, line) in [
            (TerminalKind::Canceled, canceled("x-1")),
            (TerminalKind::Expired, expired("x-1")),
        ] {
            let (prefix, suffix) = terminal_line_parts(kind);
            assert_eq!(format!("{prefix}x-1{suffix}").into_bytes(), line);
        }
    }
}
