//! The create body, parsed as it streams in.
//!
//! A create body may be 256 MB, so it is never held whole. It is read in blocks into a buffer
//! (which grows while the body keeps coming); a small hand-written reader walks the envelope
//! (`{"requests": [` … `]}`), and each item is parsed and validated by serde straight from
//! the buffer, in one pass (`from_slice`, serde_json's fast path: reading from a `Read` goes
//! byte by byte and was most of the cost of a create). An item cut by the end of the buffer
//! is parsed again once more bytes are in. Each `params` is kept as the raw bytes received,
//! and requests go to the store in chunks through a bounded channel. Memory is bounded by the
//! read buffer (one item at least), the chunk size and the set of `custom_id`s seen (16 bytes
//! an id).
//!
//! serde validates every byte of every item, and the envelope reader checks the punctuation
//! between them, so malformed JSON anywhere is still refused. A scanner that finds where a
//! value ends (tracking strings, escapes and nesting, jumping through string contents eight
//! bytes at a time) cuts keys and scalars, and tells a cut item from a broken one.
//!
//! Error messages follow the API's pydantic style (`requests.3.custom_id: Field required`).
//! The parse stops at the first problem; the store then discards what it had received, so a
//! bad item at the very end still creates nothing.

use std::collections::HashSet;
use std::fmt;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::io::{self, Read};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::model::{IngestChunk, NewRequest};

/// Requests per chunk sent to the store: big enough for cheap multi-row writes, small enough
/// to keep memory flat.
pub const CHUNK_REQUESTS: usize = 1_000;

/// Bytes of `params` per chunk: a chunk is sent once it holds this much even if it has fewer
/// than [`CHUNK_REQUESTS`] requests, so large requests do not make large chunks.
pub const CHUNK_BYTES: usize = 1 << 20;

/// The read buffer starts this small (most bodies are small, and many may be read at once)
/// and doubles while reads fill it, up to [`READ_BLOCK_MAX`] of room for one read.
const READ_BLOCK_MIN: usize = 16 * 1024;
const READ_BLOCK_MAX: usize = 512 * 1024;

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
///
/// Blocking: run it on a blocking thread.
pub fn parse_create_body(
    reader: impl Read,
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
    parse_body(&mut input, &mut state)?;
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
    state.flush()?;
    sink.blocking_send(IngestChunk::Commit)
        .map_err(|_| IngestError::StoreGone)?;
    Ok(state.count)
}

/// The body's top level: `{"requests": [...]}` and nothing else, then only whitespace.
fn parse_body<R: Read>(input: &mut Input<R>, state: &mut State<'_>) -> Result<(), IngestError> {
    match input.peek_token()? {
        Some(b'{') => input.advance(1),
        Some(b'[') => {
            return Err(IngestError::Invalid(
                "Input should be a valid dictionary".into(),
            ));
        }
        Some(_) => {
            input.check_scalar()?;
            return Err(IngestError::Invalid(
                "Input should be a valid dictionary".into(),
            ));
        }
        None => return Err(input.unexpected(None, "a JSON object")),
    }
    if input.peek_token()? == Some(b'}') {
        input.advance(1);
    } else {
        loop {
            let key = input.key()?;
            if key == "requests" && !state.saw_requests {
                state.saw_requests = true;
                parse_requests(input, state)?;
            } else if key == "requests" {
                return Err(IngestError::Invalid(
                    "requests: given more than once".into(),
                ));
            } else {
                return Err(IngestError::Invalid(format!(
                    "{key}: Extra inputs are not permitted"
                )));
            }
            match input.peek_token()? {
                Some(b',') => input.advance(1),
                Some(b'}') => {
                    input.advance(1);
                    break;
                }
                other => return Err(input.unexpected(other, "`,` or `}`")),
            }
        }
    }
    match input.peek_token()? {
        None => Ok(()),
        Some(_) => Err(IngestError::NotJson(format!(
            "trailing characters at byte {}",
            input.offset()
        ))),
    }
}

/// The `requests` array, item by item.
fn parse_requests<R: Read>(input: &mut Input<R>, state: &mut State<'_>) -> Result<(), IngestError> {
    match input.peek_token()? {
        Some(b'[') => input.advance(1),
        Some(b'{') => {
            return Err(IngestError::Invalid(
                "requests: Input should be a valid list".into(),
            ));
        }
        Some(_) => {
            input.check_scalar()?;
            return Err(IngestError::Invalid(
                "requests: Input should be a valid list".into(),
            ));
        }
        None => return Err(input.unexpected(None, "a JSON array")),
    }
    if input.peek_token()? == Some(b']') {
        input.advance(1);
        return Ok(());
    }
    let mut index = 0;
    loop {
        // The item starts at the next byte that is not whitespace.
        if input.peek_token()?.is_none() {
            return Err(input.unexpected(None, "a request"));
        }
        let offset = input.offset();
        // Parsed straight from the buffer, in one pass. If the buffer ends inside the item,
        // read at least as much again and parse it again from its start: rare (items are small
        // next to a read), and the doubling keeps even a huge item linear.
        let (request, len) = loop {
            let window = &input.buf[input.pos..input.end];
            let mut de = serde_json::Deserializer::from_slice(window);
            let parsed = ItemSeed {
                state: &mut *state,
                index,
            }
            .deserialize(&mut de);
            match parsed {
                Ok((request, values_end)) => {
                    // The item is the bytes up to the `}` after its last value.
                    let end = values_end.saturating_sub(window.as_ptr() as usize);
                    let close = window
                        .get(end..)
                        .and_then(|rest| rest.iter().position(|b| !b.is_ascii_whitespace()))
                        .map(|p| end + p)
                        .filter(|&p| window[p] == b'}');
                    match close {
                        Some(p) => break (request, p + 1),
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
                    let want = (window.len() * 2).max(READ_BLOCK_MIN);
                    input.fill_to(want)?;
                }
            }
        };
        input.advance(len);
        state.accept(request)?;
        index += 1;
        match input.peek_token()? {
            Some(b',') => input.advance(1),
            Some(b']') => {
                input.advance(1);
                return Ok(());
            }
            other => return Err(input.unexpected(other, "`,` or `]`")),
        }
    }
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

/// The body as a buffer refilled from the reader in large blocks.
struct Input<R> {
    reader: R,
    buf: Vec<u8>,
    /// `buf[pos..end]` is read and not yet consumed.
    pos: usize,
    end: usize,
    eof: bool,
    /// Bytes consumed before `buf[0]`, for error positions.
    base: u64,
    /// Free space to offer the next read.
    room: usize,
}

impl<R: Read> Input<R> {
    fn new(reader: R) -> Self {
        Self {
            reader,
            buf: vec![0; READ_BLOCK_MIN],
            room: READ_BLOCK_MIN,
            pos: 0,
            end: 0,
            eof: false,
            base: 0,
        }
    }

    /// Offset in the body of the next unconsumed byte.
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// The next `len` bytes, consumed.
    fn take(&mut self, len: usize) -> &[u8] {
        let start = self.pos;
        self.pos += len;
        &self.buf[start..start + len]
    }

    /// Reads more, keeping the unconsumed bytes (moved to the front; the buffer grows when
    /// one value fills it). Returns false at the end of the body.
    fn fill(&mut self) -> Result<bool, IngestError> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.end, 0);
            self.base += self.pos as u64;
            self.end -= self.pos;
            self.pos = 0;
        }
        if self.buf.len() - self.end < self.room {
            self.buf.resize(self.end + self.room, 0);
        }
        loop {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    // The body comes faster than the room we give it: give it more.
                    if n == self.buf.len() - self.end {
                        self.room = (self.room * 2).min(READ_BLOCK_MAX);
                    }
                    self.end += n;
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(IngestError::Read(e)),
            }
        }
    }

    /// Reads until at least `want` bytes are buffered, or the body ends.
    fn fill_to(&mut self, want: usize) -> Result<(), IngestError> {
        while self.end - self.pos < want {
            if !self.fill()? {
                break;
            }
        }
        Ok(())
    }

    /// Skips whitespace; the next byte, not consumed (None at the end of the body).
    fn peek_token(&mut self) -> Result<Option<u8>, IngestError> {
        loop {
            while self.pos < self.end {
                match self.buf[self.pos] {
                    b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                    b => return Ok(Some(b)),
                }
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn unexpected(&self, found: Option<u8>, expected: &str) -> IngestError {
        match found {
            None => IngestError::NotJson(format!(
                "EOF while parsing, expected {expected} at byte {}",
                self.offset()
            )),
            Some(b) => IngestError::NotJson(format!(
                "expected {expected}, found {:?} at byte {}",
                char::from(b),
                self.offset()
            )),
        }
    }

    /// Checks that the next value, a string, number or literal where an object or array was
    /// expected, is at least valid JSON (else the body is "not JSON" rather than "wrong").
    fn check_scalar(&mut self) -> Result<(), IngestError> {
        let offset = self.offset();
        let len = self.value_len()?;
        serde_json::from_slice::<IgnoredAny>(self.take(len))
            .map(|_| ())
            .map_err(|e| not_json(&e, offset))
    }

    /// An object key and its `:`, consumed.
    fn key(&mut self) -> Result<String, IngestError> {
        let found = self.peek_token()?;
        if found != Some(b'"') {
            return Err(self.unexpected(found, "a string key"));
        }
        let offset = self.offset();
        let len = self.value_len()?;
        let key =
            serde_json::from_slice::<String>(self.take(len)).map_err(|e| not_json(&e, offset))?;
        match self.peek_token()? {
            Some(b':') => {
                self.advance(1);
                Ok(key)
            }
            other => Err(self.unexpected(other, "`:`")),
        }
    }

    /// The length of the JSON value starting at the next byte (after whitespace), reading
    /// as much as it takes. Only cuts: the bytes are validated by whoever parses them.
    fn value_len(&mut self) -> Result<usize, IngestError> {
        let Some(first) = self.peek_token()? else {
            return Err(self.unexpected(None, "a value"));
        };
        let mut scan = Scan::new(first);
        loop {
            if let Some(len) = scan.run(&self.buf[self.pos..self.end]) {
                return Ok(len);
            }
            if !self.fill()? {
                return match scan.at_eof(self.end - self.pos) {
                    Some(len) => Ok(len),
                    None => Err(IngestError::NotJson(format!(
                        "EOF while parsing the value starting at byte {}",
                        self.offset()
                    ))),
                };
            }
        }
    }
}

/// Where a value ends, found incrementally (the state survives refills).
struct Scan {
    /// A number or literal: it ends at the first delimiter.
    scalar: bool,
    in_string: bool,
    depth: usize,
    /// Where to go on from when more bytes arrive (never just past a backslash).
    next: usize,
}

impl Scan {
    fn new(first: u8) -> Self {
        Self {
            scalar: !matches!(first, b'"' | b'{' | b'['),
            in_string: false,
            depth: 0,
            next: 0,
        }
    }

    /// Scans `bytes` (the value from its first byte, growing between calls); `Some(len)` once
    /// the value is complete.
    fn run(&mut self, bytes: &[u8]) -> Option<usize> {
        let mut i = self.next;
        if self.scalar {
            let end = bytes[i..]
                .iter()
                .position(|b| matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                .map(|p| i + p);
            self.next = bytes.len();
            return end;
        }
        while i < bytes.len() {
            if self.in_string {
                match find_quote_or_backslash(&bytes[i..]) {
                    None => i = bytes.len(),
                    Some(p) if bytes[i + p] == b'\\' => {
                        if i + p + 1 >= bytes.len() {
                            // Go on from the backslash once the escaped byte has arrived.
                            self.next = i + p;
                            return None;
                        }
                        i += p + 2;
                    }
                    Some(p) => {
                        self.in_string = false;
                        i += p + 1;
                        if self.depth == 0 {
                            return Some(i);
                        }
                    }
                }
            } else {
                match bytes[i] {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        self.depth = self.depth.saturating_sub(1);
                        if self.depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        self.next = i;
        None
    }

    /// At the end of the body: a scalar ends there; anything else is unfinished.
    fn at_eof(&self, len: usize) -> Option<usize> {
        (self.scalar && len > 0).then_some(len)
    }
}

/// The index of the first `"` or `\` in `bytes`, eight bytes at a time.
fn find_quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = ONES * b'"' as u64;
    const BACKSLASHES: u64 = ONES * b'\\' as u64;
    let mut words = bytes.chunks_exact(8);
    let mut offset = 0;
    for word in &mut words {
        let mut array = [0u8; 8];
        array.copy_from_slice(word);
        let w = u64::from_le_bytes(array);
        let q = w ^ QUOTES;
        let b = w ^ BACKSLASHES;
        // A zero byte in q or b is a match; the lowest flagged byte is always a real one.
        let found = (q.wrapping_sub(ONES) & !q | b.wrapping_sub(ONES) & !b) & HIGHS;
        if found != 0 {
            return Some(offset + (found.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == b'"' || c == b'\\')
        .map(|p| offset + p)
}

/// The `custom_id`s seen so far, as 128-bit keyed hashes (two independent SipHash keys, fresh
/// for every body): 16 bytes an id whatever its length. Two different ids collide with a
/// probability around 2^-128 per pair (under 10^-28 for a full batch of 100,000).
#[derive(Default)]
struct SeenIds {
    keys: (RandomState, RandomState),
    set: HashSet<u128, IdentityHash>,
}

impl SeenIds {
    /// False if `id` was seen before.
    fn insert(&mut self, id: &str) -> bool {
        let hi = self.keys.0.hash_one(id);
        let lo = self.keys.1.hash_one(id);
        self.set.insert(u128::from(hi) << 64 | u128::from(lo))
    }
}

/// The values are already keyed hashes: hashing them again would only cost time.
#[derive(Default, Clone, Copy)]
struct IdentityHash;

impl BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

struct State<'a> {
    sink: &'a mpsc::Sender<IngestChunk>,
    max_requests: usize,
    chunk: Vec<NewRequest>,
    chunk_bytes: usize,
    seen: SeenIds,
    count: usize,
    saw_requests: bool,
    /// The first problem found; the serde error that unwinds the parse only carries it out.
    problem: Option<IngestError>,
}

impl State<'_> {
    /// Records `problem` and returns the error that stops the parse.
    fn fail<E: de::Error>(&mut self, problem: IngestError) -> E {
        let message = problem.to_string();
        self.problem.get_or_insert(problem);
        E::custom(message)
    }

    fn invalid<E: de::Error>(&mut self, message: String) -> E {
        self.fail(IngestError::Invalid(message))
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_REQUESTS));
        self.chunk_bytes = 0;
        self.sink
            .blocking_send(IngestChunk::Requests(chunk))
            .map_err(|_| IngestError::StoreGone)
    }

    fn accept(&mut self, request: NewRequest) -> Result<(), IngestError> {
        if !self.seen.insert(&request.custom_id) {
            return Err(IngestError::Invalid(format!(
                "requests: custom_id's must be unique within a batch. Duplicate custom_id found: {}",
                request.custom_id
            )));
        }
        self.count += 1;
        // Past the limit the rest is still read, only to report the real count.
        if self.count <= self.max_requests {
            self.chunk_bytes += request.params.get().len();
            self.chunk.push(request);
            if self.chunk.len() >= CHUNK_REQUESTS || self.chunk_bytes >= CHUNK_BYTES {
                self.flush()?;
            }
        }
        Ok(())
    }
}

/// Lets a visitor report "not the expected kind of value" in the API's words.
macro_rules! reject_other_kinds {
    ($message:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str($message)
        }
    };
}

/// One item: `{"custom_id": "...", "params": {...}}`.
struct ItemSeed<'s, 'a> {
    state: &'s mut State<'a>,
    index: usize,
}

/// A request, and the address just past the last value of its object (in the bytes parsed),
/// which tells where the item ends.
type ItemParsed = (NewRequest, usize);

impl<'de> DeserializeSeed<'de> for ItemSeed<'_, '_> {
    type Value = ItemParsed;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<ItemParsed, D::Error> {
        d.deserialize_any(self)
    }
}

/// A key of an item, read without allocating for the two expected ones.
enum ItemKey {
    CustomId,
    Params,
    Other(String),
}

impl<'de> de::Deserialize<'de> for ItemKey {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = ItemKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<ItemKey, E> {
                Ok(match key {
                    "custom_id" => ItemKey::CustomId,
                    "params" => ItemKey::Params,
                    other => ItemKey::Other(other.to_owned()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// The address just past `raw`'s bytes.
fn end_of(raw: &RawValue) -> usize {
    raw.get().as_ptr() as usize + raw.get().len()
}

impl ItemSeed<'_, '_> {
    fn reject<E: de::Error>(self) -> E {
        let message = format!(
            "requests.{}: Input should be a valid dictionary",
            self.index
        );
        self.state.invalid(message)
    }

    fn custom_id<E: de::Error>(&mut self, raw: &RawValue) -> Result<String, E> {
        let i = self.index;
        let Ok(id) = serde_json::from_str::<String>(raw.get()) else {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: Input should be a valid string"
            )));
        };
        if id.chars().count() > satchel_wire::MAX_CUSTOM_ID_LEN {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: String should have at most 64 characters"
            )));
        }
        if !satchel_wire::is_valid_custom_id(&id) {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )));
        }
        Ok(id)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_, '_> {
    type Value = ItemParsed;
    reject_other_kinds!("a request object");

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<ItemParsed, A::Error> {
        Err(self.reject())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<ItemParsed, A::Error> {
        let i = self.index;
        let mut custom_id = None;
        let mut params: Option<&'de RawValue> = None;
        let mut values_end = 0;
        while let Some(key) = map.next_key::<ItemKey>()? {
            match key {
                ItemKey::CustomId => {
                    let raw: &RawValue = map.next_value()?;
                    values_end = values_end.max(end_of(raw));
                    custom_id = Some(self.custom_id(raw)?);
                }
                ItemKey::Params => {
                    let raw: &'de RawValue = map.next_value()?;
                    values_end = values_end.max(end_of(raw));
                    if !raw.get().starts_with('{') {
                        return Err(self.state.invalid(format!(
                            "requests.{i}.params: Input should be a valid dictionary"
                        )));
                    }
                    params = Some(raw);
                }
                ItemKey::Other(other) => {
                    let message = format!("requests.{i}.{other}: Extra inputs are not permitted");
                    let _: IgnoredAny = map.next_value()?;
                    return Err(self.state.invalid(message));
                }
            }
        }
        let Some(custom_id) = custom_id else {
            return Err(self
                .state
                .invalid(format!("requests.{i}.custom_id: Field required")));
        };
        let Some(params) = params else {
            return Err(self
                .state
                .invalid(format!("requests.{i}.params: Field required")));
        };
        Ok((
            NewRequest {
                custom_id,
                params: params.to_owned(),
            },
            values_end,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `body` and returns the outcome and every request the store would have received.
    fn parse(body: &str, max: usize) -> (Result<usize, IngestError>, Vec<NewRequest>, bool) {
        let (tx, mut rx) = mpsc::channel(1024);
        let result = parse_create_body(body.as_bytes(), max, &tx);
        drop(tx);
        let mut requests = Vec::new();
        let mut committed = false;
        while let Ok(chunk) = rx.try_recv() {
            match chunk {
                IngestChunk::Requests(r) => requests.extend(r),
                IngestChunk::Commit => committed = true,
            }
        }
        (result, requests, committed)
    }

    fn message(body: &str) -> String {
        match parse(body, 100_000) {
            (Err(e), _, committed) => {
                assert!(!committed, "a refused body must never commit");
                e.to_string()
            }
            (Ok(n), ..) => panic!("expected an error, parsed {n} requests"),
        }
    }

    #[test]
    fn keeps_params_bytes_as_received_in_order() {
        let body = r#"{"requests":[{"custom_id":"a","params":{"model" : "m",  "x":[1,2]}},{"params":{},"custom_id":"b-_9"}]}"#;
        let (result, requests, committed) = parse(body, 10);
        assert_eq!(result.unwrap(), 2);
        assert!(committed);
        assert_eq!(requests[0].custom_id, "a");
        assert_eq!(requests[0].params.get(), r#"{"model" : "m",  "x":[1,2]}"#);
        assert_eq!(requests[1].custom_id, "b-_9");
    }

    #[test]
    fn envelope_errors_use_the_api_messages() {
        assert_eq!(message(r#"{}"#), "requests: Field required");
        assert_eq!(
            message(r#"{"requests":[]}"#),
            "requests: List should have at least 1 item after validation, not 0"
        );
        assert_eq!(
            message(r#"{"requests":{}}"#),
            "requests: Input should be a valid list"
        );
        assert_eq!(
            message(r#"{"requests":[], "extra": 1}"#),
            "extra: Extra inputs are not permitted"
        );
        assert_eq!(message(r#"[]"#), "Input should be a valid dictionary");
        assert!(message(r#"{"requests":[}"#).starts_with("The request body is not valid JSON: "));
        assert!(
            message(r#"{"requests":[]} x"#).starts_with("The request body is not valid JSON: ")
        );
        assert!(message("").starts_with("The request body is not valid JSON: "));
    }

    #[test]
    fn item_errors_name_the_index() {
        let ok = r#"{"custom_id":"ok","params":{}}"#;
        assert_eq!(
            message(&format!(r#"{{"requests":[{ok},{{"params":{{}}}}]}}"#)),
            "requests.1.custom_id: Field required"
        );
        assert_eq!(
            message(r#"{"requests":[{"custom_id":"x"}]}"#),
            "requests.0.params: Field required"
        );
        assert_eq!(
            message(r#"{"requests":[{"custom_id":"x","params":[]}]}"#),
            "requests.0.params: Input should be a valid dictionary"
        );
        assert_eq!(
            message(r#"{"requests":[{"custom_id":7,"params":{}}]}"#),
            "requests.0.custom_id: Input should be a valid string"
        );
        assert_eq!(
            message(&format!(
                r#"{{"requests":[{ok},{{"custom_id":"a.b","params":{{}}}}]}}"#
            )),
            "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"
        );
        assert_eq!(
            message(&format!(
                r#"{{"requests":[{{"custom_id":"{}","params":{{}}}}]}}"#,
                "a".repeat(65)
            )),
            "requests.0.custom_id: String should have at most 64 characters"
        );
        assert_eq!(
            message(r#"{"requests":[{"custom_id":"x","params":{},"p":1}]}"#),
            "requests.0.p: Extra inputs are not permitted"
        );
        assert_eq!(
            message(r#"{"requests":[3]}"#),
            "requests.0: Input should be a valid dictionary"
        );
        assert_eq!(
            message(
                r#"{"requests":[{"custom_id":"dup","params":{}},{"custom_id":"dup","params":{}}]}"#
            ),
            "requests: custom_id's must be unique within a batch. Duplicate custom_id found: dup"
        );
    }

    /// A reader that hands out `step` bytes a call, to cut the body at every awkward place.
    struct Trickle<'a> {
        bytes: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_same_requests_whatever_the_read_sizes() {
        let body = r#" { "requests" : [ {"custom_id":"a","params":{"s":"x\"]}\\","n":[1,{"m":"}"}],"t":0.75,"e":-12.5e-3,"b":true,"z":null}} ,
            {"params":{"t":"\u00e9\n"},"custom_id":"b"}, {"custom_id":"c","params":{}} ] } "#;
        let (expected, requests, _) = parse(body, 10);
        assert_eq!(expected.unwrap(), 3);
        assert_eq!(
            requests[0].params.get(),
            r#"{"s":"x\"]}\\","n":[1,{"m":"}"}],"t":0.75,"e":-12.5e-3,"b":true,"z":null}"#
        );
        for step in [1, 2, 3, 7, 64] {
            let (tx, mut rx) = mpsc::channel(1024);
            let reader = Trickle {
                bytes: body.as_bytes(),
                step,
            };
            assert_eq!(
                parse_create_body(reader, 10, &tx).unwrap(),
                3,
                "step {step}"
            );
            drop(tx);
            let mut got = Vec::new();
            while let Ok(IngestChunk::Requests(r)) = rx.try_recv() {
                got.extend(r);
            }
            let ids: Vec<_> = got.iter().map(|r| r.custom_id.as_str()).collect();
            assert_eq!(ids, ["a", "b", "c"], "step {step}");
            assert_eq!(got[0].params.get(), requests[0].params.get());
            assert_eq!(got[1].params.get(), r#"{"t":"\u00e9\n"}"#);
        }
    }

    /// A reader whose first read stops after `cut` bytes, wherever that falls.
    struct CutOnce<'a> {
        bytes: &'a [u8],
        cut: Option<usize>,
    }

    impl Read for CutOnce<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.cut.take().unwrap_or(usize::MAX);
            let n = n.min(out.len()).min(self.bytes.len());
            out[..n].copy_from_slice(&self.bytes[..n]);
            self.bytes = &self.bytes[n..];
            Ok(n)
        }
    }

    #[test]
    fn a_read_may_end_anywhere_inside_an_item() {
        let body = r#"{"requests":[ 
 {"custom_id":"a","params":{"t":0.75,"e":-12.5e-3,"u":"\u00e9\"","l":[true,false,null],"n":{"m":1}}} ,
 {"custom_id":"b","params":{"x":10}} ]}"#;
        for cut in 1..body.len() {
            let (tx, mut rx) = mpsc::channel(16);
            let reader = CutOnce {
                bytes: body.as_bytes(),
                cut: Some(cut),
            };
            let parsed = parse_create_body(reader, 10, &tx);
            assert_eq!(parsed.unwrap(), 2, "cut at {cut}");
            drop(tx);
            let Some(IngestChunk::Requests(got)) = rx.blocking_recv() else {
                panic!("no requests at cut {cut}");
            };
            assert_eq!(
                got[0].params.get(),
                r#"{"t":0.75,"e":-12.5e-3,"u":"\u00e9\"","l":[true,false,null],"n":{"m":1}}"#
            );
            assert_eq!(got[1].params.get(), r#"{"x":10}"#);
        }
    }

    #[test]
    fn malformed_json_anywhere_is_refused() {
        let ok = r#"{"custom_id":"ok","params":{}}"#;
        for body in [
            format!(r#"{{"requests":[{ok},]}}"#),
            format!(r#"{{"requests":[{ok} {ok}]}}"#),
            format!(r#"{{"requests":[{ok}]"#),
            r#"{"requests":[{"custom_id":"a","params":{]}]}"#.to_owned(),
            r#"{"requests":[{"custom_id":"a","params":{"x":tru}}]}"#.to_owned(),
            r#"{"requests":[{"custom_id":"a","params":{"x":"unterminated}]}"#.to_owned(),
            format!(r#"{{"requests" [{ok}]}}"#),
            format!(r#"{{requests:[{ok}]}}"#),
            format!(r#"{{"requests":[{ok}]}},"#),
            "{".to_owned(),
            "nul".to_owned(),
            r"\u".to_owned(),
        ] {
            let text = message(&body);
            assert!(
                text.starts_with("The request body is not valid JSON: "),
                "{body}: {text}"
            );
        }
    }

    #[test]
    fn finds_quotes_and_backslashes_in_every_position() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    assert_eq!(find_quote_or_backslash(&bytes), Some(at));
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                        assert_eq!(find_quote_or_backslash(&bytes), Some(at));
                    }
                }
            }
            assert_eq!(find_quote_or_backslash(&vec![b'x'; len]), None);
        }
        // Bytes next to the targets (0x21, 0x23, 0x5b, 0x5d) and high bytes never match.
        let near = [0x21u8, 0x23, 0x5b, 0x5d, 0xa2, 0xdc, 0xff, 0x00, 0x01];
        assert_eq!(find_quote_or_backslash(&near), None);
    }

    #[test]
    fn too_many_requests_reports_the_real_count_and_creates_nothing() {
        let items: Vec<String> = (0..2_503)
            .map(|i| format!(r#"{{"custom_id":"r{i}","params":{{}}}}"#))
            .collect();
        let body = format!(r#"{{"requests":[{}]}}"#, items.join(","));
        let (result, _, committed) = parse(&body, 2_500);
        assert_eq!(
            result.unwrap_err().to_string(),
            "requests: List should have at most 2500 items after validation, not 2503"
        );
        assert!(!committed);
    }

    #[test]
    fn a_bad_item_after_many_chunks_never_commits() {
        let mut items: Vec<String> = (0..3_000)
            .map(|i| format!(r#"{{"custom_id":"r{i}","params":{{}}}}"#))
            .collect();
        items.push(r#"{"custom_id":"bad id","params":{}}"#.into());
        let body = format!(r#"{{"requests":[{}]}}"#, items.join(","));
        let (result, requests, committed) = parse(&body, 100_000);
        assert!(result.is_err());
        assert_eq!(
            requests.len(),
            3_000,
            "earlier chunks were streamed to the store"
        );
        assert!(!committed, "but the batch was never committed");
    }

    /// Differential check against serde_json on randomly damaged bodies: whatever serde_json
    /// refuses as JSON, the ingest refuses too; whatever the ingest accepts, serde_json parses
    /// to the same requests.
    #[test]
    fn agrees_with_serde_json_on_damaged_bodies() {
        let base = r#"{"requests":[{"custom_id":"a-1","params":{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"q \"x\" \\ [1,{2}] é"}],"n":-1.5e3,"t":true,"z":null}},{"params":{"k":[[],{}],"s":"\u00e9}]"},"custom_id":"b_2"}]}"#;
        let significant = b"{}[],:\"\\ 0e.-tfn";
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..3_000 {
            let mut body = base.as_bytes().to_vec();
            for _ in 0..rng.usize(1..=3) {
                let at = rng.usize(0..body.len());
                match rng.u8(0..3) {
                    0 => {
                        body.remove(at);
                    }
                    1 => body.insert(at, significant[rng.usize(0..significant.len())]),
                    _ => body[at] = significant[rng.usize(0..significant.len())],
                }
            }
            let Ok(text) = String::from_utf8(body) else {
                continue;
            };
            let (result, requests, committed) = parse(&text, 100);
            match serde_json::from_str::<serde_json::Value>(&text) {
                Err(_) => {
                    assert!(
                        result.is_err() && !committed,
                        "accepted invalid JSON: {text}"
                    );
                }
                Ok(value) => {
                    if result.is_ok() {
                        let items = value["requests"].as_array().expect("requests is a list");
                        assert_eq!(items.len(), requests.len(), "{text}");
                        for (item, request) in items.iter().zip(&requests) {
                            let params: serde_json::Value =
                                serde_json::from_str(request.params.get()).unwrap();
                            assert_eq!(item["params"], params, "{text}");
                            assert_eq!(item["custom_id"], request.custom_id.as_str(), "{text}");
                        }
                    }
                }
            }
        }
    }
}
