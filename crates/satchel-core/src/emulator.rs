//! The built-in emulator: a deterministic fake model, the default backend.
//!
//! It validates `params` the way the real API does for a batch request and answers with a
//! real-shaped `Message`: the text of the last user turn echoed back, trimmed to `max_tokens`
//! at 4 characters a token (then `stop_reason: "max_tokens"`), cut at the first of the
//! `stop_sequences` it contains (`"stop_sequence"`), else `"end_turn"`. Usage is counted the
//! same way: output tokens from the reply's characters, input tokens from the bytes of
//! `system` and `messages`. Same params, same reply (only the message id is fresh).
//!
//! For use as a test double it can also wait a fixed latency per request and fail a share of
//! requests at random with `api_error` or `overloaded_error`.

use std::borrow::Cow;
use std::time::Duration;

use async_trait::async_trait;
use satchel_wire::{ContentBlock, ErrorType, Message, Usage, ids};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::backend::{Attempt, Backend, Failure};
use crate::forward::UpstreamHeaders;

/// Characters per token, for trimming and usage.
const CHARS_PER_TOKEN: usize = 4;

/// How the emulator behaves.
#[derive(Debug, Clone, Default)]
pub struct EmulatorConfig {
    /// Time each request takes.
    pub latency: Duration,
    /// Share of requests (0.0–1.0) that fail with an injected `api_error` or
    /// `overloaded_error`, after validation.
    pub error_rate: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Emulator {
    config: EmulatorConfig,
}

impl Emulator {
    pub fn new(config: EmulatorConfig) -> Self {
        Self { config }
    }
}

#[async_trait]
impl Backend for Emulator {
    async fn send(&self, params: &RawValue, _headers: &UpstreamHeaders) -> Attempt {
        if !self.config.latency.is_zero() {
            tokio::time::sleep(self.config.latency).await;
        }
        let message = match reply(params) {
            Ok(message) => message,
            Err(Invalid(message)) => {
                return Attempt::Failed(Failure::fatal(ErrorType::InvalidRequestError, message));
            }
        };
        // Injected errors are final: the emulator stands for the API as a batch client sees
        // it, after the API's own retries.
        if self.config.error_rate > 0.0 && fastrand::f64() < self.config.error_rate {
            return Attempt::Failed(if fastrand::bool() {
                Failure::fatal(ErrorType::ApiError, "Internal server error")
            } else {
                Failure::fatal(ErrorType::OverloadedError, "Overloaded")
            });
        }
        match serde_json::value::to_raw_value(&message) {
            Ok(raw) => Attempt::Message(raw),
            Err(e) => Attempt::Failed(Failure::fatal(ErrorType::ApiError, e.to_string())),
        }
    }
}

/// A `params` problem, worded as the API words it.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(message.into()))
}

/// The fields the emulator reads; everything else in `params` is accepted and ignored.
#[derive(Deserialize)]
struct Params<'a> {
    #[serde(borrow)]
    model: Option<&'a RawValue>,
    #[serde(borrow)]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<&'a RawValue>,
    #[serde(borrow)]
    system: Option<&'a RawValue>,
    #[serde(borrow)]
    stream: Option<&'a RawValue>,
    #[serde(borrow)]
    stop_sequences: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Turn<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

/// Validates `params` and builds the emulator's reply.
pub fn reply(params: &RawValue) -> Result<Message, Invalid> {
    let Ok(p) = serde_json::from_str::<Params<'_>>(params.get()) else {
        return invalid("Input should be a valid dictionary");
    };
    if p.stream.is_some_and(|s| s.get() == "true") {
        return invalid("\"stream=True\" is not supported in the Message Batches API");
    }
    let Some(model) = p.model else {
        return invalid("model: Field required");
    };
    let Ok(model) = serde_json::from_str::<String>(model.get()) else {
        return invalid("model: Input should be a valid string");
    };
    let Some(max_tokens) = p.max_tokens else {
        return invalid("max_tokens: Field required");
    };
    let Ok(max_tokens) = serde_json::from_str::<i64>(max_tokens.get()) else {
        return invalid("max_tokens: Input should be a valid integer");
    };
    if max_tokens < 1 {
        return invalid("max_tokens: must be greater than or equal to 1");
    }
    let Some(messages_raw) = p.messages else {
        return invalid("messages: Field required");
    };
    let Ok(turns) = serde_json::from_str::<Vec<Turn<'_>>>(messages_raw.get()) else {
        return invalid("messages: Input should be a valid list");
    };
    if turns.is_empty() {
        return invalid("messages: List should have at least 1 item after validation, not 0");
    }
    // Every turn is checked; only the last user turn's text is extracted.
    let mut last_user = None;
    for (i, turn) in turns.iter().enumerate() {
        match turn.role.as_deref() {
            Some("user") | Some("assistant") => {}
            Some(_) => {
                return invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                ));
            }
            None => return invalid(format!("messages.{i}.role: Field required")),
        }
        let Some(content) = turn.content else {
            return invalid(format!("messages.{i}.content: Field required"));
        };
        if !is_text_content(content) {
            return invalid(format!(
                "messages.{i}.content: Input should be a valid string or list of content blocks"
            ));
        }
        if turn.role.as_deref() == Some("user") {
            last_user = Some(content);
        }
    }
    let last_user_text = last_user.and_then(text_of).unwrap_or_default();
    let stop_sequences: Vec<String> = match p.stop_sequences {
        Some(raw) => match serde_json::from_str(raw.get()) {
            Ok(list) => list,
            Err(_) => return invalid("stop_sequences: Input should be a valid list of strings"),
        },
        None => Vec::new(),
    };

    let max_chars = usize::try_from(max_tokens)
        .unwrap_or(usize::MAX)
        .saturating_mul(CHARS_PER_TOKEN);
    let (text, stop_reason, stop_sequence) = compose(&last_user_text, max_chars, &stop_sequences);
    let input_bytes = messages_raw.get().len() + p.system.map_or(0, |s| s.get().len());
    Ok(Message {
        id: ids::new_message_id(),
        kind: "message".into(),
        role: "assistant".into(),
        usage: Usage::batch(tokens(input_bytes).max(1), tokens(text.chars().count())),
        content: vec![ContentBlock::text(text)],
        model,
        stop_reason: Some(stop_reason.into()),
        stop_sequence,
    })
}

fn tokens(chars: usize) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN) as u64
}

/// Whether a turn's content is a string or a list of content blocks. A string needs no
/// parsing: `content` is valid JSON already, so a leading quote makes it a string.
fn is_text_content(content: &RawValue) -> bool {
    content.get().starts_with('"') || serde_json::from_str::<Vec<Block<'_>>>(content.get()).is_ok()
}

/// The text of a turn's content: a string, or the `text` blocks of a list joined by newlines.
fn text_of(content: &RawValue) -> Option<String> {
    if let Ok(text) = serde_json::from_str::<Cow<'_, str>>(content.get()) {
        return Some(text.into_owned());
    }
    let blocks = serde_json::from_str::<Vec<Block<'_>>>(content.get()).ok()?;
    let texts: Vec<&str> = blocks
        .iter()
        .filter(|b| b.kind.as_deref() == Some("text"))
        .filter_map(|b| b.text.as_deref())
        .collect();
    Some(texts.join("\n"))
}

/// The reply text and why it stopped.
fn compose(
    source: &str,
    max_chars: usize,
    stop_sequences: &[String],
) -> (String, &'static str, Option<String>) {
    let first_stop = stop_sequences
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| source.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at);
    let (candidate, stop) = match first_stop {
        Some((at, seq)) => (&source[..at], Some(seq.clone())),
        None => (source, None),
    };
    // Longer than `max_chars` characters iff there is a character at that index: cut there.
    if let Some((cut, _)) = candidate.char_indices().nth(max_chars) {
        return (candidate[..cut].to_owned(), "max_tokens", None);
    }
    match stop {
        Some(seq) => (candidate.to_owned(), "stop_sequence", Some(seq)),
        None => (candidate.to_owned(), "end_turn", None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn error_of(json: &str) -> String {
        reply(&raw(json)).unwrap_err().0
    }

    #[test]
    fn echoes_the_last_user_turn_deterministically() {
        let params = r#"{"model":"claude-x","max_tokens":100,"system":"be brief","messages":[
            {"role":"user","content":"first"},{"role":"assistant","content":"ok"},
            {"role":"user","content":[{"type":"text","text":"Hello"},{"type":"image","source":{}},{"type":"text","text":"world"}]}]}"#;
        let a = reply(&raw(params)).unwrap();
        let b = reply(&raw(params)).unwrap();
        assert_eq!(a.content, vec![ContentBlock::text("Hello\nworld")]);
        assert_eq!(a.model, "claude-x");
        assert_eq!(a.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(a.usage.output_tokens, 3);
        assert_eq!((a.content, a.usage), (b.content, b.usage));
        assert_ne!(a.id, b.id);
    }

    #[test]
    fn trims_to_max_tokens() {
        let m = reply(&raw(
            r#"{"model":"m","max_tokens":2,"messages":[{"role":"user","content":"abcdefghijkl"}]}"#,
        ))
        .unwrap();
        assert_eq!(m.content, vec![ContentBlock::text("abcdefgh")]);
        assert_eq!(m.stop_reason.as_deref(), Some("max_tokens"));
        assert_eq!(m.usage.output_tokens, 2);
        let m = reply(&raw(
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"héllo wörld"}]}"#,
        ))
        .unwrap();
        assert_eq!(m.content, vec![ContentBlock::text("héll")]);
        let m = reply(&raw(
            r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"héll"}]}"#,
        ))
        .unwrap();
        assert_eq!(m.content, vec![ContentBlock::text("héll")]);
        assert_eq!(m.stop_reason.as_deref(), Some("end_turn"));
    }

    #[test]
    fn stops_at_a_stop_sequence() {
        let m = reply(&raw(r#"{"model":"m","max_tokens":50,"stop_sequences":["END"],"messages":[{"role":"user","content":"one END two"}]}"#)).unwrap();
        assert_eq!(m.content, vec![ContentBlock::text("one ")]);
        assert_eq!(m.stop_reason.as_deref(), Some("stop_sequence"));
        assert_eq!(m.stop_sequence.as_deref(), Some("END"));
    }

    #[test]
    fn validates_like_the_api() {
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        assert_eq!(
            error_of(&format!(r#"{{"max_tokens":5,{msgs}}}"#)),
            "model: Field required"
        );
        assert_eq!(
            error_of(&format!(r#"{{"model":"m",{msgs}}}"#)),
            "max_tokens: Field required"
        );
        assert_eq!(
            error_of(r#"{"model":"m","max_tokens":5}"#),
            "messages: Field required"
        );
        assert_eq!(
            error_of(&format!(r#"{{"model":"m","max_tokens":0,{msgs}}}"#)),
            "max_tokens: must be greater than or equal to 1"
        );
        assert_eq!(
            error_of(&format!(r#"{{"model":"m","max_tokens":"x",{msgs}}}"#)),
            "max_tokens: Input should be a valid integer"
        );
        assert_eq!(
            error_of(&format!(
                r#"{{"model":"m","max_tokens":5,"stream":true,{msgs}}}"#
            )),
            "\"stream=True\" is not supported in the Message Batches API"
        );
        assert_eq!(
            error_of(r#"{"model":"m","max_tokens":5,"messages":[]}"#),
            "messages: List should have at least 1 item after validation, not 0"
        );
        assert_eq!(
            error_of(r#"{"model":"m","max_tokens":5,"messages":[{"role":"bot","content":"x"}]}"#),
            "messages.0.role: Input should be 'user' or 'assistant'"
        );
        assert!(
            reply(&raw(&format!(
                r#"{{"model":"m","max_tokens":5,"stream":false,{msgs}}}"#
            )))
            .is_ok()
        );
    }

    #[tokio::test]
    async fn injects_errors_at_the_configured_rate() {
        let always = Emulator::new(EmulatorConfig {
            latency: Duration::ZERO,
            error_rate: 1.0,
        });
        let params =
            raw(r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#);
        for _ in 0..20 {
            match always.send(&params, &UpstreamHeaders::default()).await {
                Attempt::Failed(failure) => {
                    assert!(matches!(
                        failure.kind,
                        ErrorType::ApiError | ErrorType::OverloadedError
                    ));
                }
                Attempt::Message(_) => panic!("error rate 1.0 must always fail"),
            }
        }
        let never = Emulator::default();
        assert!(matches!(
            never.send(&params, &UpstreamHeaders::default()).await,
            Attempt::Message(_)
        ));
    }
}
