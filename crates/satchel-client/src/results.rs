//! Results, read as they arrive: the JSONL body is split into lines chunk by chunk, so memory
//! holds one line and one network chunk whatever the size of the file (which may be hundreds
//! of megabytes).
//!
//! Lines end with `\n`; a `\r` before it is dropped, and a last line without a terminator is
//! still a line. Nothing is skipped silently: a blank line or one that is not a result line is
//! an error item, and the stream goes on after it; a broken connection is an error item that
//! ends the stream, so a truncated file can never pass for a complete one.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures::Stream;
use satchel_wire::BatchResultLine;

use crate::error::{Error, Result};

/// The longest results line accepted. A line is one request's outcome; even a very long
/// message is a few megabytes, so a line this long means the body is not JSONL.
pub const MAX_LINE_BYTES: usize = 64 * 1024 * 1024;

/// Splits bytes into lines as they come. Holds the unterminated tail, nothing more.
#[derive(Debug, Default)]
pub(crate) struct LineDecoder {
    buf: BytesMut,
    /// How far `buf` is known to hold no `\n`, so each byte is searched once.
    scanned: usize,
}

impl LineDecoder {
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete line, without its `\n` or `\r\n`.
    pub fn next_line(&mut self) -> Option<Bytes> {
        match memchr::memchr(b'\n', &self.buf[self.scanned..]) {
            Some(at) => {
                let end = self.scanned + at;
                let mut line = self.buf.split_to(end + 1);
                line.truncate(strip_cr(&line[..end]));
                self.scanned = 0;
                Some(line.freeze())
            }
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// Bytes held that are not yet a complete line.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// At the end of the body: the last line if it had no terminator.
    pub fn finish(&mut self) -> Option<Bytes> {
        if self.buf.is_empty() {
            return None;
        }
        let mut line = self.buf.split();
        line.truncate(strip_cr(&line));
        self.scanned = 0;
        Some(line.freeze())
    }
}

fn strip_cr(line: &[u8]) -> usize {
    match line.last() {
        Some(b'\r') => line.len() - 1,
        _ => line.len(),
    }
}

/// The lines of a results file as raw bytes (terminator removed), in order.
///
/// For passing results on untouched (to a file, say) without parsing them; [`Results`]
/// parses them. Items: `Ok(line)`, `Err(Error::ResultLine)` for a blank line (the stream
/// goes on), or a final `Err` if the connection breaks or a line is too long.
pub struct ResultLines {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    decoder: LineDecoder,
    /// Number of the last line handed out, 1-based.
    line: u64,
    body_ended: bool,
    done: bool,
}

impl ResultLines {
    pub(crate) fn new(response: reqwest::Response) -> Self {
        Self::from_stream(response.bytes_stream())
    }

    pub(crate) fn from_stream(
        body: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    ) -> Self {
        Self {
            body: Box::pin(body),
            decoder: LineDecoder::default(),
            line: 0,
            body_ended: false,
            done: false,
        }
    }

    /// How many lines have been handed out so far (including bad ones).
    pub fn lines_read(&self) -> u64 {
        self.line
    }

    fn hand_out(&mut self, line: Bytes) -> Result<Bytes> {
        self.line += 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err(Error::ResultLine {
                line: self.line,
                reason: "blank line (results files have none)".into(),
            });
        }
        Ok(line)
    }
}

impl Stream for ResultLines {
    type Item = Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(line) = this.decoder.next_line() {
                return Poll::Ready(Some(this.hand_out(line)));
            }
            if this.decoder.pending() > MAX_LINE_BYTES {
                this.done = true;
                return Poll::Ready(Some(Err(Error::ResultLineTooLong {
                    line: this.line + 1,
                    limit: MAX_LINE_BYTES,
                })));
            }
            if this.body_ended {
                this.done = true;
                return Poll::Ready(this.decoder.finish().map(|line| this.hand_out(line)));
            }
            match this.body.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => this.decoder.push(&chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(Error::transport(e))));
                }
                Poll::Ready(None) => this.body_ended = true,
            }
        }
    }
}

/// The lines of a results file, parsed into [`BatchResultLine`]s, in order.
///
/// ```no_run
/// # async fn run(client: satchel_client::Client) -> Result<(), satchel_client::Error> {
/// use futures::TryStreamExt;
/// use satchel_client::BatchResult;
///
/// let mut results = client.messages().batches().results("msgbatch_…").await?;
/// while let Some(line) = results.try_next().await? {
///     match &line.result {
///         BatchResult::Succeeded { .. } => {
///             let message = line.result.parse_message().transpose().ok().flatten();
///             println!("{}: {:?}", line.custom_id, message.map(|m| m.content));
///         }
///         other => println!("{}: {}", line.custom_id, other.kind()),
///     }
/// }
/// # Ok(()) }
/// ```
///
/// `try_next` stops at the first error; to go past a bad line, poll with `next` and look at
/// each `Err` ([`Error::ResultLine`] is recoverable, anything else ends the stream).
pub struct Results {
    lines: ResultLines,
}

impl Results {
    pub(crate) fn new(lines: ResultLines) -> Self {
        Self { lines }
    }

    /// How many lines have been read so far (including bad ones).
    pub fn lines_read(&self) -> u64 {
        self.lines.lines_read()
    }
}

impl Stream for Results {
    type Item = Result<BatchResultLine>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match Pin::new(&mut this.lines).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Some(Ok(line))) => Poll::Ready(Some(
                serde_json::from_slice::<BatchResultLine>(&line).map_err(|e| Error::ResultLine {
                    line: this.lines.lines_read(),
                    reason: format!("not a result line: {e}"),
                }),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn lines_of(chunks: &[&[u8]]) -> Vec<String> {
        let mut decoder = LineDecoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk);
            while let Some(line) = decoder.next_line() {
                out.push(String::from_utf8(line.to_vec()).unwrap());
            }
        }
        out.extend(
            decoder
                .finish()
                .map(|l| String::from_utf8(l.to_vec()).unwrap()),
        );
        out
    }

    #[test]
    fn splits_across_chunks_and_tolerates_crlf() {
        assert_eq!(lines_of(&[b"a\nb", b"c\r", b"\nd\r\n"]), ["a", "bc", "d"]);
        assert_eq!(lines_of(&[b"a\r\nlast"]), ["a", "last"]);
        assert_eq!(lines_of(&[b"", b"x", b"", b"\n"]), ["x"]);
        assert_eq!(lines_of(&[b"a\n\nb\n"]), ["a", "", "b"]);
        let one_byte_at_a_time: Vec<&[u8]> = b"ab\r\ncd\n".chunks(1).collect();
        assert_eq!(lines_of(&one_byte_at_a_time), ["ab", "cd"]);
    }

    fn stream_of(chunks: Vec<&'static [u8]>) -> ResultLines {
        ResultLines::from_stream(futures::stream::iter(
            chunks.into_iter().map(|c| Ok(Bytes::from_static(c))),
        ))
    }

    #[tokio::test]
    async fn bad_and_blank_lines_are_errors_and_the_stream_goes_on() {
        let good = br#"{"custom_id":"a","result":{"type":"canceled"}}"#;
        let mut body = Vec::new();
        body.extend_from_slice(good);
        body.extend_from_slice(b"\r\n\r\nnot json\n");
        body.extend_from_slice(good);
        let body: &'static [u8] = Box::leak(body.into_boxed_slice());
        let items: Vec<_> = Results::new(stream_of(vec![body])).collect().await;
        assert_eq!(items.len(), 4);
        assert_eq!(items[0].as_ref().unwrap().custom_id, "a");
        let e = items[1].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("results line 2: blank line"), "{e}");
        let e = items[2].as_ref().unwrap_err().to_string();
        assert!(e.starts_with("results line 3: not a result line"), "{e}");
        assert_eq!(items[3].as_ref().unwrap().custom_id, "a");
    }
}
