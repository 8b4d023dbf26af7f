//! Reads: one batch, a page of a workspace's batches, the running batches, the models, and
//! a batch's results streamed in pages by request id, two read at once.

use bytes::{BufMut, Bytes, BytesMut};
use deadpool_postgres::Pool;
use satchel_core::model::{BatchRecord, ListCursor, StoreStats};
use satchel_core::store::{ResultStream, StoreError};
use satchel_wire::{RequestCounts, Timestamp};
use tokio::sync::mpsc;

use crate::db::{BATCH_COLUMNS, batch_from_row, connection, engine, find_batch};

pub(crate) async fn get_batch(
    pool: &Pool,
    workspace: &str,
    id: &str,
) -> Result<Option<BatchRecord>, StoreError> {
    let client = connection(pool).await?;
    let statement = client
        .prepare_cached(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE workspace = $1 AND id = $2 AND state IN (1, 2, 3)"
        ))
        .await
        .map_err(engine)?;
    client
        .query_opt(&statement, &[&workspace, &id])
        .await
        .map_err(engine)?
        .map(|row| batch_from_row(&row))
        .transpose()
}

/// The sum of the `processing` counts of the workspace's running batches.
pub(crate) async fn queued_requests(pool: &Pool, workspace: &str) -> Result<u64, StoreError> {
    let client = connection(pool).await?;
    let statement = client
        .prepare_cached(
            "SELECT COALESCE(SUM(processing), 0)::bigint FROM batches WHERE workspace = $1 AND state IN (1, 2)",
        )
        .await
        .map_err(engine)?;
    let row = client
        .query_one(&statement, &[&workspace])
        .await
        .map_err(engine)?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

pub(crate) async fn list_batches(
    pool: &Pool,
    workspace: &str,
    cursor: &ListCursor,
    limit: u32,
) -> Result<Vec<BatchRecord>, StoreError> {
    let client = connection(pool).await?;
    let fetch = i64::from(limit) + 1;
    let base =
        format!("SELECT {BATCH_COLUMNS} FROM batches WHERE workspace = $1 AND state IN (1, 2, 3)");
    let rows = match cursor {
        ListCursor::Start => {
            let s = client
                .prepare_cached(&format!("{base} ORDER BY id DESC LIMIT $2"))
                .await
                .map_err(engine)?;
            client.query(&s, &[&workspace, &fetch]).await
        }
        ListCursor::After(id) => {
            let s = client
                .prepare_cached(&format!("{base} AND id < $2 ORDER BY id DESC LIMIT $3"))
                .await
                .map_err(engine)?;
            client.query(&s, &[&workspace, id, &fetch]).await
        }
        ListCursor::Between { after, before } => {
            let s = client
                .prepare_cached(&format!(
                    "{base} AND id < $2 AND id > $3 ORDER BY id DESC LIMIT $4"
                ))
                .await
                .map_err(engine)?;
            client.query(&s, &[&workspace, after, before, &fetch]).await
        }
        ListCursor::Before(id) => {
            let s = client
                .prepare_cached(&format!("{base} AND id > $2 ORDER BY id ASC LIMIT $3"))
                .await
                .map_err(engine)?;
            client.query(&s, &[&workspace, id, &fetch]).await
        }
    }
    .map_err(engine)?;
    let mut batches = rows
        .iter()
        .map(batch_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    if let ListCursor::Before(_) = cursor {
        // The page just newer than the cursor: the oldest `limit` of the newer ones, plus one
        // more to tell whether even newer ones exist; then newest first.
        let extra = batches.len() > limit as usize;
        batches.truncate(limit as usize);
        batches.reverse();
        if extra && let Some(first) = batches.first().cloned() {
            // Keep the contract of `list_batches`: one extra element means "more".
            batches.push(first);
        }
    }
    Ok(batches)
}

pub(crate) async fn running_batches(pool: &Pool, now: Timestamp) -> Result<Vec<i64>, StoreError> {
    let client = connection(pool).await?;
    let s = client
        .prepare_cached(
            "SELECT pk FROM batches WHERE state IN (1, 2) AND state = 1 AND expires_at > $1",
        )
        .await
        .map_err(engine)?;
    client
        .query(&s, &[&now.as_micros()])
        .await
        .map_err(engine)?
        .iter()
        .map(|r| r.try_get(0).map_err(engine))
        .collect()
}

pub(crate) async fn models(pool: &Pool) -> Result<Vec<(i64, String)>, StoreError> {
    let client = connection(pool).await?;
    let s = client
        .prepare_cached("SELECT id, name FROM models")
        .await
        .map_err(engine)?;
    client
        .query(&s, &[])
        .await
        .map_err(engine)?
        .iter()
        .map(|r| {
            Ok((
                i64::from(r.try_get::<_, i32>(0).map_err(engine)?),
                r.try_get(1).map_err(engine)?,
            ))
        })
        .collect()
}

/// Streams the result lines of a batch in submission order, each followed by `\n`: pages by
/// ranges of request ids, each its own short statement on a connection taken for it, so a
/// slow client holds no connection and no snapshot (which would hold back vacuum).
pub(crate) fn stream_results(pool: Pool, workspace: String, id: String) -> ResultStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes, StoreError>>(4);
    tokio::spawn(async move {
        if let Err(e) = send_results(&pool, &workspace, &id, &tx).await {
            let _ = tx.send(Err(e)).await;
        }
    });
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}

/// Request ids a page of results covers (a batch's ids are contiguous).
const RESULTS_PAGE_IDS: i64 = 2_048;

/// Pages read at once, each on its own connection: one page at a time left the download
/// waiting on each query in turn (163 MB/s); two overlap one page's query with the other's
/// decoding and sending.
const RESULTS_PAGES_AHEAD: usize = 2;

async fn send_results(
    pool: &Pool,
    workspace: &str,
    id: &str,
    tx: &mpsc::Sender<Result<Bytes, StoreError>>,
) -> Result<(), StoreError> {
    use futures::StreamExt;
    let batch = {
        let client = connection(pool).await?;
        find_batch(&client, workspace, id, false).await?
    };
    let Some(batch) = batch else {
        return Ok(());
    };
    if batch.archived {
        return Ok(());
    }
    let end = batch.first_request + batch.request_count;
    let starts = (batch.first_request..end).step_by(RESULTS_PAGE_IDS as usize);
    let mut pages = futures::stream::iter(starts)
        .map(|start| results_page(pool, start, (start + RESULTS_PAGE_IDS).min(end)))
        .buffered(RESULTS_PAGES_AHEAD);
    while let Some(page) = pages.next().await {
        let page = page?;
        if !page.is_empty() && tx.send(Ok(page)).await.is_err() {
            return Ok(()); // the client went away
        }
    }
    Ok(())
}

/// The lines of requests `start..end`, in order, each followed by `\n`: one short statement
/// on a connection taken for it, so a slow client holds no connection and no snapshot (which
/// would hold back vacuum).
async fn results_page(pool: &Pool, start: i64, end: i64) -> Result<Bytes, StoreError> {
    let client = connection(pool).await?;
    let page = client
        .prepare_cached(
            "SELECT line FROM results WHERE request_id >= $1 AND request_id < $2
             ORDER BY request_id",
        )
        .await
        .map_err(engine)?;
    let rows = client.query(&page, &[&start, &end]).await.map_err(engine)?;
    let mut buffer = BytesMut::new();
    for row in rows {
        buffer.put_slice(row.try_get::<_, &[u8]>(0).map_err(engine)?);
        buffer.put_u8(b'\n');
    }
    Ok(buffer.freeze())
}

/// The figures behind the metrics: batches by state, the counts summed, the oldest batch
/// still waiting. One pass over `batches` (no requests, no queue rows), so a scrape stays
/// cheap however many requests are stored.
pub(crate) async fn stats(pool: &Pool) -> Result<StoreStats, StoreError> {
    let client = connection(pool).await?;
    let rows = client
        .query(
            "SELECT state::bigint, count(*), sum(processing)::bigint, sum(succeeded)::bigint,
                    sum(errored)::bigint, sum(canceled)::bigint, sum(expired)::bigint,
                    min(CASE WHEN processing > 0 THEN created_at END)
             FROM batches WHERE state IN (1, 2, 3) GROUP BY state",
            &[],
        )
        .await
        .map_err(engine)?;
    let mut stats = StoreStats::default();
    let count = |row: &tokio_postgres::Row, i| {
        row.try_get::<_, Option<i64>>(i)
            .map(|n| n.unwrap_or(0).max(0) as u64)
            .map_err(engine)
    };
    for row in &rows {
        let state = row.try_get::<_, i64>(0).map_err(engine)?;
        let status = crate::db::status_of(i16::try_from(state).unwrap_or(i16::MAX))?;
        let counts = RequestCounts {
            processing: count(row, 2)?,
            succeeded: count(row, 3)?,
            errored: count(row, 4)?,
            canceled: count(row, 5)?,
            expired: count(row, 6)?,
        };
        let oldest = row
            .try_get::<_, Option<i64>>(7)
            .map_err(engine)?
            .map(Timestamp::from_micros);
        stats.add_group(status, count(row, 1)?, counts, oldest);
    }
    Ok(stats)
}
