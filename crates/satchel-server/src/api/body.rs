//! The create body as an async reader for the streaming parser: decoded as it arrives when
//! it is compressed (`Content-Encoding: gzip`, `deflate`, `zstd`), capped in decoded size,
//! and given up when the client stalls.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_compression::tokio::bufread::{GzipDecoder, ZlibDecoder, ZstdDecoder};
use axum::body::Body;
use axum::http::HeaderValue;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::io::StreamReader;

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped deflate (RFC 9110).
    Deflate,
    Zstd,
}

impl Encoding {
    /// The encoding a `Content-Encoding` header names; the name itself when unsupported.
    pub fn from_header(value: Option<&HeaderValue>) -> Result<Self, String> {
        let Some(value) = value else {
            return Ok(Self::Identity);
        };
        let name = value
            .to_str()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match name.as_str() {
            "" | "identity" => Ok(Self::Identity),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            "deflate" => Ok(Self::Deflate),
            "zstd" => Ok(Self::Zstd),
            _ => Err(satchel_wire::quote_short(&name)),
        }
    }
}

/// Set when the body passed the cap, so the caller can answer 413 rather than 400.
#[derive(Clone, Default)]
pub struct Overflow(Arc<AtomicBool>);

impl Overflow {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A reader over `body`, decoded per `encoding`, that fails once more than `limit` decoded
/// bytes arrive, or when no byte arrives for `idle` (an error of kind `TimedOut`): a stalled
/// upload ends rather than holding its connection and its half-made batch forever.
pub fn body_reader(
    body: Body,
    encoding: Encoding,
    limit: u64,
    idle: Duration,
) -> (Pin<Box<dyn AsyncRead + Send>>, Overflow) {
    let chunks = body.into_data_stream().map_err(io::Error::other);
    let watched = futures::stream::unfold(Box::pin(chunks), move |mut chunks| async move {
        match tokio::time::timeout(idle, chunks.next()).await {
            Ok(next) => next.map(|chunk| (chunk, chunks)),
            Err(_) => Some((Err(io::Error::from(io::ErrorKind::TimedOut)), chunks)),
        }
    });
    // Bytes as received (before decoding), for the metrics.
    let counted = watched.inspect(|chunk| {
        if let Ok(chunk) = chunk {
            metrics::counter!(satchel_core::observe::INGEST_BYTES).increment(chunk.len() as u64);
        }
    });
    let raw = StreamReader::new(Box::pin(counted));
    let decoded: Pin<Box<dyn AsyncRead + Send>> = match encoding {
        Encoding::Identity => Box::pin(raw),
        Encoding::Gzip => {
            let mut decoder = GzipDecoder::new(raw);
            decoder.multiple_members(true);
            Box::pin(decoder)
        }
        Encoding::Deflate => Box::pin(ZlibDecoder::new(raw)),
        Encoding::Zstd => Box::pin(ZstdDecoder::new(raw)),
    };
    let overflow = Overflow::default();
    let capped = Capped {
        inner: decoded,
        left: limit,
        overflow: overflow.clone(),
    };
    (Box::pin(capped), overflow)
}

/// Fails once more than its limit has been read through it.
struct Capped {
    inner: Pin<Box<dyn AsyncRead + Send>>,
    left: u64,
    overflow: Overflow,
}

impl AsyncRead for Capped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(self.inner.as_mut().poll_read(cx, buf))?;
        let read = (buf.filled().len() - before) as u64;
        match self.left.checked_sub(read) {
            Some(left) => {
                self.left = left;
                Poll::Ready(Ok(()))
            }
            None => {
                // An error must come with nothing read.
                buf.set_filled(before);
                self.overflow.0.store(true, Ordering::Relaxed);
                Poll::Ready(Err(io::Error::other("request body too large")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_compression::tokio::bufread::GzipEncoder;
    use tokio::io::AsyncReadExt;

    use super::*;

    #[tokio::test]
    async fn the_cap_applies_to_the_decoded_size() {
        let plain = vec![b'a'; 100_000];
        let mut zipped = Vec::new();
        GzipEncoder::new(&plain[..])
            .read_to_end(&mut zipped)
            .await
            .unwrap();
        assert!(zipped.len() < 1_000, "a small bomb");
        let idle = Duration::from_secs(5);
        let (mut reader, overflow) =
            body_reader(Body::from(zipped.clone()), Encoding::Gzip, 50_000, idle);
        let mut out = Vec::new();
        assert!(reader.read_to_end(&mut out).await.is_err());
        assert!(overflow.happened());
        let (mut reader, overflow) = body_reader(Body::from(zipped), Encoding::Gzip, 100_000, idle);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, plain);
        assert!(!overflow.happened());
    }

    #[test]
    fn encodings_by_name() {
        let header = |v: &'static str| Some(HeaderValue::from_static(v));
        assert_eq!(Encoding::from_header(None), Ok(Encoding::Identity));
        assert_eq!(
            Encoding::from_header(header("GZIP").as_ref()),
            Ok(Encoding::Gzip)
        );
        assert_eq!(
            Encoding::from_header(header("deflate").as_ref()),
            Ok(Encoding::Deflate)
        );
        assert_eq!(
            Encoding::from_header(header("zstd").as_ref()),
            Ok(Encoding::Zstd)
        );
        assert_eq!(
            Encoding::from_header(header("br").as_ref()),
            Err("br".to_owned())
        );
    }
}
