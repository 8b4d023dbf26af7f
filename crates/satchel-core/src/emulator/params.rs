//! A batch request's `params`, validated the way the Messages API validates them for a batch,
//! and the parts the emulator's reply depends on.
//!
//! The rules live here, in one place, each worded as the API words it (pydantic style, a JSON
//! path then the problem). The allowed top-level keys are the Messages API's request fields,
//! stable and beta together (the official SDKs' `MessageCreateParams` types are the readable
//! source): anything else is `Extra inputs are not permitted`. Integers are lax as the API's
//! validator is (`1024.0` and `"1024"` are 1024). Params that batches refuse (`stream: true`,
//! `speed`) are refused. Everything that does not change the reply's shape (metadata,
//! sampling, caching, containers, MCP servers, documents, citations, server tools…) is
//! accepted after these checks and otherwise ignored.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

/// A `params` problem, worded as the API words it.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

fn invalid<T>(message: impl Into<String>) -> Result<T, Invalid> {
    Err(Invalid(message.into()))
}

/// The request fields of the Messages API (stable and beta). `stream` is allowed only as
/// `false` (checked below); `speed` is a field the API has, but batches refuse it.
const FIELDS: &[&str] = &[
    "model",
    "max_tokens",
    "messages",
    "system",
    "metadata",
    "stop_sequences",
    "temperature",
    "top_k",
    "top_p",
    "thinking",
    "tool_choice",
    "tools",
    "cache_control",
    "container",
    "context_management",
    "diagnostics",
    "fallback_credit_token",
    "fallbacks",
    "inference_geo",
    "mcp_servers",
    "output_config",
    "output_format",
    "service_tier",
    "stream",
    "speed",
];

/// The smallest thinking budget the API accepts.
pub const MIN_THINKING_BUDGET: u64 = 1024;

/// What the reply depends on.
#[derive(Debug)]
pub struct Request<'a> {
    pub model: String,
    pub max_tokens: u64,
    /// The content of the last user turn (a string or a list of blocks), if any.
    pub last_user: Option<&'a RawValue>,
    /// Bytes of `system` and `messages`: the input, for usage.
    pub input_bytes: usize,
    pub stop_sequences: Vec<String>,
    /// Custom tools (with an `input_schema`), in order; server tools are not listed.
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    /// Thinking's token budget when thinking is on (`enabled`, or `adaptive`).
    pub thinking: Option<u64>,
    /// The JSON Schema of a structured output (`output_config.format` or `output_format`).
    pub output_schema: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tool {
    pub name: String,
    pub input_schema: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    Any,
    Tool(String),
    None,
}

#[derive(Deserialize)]
struct Turn<'a> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

/// The blocks of a turn's content, as far as validation looks at them. `text` stays raw:
/// validation only asks whether it is a non-empty string, which its bytes tell without
/// unescaping them.
#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<&'a RawValue>,
}

/// How a JSON value (valid, as a `RawValue` is) reads as a string: not one, empty, or not.
/// Told from its first bytes, without reading the string again.
#[derive(PartialEq, Eq)]
enum Text {
    NotAString,
    Empty,
    NonEmpty,
}

impl Block<'_> {
    fn text_not_a_string(&self) -> bool {
        self.text.is_some_and(|t| text_kind(t) == Text::NotAString)
    }
}

fn text_kind(raw: &RawValue) -> Text {
    match raw.get() {
        "\"\"" => Text::Empty,
        json if json.starts_with('"') => Text::NonEmpty,
        _ => Text::NotAString,
    }
}

/// The top-level fields of params in their order, values unparsed: a list, not a map (there
/// are a dozen at most, and hashing each key cost more than finding it).
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> Deserialize<'de> for Fields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut fields = Vec::with_capacity(8);
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    fields.push((key, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor)
    }
}

/// A key, borrowed from the params unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Validates `params`.
pub fn parse(params: &str) -> Result<Request<'_>, Invalid> {
    let Ok(Fields(fields)) = serde_json::from_str::<Fields<'_>>(params) else {
        return invalid("Input should be a valid dictionary");
    };
    // A repeated key counts once, with its last value (as a JSON object read into a map).
    let get = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| *v)
    };
    if get("stream").is_some_and(|s| s.get() == "true") {
        return invalid("\"stream=True\" is not supported in the Message Batches API");
    }
    if get("speed").is_some_and(|s| s.get() != "null") {
        return invalid("speed: is not supported in the Message Batches API");
    }
    let mut unknown: Vec<&str> = fields
        .iter()
        .map(|(k, _)| k.as_ref())
        .filter(|k| !FIELDS.contains(k))
        .collect();
    unknown.sort_unstable();
    if let Some(key) = unknown.first() {
        return invalid(format!("{key}: Extra inputs are not permitted"));
    }
    let model = match get("model") {
        None => return invalid("model: Field required"),
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(model) if !model.is_empty() => model,
            Ok(_) => return invalid("model: String should have at least 1 character"),
            Err(_) => return invalid("model: Input should be a valid string"),
        },
    };
    let max_tokens = match get("max_tokens") {
        None => return invalid("max_tokens: Field required"),
        Some(raw) => lax_int(raw)
            .ok_or_else(|| Invalid("max_tokens: Input should be a valid integer".into()))?,
    };
    if max_tokens < 1 {
        return invalid("max_tokens: must be greater than or equal to 1");
    }
    let max_tokens = max_tokens as u64;
    let Some(messages_raw) = get("messages") else {
        return invalid("messages: Field required");
    };
    let Ok(turns) = serde_json::from_str::<Vec<Turn<'_>>>(messages_raw.get()) else {
        return invalid("messages: Input should be a valid list");
    };
    if turns.is_empty() {
        return invalid("messages: List should have at least 1 item after validation, not 0");
    }
    let mut last_user = None;
    for (i, turn) in turns.iter().enumerate() {
        let role = match turn.role.as_deref() {
            Some(role @ ("user" | "assistant")) => role,
            Some(_) => {
                return invalid(format!(
                    "messages.{i}.role: Input should be 'user' or 'assistant'"
                ));
            }
            None => return invalid(format!("messages.{i}.role: Field required")),
        };
        let Some(content) = turn.content else {
            return invalid(format!("messages.{i}.content: Field required"));
        };
        let final_assistant = role == "assistant" && i == turns.len() - 1;
        check_content(content, i, final_assistant)?;
        if role == "user" {
            last_user = Some(content);
        }
    }
    if let Some(system) = get("system") {
        check_system(system)?;
    }
    let stop_sequences = match get("stop_sequences") {
        Some(raw) if raw.get() != "null" => serde_json::from_str(raw.get())
            .map_err(|_| Invalid("stop_sequences: Input should be a valid list".into()))?,
        _ => Vec::new(),
    };
    check_sampling(get("temperature"), get("top_p"), get("top_k"))?;
    let tools = match get("tools") {
        Some(raw) if raw.get() != "null" => parse_tools(raw)?,
        _ => Vec::new(),
    };
    let tool_choice = match get("tool_choice") {
        Some(raw) if raw.get() != "null" => parse_tool_choice(raw, &tools)?,
        _ => ToolChoice::Auto,
    };
    let thinking = match get("thinking") {
        Some(raw) if raw.get() != "null" => parse_thinking(raw, max_tokens)?,
        _ => None,
    };
    let output_schema = output_schema(get("output_config"), get("output_format"))?;
    Ok(Request {
        model,
        max_tokens,
        last_user,
        input_bytes: messages_raw.get().len() + get("system").map_or(0, |s| s.get().len()),
        stop_sequences,
        tools,
        tool_choice,
        thinking,
        output_schema,
    })
}

/// An integer as the API's validator reads one: a JSON integer, an integral float, or a
/// string holding one.
fn lax_int(raw: &RawValue) -> Option<i64> {
    match serde_json::from_str::<Value>(raw.get()).ok()? {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9e15)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A turn's content: a non-empty string or a non-empty list of blocks, text blocks
/// non-empty. Only the final assistant turn (a prefill) may be empty.
fn check_content(content: &RawValue, i: usize, final_assistant: bool) -> Result<(), Invalid> {
    match text_kind(content) {
        Text::Empty if !final_assistant => {
            return invalid(
                "messages: all messages must have non-empty content except for the optional final assistant message",
            );
        }
        Text::Empty | Text::NonEmpty => return Ok(()),
        Text::NotAString => {}
    }
    let not_content = || {
        invalid(format!(
            "messages.{i}.content: Input should be a valid string or list of content blocks"
        ))
    };
    let Ok(blocks) = serde_json::from_str::<Vec<Block<'_>>>(content.get()) else {
        return not_content();
    };
    if blocks.is_empty() && !final_assistant {
        return invalid(
            "messages: all messages must have non-empty content except for the optional final assistant message",
        );
    }
    // Any block's `text` must be a string (as when blocks were read with string texts).
    if blocks.iter().any(Block::text_not_a_string) {
        return not_content();
    }
    for (j, block) in blocks.iter().enumerate() {
        match block.kind.as_deref() {
            None => return invalid(format!("messages.{i}.content.{j}.type: Field required")),
            Some("text") => match block.text.map(text_kind) {
                None => return invalid(format!("messages.{i}.content.{j}.text: Field required")),
                Some(Text::Empty) => {
                    return invalid("messages: text content blocks must be non-empty");
                }
                Some(_) => {}
            },
            Some(_) => {}
        }
    }
    Ok(())
}

fn check_system(system: &RawValue) -> Result<(), Invalid> {
    if system.get() == "null" || text_kind(system) != Text::NotAString {
        return Ok(());
    }
    let blocks = serde_json::from_str::<Vec<Block<'_>>>(system.get());
    let Some(blocks) = blocks
        .ok()
        .filter(|b| !b.iter().any(Block::text_not_a_string))
    else {
        return invalid("system: Input should be a valid string or list of text blocks");
    };
    for (j, block) in blocks.iter().enumerate() {
        if block.kind.as_deref() != Some("text") {
            return invalid(format!("system.{j}.type: Input should be 'text'"));
        }
        if block.text.is_none_or(|t| text_kind(t) == Text::Empty) {
            return invalid("system: text content blocks must be non-empty");
        }
    }
    Ok(())
}

fn check_sampling(
    temperature: Option<&RawValue>,
    top_p: Option<&RawValue>,
    top_k: Option<&RawValue>,
) -> Result<(), Invalid> {
    for (name, raw) in [("temperature", temperature), ("top_p", top_p)] {
        let Some(raw) = raw.filter(|r| r.get() != "null") else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<f64>(raw.get()) else {
            return invalid(format!("{name}: Input should be a valid number"));
        };
        if value < 0.0 {
            return invalid(format!(
                "{name}: Input should be greater than or equal to 0"
            ));
        }
        if value > 1.0 {
            return invalid(format!("{name}: Input should be less than or equal to 1"));
        }
    }
    if let Some(raw) = top_k.filter(|r| r.get() != "null") {
        match lax_int(raw) {
            Some(k) if k >= 0 => {}
            Some(_) => return invalid("top_k: Input should be greater than or equal to 0"),
            None => return invalid("top_k: Input should be a valid integer"),
        }
    }
    Ok(())
}

fn parse_tools(raw: &RawValue) -> Result<Vec<Tool>, Invalid> {
    let Ok(list) = serde_json::from_str::<Vec<Value>>(raw.get()) else {
        return invalid("tools: Input should be a valid list");
    };
    let mut tools = Vec::new();
    for (i, tool) in list.iter().enumerate() {
        let Some(tool) = tool.as_object() else {
            return invalid(format!("tools.{i}: Input should be a valid dictionary"));
        };
        let Some(name) = tool.get("name").and_then(Value::as_str) else {
            return invalid(format!("tools.{i}.name: Field required"));
        };
        // A custom tool has an input schema (its `type`, if given, is "custom"); server
        // tools are typed by version (`web_search_20250305`…) and have none.
        let custom = tool.get("type").is_none_or(|t| t == "custom");
        if !custom {
            continue;
        }
        let Some(schema) = tool.get("input_schema") else {
            return invalid(format!("tools.{i}.custom.input_schema: Field required"));
        };
        if !schema.is_object() {
            return invalid(format!(
                "tools.{i}.custom.input_schema: Input should be a valid dictionary"
            ));
        }
        if tools.iter().any(|t: &Tool| t.name == name) {
            return invalid(format!(
                "tools: Tool names must be unique. Duplicate name: {name}"
            ));
        }
        tools.push(Tool {
            name: name.to_owned(),
            input_schema: schema.clone(),
        });
    }
    Ok(tools)
}

fn parse_tool_choice(raw: &RawValue, tools: &[Tool]) -> Result<ToolChoice, Invalid> {
    let Ok(choice) = serde_json::from_str::<Value>(raw.get()) else {
        return invalid("tool_choice: Input should be a valid dictionary");
    };
    match choice.get("type").and_then(Value::as_str) {
        Some("auto") => Ok(ToolChoice::Auto),
        Some("none") => Ok(ToolChoice::None),
        Some("any") if tools.is_empty() => {
            invalid("tool_choice: `tool_choice` may only be specified while providing tools.")
        }
        Some("any") => Ok(ToolChoice::Any),
        Some("tool") => {
            let Some(name) = choice.get("name").and_then(Value::as_str) else {
                return invalid("tool_choice.tool.name: Field required");
            };
            if !tools.iter().any(|t| t.name == name) {
                return invalid(format!(
                    "tool_choice: Tool '{name}' not found in provided tools"
                ));
            }
            Ok(ToolChoice::Tool(name.to_owned()))
        }
        _ => invalid(
            "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
        ),
    }
}

fn parse_thinking(raw: &RawValue, max_tokens: u64) -> Result<Option<u64>, Invalid> {
    let Ok(thinking) = serde_json::from_str::<Value>(raw.get()) else {
        return invalid("thinking: Input should be a valid dictionary");
    };
    match thinking.get("type").and_then(Value::as_str) {
        Some("disabled") => Ok(None),
        // Adaptive: the model decides; the emulator thinks a little, within the budget left.
        Some("adaptive") => Ok(Some((max_tokens / 4).clamp(1, MIN_THINKING_BUDGET))),
        Some("enabled") => {
            let Some(budget) = thinking.get("budget_tokens") else {
                return invalid("thinking.enabled.budget_tokens: Field required");
            };
            let Some(budget) = budget.as_i64().or_else(|| {
                budget
                    .as_f64()
                    .filter(|f| f.fract() == 0.0)
                    .map(|f| f as i64)
            }) else {
                return invalid("thinking.enabled.budget_tokens: Input should be a valid integer");
            };
            if budget < MIN_THINKING_BUDGET as i64 {
                return invalid(
                    "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
                );
            }
            if budget as u64 >= max_tokens {
                return invalid("`max_tokens` must be greater than `thinking.budget_tokens`");
            }
            Ok(Some(budget as u64))
        }
        _ => invalid(
            "thinking: Input tag does not match any of the expected tags: 'adaptive', 'disabled', 'enabled'",
        ),
    }
}

/// The schema of a structured output, from `output_config.format` (current) or
/// `output_format` (beta, older).
fn output_schema(
    config: Option<&RawValue>,
    format: Option<&RawValue>,
) -> Result<Option<Value>, Invalid> {
    let mut found = None;
    if let Some(raw) = config.filter(|r| r.get() != "null") {
        let Ok(config) = serde_json::from_str::<Value>(raw.get()) else {
            return invalid("output_config: Input should be a valid dictionary");
        };
        if let Some(format) = config.get("format").filter(|f| !f.is_null()) {
            found = Some(("output_config.format", format.clone()));
        }
    }
    if found.is_none()
        && let Some(raw) = format.filter(|r| r.get() != "null")
    {
        let Ok(format) = serde_json::from_str::<Value>(raw.get()) else {
            return invalid("output_format: Input should be a valid dictionary");
        };
        found = Some(("output_format", format));
    }
    let Some((path, format)) = found else {
        return Ok(None);
    };
    if format.get("type").and_then(Value::as_str) != Some("json_schema") {
        return invalid(format!("{path}.type: Input should be 'json_schema'"));
    }
    match format.get("schema") {
        Some(schema) if schema.is_object() => Ok(Some(schema.clone())),
        Some(_) => invalid(format!("{path}.schema: Input should be a valid dictionary")),
        None => invalid(format!("{path}.schema: Field required")),
    }
}
