//! The store's operations, one function each, as SQL on a connection.

use std::collections::BTreeMap;

use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use satchel_core::model::{
    BatchRecord, DeleteOutcome, ListCursor, OutcomeKind, RequestKey, Settlement,
};
use satchel_core::result_line::{TerminalKind, terminal_line_parts};
use satchel_wire::{ProcessingStatus, RequestCounts, Timestamp};

use crate::blobs::Blobs;
use crate::partial;

/// Request ids reserved for each batch: far more than any batch may hold.
pub(crate) const IDS_PER_BATCH: i64 = 1 << 32;

const IN_PROGRESS: i64 = 1;
const CANCELING: i64 = 2;
pub(crate) const ENDED: i64 = 3;

const BATCH_COLUMNS: &str = "id, workspace, state, processing, succeeded, errored, canceled, expired, \
     created_at, expires_at, ended_at, cancel_initiated_at, archived_at";

/// The status a stored state stands for.
pub(crate) fn status_of(state: i64) -> rusqlite::Result<ProcessingStatus> {
    Ok(match state {
        IN_PROGRESS => ProcessingStatus::InProgress,
        CANCELING => ProcessingStatus::Canceling,
        ENDED => ProcessingStatus::Ended,
        // Never shown as something it is not: a state this version does not know (or an
        // ingesting batch, which no query returns) is an error.
        other => {
            return Err(rusqlite::Error::FromSqlConversionFailure(
                2,
                rusqlite::types::Type::Integer,
                format!("unknown batch state {other}").into(),
            ));
        }
    })
}

fn batch_from_row(row: &Row<'_>) -> rusqlite::Result<BatchRecord> {
    let status = status_of(row.get::<_, i64>(2)?)?;
    let ts = |i: usize| -> rusqlite::Result<Option<Timestamp>> {
        Ok(row.get::<_, Option<i64>>(i)?.map(Timestamp::from_micros))
    };
    let count = |i: usize| -> rusqlite::Result<u64> { Ok(row.get::<_, i64>(i)?.max(0) as u64) };
    Ok(BatchRecord {
        id: row.get(0)?,
        workspace: row.get(1)?,
        status,
        counts: RequestCounts {
            processing: count(3)?,
            succeeded: count(4)?,
            errored: count(5)?,
            canceled: count(6)?,
            expired: count(7)?,
        },
        created_at: Timestamp::from_micros(row.get(8)?),
        expires_at: Timestamp::from_micros(row.get(9)?),
        ended_at: ts(10)?,
        cancel_initiated_at: ts(11)?,
        archived_at: ts(12)?,
    })
}

pub(crate) fn batch_by_pk(conn: &Connection, pk: i64) -> rusqlite::Result<BatchRecord> {
    conn.prepare_cached(&format!(
        "SELECT {BATCH_COLUMNS} FROM batches WHERE pk = ?1"
    ))?
    .query_row([pk], batch_from_row)
}

/// A batch's key facts, looked up by its public id within a workspace (never an ingesting one).
pub(crate) struct BatchKey {
    pub pk: i64,
    pub state: i64,
    pub first_request: i64,
    pub request_count: i64,
}

pub(crate) fn find_batch(
    conn: &Connection,
    workspace: &str,
    id: &str,
) -> rusqlite::Result<Option<BatchKey>> {
    conn.prepare_cached(
        "SELECT pk, state, first_request, request_count FROM batches
         WHERE workspace = ?1 AND id = ?2 AND state != 0",
    )?
    .query_row(params![workspace, id], |r| {
        Ok(BatchKey {
            pk: r.get(0)?,
            state: r.get(1)?,
            first_request: r.get(2)?,
            request_count: r.get(3)?,
        })
    })
    .optional()
}

// ---- read ---------------------------------------------------------------------------------

pub(crate) fn get_batch(
    conn: &Connection,
    workspace: &str,
    id: &str,
) -> rusqlite::Result<Option<BatchRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {BATCH_COLUMNS} FROM batches WHERE workspace = ?1 AND id = ?2 AND state != 0"
    ))?
    .query_row(params![workspace, id], batch_from_row)
    .optional()
}

/// The sum of the `processing` counts of the workspace's running batches.
pub(crate) fn queued_requests(conn: &Connection, workspace: &str) -> rusqlite::Result<u64> {
    conn.prepare_cached(
        "SELECT COALESCE(SUM(processing), 0) FROM batches WHERE workspace = ?1 AND state IN (1, 2)",
    )?
    .query_row(params![workspace], |row| row.get::<_, i64>(0))
    .map(|n| u64::try_from(n).unwrap_or(0))
}

pub(crate) fn list_batches(
    conn: &Connection,
    workspace: &str,
    cursor: &ListCursor,
    limit: u32,
) -> rusqlite::Result<Vec<BatchRecord>> {
    let fetch = i64::from(limit) + 1;
    let base = format!("SELECT {BATCH_COLUMNS} FROM batches WHERE workspace = ?1 AND state != 0");
    let mut batches = match cursor {
        ListCursor::Start => conn
            .prepare_cached(&format!("{base} ORDER BY id DESC LIMIT ?2"))?
            .query_map(params![workspace, fetch], batch_from_row)?
            .collect::<Result<Vec<_>, _>>()?,
        ListCursor::After(id) => conn
            .prepare_cached(&format!("{base} AND id < ?2 ORDER BY id DESC LIMIT ?3"))?
            .query_map(params![workspace, id, fetch], batch_from_row)?
            .collect::<Result<Vec<_>, _>>()?,
        ListCursor::Between { after, before } => conn
            .prepare_cached(&format!(
                "{base} AND id < ?2 AND id > ?3 ORDER BY id DESC LIMIT ?4"
            ))?
            .query_map(params![workspace, after, before, fetch], batch_from_row)?
            .collect::<Result<Vec<_>, _>>()?,
        ListCursor::Before(id) => {
            // The page just newer than the cursor: the oldest `limit` of the newer ones,
            // plus one more to tell whether even newer ones exist; then newest first.
            let mut newer = conn
                .prepare_cached(&format!("{base} AND id > ?2 ORDER BY id ASC LIMIT ?3"))?
                .query_map(params![workspace, id, fetch], batch_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            let extra = newer.len() > limit as usize;
            newer.truncate(limit as usize);
            newer.reverse();
            if extra {
                // Keep the contract of `list_batches`: one extra element means "more".
                if let Some(first) = newer.first().cloned() {
                    newer.push(first);
                }
            }
            newer
        }
    };
    batches.truncate(fetch as usize);
    Ok(batches)
}

// ---- transitions --------------------------------------------------------------------------

/// Marks a batch ended if nothing in it is processing any more.
fn end_if_done(conn: &Connection, pk: i64, now: Timestamp) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE batches SET state = 3, ended_at = ?2 WHERE pk = ?1 AND processing = 0 AND state IN (1, 2)",
    )?
    .execute(params![pk, now.as_micros()])?;
    Ok(())
}

/// Turns every request of the batch that is not leased (or whose lease ran out) into a
/// `canceled` or `expired` line, moving the counts, in the caller's transaction.
fn end_unleased(
    conn: &Connection,
    pk: i64,
    kind: TerminalKind,
    now: Timestamp,
) -> rusqlite::Result<u64> {
    let (prefix, suffix) = terminal_line_parts(kind);
    let ended = conn
        .prepare_cached(
            "INSERT INTO results (request_id, line, seq)
             SELECT q.request_id, CAST(?3 || r.custom_id || ?4 AS BLOB), ?5
             FROM queue q JOIN requests r ON r.id = q.request_id
             WHERE q.batch_pk = ?1 AND q.lease_until <= ?2",
        )?
        .execute(params![
            pk,
            now.as_micros(),
            prefix,
            suffix,
            partial::next_settle_seq(conn)?
        ])?;
    conn.prepare_cached("DELETE FROM queue WHERE batch_pk = ?1 AND lease_until <= ?2")?
        .execute(params![pk, now.as_micros()])?;
    let column = match kind {
        TerminalKind::Canceled => "canceled",
        TerminalKind::Expired => "expired",
    };
    conn.prepare_cached(&format!(
        "UPDATE batches SET processing = processing - ?2, {column} = {column} + ?2 WHERE pk = ?1"
    ))?
    .execute(params![pk, ended as i64])?;
    end_if_done(conn, pk, now)?;
    Ok(ended as u64)
}

pub(crate) fn cancel_batch(
    conn: &mut Connection,
    workspace: &str,
    id: &str,
    now: Timestamp,
) -> rusqlite::Result<Option<BatchRecord>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(batch) = find_batch(&tx, workspace, id)? else {
        return Ok(None);
    };
    if batch.state == IN_PROGRESS {
        tx.execute(
            "UPDATE batches SET state = 2, cancel_initiated_at = ?2 WHERE pk = ?1",
            params![batch.pk, now.as_micros()],
        )?;
        end_unleased(&tx, batch.pk, TerminalKind::Canceled, now)?;
    }
    let record = batch_by_pk(&tx, batch.pk)?;
    tx.commit()?;
    Ok(Some(record))
}

pub(crate) fn delete_batch(
    conn: &mut Connection,
    blobs: &Blobs,
    workspace: &str,
    id: &str,
) -> rusqlite::Result<DeleteOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(batch) = find_batch(&tx, workspace, id)? else {
        return Ok(DeleteOutcome::NotFound);
    };
    if batch.state != ENDED {
        return Ok(DeleteOutcome::NotEnded);
    }
    purge_requests(&tx, &batch)?;
    tx.execute("DELETE FROM queue WHERE batch_pk = ?1", [batch.pk])?;
    tx.execute("DELETE FROM batches WHERE pk = ?1", [batch.pk])?;
    tx.commit()?;
    blobs.remove(batch.first_request);
    Ok(DeleteOutcome::Deleted)
}

fn purge_requests(conn: &Connection, batch: &BatchKey) -> rusqlite::Result<()> {
    let end = batch.first_request + batch.request_count;
    conn.prepare_cached("DELETE FROM results WHERE request_id >= ?1 AND request_id < ?2")?
        .execute(params![batch.first_request, end])?;
    conn.prepare_cached("DELETE FROM requests WHERE id >= ?1 AND id < ?2")?
        .execute(params![batch.first_request, end])?;
    Ok(())
}

// ---- the queue ----------------------------------------------------------------------------
pub(crate) fn settle(
    conn: &mut Connection,
    settlements: &[Settlement],
    now: Timestamp,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    settle_in(&tx, settlements, now)?;
    tx.commit()
}

/// Settles in the caller's transaction: each line is stored only if its lease is current.
pub(crate) fn settle_in(
    tx: &Connection,
    settlements: &[Settlement],
    now: Timestamp,
) -> rusqlite::Result<()> {
    #[derive(Default)]
    struct Delta {
        succeeded: i64,
        errored: i64,
    }
    let mut deltas: BTreeMap<i64, Delta> = BTreeMap::new();
    {
        let mut release =
            tx.prepare_cached("DELETE FROM queue WHERE request_id = ?1 AND lease_token = ?2")?;
        let mut record =
            tx.prepare_cached("INSERT INTO results (request_id, line, seq) VALUES (?1, ?2, ?3)")?;
        // The lines of one transaction share their place in the settle order.
        let mut seq = None;
        for s in settlements {
            // Only the current lease may settle: a stale outcome changes nothing.
            if release.execute(params![s.request.request, s.request.lease])? == 0 {
                continue;
            }
            let seq = match seq {
                Some(seq) => seq,
                None => *seq.insert(partial::next_settle_seq(tx)?),
            };
            record.execute(params![s.request.request, s.line, seq])?;
            let delta = deltas.entry(s.request.batch).or_default();
            match s.kind {
                OutcomeKind::Succeeded => delta.succeeded += 1,
                OutcomeKind::Errored => delta.errored += 1,
            }
        }
    }
    let mut count = tx.prepare_cached(
        "UPDATE batches SET processing = processing - ?2 - ?3, succeeded = succeeded + ?2,
         errored = errored + ?3 WHERE pk = ?1",
    )?;
    for (pk, delta) in &deltas {
        count.execute(params![pk, delta.succeeded, delta.errored])?;
        end_if_done(tx, *pk, now)?;
    }
    Ok(())
}

pub(crate) fn renew(
    conn: &mut Connection,
    leases: &[RequestKey],
    until: Timestamp,
) -> rusqlite::Result<Vec<RequestKey>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut lost = Vec::new();
    {
        let mut renew = tx.prepare_cached(
            "UPDATE queue SET lease_until = ?3 WHERE request_id = ?1 AND lease_token = ?2",
        )?;
        for key in leases {
            if renew.execute(params![key.request, key.lease, until.as_micros()])? == 0 {
                lost.push(*key);
            }
        }
    }
    tx.commit()?;
    Ok(lost)
}

pub(crate) fn sweep_unrunnable(conn: &mut Connection, now: Timestamp) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due: Vec<(i64, i64)> = tx
        .prepare_cached("SELECT pk, state FROM batches WHERE state IN (1, 2) AND (state = 2 OR expires_at <= ?1)")?
        .query_map([now.as_micros()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut ended = 0;
    for (pk, state) in due {
        let kind = if state == CANCELING {
            TerminalKind::Canceled
        } else {
            TerminalKind::Expired
        };
        ended += end_unleased(&tx, pk, kind, now)?;
    }
    tx.commit()?;
    Ok(ended)
}

pub(crate) fn archive(
    conn: &mut Connection,
    blobs: &Blobs,
    created_before: Timestamp,
    now: Timestamp,
) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let due: Vec<BatchKey> = tx
        .prepare_cached(
            "SELECT pk, state, first_request, request_count FROM batches
             WHERE state = 3 AND archived_at IS NULL AND created_at <= ?1",
        )?
        .query_map([created_before.as_micros()], |r| {
            Ok(BatchKey {
                pk: r.get(0)?,
                state: r.get(1)?,
                first_request: r.get(2)?,
                request_count: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    for batch in &due {
        purge_requests(&tx, batch)?;
        tx.execute(
            "UPDATE batches SET archived_at = ?2 WHERE pk = ?1",
            params![batch.pk, now.as_micros()],
        )?;
    }
    tx.commit()?;
    for batch in &due {
        blobs.remove(batch.first_request);
    }
    Ok(due.len() as u64)
}

pub(crate) fn models(conn: &Connection) -> rusqlite::Result<Vec<(i64, String)>> {
    conn.prepare_cached("SELECT id, name FROM models")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect()
}

pub(crate) fn recover(conn: &mut Connection, owner: &str) -> rusqlite::Result<u64> {
    Ok(conn.execute(
        "UPDATE queue SET lease_until = 0, lease_token = 0, owner = NULL WHERE owner = ?1",
        [owner],
    )? as u64)
}

pub(crate) fn release(conn: &mut Connection, requests: &[RequestKey]) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    {
        let mut release = tx.prepare_cached(
            "UPDATE queue SET lease_until = 0, lease_token = 0, owner = NULL WHERE request_id = ?1 AND lease_token = ?2",
        )?;
        for key in requests {
            release.execute(params![key.request, key.lease])?;
        }
    }
    tx.commit()
}

pub(crate) fn running_batches(conn: &Connection, now: Timestamp) -> rusqlite::Result<Vec<i64>> {
    conn.prepare_cached(
        "SELECT pk FROM batches WHERE state IN (1, 2) AND state = 1 AND expires_at > ?1",
    )?
    .query_map([now.as_micros()], |r| r.get(0))?
    .collect()
}
