//! The create body as an async reader with a size cap and an idle timeout, for the streaming
//! parser.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::Body;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncRead;
use tokio_util::io::StreamReader;

/// Set when the body passed the cap, so the caller can answer 413 rather than 400.
#[derive(Clone, Default)]
pub struct Overflow(Arc<AtomicBool>);

impl Overflow {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A reader over `body` that fails once more than `limit` bytes arrive, or when no byte
/// arrives for `idle` (an error of kind `TimedOut`): a stalled upload ends rather than
/// holding its connection and its half-made batch forever.
pub fn capped_reader(
    body: Body,
    limit: u64,
    idle: Duration,
) -> (impl AsyncRead + Send + Unpin + 'static, Overflow) {
    let overflow = Overflow::default();
    let flag = overflow.clone();
    let mut seen: u64 = 0;
    let chunks = body.into_data_stream().map_err(io::Error::other);
    let watched = futures::stream::unfold(Box::pin(chunks), move |mut chunks| async move {
        match tokio::time::timeout(idle, chunks.next()).await {
            Ok(next) => next.map(|chunk| (chunk, chunks)),
            Err(_) => Some((Err(io::Error::from(io::ErrorKind::TimedOut)), chunks)),
        }
    });
    let stream = watched.map(move |chunk| {
        let chunk = chunk?;
        metrics::counter!(satchel_core::observe::INGEST_BYTES).increment(chunk.len() as u64);
        seen += chunk.len() as u64;
        if seen > limit {
            flag.0.store(true, Ordering::Relaxed);
            return Err(io::Error::other("request body too large"));
        }
        Ok(chunk)
    });
    (StreamReader::new(Box::pin(stream)), overflow)
}
