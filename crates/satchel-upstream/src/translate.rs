//! Messages API ⇄ Chat Completions: a request's `params` to a chat completion request, and the
//! chat completion back to a `Message`.
//!
//! What has an equivalent is translated (system, text and image content, tools and
//! `tool_choice`, tool calls and results, `stop_sequences`, `temperature`, `top_p`, `top_k`,
//! `max_tokens`, `metadata.user_id`). What is only a hint is dropped (`cache_control`,
//! `service_tier`, `inference_geo`, thinking blocks replayed in history). What would change
//! the answer and has no equivalent (documents, server tools, extended thinking, containers,
//! MCP servers, unknown fields) fails the request with a clear `invalid_request_error`,
//! rather than silently asking the model something else.

use serde_json::{Map, Value, json};

/// A request that cannot be expressed as a chat completion; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Untranslatable(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, Untranslatable> {
    Err(Untranslatable(message.into()))
}

/// Top-level `params` fields dropped because they only tune delivery, not the answer.
const DROPPED: &[&str] = &["cache_control", "service_tier", "inference_geo"];

/// `params` (a Messages request) as a Chat Completions request body.
pub fn to_chat_request(params: &Value) -> Result<Value, Untranslatable> {
    let Some(params) = params.as_object() else {
        return fail("Input should be a valid dictionary");
    };
    let mut out = Map::new();
    let mut messages = Vec::new();
    for (key, value) in params {
        match key.as_str() {
            "model" => {
                out.insert("model".into(), value.clone());
            }
            "max_tokens" | "temperature" | "top_p" | "top_k" => {
                out.insert(key.clone(), value.clone());
            }
            "stop_sequences" => {
                out.insert("stop".into(), value.clone());
            }
            "stream" if value == &Value::Bool(false) => {}
            "stream" => return fail("\"stream=True\" is not supported in the Message Batches API"),
            "metadata" => {
                if let Some(user) = value.get("user_id").filter(|u| !u.is_null()) {
                    out.insert("user".into(), user.clone());
                }
            }
            "thinking" => match value.get("type").and_then(Value::as_str) {
                Some("disabled") => {}
                _ => {
                    return fail(
                        "thinking: extended thinking cannot be translated for an OpenAI-format backend",
                    );
                }
            },
            "system" | "messages" | "tools" | "tool_choice" => {}
            key if DROPPED.contains(&key) => {}
            other => return fail(format!("{other}: not supported by OpenAI-format backends")),
        }
    }
    if let Some(system) = params.get("system") {
        messages.push(json!({"role": "system", "content": system_text(system)?}));
    }
    let Some(turns) = params.get("messages").and_then(Value::as_array) else {
        return fail("messages: Field required");
    };
    for (i, turn) in turns.iter().enumerate() {
        translate_turn(i, turn, &mut messages)?;
    }
    out.insert("messages".into(), Value::Array(messages));
    if let Some(tools) = params.get("tools") {
        out.insert("tools".into(), translate_tools(tools)?);
    }
    if let Some(choice) = params.get("tool_choice") {
        let (choice, parallel) = translate_tool_choice(choice)?;
        if let Some(choice) = choice {
            out.insert("tool_choice".into(), choice);
        }
        if let Some(parallel) = parallel {
            out.insert("parallel_tool_calls".into(), Value::Bool(parallel));
        }
    }
    Ok(Value::Object(out))
}

fn system_text(system: &Value) -> Result<String, Untranslatable> {
    match system {
        Value::String(text) => Ok(text.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                match (
                    b.get("type").and_then(Value::as_str),
                    b.get("text").and_then(Value::as_str),
                ) {
                    (Some("text"), Some(text)) => Ok(text.to_owned()),
                    _ => fail(format!("system.{i}: only text blocks can be translated")),
                }
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|texts| texts.join("\n")),
        _ => fail("system: Input should be a valid string or list of text blocks"),
    }
}

fn translate_turn(i: usize, turn: &Value, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let role = match turn.get("role").and_then(Value::as_str) {
        Some(role @ ("user" | "assistant")) => role,
        _ => {
            return fail(format!(
                "messages.{i}.role: Input should be 'user' or 'assistant'"
            ));
        }
    };
    let blocks = match turn.get("content") {
        Some(Value::String(text)) => {
            out.push(json!({"role": role, "content": text}));
            return Ok(());
        }
        Some(Value::Array(blocks)) => blocks,
        _ => {
            return fail(format!(
                "messages.{i}.content: Input should be a valid string or list"
            ));
        }
    };
    let mut parts = Vec::new();
    let mut tool_calls = Vec::new();
    for (j, block) in blocks.iter().enumerate() {
        let at = || format!("messages.{i}.content.{j}");
        match block.get("type").and_then(Value::as_str) {
            Some("text") => {
                let text = block
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                parts.push(json!({"type": "text", "text": text}));
            }
            Some("image") => parts.push(image_part(block, &at())?),
            Some("tool_use") if role == "assistant" => {
                let input = block.get("input").cloned().unwrap_or_else(|| json!({}));
                tool_calls.push(json!({
                    "id": block.get("id").cloned().unwrap_or(Value::Null),
                    "type": "function",
                    "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": input.to_string()},
                }));
            }
            Some("tool_result") if role == "user" => {
                // Tool results are messages of their own in Chat Completions.
                out.push(json!({
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id").cloned().unwrap_or(Value::Null),
                    "content": tool_result_text(block, &at())?,
                }));
            }
            // Earlier reasoning carries no instruction; the model's next answer does not need it.
            Some("thinking" | "redacted_thinking") if role == "assistant" => {}
            Some(other) => {
                return fail(format!(
                    "{}: {other} blocks cannot be translated for an OpenAI-format backend",
                    at()
                ));
            }
            None => return fail(format!("{}.type: Field required", at())),
        }
    }
    if role == "assistant" {
        let text: Vec<&str> = parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let mut message = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::String(text.join("")) }});
        if !tool_calls.is_empty() {
            message["tool_calls"] = Value::Array(tool_calls);
        }
        out.push(message);
    } else if !parts.is_empty() {
        // Plain text stays a string, which every server accepts; mixed content uses parts.
        let all_text = parts.iter().all(|p| p["type"] == "text");
        let content = if all_text {
            Value::String(
                parts
                    .iter()
                    .filter_map(|p| p["text"].as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        } else {
            Value::Array(parts)
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

fn image_part(block: &Value, at: &str) -> Result<Value, Untranslatable> {
    let source = block.get("source").unwrap_or(&Value::Null);
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png");
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .unwrap_or_default();
            format!("data:{media};base64,{data}")
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => {
            return fail(format!(
                "{at}.source: only base64 and url images can be translated"
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tool_result_text(block: &Value, at: &str) -> Result<String, Untranslatable> {
    let text = match block.get("content") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(|p| match p.get("type").and_then(Value::as_str) {
                Some("text") => Ok(p
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()),
                _ => fail(format!(
                    "{at}.content: only text tool results can be translated"
                )),
            })
            .collect::<Result<Vec<_>, _>>()?
            .join("\n"),
        Some(_) => {
            return fail(format!(
                "{at}.content: Input should be a valid string or list"
            ));
        }
    };
    // Chat Completions has no error flag on tool results; say it in the text.
    Ok(if block.get("is_error") == Some(&Value::Bool(true)) {
        format!("Error: {text}")
    } else {
        text
    })
}

fn translate_tools(tools: &Value) -> Result<Value, Untranslatable> {
    let Some(tools) = tools.as_array() else {
        return fail("tools: Input should be a valid list");
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            if tool.get("type").and_then(Value::as_str).is_some_and(|t| t != "custom") {
                return fail(format!("tools.{i}: server tools cannot be translated for an OpenAI-format backend"));
            }
            let mut function = json!({
                "name": tool.get("name").cloned().unwrap_or(Value::Null),
                "parameters": tool.get("input_schema").cloned().unwrap_or_else(|| json!({"type": "object"})),
            });
            if let Some(description) = tool.get("description") {
                function["description"] = description.clone();
            }
            Ok(json!({"type": "function", "function": function}))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// The `tool_choice` and, from `disable_parallel_tool_use`, `parallel_tool_calls`.
fn translate_tool_choice(choice: &Value) -> Result<(Option<Value>, Option<bool>), Untranslatable> {
    let parallel = choice
        .get("disable_parallel_tool_use")
        .and_then(Value::as_bool)
        .map(|disable| !disable);
    let translated = match choice.get("type").and_then(Value::as_str) {
        Some("auto") => json!("auto"),
        Some("any") => json!("required"),
        Some("none") => json!("none"),
        Some("tool") => {
            json!({"type": "function", "function": {"name": choice.get("name").cloned().unwrap_or(Value::Null)}})
        }
        _ => return fail("tool_choice: Input should be auto, any, tool or none"),
    };
    Ok((Some(translated), parallel))
}

/// A chat completion as a `Message`. `params` is the original request (for the model name
/// and stop sequences); `message_id` names the new message.
pub fn to_message(
    completion: &Value,
    params: &Value,
    message_id: &str,
) -> Result<Value, Untranslatable> {
    let Some(choice) = completion
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
    else {
        return fail("the completion has no choices");
    };
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    if let Some(text) = message
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": text, "citations": null}));
    }
    for call in message
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let function = call.get("function").unwrap_or(&Value::Null);
        let arguments = function
            .get("arguments")
            .and_then(Value::as_str)
            .unwrap_or("{}");
        let input: Value = serde_json::from_str(arguments).unwrap_or_else(|_| json!({}));
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .map(tool_use_id)
            .unwrap_or_else(|| "toolu_0".to_owned());
        content.push(json!({"type": "tool_use", "id": id, "name": function.get("name").cloned().unwrap_or(Value::Null), "input": input}));
    }
    let stop_sequences: Vec<&str> = params
        .get("stop_sequences")
        .and_then(Value::as_array)
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    // vLLM and SGLang say which stop string matched; OpenAI does not.
    let matched_stop = choice
        .get("stop_reason")
        .and_then(Value::as_str)
        .filter(|s| stop_sequences.contains(s));
    let (stop_reason, stop_sequence) = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => ("max_tokens", None),
        Some("tool_calls" | "function_call") => ("tool_use", None),
        Some("content_filter") => ("refusal", None),
        _ => match matched_stop {
            Some(seq) => ("stop_sequence", Some(seq.to_owned())),
            None => ("end_turn", None),
        },
    };
    let usage = completion.get("usage").unwrap_or(&Value::Null);
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let cached = count(usage.pointer("/prompt_tokens_details/cached_tokens"));
    let model = completion
        .get("model")
        .and_then(Value::as_str)
        .or_else(|| params.get("model").and_then(Value::as_str))
        .unwrap_or_default();
    Ok(json!({
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "content": content,
        "model": model,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {
            "input_tokens": count(usage.get("prompt_tokens")).saturating_sub(cached),
            "output_tokens": count(usage.get("completion_tokens")),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": cached,
            "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
            "server_tool_use": null,
            "service_tier": "batch",
        },
    }))
}

/// A tool call id as a `tool_use` id must be: `^[a-zA-Z0-9_-]+$`.
fn tool_use_id(id: &str) -> String {
    let cleaned: String = id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if cleaned.is_empty() {
        "toolu_0".to_owned()
    } else {
        cleaned
    }
}
