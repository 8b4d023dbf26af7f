//! The mock's Chat Completions answer: the last user message echoed back, trimmed to
//! `max_tokens` at 4 characters a token; a call of the first (or the named) tool when
//! `tool_choice` requires one.

use serde_json::{Value, json};

pub(crate) fn complete(request: &Value) -> Result<Value, String> {
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .ok_or("model: Field required")?;
    let messages = request
        .get("messages")
        .and_then(Value::as_array)
        .ok_or("messages: Field required")?;
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(text_of)
        .unwrap_or_default();
    let max_tokens = request
        .get("max_tokens")
        .and_then(Value::as_u64)
        .unwrap_or(16);
    let max_chars = usize::try_from(max_tokens.saturating_mul(4)).unwrap_or(usize::MAX);
    let prompt_chars: usize = messages.iter().map(|m| text_of(m).chars().count()).sum();
    let usage = |completion: usize| json!({"prompt_tokens": prompt_chars.div_ceil(4), "completion_tokens": completion.div_ceil(4), "total_tokens": (prompt_chars + completion).div_ceil(4)});
    let id = format!("chatcmpl-{:016x}", fastrand::u64(..));
    if let Some(tool) = required_tool(request) {
        return Ok(json!({
            "id": id, "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": format!("call_{:08x}", fastrand::u32(..)), "type": "function", "function": {"name": tool, "arguments": "{}"}}]}}],
            "usage": usage(0),
        }));
    }
    let (text, finish) = if last_user.chars().count() > max_chars {
        (
            last_user.chars().take(max_chars).collect::<String>(),
            "length",
        )
    } else {
        (last_user, "stop")
    };
    Ok(json!({
        "id": id, "object": "chat.completion", "model": model,
        "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": text}}],
        "usage": usage(text.chars().count()),
    }))
}

fn text_of(message: &Value) -> String {
    match &message["content"] {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The tool the request forces, if any.
fn required_tool(request: &Value) -> Option<String> {
    let first_tool = || {
        request["tools"][0]["function"]["name"]
            .as_str()
            .map(str::to_owned)
    };
    match &request["tool_choice"] {
        Value::String(choice) if choice == "required" => first_tool(),
        Value::Object(choice) => choice
            .get("function")
            .and_then(|f| f["name"].as_str())
            .map(str::to_owned),
        _ => None,
    }
}
