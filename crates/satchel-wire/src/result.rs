//! One line of a batch's results: `{"custom_id", "result": {"type", …}}`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{ErrorResponse, Message};

/// One JSONL line of the results file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchResultLine {
    pub custom_id: String,
    pub result: BatchResult,
}

/// The outcome of one request. `message` stays raw: it is stored and served as it came.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "UntaggedResult")]
pub enum BatchResult {
    Succeeded { message: Box<RawValue> },
    Errored { error: ErrorResponse },
    Canceled,
    Expired,
}

impl BatchResult {
    /// The result's `type`: `succeeded`, `errored`, `canceled` or `expired`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Succeeded { .. } => "succeeded",
            Self::Errored { .. } => "errored",
            Self::Canceled => "canceled",
            Self::Expired => "expired",
        }
    }

    /// The message of a `succeeded` result, parsed; `None` for the other outcomes.
    ///
    /// The message is kept raw in the line (so it can be passed on byte for byte); this
    /// parses it on demand.
    pub fn parse_message(&self) -> Option<Result<Message, serde_json::Error>> {
        match self {
            Self::Succeeded { message } => Some(serde_json::from_str(message.get())),
            _ => None,
        }
    }
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

    #[test]
    fn a_succeeded_message_parses_on_demand() {
        let parsed: BatchResultLine = serde_json::from_str(
            r#"{"custom_id":"a","result":{"type":"succeeded","message":{"id":"msg_1","type":"message","role":"assistant","content":[{"type":"text","text":"hi","citations":null}],"model":"m","stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}}"#,
        )
        .unwrap();
        assert_eq!(parsed.result.kind(), "succeeded");
        let message = parsed.result.parse_message().unwrap().unwrap();
        assert_eq!(message.content, vec![crate::ContentBlock::text("hi")]);
        assert!(BatchResult::Canceled.parse_message().is_none());
    }
}
