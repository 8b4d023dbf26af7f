//! The create body as a blocking reader with a size cap, for the streaming parser.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::body::Body;
use futures::{StreamExt, TryStreamExt};
use tokio_util::io::{StreamReader, SyncIoBridge};

/// Set when the body passed the cap, so the caller can answer 413 rather than 400.
#[derive(Clone, Default)]
pub struct Overflow(Arc<AtomicBool>);

impl Overflow {
    pub fn happened(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// A blocking reader over `body` that fails once more than `limit` bytes arrive.
/// Must be created inside the runtime and read on a blocking thread.
pub fn capped_reader(body: Body, limit: u64) -> (impl io::Read + Send + 'static, Overflow) {
    let overflow = Overflow::default();
    let flag = overflow.clone();
    let mut seen: u64 = 0;
    let stream = body
        .into_data_stream()
        .map_err(io::Error::other)
        .map(move |chunk| {
            let chunk = chunk?;
            seen += chunk.len() as u64;
            if seen > limit {
                flag.0.store(true, Ordering::Relaxed);
                return Err(io::Error::other("request body too large"));
            }
            Ok(chunk)
        });
    (SyncIoBridge::new(StreamReader::new(stream)), overflow)
}
