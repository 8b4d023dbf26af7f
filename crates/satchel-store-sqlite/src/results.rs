//! Streaming a batch's result lines, a page at a time.
//!
//! Each page is read in its own short read transaction on a blocking thread, and the next one
//! is read ahead while the current one is sent. So a download, however slow its client, holds
//! no thread, no connection and no read transaction between pages: it cannot starve the store
//! of threads, and it never pins the WAL (a checkpoint can always move past it).
//!
//! Memory is bounded whatever the clients do: a page is handed out only once the HTTP layer
//! holds at most [`LOW_WATER`] bytes of the download's earlier pages, besides the last one,
//! not yet taken by the socket (each page tells when it is dropped; the last one is left out
//! because a consumer may hold it while it asks for the next, as a decompressing or
//! compressing reader does). Pages grow while the client keeps up (from
//! [`FIRST_PAGE_BYTES`] to [`MAX_PAGE_BYTES`]), so a fast download pays the per-page cost
//! rarely and is read one page ahead; they shrink back, unread ahead, when it falls behind,
//! and never grow while all downloads together hold [`GROWN_PAGES_BUDGET`] bytes of pages.
//! So 500 clients that stop reading hold well under 100 KB each, not megabytes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::params;
use satchel_core::store::{ResultStream, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::engine;
use crate::ops::find_batch;
use crate::pool::Pool;

/// The size of a download's first pages, and of a slow download's.
const FIRST_PAGE_BYTES: usize = 32 << 10;

/// The size pages grow to while the client keeps up.
const MAX_PAGE_BYTES: usize = 1 << 20;

/// The next page is handed out once at most this many bytes of earlier ones wait unsent.
const LOW_WATER: usize = 64 << 10;

/// A client whose earlier pages drain below [`LOW_WATER`] within this long keeps up; one that
/// takes longer is slow, and gets small pages, none read ahead.
const KEEPING_UP: Duration = Duration::from_millis(250);

/// Pages grow (and are read ahead) only while all downloads together hold less than this.
const GROWN_PAGES_BUDGET: usize = 32 << 20;

/// Bytes of pages held by all downloads of this process: read, not yet dropped.
static PAGES_HELD: AtomicUsize = AtomicUsize::new(0);

/// The result lines of `workspace`'s batch `id`, in submission order, each followed by `\n`.
pub(crate) fn stream_results(pool: Arc<Pool>, workspace: String, id: String) -> ResultStream {
    let pages = Pages {
        pool,
        batch: Some((workspace, id)),
        next: 0,
        end: 0,
        size: FIRST_PAGE_BYTES,
        ahead: None,
        started: false,
        last_len: 0,
        unsent: Arc::new(Unsent::default()),
    };
    Box::pin(futures::stream::try_unfold(pages, |mut pages| async move {
        Ok(pages.next_page().await?.map(|page| (page, pages)))
    }))
}

/// One page: its lines, and the request id to go on from.
struct Page {
    lines: Lines,
    next: i64,
}

/// A page's bytes, counted in [`PAGES_HELD`] until dropped.
struct Lines(Vec<u8>);

impl Lines {
    fn new(bytes: Vec<u8>) -> Self {
        PAGES_HELD.fetch_add(bytes.len(), Ordering::AcqRel);
        Self(bytes)
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        PAGES_HELD.fetch_sub(self.0.len(), Ordering::AcqRel);
    }
}

struct Pages {
    pool: Arc<Pool>,
    /// The batch to find, until the first page is asked for.
    batch: Option<(String, String)>,
    /// The request ids still to send: `next..end` (a batch's ids are contiguous).
    next: i64,
    end: i64,
    /// The size of the next page to read.
    size: usize,
    /// The page being read ahead, if any.
    ahead: Option<JoinHandle<rusqlite::Result<Page>>>,
    /// Whether a page was handed out yet.
    started: bool,
    /// The size of the last page handed out.
    last_len: usize,
    /// The bytes handed out and not yet dropped by the HTTP layer.
    unsent: Arc<Unsent>,
}

/// Bytes handed out that the HTTP layer still holds (it drops a page once the socket took it
/// all), and a wake-up for each drop.
#[derive(Default)]
struct Unsent {
    bytes: AtomicUsize,
    dropped: Notify,
}

impl Unsent {
    /// Waits until at most [`LOW_WATER`] bytes besides the last page handed out (`last`
    /// bytes) are unsent; whether that took long.
    async fn drain(&self, last: usize) -> bool {
        let start = Instant::now();
        while self.bytes.load(Ordering::Acquire) > LOW_WATER + last {
            self.dropped.notified().await;
        }
        start.elapsed() >= KEEPING_UP
    }
}

/// A page's lines as handed out: counted in [`Unsent`] until dropped.
struct Tracked {
    lines: Lines,
    unsent: Arc<Unsent>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.lines.0
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.unsent
            .bytes
            .fetch_sub(self.lines.0.len(), Ordering::AcqRel);
        // Stores a wake-up if nobody waits yet, so none is lost.
        self.unsent.dropped.notify_one();
    }
}

impl Pages {
    async fn next_page(&mut self) -> Result<Option<Bytes>, StoreError> {
        if let Some((workspace, id)) = self.batch.take() {
            let found = self
                .blocking(move |pool| pool.with_reader(|conn| find_batch(conn, &workspace, &id)))
                .await?;
            let Some(batch) = found else {
                return Ok(None);
            };
            self.next = batch.first_request;
            self.end = batch.first_request + batch.request_count;
        }
        let slow = self.unsent.drain(self.last_len).await;
        let page = match self.ahead.take() {
            Some(reading) => reading
                .await
                .map_err(|e| StoreError::Task(e.to_string()))?
                .map_err(engine)?,
            None if self.next >= self.end => return Ok(None),
            None => self.read(self.next).await?,
        };
        if page.lines.0.is_empty() {
            // Every request of an ended batch has its line: rows missing means the batch was
            // deleted or archived. Before anything was sent that reads as no results (the
            // caller checked the batch first); after, fail, so the client sees a cut download
            // rather than a short one that looks whole.
            return if self.started { Err(gone()) } else { Ok(None) };
        }
        self.started = true;
        self.next = page.next;
        let grow = !slow && PAGES_HELD.load(Ordering::Acquire) < GROWN_PAGES_BUDGET;
        self.size = if grow {
            (self.size * 2).min(MAX_PAGE_BYTES)
        } else {
            FIRST_PAGE_BYTES
        };
        if self.next < self.end && grow {
            let (pool, from, end, size) = (self.pool.clone(), self.next, self.end, self.size);
            self.ahead = Some(tokio::task::spawn_blocking(move || {
                read_page(&pool, from, end, size)
            }));
        }
        self.last_len = page.lines.0.len();
        self.unsent.bytes.fetch_add(self.last_len, Ordering::AcqRel);
        Ok(Some(Bytes::from_owner(Tracked {
            lines: page.lines,
            unsent: self.unsent.clone(),
        })))
    }

    async fn read(&self, from: i64) -> Result<Page, StoreError> {
        let (end, size) = (self.end, self.size);
        self.blocking(move |pool| read_page(pool, from, end, size))
            .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Pool) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        crate::pool::blocking(&self.pool, f).await
    }
}

fn gone() -> StoreError {
    StoreError::engine(
        "the batch was deleted or archived while its results were read",
        false,
    )
}

/// Reads the lines of requests `from..end` until about `size` bytes, in one short read
/// transaction.
fn read_page(pool: &Pool, from: i64, end: i64, size: usize) -> rusqlite::Result<Page> {
    pool.with_reader(|conn| {
        let mut lines = Vec::with_capacity(size + (16 << 10));
        let mut next = from;
        let mut rows = conn.prepare_cached(
            "SELECT request_id, line FROM results WHERE request_id >= ?1 AND request_id < ?2
                 ORDER BY request_id",
        )?;
        let mut rows = rows.query(params![from, end])?;
        while let Some(row) = rows.next()? {
            next = row.get::<_, i64>(0)? + 1;
            lines.extend_from_slice(row.get_ref(1)?.as_blob()?);
            lines.push(b'\n');
            if lines.len() >= size {
                break;
            }
        }
        Ok(Page {
            lines: Lines::new(lines),
            next,
        })
    })
}
