//! The emulator's reply to a valid request, shaped as the hosted API would shape it for the
//! same params, deterministically (same params, same reply; only ids are fresh):
//!
//! - a forced tool (`tool_choice` `tool`, or `any`: the first tool) → one `tool_use` block
//!   whose `input` validates against the tool's `input_schema`, `stop_reason: "tool_use"`;
//!   `auto` with tools → the same for the first tool whose name the last user turn mentions,
//!   else text; `none` → text;
//! - a structured output (`output_config.format` / `output_format`, `json_schema`) → a text
//!   block holding JSON valid against the schema;
//! - thinking (`enabled`, `adaptive`) → a `thinking` block with a `signature` first, counted
//!   in `output_tokens` and within `max_tokens`;
//! - otherwise the text of the last user turn echoed back, trimmed to `max_tokens` at 4
//!   characters a token (`"max_tokens"`), cut at the first stop sequence it contains
//!   (`"stop_sequence"`), else `"end_turn"`. Never an empty text block: a turn with no text
//!   (only a tool result, an image, a document) gets a short acknowledgement.

use std::borrow::Cow;
use std::hash::{Hash, Hasher};

use satchel_wire::{ContentBlock, Message, Usage, ids};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::params::{Request, ToolChoice};
use super::schema;

/// Characters per token, for trimming and usage.
pub const CHARS_PER_TOKEN: usize = 4;

/// What the reply says to a turn that holds no text of its own.
const ACKNOWLEDGEMENT: &str = "Noted.";

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    /// A `tool_result`'s content: a string or blocks.
    #[serde(borrow)]
    content: Option<&'a RawValue>,
}

pub fn compose(request: &Request<'_>) -> Message {
    let said = request.last_user.and_then(text_of).unwrap_or_default();
    let said = if said.trim().is_empty() {
        ACKNOWLEDGEMENT.to_owned()
    } else {
        said
    };
    let mut content = Vec::new();
    let mut budget = request.max_tokens;
    let mut output_tokens = 0;
    if let Some(thinking_budget) = request.thinking {
        let thought = thought_about(&said, thinking_budget.min(budget));
        let used = tokens(thought.chars().count()).min(budget);
        budget -= used;
        output_tokens += used;
        content.push(ContentBlock::Other(json!({
            "type": "thinking",
            "thinking": thought,
            "signature": signature(&thought),
        })));
        if budget == 0 {
            return message(request, content, output_tokens, "max_tokens", None);
        }
    }
    if let Some(tool) = chosen_tool(request, &said) {
        let input = schema::example(&tool.input_schema, &said);
        output_tokens += tokens(input.to_string().chars().count()).min(budget);
        content.push(ContentBlock::Other(json!({
            "type": "tool_use",
            "id": ids::new_tool_use_id(),
            "name": tool.name,
            "input": input,
        })));
        return message(request, content, output_tokens, "tool_use", None);
    }
    if let Some(schema) = &request.output_schema {
        let text = schema::example(schema, &said).to_string();
        output_tokens += tokens(text.chars().count()).min(budget);
        content.push(ContentBlock::text(text));
        return message(request, content, output_tokens, "end_turn", None);
    }
    let max_chars = usize::try_from(budget)
        .unwrap_or(usize::MAX)
        .saturating_mul(CHARS_PER_TOKEN);
    let (text, stop_reason, stop_sequence) = echo(&said, max_chars, &request.stop_sequences);
    output_tokens += tokens(text.chars().count());
    if !text.is_empty() {
        content.push(ContentBlock::text(text));
    }
    message(request, content, output_tokens, stop_reason, stop_sequence)
}

fn message(
    request: &Request<'_>,
    content: Vec<ContentBlock>,
    output_tokens: u64,
    stop_reason: &str,
    stop_sequence: Option<String>,
) -> Message {
    Message {
        id: ids::new_message_id(),
        kind: "message".into(),
        role: "assistant".into(),
        usage: Usage::batch(tokens(request.input_bytes).max(1), output_tokens),
        content,
        model: request.model.clone(),
        stop_reason: Some(stop_reason.into()),
        stop_sequence,
    }
}

/// The tool the reply calls, if any.
fn chosen_tool<'r>(request: &'r Request<'_>, said: &str) -> Option<&'r super::params::Tool> {
    match &request.tool_choice {
        ToolChoice::None => None,
        ToolChoice::Any => request.tools.first(),
        ToolChoice::Tool(name) => request.tools.iter().find(|t| &t.name == name),
        // The documented rule: a tool is used when the user's last turn names it.
        ToolChoice::Auto => request
            .tools
            .iter()
            .find(|t| said.contains(t.name.as_str())),
    }
}

pub fn tokens(chars: usize) -> u64 {
    chars.div_ceil(CHARS_PER_TOKEN) as u64
}

/// The thinking text: a short deliberation over what was said, within `budget` tokens.
fn thought_about(said: &str, budget: u64) -> String {
    let max_chars = usize::try_from(budget)
        .unwrap_or(usize::MAX)
        .saturating_mul(CHARS_PER_TOKEN);
    let excerpt: String = said.chars().take(200).collect();
    let thought = format!("The user wrote: \"{excerpt}\". I will answer accordingly.");
    thought.chars().take(max_chars.max(1)).collect()
}

/// A stable stand-in for the API's opaque signature: a hash of the thinking, base64-like.
fn signature(thinking: &str) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    thinking.hash(&mut hasher);
    let mut out = String::from("EmulatorSig");
    let mut value = hasher.finish();
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for _ in 0..32 {
        out.push(ALPHABET[(value % 64) as usize] as char);
        value = value.rotate_right(6) ^ 0x9e37_79b9_7f4a_7c15;
    }
    out.push_str("==");
    out
}

/// The text of a turn's content: a string, or its `text` blocks (and the text of its
/// `tool_result` blocks) joined by newlines.
pub fn text_of(content: &RawValue) -> Option<String> {
    if let Ok(text) = serde_json::from_str::<Cow<'_, str>>(content.get()) {
        return Some(text.into_owned());
    }
    let blocks = serde_json::from_str::<Vec<Block<'_>>>(content.get()).ok()?;
    let mut texts = Vec::new();
    for block in &blocks {
        match block.kind.as_deref() {
            Some("text") => texts.extend(block.text.as_deref().map(str::to_owned)),
            Some("tool_result") => texts.extend(block.content.and_then(text_of)),
            _ => {}
        }
    }
    Some(texts.join("\n"))
}

/// The echoed text and why it stopped.
fn echo(
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
    // (No more bytes than that means no more characters: nothing to walk.)
    if candidate.len() > max_chars
        && let Some((cut, _)) = candidate.char_indices().nth(max_chars)
    {
        return (candidate[..cut].to_owned(), "max_tokens", None);
    }
    match stop {
        Some(seq) => (candidate.to_owned(), "stop_sequence", Some(seq)),
        None => (candidate.to_owned(), "end_turn", None),
    }
}
