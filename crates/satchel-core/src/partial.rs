//! Results while a batch runs: the lines settled so far, read after a cursor, and a wait for
//! more (long polling). An extension of the hosted API: its own query parameters on the
//! results route, which the official SDKs never send, so their `results()` is unchanged.
//!
//! Lines come in settle order ([`SettleCursor`]), not submission order: a reader that goes
//! on from each page's `next` gets every line exactly once, across restarts of either side
//! and across nodes, since the cursor is all the state there is.

use std::time::Duration;

use tokio::time::Instant;

use crate::lifecycle::{BatchError, Batches};
use crate::model::{SettleCursor, SettledPage};

/// Most lines in one page.
pub const MAX_PAGE_LINES: usize = 10_000;

/// A page stops growing once it holds this many bytes (it always holds at least one line).
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// The longest a reader may ask to wait for lines.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// How often a waiting reader looks again. (Settles are not announced across nodes, and a
/// look is one indexed read, so polling is both the simplest and the guarantee.)
const LOOK_AGAIN: Duration = Duration::from_millis(200);

impl Batches {
    /// The lines of `workspace`'s batch `id` settled after `after`, at most `max_lines`.
    /// If there are none yet and the batch has not ended, waits up to `wait` for some.
    /// Readable from creation until the results are archived.
    pub async fn settled(
        &self,
        workspace: &str,
        id: &str,
        after: SettleCursor,
        max_lines: usize,
        wait: Duration,
    ) -> Result<SettledPage, BatchError> {
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let max_lines = max_lines.clamp(1, MAX_PAGE_LINES);
        loop {
            let batch = self.get(workspace, id).await?;
            if batch.archived_at.is_some() {
                return Err(BatchError::NoResults(id.to_owned()));
            }
            let page = self
                .store
                .settled_since(workspace, id, after, max_lines, MAX_PAGE_BYTES)
                .await?
                .ok_or_else(|| BatchError::NotFound(id.to_owned()))?;
            if page.count > 0 || page.complete || Instant::now() >= deadline {
                return Ok(page);
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + LOOK_AGAIN)).await;
        }
    }
}
