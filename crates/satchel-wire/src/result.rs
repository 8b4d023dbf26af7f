//! One line of a batch's results: `{"custom_id", "result": {"type", …}}`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::ErrorResponse;

/// One JSONL line of the results file.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResultLine {
    pub custom_id: String,
    pub result: BatchResult,
}

/// The outcome of one request. `message` stays raw: it is stored and served as it came.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "UntaggedResult")]
pub enum BatchResult {
    Succeeded { message: Box<RawValue> },
    Errored { error: ErrorResponse },
    Canceled,
    Expired,
}

/// How a result reads before its `type` is looked at. serde cannot put a `RawValue` inside an
/// internally tagged enum (it buffers the content first), so deserialising goes through this
/// plain struct.
#[derive(Deserialize)]
struct UntaggedResult {
    #[serde(rename = "type")]
    kind: String,
    message: Option<Box<RawValue>>,
    error: Option<ErrorResponse>,
}

impl TryFrom<UntaggedResult> for BatchResult {
    type Error = String;

    fn try_from(raw: UntaggedResult) -> Result<Self, Self::Error> {
        match (raw.kind.as_str(), raw.message, raw.error) {
            ("succeeded", Some(message), _) => Ok(Self::Succeeded { message }),
            ("errored", _, Some(error)) => Ok(Self::Errored { error }),
            ("canceled", _, _) => Ok(Self::Canceled),
            ("expired", _, _) => Ok(Self::Expired),
            (kind, _, _) => Err(format!("unknown or incomplete result of type `{kind}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorType;

    #[test]
    fn lines_have_the_documented_shapes() {
        let line = BatchResultLine {
            custom_id: "c".into(),
            result: BatchResult::Canceled,
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"custom_id":"c","result":{"type":"canceled"}}"#
        );
        let line = BatchResultLine {
            custom_id: "b".into(),
            result: BatchResult::Errored {
                error: ErrorResponse::new(
                    ErrorType::InvalidRequestError,
                    "max_tokens: Field required",
                    None,
                ),
            },
        };
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"custom_id":"b","result":{"type":"errored","error":{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"},"request_id":null}}}"#
        );
        let parsed: BatchResultLine = serde_json::from_str(
            r#"{"custom_id":"a","result":{"type":"succeeded","message":{"id":"msg_1"}}}"#,
        )
        .unwrap();
        match parsed.result {
            BatchResult::Succeeded { message } => assert_eq!(message.get(), r#"{"id":"msg_1"}"#),
            other => panic!("unexpected {other:?}"),
        }
    }
}
