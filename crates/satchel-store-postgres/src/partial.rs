//! Reads for the extensions: a batch's result lines in settle order after a cursor (results
//! while it runs), and its stored requests (to re-run some of them).
//!
//! The settle order is `(seq, request_id)`, `seq` being the id of the transaction that wrote
//! the line (migration 0002). Transaction ids are not handed out in commit order, so a page
//! holds only lines whose `seq` is below its snapshot's xmin: every transaction below that has
//! ended, so no line can still appear before the page's last one. A line just committed
//! above the xmin waits for the next read (for as long as an older transaction runs; every
//! transaction here is short).

use deadpool_postgres::Pool;
use satchel_core::model::{SettleCursor, SettledPage, StoredRequest};
use satchel_core::store::StoreError;
use satchel_wire::ProcessingStatus;
use serde_json::value::RawValue;

use crate::db::{connection, engine, find_batch, status_of};

pub(crate) async fn settled_since(
    pool: &Pool,
    workspace: &str,
    id: &str,
    after: SettleCursor,
    max_lines: usize,
    max_bytes: usize,
) -> Result<Option<SettledPage>, StoreError> {
    let mut client = connection(pool).await?;
    // One snapshot for the batch's state, the horizon and the lines.
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(engine)?;
    let Some(batch) = find_batch(&tx, workspace, id, false).await? else {
        return Ok(None);
    };
    let (first, end) = (
        batch.first_request,
        batch.first_request + batch.request_count,
    );
    let horizon: i64 = tx
        .query_one(
            "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
            &[],
        )
        .await
        .map_err(engine)?
        .try_get(0)
        .map_err(engine)?;
    let rows = tx
        .prepare_cached(
            "SELECT seq, request_id, line FROM results
             WHERE (seq, request_id) > ($1, $2) AND seq < $3
               AND request_id >= $4 AND request_id < $5
             ORDER BY seq, request_id LIMIT $6",
        )
        .await
        .map_err(engine)?;
    let limit = max_lines as i64 + 1;
    let rows = tx
        .query(
            &rows,
            &[
                &after.seq,
                &(first + after.index),
                &horizon,
                &first,
                &end,
                &limit,
            ],
        )
        .await
        .map_err(engine)?;
    let (mut lines, mut count, mut next, mut more) = (Vec::new(), 0, after, false);
    for row in &rows {
        if count == max_lines || lines.len() >= max_bytes {
            more = true;
            break;
        }
        next = SettleCursor {
            seq: row.try_get(0).map_err(engine)?,
            index: row.try_get::<_, i64>(1).map_err(engine)? - first,
        };
        lines.extend_from_slice(row.try_get::<_, &[u8]>(2).map_err(engine)?);
        lines.push(b'\n');
        count += 1;
    }
    let mut complete = !more && status_of(batch.state)? == ProcessingStatus::Ended;
    if complete {
        // Lines committed above the horizon are still to come.
        let withheld = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM results
                 WHERE seq >= $1 AND request_id >= $2 AND request_id < $3)",
            )
            .await
            .map_err(engine)?;
        let withheld: bool = tx
            .query_one(&withheld, &[&horizon, &first, &end])
            .await
            .map_err(engine)?
            .try_get(0)
            .map_err(engine)?;
        complete = !withheld;
    }
    tx.commit().await.map_err(engine)?;
    let status = status_of(batch.state)?;
    Ok(Some(SettledPage {
        lines,
        count,
        next,
        complete,
        status,
    }))
}

pub(crate) async fn stored_requests(
    pool: &Pool,
    workspace: &str,
    id: &str,
    from: i64,
    limit: usize,
) -> Result<Vec<StoredRequest>, StoreError> {
    let client = connection(pool).await?;
    let Some(batch) = find_batch(&client, workspace, id, false).await? else {
        return Ok(Vec::new());
    };
    let statement = client
        .prepare_cached(
            "SELECT custom_id, params FROM requests WHERE id >= $1 AND id < $2
             ORDER BY id LIMIT $3",
        )
        .await
        .map_err(engine)?;
    let rows = client
        .query(
            &statement,
            &[
                &(batch.first_request + from.max(0)),
                &(batch.first_request + batch.request_count),
                &(limit as i64),
            ],
        )
        .await
        .map_err(engine)?;
    rows.iter()
        .map(|row| {
            let custom_id: String = row.try_get(0).map_err(engine)?;
            let bytes: Vec<u8> = row.try_get(1).map_err(engine)?;
            let params = String::from_utf8(bytes)
                .ok()
                .and_then(|text| RawValue::from_string(text).ok())
                .ok_or_else(|| {
                    StoreError::engine(
                        format!("the stored params of request {custom_id} are not valid JSON"),
                        false,
                    )
                })?;
            Ok(StoredRequest { custom_id, params })
        })
        .collect()
}
