//! The create body, parsed as it streams in.
//!
//! A create body may be 256 MB, so it is never held whole. It is read in blocks into a buffer
//! (which grows while the body keeps coming), asynchronously: a slow or stalled upload holds
//! no thread while it waits for its client, only its buffer. A small reader walks the envelope
//! (`{"requests": [` … `]}`), and each item is parsed and validated by serde straight from
//! the buffer, in one pass (`from_slice`, serde_json's fast path: reading from a `Read` goes
//! byte by byte and was most of the cost of a create). An item cut by the end of the buffer
//! is parsed again once more bytes are in. Each `params` is kept as the raw bytes received,
//! not copied: a parsed item is split off the buffer and shared with its request (`Bytes`),
//! so a read block lives until the store has written the last request that points into it.
//! Requests go to the store in chunks through a bounded channel. Memory is bounded by the
//! read buffer (one item at least), the chunks in flight (each holds at most [`CHUNK_BYTES`]
//! of params plus the unused ends of the blocks it points into) and the set of `custom_id`s
//! seen (16 bytes an id).
//!
//! serde validates every byte of every item, and the envelope reader checks the punctuation
//! between them, so malformed JSON anywhere is still refused. A scanner that finds where a
//! value ends (tracking strings, escapes and nesting, jumping through string contents eight
//! bytes at a time) cuts keys and scalars, and tells a cut item from a broken one.
//!
//! One request's `params` may be at most [`MAX_PARAMS_BYTES`] (the Messages API's own request
//! limit), and the buffer never grows past what that needs, so memory stays bounded by
//! configuration whatever a body holds.
//!
//! Error messages follow the API's pydantic style (`requests.3.custom_id: Field required`).
//!
//! Modules: `input` (the buffer and the envelope's tokens), `scan` (where a value ends),
//! `item` (one request, through serde), `state` (chunks for the store, ids seen), `seen`.
//! The parse stops at the first problem; the store then discards what it had received, so a
//! bad item at the very end still creates nothing.

mod input;
mod item;
mod scan;
mod seen;
mod state;

use std::io;

use serde::de::DeserializeSeed;
use tokio::io::AsyncRead;
use tokio::sync::mpsc;

use crate::model::{IngestChunk, NewRequest, Params};
use input::Input;
use item::ItemSeed;
use scan::Scan;
use seen::SeenIds;
use state::State;

/// Requests per chunk sent to the store: big enough for cheap multi-row writes, small enough
/// to keep memory flat.
pub const CHUNK_REQUESTS: usize = 1_000;

/// Bytes of `params` per chunk: a chunk is sent once it holds this much even if it has fewer
/// than [`CHUNK_REQUESTS`] requests, so large requests do not make large chunks.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The read buffer starts this small (most bodies are small, and many may be read at once)
/// and doubles while reads fill it, up to [`READ_BLOCK_MAX`] of room for one read. Blocks
/// stay under the allocator's mmap threshold (128 KiB): the parse moves to a new block while
/// chunks in flight hold the old ones, and 512 KiB blocks (each mapped and faulted in anew)
/// cost the workers more in page faults than the 2% of items parsed twice across 96 KiB
/// blocks (BENCHMARKS.md, "Create path, 2026-12-05").
const READ_BLOCK_MIN: usize = 16 * 1024;
const READ_BLOCK_MAX: usize = 96 * 1024;

/// The most bytes one request's `params` may take: the Messages API's own limit on a request
/// (32 MB). Larger ones are refused at create, naming their index.
pub const MAX_PARAMS_BYTES: usize = 32 << 20;

/// The most bytes one item may take: its `params` and room for its `custom_id`, keys and
/// whitespace. The buffer never grows past this for one item.
const MAX_ITEM_BYTES: usize = MAX_PARAMS_BYTES + (64 << 10);

/// Why a create body was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is JSON but breaks the create schema; the message is the API's.
    #[error("{0}")]
    Invalid(String),
    /// The body is not JSON; the detail is the parser's.
    #[error("The request body is not valid JSON: {0}")]
    NotJson(String),
    /// Reading the body failed (the client went away, or the body was too large).
    #[error("reading the request body failed: {0}")]
    Read(io::Error),
    /// The store stopped taking requests (it failed; its error says why).
    #[error("the store stopped taking requests")]
    StoreGone,
}

/// Parses a create body from `reader`, sending its requests to `sink` and
/// [`IngestChunk::Commit`] once the whole body proved valid. Returns the number of requests.
pub async fn parse_create_body(
    reader: impl AsyncRead + Unpin,
    max_requests: usize,
    sink: &mpsc::Sender<IngestChunk>,
) -> Result<usize, IngestError> {
    let mut state = State {
        sink,
        max_requests,
        chunk: Vec::with_capacity(CHUNK_REQUESTS),
        chunk_bytes: 0,
        seen: SeenIds::default(),
        count: 0,
        saw_requests: false,
        problem: None,
    };
    let mut input = Input::new(reader);
    parse_body(&mut input, &mut state).await?;
    if !state.saw_requests {
        return Err(IngestError::Invalid("requests: Field required".into()));
    }
    match state.count {
        0 => {
            return Err(IngestError::Invalid(
                "requests: List should have at least 1 item after validation, not 0".into(),
            ));
        }
        n if n > max_requests => {
            return Err(IngestError::Invalid(format!(
                "requests: List should have at most {max_requests} items after validation, not {n}"
            )));
        }
        _ => {}
    }
    state.flush().await?;
    sink.send(IngestChunk::Commit)
        .await
        .map_err(|_| IngestError::StoreGone)?;
    Ok(state.count)
}

/// The body's top level: `{"requests": [...]}` and nothing else, then only whitespace.
async fn parse_body<R: AsyncRead + Unpin>(
    input: &mut Input<R>,
    state: &mut State<'_>,
) -> Result<(), IngestError> {
    match input.peek_token().await? {
        Some(b'{') => input.advance(1),
        Some(b'[') => {
            return Err(IngestError::Invalid(
                "Input should be a valid dictionary".into(),
            ));
        }
        Some(_) => {
            input.check_scalar().await?;
            return Err(IngestError::Invalid(
                "Input should be a valid dictionary".into(),
            ));
        }
        None => return Err(input.unexpected(None, "a JSON object")),
    }
    if input.peek_token().await? == Some(b'}') {
        input.advance(1);
    } else {
        loop {
            let key = input.key().await?;
            if key == "requests" && !state.saw_requests {
                state.saw_requests = true;
                parse_requests(input, state).await?;
            } else if key == "requests" {
                return Err(IngestError::Invalid(
                    "requests: given more than once".into(),
                ));
            } else {
                return Err(IngestError::Invalid(format!(
                    "{key}: Extra inputs are not permitted"
                )));
            }
            match input.peek_token().await? {
                Some(b',') => input.advance(1),
                Some(b'}') => {
                    input.advance(1);
                    break;
                }
                other => return Err(input.unexpected(other, "`,` or `}`")),
            }
        }
    }
    match input.peek_token().await? {
        None => Ok(()),
        Some(_) => Err(IngestError::NotJson(format!(
            "trailing characters at byte {}",
            input.offset()
        ))),
    }
}

/// The `requests` array, item by item.
async fn parse_requests<R: AsyncRead + Unpin>(
    input: &mut Input<R>,
    state: &mut State<'_>,
) -> Result<(), IngestError> {
    match input.peek_token().await? {
        Some(b'[') => input.advance(1),
        Some(b'{') => {
            return Err(IngestError::Invalid(
                "requests: Input should be a valid list".into(),
            ));
        }
        Some(_) => {
            input.check_scalar().await?;
            return Err(IngestError::Invalid(
                "requests: Input should be a valid list".into(),
            ));
        }
        None => return Err(input.unexpected(None, "a JSON array")),
    }
    if input.peek_token().await? == Some(b']') {
        input.advance(1);
        return Ok(());
    }
    let mut index = 0;
    loop {
        // The item starts at the next byte that is not whitespace.
        if input.peek_token().await?.is_none() {
            return Err(input.unexpected(None, "a request"));
        }
        let offset = input.offset();
        // Parsed straight from the buffer, in one pass. If the buffer ends inside the item,
        // read at least as much again and parse it again from its start: rare (items are small
        // next to a read), and the doubling keeps even a huge item linear.
        let (custom_id, params, len) = loop {
            let window = input.window();
            let mut de = serde_json::Deserializer::from_slice(window);
            let parsed = ItemSeed {
                state: &mut *state,
                index,
            }
            .deserialize(&mut de);
            match parsed {
                Ok(item) => {
                    // The item is the bytes up to the `}` after its last value.
                    let start = window.as_ptr() as usize;
                    let end = item.values_end.saturating_sub(start);
                    let close = window
                        .get(end..)
                        .and_then(|rest| rest.iter().position(|b| !b.is_ascii_whitespace()))
                        .map(|p| end + p)
                        .filter(|&p| window[p] == b'}');
                    match close {
                        Some(p) => {
                            break (
                                item.custom_id,
                                item.params.start - start..item.params.end - start,
                                p + 1,
                            );
                        }
                        None => {
                            return Err(IngestError::NotJson(format!(
                                "expected `}}` to close the value starting at byte {offset}"
                            )));
                        }
                    }
                }
                Err(e) => {
                    // The schema's own complaints are about complete values: final.
                    if let Some(problem) = state.problem.take() {
                        return Err(problem);
                    }
                    // A syntax error may only mean the buffer cut the item (serde reports a
                    // number cut after its `.` as invalid, not as the end of input): final
                    // only if the item is whole in the buffer, or the body has ended.
                    let cut = e.is_eof() || Scan::new(window[0]).run(window).is_none();
                    if !cut || input.eof {
                        return Err(not_json(&e, offset));
                    }
                    if window.len() >= MAX_ITEM_BYTES {
                        return Err(too_large(&format!("requests.{index}")));
                    }
                    let want = (window.len() * 2).clamp(READ_BLOCK_MIN, MAX_ITEM_BYTES);
                    input.fill_to(want).await?;
                }
            }
        };
        // The params stay in the read buffer, shared with the request.
        let item = input.split_item(len);
        let request = NewRequest {
            custom_id,
            params: Params::from_checked(item.slice(params)),
        };
        state.accept(request).await?;
        index += 1;
        match input.peek_token().await? {
            Some(b',') => input.advance(1),
            Some(b']') => {
                input.advance(1);
                return Ok(());
            }
            other => return Err(input.unexpected(other, "`,` or `]`")),
        }
    }
}

/// The refusal of a request larger than [`MAX_PARAMS_BYTES`], at `path`.
fn too_large(path: &str) -> IngestError {
    IngestError::Invalid(format!(
        "{path}: Request too large: a request's params may be at most {MAX_PARAMS_BYTES} bytes (32 MB)"
    ))
}

/// A serde error inside an item, placed in the whole body: serde counts from the item's start.
fn not_json(e: &serde_json::Error, item_offset: u64) -> IngestError {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let message = text.strip_suffix(&suffix).unwrap_or(&text);
    IngestError::NotJson(format!(
        "{message} in the value starting at byte {item_offset}"
    ))
}

#[cfg(test)]
mod tests;
