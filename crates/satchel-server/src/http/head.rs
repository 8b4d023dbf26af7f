//! Checks each request head before hyper sees it, so that a head we refuse (too long a URI,
//! too many or too large headers, a malformed line) is answered with the API's error
//! envelope and a `request-id`. hyper answers these itself with an empty body and offers no
//! hook to change that; it never sees a head refused here, so it never does.
//!
//! The scanner follows the connection's byte stream: it collects a head line by line, lets
//! `httparse` (the parser hyper itself uses, with the same defaults) judge it, then skips
//! the body by its `Content-Length`. A chunked body cannot be skipped without decoding it,
//! so after one the scanner stands aside for the rest of the connection and hyper's own
//! answers apply (for this rare case only: keep-alive after a chunked upload).

use axum::http::Uri;

/// Longest request line (method, URI, version) accepted, in bytes. The hosted API sits
/// behind a proxy with a similar limit; hyper's own ceiling (the `http` crate's) is 64 KiB.
pub const MAX_REQUEST_LINE_BYTES: usize = 16 * 1024;
/// Largest whole head (request line and headers) accepted, in bytes.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Most header lines accepted; hyper is configured with the same count.
pub const MAX_HEADERS: usize = 100;

/// Why a head was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UriTooLong,
    HeadersTooLarge,
    Malformed(&'static str),
}

/// Where the stream stands.
#[derive(Debug)]
enum Scan {
    /// Collecting a head: the bytes so far, where the current line starts, lines ended.
    Head {
        buf: Vec<u8>,
        line_start: usize,
        lines: usize,
    },
    /// Skipping this many body bytes.
    Body(u64),
    /// A body we cannot frame went by: stand aside.
    Off,
}

#[derive(Debug)]
pub struct HeadScanner {
    scan: Scan,
}

impl Default for HeadScanner {
    fn default() -> Self {
        Self {
            scan: Scan::default_head(),
        }
    }
}

impl HeadScanner {
    /// Follows `bytes`, the next bytes read from the client. An error means the head being
    /// read must be refused (and none of `bytes` handed on).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), Refusal> {
        while !bytes.is_empty() {
            match &mut self.scan {
                Scan::Off => return Ok(()),
                Scan::Body(remaining) => {
                    let take = (*remaining).min(bytes.len() as u64);
                    *remaining -= take;
                    bytes = &bytes[take as usize..];
                    if *remaining == 0 {
                        self.scan = Scan::default_head();
                    }
                }
                Scan::Head { buf, .. } if buf.is_empty() => {
                    // The usual case, a whole head in one read: judged in place, once.
                    if let Some((len, framing)) = parse(bytes)? {
                        if len > MAX_HEAD_BYTES {
                            return Err(Refusal::HeadersTooLarge);
                        }
                        bytes = &bytes[len..];
                        self.scan = Scan::after(framing);
                        continue;
                    }
                    // Incomplete (and nothing wrong so far): collect it line by line.
                    bytes = self.collect(bytes)?;
                }
                Scan::Head { .. } => {
                    bytes = self.collect(bytes)?;
                }
            }
        }
        Ok(())
    }

    /// Adds the bytes of a head arriving in pieces, up to the end of the current line (or
    /// all of them); returns what is left. The head is parsed again only at its first line
    /// and at the blank line ending it, which keeps the cost linear in its size.
    fn collect<'b>(&mut self, bytes: &'b [u8]) -> Result<&'b [u8], Refusal> {
        let Scan::Head {
            buf,
            line_start,
            lines,
        } = &mut self.scan
        else {
            return Ok(bytes);
        };
        let (line, rest, complete) = match bytes.iter().position(|b| *b == b'\n') {
            Some(i) => (&bytes[..=i], &bytes[i + 1..], true),
            None => (bytes, &[][..], false),
        };
        let first_line = *line_start == 0;
        if buf.len() + line.len() > MAX_HEAD_BYTES {
            return Err(if first_line {
                Refusal::UriTooLong
            } else {
                Refusal::HeadersTooLarge
            });
        }
        buf.extend_from_slice(line);
        if first_line && buf.len() > MAX_REQUEST_LINE_BYTES {
            return Err(Refusal::UriTooLong);
        }
        if !complete {
            return Ok(rest);
        }
        let this_line = &buf[*line_start..];
        let blank = this_line == b"\n" || this_line == b"\r\n";
        *line_start = buf.len();
        *lines += 1;
        if (first_line || blank || *lines > MAX_HEADERS + 1)
            && let Some((_, framing)) = parse(buf)?
        {
            self.scan = Scan::after(framing);
        }
        Ok(rest)
    }
}

impl Scan {
    fn after(framing: Framing) -> Self {
        match framing {
            Framing::None => Self::default_head(),
            Framing::Length(n) => Self::Body(n),
            Framing::Unframed => Self::Off,
        }
    }

    fn default_head() -> Self {
        Self::Head {
            buf: Vec::new(),
            line_start: 0,
            lines: 0,
        }
    }
}

/// How the body after a complete head is framed.
enum Framing {
    None,
    Length(u64),
    /// Chunked: only hyper decodes it.
    Unframed,
}

/// Judges the head so far: `None` while incomplete; once complete, its length and body
/// framing. The checks after `httparse` are the ones hyper makes before answering 400.
fn parse(buf: &[u8]) -> Result<Option<(usize, Framing)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(buf) {
        Ok(httparse::Status::Partial) => {
            if request
                .path
                .is_some_and(|p| p.len() > MAX_REQUEST_LINE_BYTES)
            {
                return Err(Refusal::UriTooLong);
            }
            Ok(None)
        }
        Ok(httparse::Status::Complete(len)) => {
            let path = request.path.unwrap_or("");
            if path.len() > MAX_REQUEST_LINE_BYTES {
                return Err(Refusal::UriTooLong);
            }
            if Uri::try_from(path).is_err() {
                return Err(Refusal::Malformed("invalid request target"));
            }
            let framing = framing(request.version == Some(1), request.headers)?;
            Ok(Some((len, framing)))
        }
        Err(httparse::Error::TooManyHeaders) => Err(Refusal::HeadersTooLarge),
        Err(httparse::Error::Token) if request.method.is_none() => {
            Err(Refusal::Malformed("invalid method"))
        }
        Err(httparse::Error::Token) => Err(Refusal::Malformed("invalid request target")),
        Err(httparse::Error::Version) => Err(Refusal::Malformed("unsupported HTTP version")),
        Err(httparse::Error::HeaderName) => Err(Refusal::Malformed("invalid header name")),
        Err(httparse::Error::HeaderValue) => Err(Refusal::Malformed("invalid header value")),
        Err(_) => Err(Refusal::Malformed("malformed request line or headers")),
    }
}

/// The body framing, by RFC 9112 §6.3 as hyper applies it.
fn framing(http11: bool, headers: &[httparse::Header<'_>]) -> Result<Framing, Refusal> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !http11 {
                return Err(Refusal::Malformed(
                    "Transfer-Encoding is not allowed in HTTP/1.0",
                ));
            }
            let last = header
                .value
                .rsplit(|b| *b == b',')
                .next()
                .unwrap_or_default();
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let n = digits(header.value).ok_or(Refusal::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|prev| prev != n) {
                return Err(Refusal::Malformed("conflicting Content-Length headers"));
            }
            length = Some(n);
        }
    }
    match (chunked, length) {
        (Some(false), _) => Err(Refusal::Malformed(
            "Transfer-Encoding must end with chunked",
        )),
        (Some(true), _) => Ok(Framing::Unframed),
        (None, Some(n)) if n > 0 => Ok(Framing::Length(n)),
        (None, _) => Ok(Framing::None),
    }
}

/// A Content-Length value: ASCII digits only (no sign, no spaces), as hyper reads it.
fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_all(parts: &[&[u8]]) -> Result<(), Refusal> {
        let mut scanner = HeadScanner::default();
        for part in parts {
            scanner.feed(part)?;
        }
        Ok(())
    }

    #[test]
    fn good_requests_pass_whole_or_in_pieces() {
        let request = b"GET /v1/messages/batches HTTP/1.1\r\nHost: x\r\nx-api-key: k\r\n\r\n";
        assert_eq!(feed_all(&[request]), Ok(()));
        let pieces: Vec<&[u8]> = request.chunks(3).collect();
        assert_eq!(feed_all(&pieces), Ok(()));
        assert_eq!(feed_all(&[b"GET / HTTP/1.0\r\n\r\n"]), Ok(()));
    }

    #[test]
    fn bodies_are_skipped_and_the_next_head_is_checked() {
        let two =
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nGET /\r\nBAD\x01 / HTTP/1.1\r\n\r\n";
        assert_eq!(
            feed_all(&[two]),
            Err(Refusal::Malformed("invalid method")),
            "the body's bytes (which look like a bad line) are skipped, the next head is not"
        );
        let ok = b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\n\r\n";
        assert_eq!(feed_all(&[ok]), Ok(()));
        let chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\x01\x02";
        assert_eq!(
            feed_all(&[chunked]),
            Ok(()),
            "after a chunked body, hyper judges"
        );
    }

    #[test]
    fn limits_and_malformed_heads_are_refused() {
        let long_uri = format!(
            "GET /{} HTTP/1.1\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE_BYTES)
        );
        assert_eq!(feed_all(&[long_uri.as_bytes()]), Err(Refusal::UriTooLong));
        let no_newline = "a".repeat(MAX_REQUEST_LINE_BYTES + 1);
        assert_eq!(
            feed_all(&[b"GET /", no_newline.as_bytes()]),
            Err(Refusal::UriTooLong)
        );
        let many: String = (0..=MAX_HEADERS).map(|i| format!("h{i}: v\r\n")).collect();
        let head = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(feed_all(&[head.as_bytes()]), Err(Refusal::HeadersTooLarge));
        let big = format!(
            "GET / HTTP/1.1\r\nh: {}\r\n\r\n",
            "v".repeat(MAX_HEAD_BYTES)
        );
        assert_eq!(feed_all(&[big.as_bytes()]), Err(Refusal::HeadersTooLarge));
        assert!(
            feed_all(&[b"\x16\x03\x01\x02\x00\x01\x00"]).is_err(),
            "TLS hello"
        );
        assert!(feed_all(&[b"GET / HTTP/1.1\r\nbad header\r\n\r\n"]).is_err());
        assert!(feed_all(&[b"GET / HTTP/2.0\r\n\r\n"]).is_err());
        assert!(feed_all(&[b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"]).is_err());
        assert!(
            feed_all(&[b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"])
                .is_err()
        );
        assert!(feed_all(&[b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"]).is_err());
    }
}
