//! The body as a buffer refilled from the client's stream in growing blocks, and the few
//! envelope tokens (keys, punctuation, scalars) read straight from it.

use std::io;

use bytes::{Buf, Bytes, BytesMut};

use serde::de::IgnoredAny;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::scan::Scan;
use super::{IngestError, READ_BLOCK_MAX, READ_BLOCK_MIN, not_json};

/// The body as a buffer refilled from the reader in large blocks. Each item taken out of it
/// ([`Input::split_item`]) is frozen and shared with the requests made from it, so the buffer
/// moves on to a new block whenever the old one is still referenced (by chunks on their way
/// to the store) and reuses it in place otherwise.
pub(super) struct Input<R> {
    reader: R,
    /// `buf[pos..]` is read and not yet consumed.
    pub(super) buf: BytesMut,
    pub(super) pos: usize,
    pub(super) eof: bool,
    /// Bytes consumed before `buf[0]`, for error positions.
    base: u64,
    /// Free space to offer the next read.
    room: usize,
}

impl<R: AsyncRead + Unpin> Input<R> {
    pub(super) fn new(reader: R) -> Self {
        Self {
            reader,
            buf: BytesMut::with_capacity(READ_BLOCK_MIN),
            room: READ_BLOCK_MIN,
            pos: 0,
            eof: false,
            base: 0,
        }
    }

    /// The read and unconsumed bytes.
    pub(super) fn window(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    /// Offset in the body of the next unconsumed byte.
    pub(super) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(super) fn advance(&mut self, n: usize) {
        self.pos += n;
    }

    /// The next `len` bytes, consumed.
    pub(super) fn take(&mut self, len: usize) -> &[u8] {
        let start = self.pos;
        self.pos += len;
        &self.buf[start..start + len]
    }

    /// The next `len` bytes, consumed and handed out as shared bytes (no copy).
    pub(super) fn split_item(&mut self, len: usize) -> Bytes {
        let consumed = self.buf.split_to(self.pos + len).freeze();
        self.base += consumed.len() as u64;
        self.pos = 0;
        consumed.slice(consumed.len() - len..)
    }

    /// Reads more, keeping the unconsumed bytes (the buffer grows when one value fills it).
    /// Returns false at the end of the body.
    async fn fill(&mut self) -> Result<bool, IngestError> {
        if self.eof {
            return Ok(false);
        }
        if self.pos > 0 {
            self.buf.advance(self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        self.buf.reserve(self.room);
        let offered = self.buf.capacity() - self.buf.len();
        // A fast upload always has bytes ready: yield now and then so the parse shares its
        // worker thread with other tasks.
        tokio::task::consume_budget().await;
        loop {
            match self.reader.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => {
                    // The body comes faster than the room we give it: give it more.
                    if n == offered {
                        self.room = (self.room * 2).min(READ_BLOCK_MAX);
                    }
                    return Ok(true);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(IngestError::Read(e)),
            }
        }
    }

    /// Reads until at least `want` bytes are buffered, or the body ends.
    pub(super) async fn fill_to(&mut self, want: usize) -> Result<(), IngestError> {
        while self.buf.len() - self.pos < want {
            if !self.fill().await? {
                break;
            }
        }
        Ok(())
    }

    /// Skips whitespace; the next byte, not consumed (None at the end of the body).
    pub(super) async fn peek_token(&mut self) -> Result<Option<u8>, IngestError> {
        loop {
            while self.pos < self.buf.len() {
                match self.buf[self.pos] {
                    b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                    b => return Ok(Some(b)),
                }
            }
            if !self.fill().await? {
                return Ok(None);
            }
        }
    }

    pub(super) fn unexpected(&self, found: Option<u8>, expected: &str) -> IngestError {
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
    pub(super) async fn check_scalar(&mut self) -> Result<(), IngestError> {
        let offset = self.offset();
        let len = self.value_len().await?;
        serde_json::from_slice::<IgnoredAny>(self.take(len))
            .map(|_| ())
            .map_err(|e| not_json(&e, offset))
    }

    /// An object key and its `:`, consumed.
    pub(super) async fn key(&mut self) -> Result<String, IngestError> {
        let found = self.peek_token().await?;
        if found != Some(b'"') {
            return Err(self.unexpected(found, "a string key"));
        }
        let offset = self.offset();
        let len = self.value_len().await?;
        let key =
            serde_json::from_slice::<String>(self.take(len)).map_err(|e| not_json(&e, offset))?;
        match self.peek_token().await? {
            Some(b':') => {
                self.advance(1);
                Ok(key)
            }
            other => Err(self.unexpected(other, "`:`")),
        }
    }

    /// The length of the JSON value starting at the next byte (after whitespace), reading
    /// as much as it takes. Only cuts: the bytes are validated by whoever parses them.
    pub(super) async fn value_len(&mut self) -> Result<usize, IngestError> {
        let Some(first) = self.peek_token().await? else {
            return Err(self.unexpected(None, "a value"));
        };
        let mut scan = Scan::new(first);
        loop {
            if let Some(len) = scan.run(self.window()) {
                return Ok(len);
            }
            if !self.fill().await? {
                return match scan.at_eof(self.buf.len() - self.pos) {
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
