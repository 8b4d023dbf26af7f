//! Reads for the extensions: a batch's result lines in settle order after a cursor (results
//! while it runs), and its stored requests (to re-run some of them).
//!
//! The settle order is `(seq, request_id)`: `seq` comes from the `settle_seq` counter, bumped
//! once by each write transaction that stores lines. There is one writer, so `seq` grows in
//! commit order, and a read transaction that sees a line sees every line before it: a page
//! read in one snapshot never skips a line that a later page could then show before it.

use rusqlite::{Connection, params};
use satchel_core::model::{SettleCursor, SettledPage, StoredRequest};
use serde_json::value::RawValue;

use crate::blobs::Blobs;
use crate::ingest::io_error;
use crate::ops::{BatchKey, find_batch};

/// Takes the next place in the settle order, for the lines the caller's transaction stores.
pub(crate) fn next_settle_seq(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "UPDATE meta SET value = value + 1 WHERE key = 'settle_seq' RETURNING value",
    )?
    .query_row([], |r| r.get(0))
}

/// The batch's lines after `after` in settle order, in the caller's read transaction.
pub(crate) fn settled_since(
    conn: &Connection,
    workspace: &str,
    id: &str,
    after: SettleCursor,
    max_lines: usize,
    max_bytes: usize,
) -> rusqlite::Result<Option<SettledPage>> {
    let Some(batch) = find_batch(conn, workspace, id)? else {
        return Ok(None);
    };
    let mut rows = conn.prepare_cached(
        "SELECT seq, request_id, line FROM results
         WHERE (seq, request_id) > (?1, ?2) AND request_id >= ?3 AND request_id < ?4
         ORDER BY seq, request_id LIMIT ?5",
    )?;
    let mut rows = rows.query(params![
        after.seq,
        batch.first_request + after.index,
        batch.first_request,
        batch.first_request + batch.request_count,
        // One more than asked, to tell whether the page holds every line there is.
        max_lines as i64 + 1,
    ])?;
    let (mut lines, mut count, mut next, mut more) = (Vec::new(), 0, after, false);
    while let Some(row) = rows.next()? {
        if count == max_lines || lines.len() >= max_bytes {
            more = true;
            break;
        }
        next = SettleCursor {
            seq: row.get(0)?,
            index: row.get::<_, i64>(1)? - batch.first_request,
        };
        lines.extend_from_slice(row.get_ref(2)?.as_blob()?);
        lines.push(b'\n');
        count += 1;
    }
    let status = crate::ops::status_of(batch.state)?;
    Ok(Some(SettledPage {
        lines,
        count,
        next,
        complete: !more && batch.state == crate::ops::ENDED,
        status,
    }))
}

/// Up to `limit` of the batch's requests from position `from`, with their params as stored.
pub(crate) fn stored_requests(
    conn: &Connection,
    blobs: &Blobs,
    workspace: &str,
    id: &str,
    from: i64,
    limit: usize,
) -> rusqlite::Result<Vec<StoredRequest>> {
    let Some(BatchKey {
        first_request,
        request_count,
        ..
    }) = find_batch(conn, workspace, id)?
    else {
        return Ok(Vec::new());
    };
    let mut rows = conn.prepare_cached(
        "SELECT custom_id, params, params_at, params_len FROM requests
         WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3",
    )?;
    let mut rows = rows.query(params![
        first_request + from.max(0),
        first_request + request_count,
        limit as i64
    ])?;
    let mut file = None;
    let mut requests = Vec::new();
    while let Some(row) = rows.next()? {
        let custom_id: String = row.get(0)?;
        let bytes = match row.get::<_, Option<i64>>(2)? {
            None => row.get_ref(1)?.as_blob()?.to_vec(),
            Some(at) => {
                let len: i64 = row.get(3)?;
                let file = match &file {
                    Some(file) => file,
                    None => file.insert(blobs.open(first_request).map_err(io_error)?),
                };
                Blobs::read(file, at as u64, len.max(0) as usize).map_err(io_error)?
            }
        };
        let params = String::from_utf8(bytes)
            .ok()
            .and_then(|text| RawValue::from_string(text).ok())
            .ok_or_else(|| {
                io_error(std::io::Error::other(format!(
                    "the stored params of request {custom_id} are not valid JSON"
                )))
            })?;
        requests.push(StoredRequest { custom_id, params });
    }
    Ok(requests)
}
