//! The built-in emulator: a deterministic fake model, the default backend, and a faithful
//! local test double for code that uses batches.
//!
//! It validates `params` the way the real API does for a batch request (`params.rs`) and
//! answers with a `Message` shaped as the hosted API would shape it for the same params
//! (`compose.rs`): tool calls for forced tools, JSON valid against a structured output's
//! schema (`schema.rs`), a thinking block when thinking is on, else the last user turn echoed
//! back. Usage is counted at 4 characters a token: output tokens from the reply, input tokens
//! from the bytes of `system` and `messages`. Same params, same reply (only ids are fresh).
//!
//! For use as a test double it can also wait a fixed latency per request, fail a share of
//! requests at random with `api_error` or `overloaded_error`, and follow scripted rules per
//! request (`fixtures/`).

mod compose;
mod fixtures;
mod params;
mod schema;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use satchel_wire::{ErrorType, Message};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::backend::{Attempt, Backend, Failure, RequestContext};
pub use fixtures::{FixtureError, Fixtures};
pub use params::Invalid;

/// How the emulator behaves.
#[derive(Debug, Clone, Default)]
pub struct EmulatorConfig {
    /// Time each request takes.
    pub latency: Duration,
    /// Share of requests (0.0–1.0) that fail with an injected `api_error` or
    /// `overloaded_error`, after validation.
    pub error_rate: f64,
    /// A file of scripted replies (see `fixtures/`), read at start and on SIGHUP.
    pub fixtures: Option<PathBuf>,
}

#[derive(Debug, Clone, Default)]
pub struct Emulator {
    config: EmulatorConfig,
    fixtures: Option<Arc<Fixtures>>,
}

impl Emulator {
    /// An emulator without fixtures (whatever `config.fixtures` says).
    pub fn new(config: EmulatorConfig) -> Self {
        Self {
            config,
            fixtures: None,
        }
    }

    /// An emulator with the fixtures `config` names, read now.
    pub fn open(config: EmulatorConfig) -> Result<Self, FixtureError> {
        let fixtures = match &config.fixtures {
            Some(path) => {
                let fixtures = Fixtures::load(path)?;
                tracing::info!(path = %path.display(), rules = fixtures.len(), "emulator fixtures loaded");
                Some(Arc::new(fixtures))
            }
            None => None,
        };
        Ok(Self { config, fixtures })
    }
}

#[async_trait]
impl Backend for Emulator {
    async fn send(&self, params: &str, request: &RequestContext<'_>) -> Attempt {
        let scripted = self
            .fixtures
            .as_ref()
            .and_then(|f| f.script(request.batch, request.custom_id, params));
        let latency = scripted
            .as_ref()
            .and_then(|s| s.latency)
            .unwrap_or(self.config.latency);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        // Validation comes first: no fixture makes invalid params succeed.
        let message = match reply(params) {
            Ok(message) => message,
            Err(Invalid(message)) => {
                return Attempt::Failed(Failure::fatal(ErrorType::InvalidRequestError, message));
            }
        };
        let patch = match scripted {
            Some(scripted) => match scripted.outcome {
                Err(failure) => return Attempt::Failed(failure),
                Ok(patch) => patch.map(|patch| (scripted.line, patch)),
            },
            None => {
                // Injected errors are final: the emulator stands for the API as a batch
                // client sees it, after the API's own retries. Scripted requests get none.
                if self.config.error_rate > 0.0 && fastrand::f64() < self.config.error_rate {
                    return Attempt::Failed(if fastrand::bool() {
                        Failure::fatal(ErrorType::ApiError, "Internal server error")
                    } else {
                        Failure::fatal(ErrorType::OverloadedError, "Overloaded")
                    });
                }
                None
            }
        };
        match finish(&message, patch) {
            Ok(raw) => Attempt::Message(raw),
            Err(problem) => Attempt::Failed(Failure::fatal(ErrorType::ApiError, problem)),
        }
    }

    fn reload(&self) {
        let Some(fixtures) = &self.fixtures else {
            return;
        };
        let path = fixtures.path().display();
        match fixtures.reload() {
            Ok(rules) => tracing::info!(%path, rules, "emulator fixtures reloaded"),
            Err(e) => {
                tracing::warn!(error = %e, "emulator fixtures not reloaded; the rules loaded before stay")
            }
        }
    }
}

/// The reply as sent: the generated message, with a fixture's `message` (from the rule on
/// `line`) merged over it, which must still be a `Message` the SDKs can read.
fn finish(
    message: &Message,
    patch: Option<(usize, Map<String, Value>)>,
) -> Result<Box<RawValue>, String> {
    let Some((line, patch)) = patch else {
        return serde_json::value::to_raw_value(message).map_err(|e| e.to_string());
    };
    let mut value = serde_json::to_value(message).map_err(|e| e.to_string())?;
    fixtures::merge_patch(&mut value, &patch);
    if let Err(e) = serde_json::from_value::<Message>(value.clone()) {
        return Err(format!(
            "the emulator fixture on line {line} makes a reply that is not a Message: {e}"
        ));
    }
    serde_json::value::to_raw_value(&value).map_err(|e| e.to_string())
}

/// Validates `params` (JSON text) and builds the emulator's reply.
pub fn reply(params: &str) -> Result<Message, Invalid> {
    params::parse(params).map(|request| compose::compose(&request))
}

#[cfg(test)]
mod scripted_tests;

#[cfg(test)]
mod tests {
    use satchel_wire::ContentBlock;
    use serde_json::{Value, json};

    use super::*;

    fn raw(json: &str) -> String {
        json.to_owned()
    }

    fn context() -> RequestContext<'static> {
        scripted_tests::context(1, "a")
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

    fn json_of(params: &str) -> Value {
        serde_json::to_value(reply(&raw(params)).unwrap()).unwrap()
    }

    const WEATHER: &str = r#"{"name":"get_weather","description":"Weather","input_schema":{"type":"object","properties":{"city":{"type":"string"},"unit":{"type":"string","enum":["c","f"]},"days":{"type":"integer","minimum":1}},"required":["city","unit"]}}"#;

    #[test]
    fn a_forced_tool_gets_a_tool_use_block_valid_against_its_schema() {
        for choice in [
            r#"{"type":"tool","name":"get_weather"}"#,
            r#"{"type":"any"}"#,
        ] {
            let m = json_of(&format!(
                r#"{{"model":"m","max_tokens":200,"tools":[{WEATHER}],"tool_choice":{choice},"messages":[{{"role":"user","content":"Paris?"}}]}}"#
            ));
            assert_eq!(m["stop_reason"], "tool_use", "{m}");
            let block = &m["content"][0];
            assert_eq!(block["type"], "tool_use");
            assert_eq!(block["name"], "get_weather");
            assert!(block["id"].as_str().unwrap().starts_with("toolu_"));
            assert_eq!(block["input"]["city"], "Paris?");
            assert_eq!(block["input"]["unit"], "c");
            assert_eq!(block["input"]["days"], 1);
            assert!(m["usage"]["output_tokens"].as_u64().unwrap() > 0);
        }
    }

    #[test]
    fn auto_uses_a_tool_the_user_names_and_none_never_does() {
        let with = |choice: &str, said: &str| {
            json_of(&format!(
                r#"{{"model":"m","max_tokens":200,"tools":[{WEATHER}],"tool_choice":{choice},"messages":[{{"role":"user","content":"{said}"}}]}}"#
            ))
        };
        let named = with(r#"{"type":"auto"}"#, "call get_weather for Oslo");
        assert_eq!(named["content"][0]["type"], "tool_use");
        let plain = with(r#"{"type":"auto"}"#, "hello there");
        assert_eq!(plain["content"][0]["type"], "text");
        assert_eq!(plain["stop_reason"], "end_turn");
        let none = with(r#"{"type":"none"}"#, "call get_weather");
        assert_eq!(none["content"][0]["type"], "text");
    }

    #[test]
    fn a_structured_output_is_json_valid_against_its_schema() {
        let schema = r#"{"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer","minimum":18},"tags":{"type":"array","items":{"type":"string"}}},"required":["name","age","tags"],"additionalProperties":false}"#;
        for format in [
            format!(r#""output_config":{{"format":{{"type":"json_schema","schema":{schema}}}}}"#),
            format!(r#""output_format":{{"type":"json_schema","schema":{schema}}}"#),
        ] {
            let m = json_of(&format!(
                r#"{{"model":"m","max_tokens":500,{format},"messages":[{{"role":"user","content":"Ann"}}]}}"#
            ));
            let text = m["content"][0]["text"].as_str().unwrap();
            let parsed: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parsed, json!({"name": "Ann", "age": 18, "tags": ["Ann"]}));
            assert_eq!(m["stop_reason"], "end_turn");
        }
    }

    #[test]
    fn thinking_comes_first_with_a_signature_and_counts_in_max_tokens() {
        let m = json_of(
            r#"{"model":"m","max_tokens":2000,"thinking":{"type":"enabled","budget_tokens":1024},"messages":[{"role":"user","content":"Why is the sky blue?"}]}"#,
        );
        assert_eq!(m["content"][0]["type"], "thinking");
        assert!(!m["content"][0]["thinking"].as_str().unwrap().is_empty());
        assert!(!m["content"][0]["signature"].as_str().unwrap().is_empty());
        assert_eq!(m["content"][1]["text"], "Why is the sky blue?");
        let thought = m["content"][0]["thinking"]
            .as_str()
            .unwrap()
            .chars()
            .count();
        assert_eq!(
            m["usage"]["output_tokens"].as_u64().unwrap(),
            thought.div_ceil(4) as u64 + 5
        );
        let adaptive = json_of(
            r#"{"model":"m","max_tokens":10,"thinking":{"type":"adaptive"},"messages":[{"role":"user","content":"a long question indeed, a long question indeed, a long question indeed"}]}"#,
        );
        assert_eq!(adaptive["content"][0]["type"], "thinking");
        assert!(adaptive["usage"]["output_tokens"].as_u64().unwrap() <= 10);
        assert_eq!(adaptive["stop_reason"], "max_tokens");
    }

    #[test]
    fn a_turn_with_no_text_gets_a_non_empty_reply() {
        let m = json_of(
            r#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"t","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[]}]}]}"#,
        );
        let text = m["content"][0]["text"].as_str().unwrap();
        assert!(!text.is_empty());
        let m = json_of(
            r#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"22 degrees"}]}]}"#,
        );
        assert_eq!(m["content"][0]["text"], "22 degrees");
    }

    #[test]
    fn usage_is_shaped_as_the_api_shapes_it() {
        let m =
            json_of(r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#);
        let usage = m["usage"].as_object().unwrap();
        assert_eq!(usage["inference_geo"], "not_available");
        assert_eq!(usage["service_tier"], "batch");
        assert!(usage["cache_creation"].is_object());
        assert!(!usage.contains_key("server_tool_use"), "{m}");
    }

    #[test]
    fn each_validation_rule_answers_as_the_api_does() {
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        let cases: &[(String, &str)] = &[
            (format!(r#"{{"model":"m","max_tokens":5,"foo_bar":1,{msgs}}}"#), "foo_bar: Extra inputs are not permitted"),
            (format!(r#"{{"model":"m","max_tokens":5,"speed":"fast",{msgs}}}"#), "speed: is not supported in the Message Batches API"),
            (format!(r#"{{"model":7,"max_tokens":5,{msgs}}}"#), "model: Input should be a valid string"),
            (format!(r#"{{"model":"m","max_tokens":5.5,{msgs}}}"#), "max_tokens: Input should be a valid integer"),
            (format!(r#"{{"model":"m","max_tokens":true,{msgs}}}"#), "max_tokens: Input should be a valid integer"),
            (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":""}]}"#.into(), "messages: all messages must have non-empty content except for the optional final assistant message"),
            (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[]}]}"#.into(), "messages: all messages must have non-empty content except for the optional final assistant message"),
            (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"text","text":""}]}]}"#.into(), "messages: text content blocks must be non-empty"),
            (r#"{"model":"m","max_tokens":5,"messages":[{"content":"x"}]}"#.into(), "messages.0.role: Field required"),
            (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user"}]}"#.into(), "messages.0.content: Field required"),
            (r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":7}]}"#.into(), "messages.0.content: Input should be a valid string or list of content blocks"),
            (format!(r#"{{"model":"m","max_tokens":5,"system":[{{"type":"image"}}],{msgs}}}"#), "system.0.type: Input should be 'text'"),
            (format!(r#"{{"model":"m","max_tokens":5,"temperature":1.5,{msgs}}}"#), "temperature: Input should be less than or equal to 1"),
            (format!(r#"{{"model":"m","max_tokens":5,"top_k":-1,{msgs}}}"#), "top_k: Input should be greater than or equal to 0"),
            (format!(r#"{{"model":"m","max_tokens":5,"stop_sequences":"END",{msgs}}}"#), "stop_sequences: Input should be a valid list"),
            (format!(r#"{{"model":"m","max_tokens":5,"tools":[{{"name":"t"}}],{msgs}}}"#), "tools.0.custom.input_schema: Field required"),
            (format!(r#"{{"model":"m","max_tokens":5,"tools":[{WEATHER}],"tool_choice":{{"type":"tool","name":"nope"}},{msgs}}}"#), "tool_choice: Tool 'nope' not found in provided tools"),
            (format!(r#"{{"model":"m","max_tokens":5,"tool_choice":{{"type":"any"}},{msgs}}}"#), "tool_choice: `tool_choice` may only be specified while providing tools."),
            (format!(r#"{{"model":"m","max_tokens":5,"tool_choice":{{"type":"maybe"}},{msgs}}}"#), "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'"),
            (format!(r#"{{"model":"m","max_tokens":5000,"thinking":{{"type":"enabled","budget_tokens":100}},{msgs}}}"#), "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"),
            (format!(r#"{{"model":"m","max_tokens":1024,"thinking":{{"type":"enabled","budget_tokens":1024}},{msgs}}}"#), "`max_tokens` must be greater than `thinking.budget_tokens`"),
            (format!(r#"{{"model":"m","max_tokens":5,"output_config":{{"format":{{"type":"json_schema"}}}},{msgs}}}"#), "output_config.format.schema: Field required"),
            (format!(r#"{{"model":"m","max_tokens":5,"output_format":{{"type":"text","schema":{{}}}},{msgs}}}"#), "output_format.type: Input should be 'json_schema'"),
        ];
        for (params, expected) in cases {
            assert_eq!(&error_of(params), expected, "{params}");
        }
    }

    #[test]
    fn accepts_what_the_api_accepts() {
        let msgs = r#""messages":[{"role":"user","content":"hi"}]"#;
        for params in [
            format!(r#"{{"model":"m","max_tokens":1024.0,{msgs}}}"#),
            format!(r#"{{"model":"m","max_tokens":"1024",{msgs}}}"#),
            format!(r#"{{"model":"m","max_tokens":5,"metadata":{{"user_id":"u"}},"service_tier":"auto","inference_geo":"us","cache_control":{{"type":"ephemeral"}},"container":"c","mcp_servers":[],"context_management":{{}},"top_k":5,"top_p":0.9,"temperature":0,{msgs}}}"#),
            format!(r#"{{"model":"m","max_tokens":5,"tools":[{{"type":"web_search_20250305","name":"web_search"}}],{msgs}}}"#),
            format!(r#"{{"model":"m","max_tokens":5,"system":[{{"type":"text","text":"be brief","cache_control":{{"type":"ephemeral","ttl":"1h"}}}}],{msgs}}}"#),
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"x"},"citations":{"enabled":true}},{"type":"text","text":"summarise"}]}]}"#.into(),
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":""}]}"#.into(),
            format!(r#"{{"model":"m","max_tokens":5,"stream":false,"thinking":{{"type":"disabled"}},{msgs}}}"#),
        ] {
            assert!(reply(&raw(&params)).is_ok(), "{params}: {:?}", reply(&raw(&params)).err());
        }
    }

    #[tokio::test]
    async fn injects_errors_at_the_configured_rate() {
        let always = Emulator::new(EmulatorConfig {
            error_rate: 1.0,
            ..EmulatorConfig::default()
        });
        let params =
            raw(r#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#);
        for _ in 0..20 {
            match always.send(&params, &context()).await {
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
            never.send(&params, &context()).await,
            Attempt::Message(_)
        ));
    }
}
