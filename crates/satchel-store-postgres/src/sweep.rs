//! State changes over many rows: cancel, the expiry / cancel sweep, archive, delete, and the
//! removal of what a dead node half-ingested, all in bounded chunks (one transaction each,
//! never a statement over a whole batch: no burst of WAL, no long row locks).
//!
//! Periodic work (sweep, archive, purges) runs on one node at a time: each chunk's
//! transaction first takes a transaction advisory lock with `pg_try_advisory_xact_lock`; a
//! node that does not get it skips the rest of that round (another node is doing it). Even
//! when two nodes do run the same step, each row ends once: the queue row is deleted by
//! whoever gets it (see `settle.rs`).

use deadpool_postgres::{GenericClient, Pool};
use satchel_core::model::{BatchRecord, DeleteOutcome};
use satchel_core::result_line::TerminalKind;
use satchel_core::store::StoreError;
use satchel_wire::Timestamp;

use crate::db::{
    CANCELING, CHUNK, DELETING, ENDED, IDS_PER_BATCH, IN_PROGRESS, INGESTING, batch_by_pk,
    connection, engine, find_batch,
};
use crate::node::CHANNEL;
use crate::settle::end_unleased;

/// The leader locks, one per kind of periodic work.
const SWEEP_LOCK: i64 = 0x5a7c_4e10_0000_0010;
const ARCHIVE_LOCK: i64 = 0x5a7c_4e10_0000_0011;
const PURGE_LOCK: i64 = 0x5a7c_4e10_0000_0012;

/// How long a half-ingested batch of a dead node instance is left alone (its node's
/// heartbeat must also have run out).
const ABANDONED_AFTER: &str = "1 minute";

async fn try_leader(tx: &impl GenericClient, key: i64) -> Result<bool, StoreError> {
    tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&key])
        .await
        .map_err(engine)?
        .try_get(0)
        .map_err(engine)
}

pub(crate) async fn cancel_batch(
    pool: &Pool,
    workspace: &str,
    id: &str,
    now: Timestamp,
) -> Result<Option<BatchRecord>, StoreError> {
    let mut client = connection(pool).await?;
    let tx = client.transaction().await.map_err(engine)?;
    let Some(batch) = find_batch(&tx, workspace, id, true).await? else {
        return Ok(None);
    };
    let mut more = false;
    if batch.state == IN_PROGRESS {
        tx.execute(
            "UPDATE batches SET state = $2, cancel_initiated_at = $3 WHERE pk = $1",
            &[&batch.pk, &CANCELING, &now.as_micros()],
        )
        .await
        .map_err(engine)?;
        // Other nodes drop this batch's waiting requests sooner.
        tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
            .await
            .map_err(engine)?;
        more =
            end_unleased(&tx, batch.pk, TerminalKind::Canceled, now, CHUNK).await? == CHUNK as u64;
    }
    tx.commit().await.map_err(engine)?;
    // The batch is canceling now, so nothing new starts: the rest can follow in chunks.
    while more {
        let tx = client.transaction().await.map_err(engine)?;
        more =
            end_unleased(&tx, batch.pk, TerminalKind::Canceled, now, CHUNK).await? == CHUNK as u64;
        tx.commit().await.map_err(engine)?;
    }
    batch_by_pk(&client, batch.pk).await.map(Some)
}

pub(crate) async fn sweep_unrunnable(pool: &Pool, now: Timestamp) -> Result<u64, StoreError> {
    let mut client = connection(pool).await?;
    let due: Vec<(i64, i16)> = client
        .query(
            "SELECT pk, state FROM batches WHERE state IN (1, 2) AND (state = 2 OR expires_at <= $1)
             ORDER BY pk",
            &[&now.as_micros()],
        )
        .await
        .map_err(engine)?
        .iter()
        .map(|r| Ok((r.try_get(0).map_err(engine)?, r.try_get(1).map_err(engine)?)))
        .collect::<Result<_, StoreError>>()?;
    let mut ended = 0;
    for (pk, state) in due {
        let kind = if state == CANCELING {
            TerminalKind::Canceled
        } else {
            TerminalKind::Expired
        };
        loop {
            let tx = client.transaction().await.map_err(engine)?;
            if !try_leader(&tx, SWEEP_LOCK).await? {
                return Ok(ended); // another node is sweeping
            }
            let n = end_unleased(&tx, pk, kind, now, CHUNK).await?;
            tx.commit().await.map_err(engine)?;
            ended += n;
            if n < CHUNK as u64 {
                break;
            }
        }
    }
    Ok(ended)
}

pub(crate) async fn archive(
    pool: &Pool,
    created_before: Timestamp,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let archived = {
        let mut client = connection(pool).await?;
        let tx = client.transaction().await.map_err(engine)?;
        if !try_leader(&tx, ARCHIVE_LOCK).await? {
            return Ok(0);
        }
        // Marked archived at once (results are then no longer served); the rows go below.
        let archived = tx
            .execute(
                "UPDATE batches SET archived_at = $2, purge_pending = true
                 WHERE pk = ANY(ARRAY(
                     SELECT pk FROM batches
                     WHERE state = 3 AND archived_at IS NULL AND created_at <= $1
                     ORDER BY pk LIMIT 1000))",
                &[&created_before.as_micros(), &now.as_micros()],
            )
            .await
            .map_err(engine)?;
        tx.commit().await.map_err(engine)?;
        archived
    };
    purge_pending(pool).await?;
    Ok(archived)
}

pub(crate) async fn delete_batch(
    pool: &Pool,
    workspace: &str,
    id: &str,
) -> Result<DeleteOutcome, StoreError> {
    let pk = {
        let mut client = connection(pool).await?;
        let tx = client.transaction().await.map_err(engine)?;
        let Some(batch) = find_batch(&tx, workspace, id, true).await? else {
            return Ok(DeleteOutcome::NotFound);
        };
        if batch.state != ENDED {
            return Ok(DeleteOutcome::NotEnded);
        }
        // Invisible from now on; its rows go in chunks.
        tx.execute(
            "UPDATE batches SET state = $2, purge_pending = true WHERE pk = $1",
            &[&batch.pk, &DELETING],
        )
        .await
        .map_err(engine)?;
        tx.commit().await.map_err(engine)?;
        batch.pk
    };
    if let Err(e) = purge(pool, pk, None).await {
        // Housekeeping finishes it; the batch is gone for the client already.
        tracing::warn!(error = %e, "could not remove a deleted batch's rows yet");
    }
    Ok(DeleteOutcome::Deleted)
}

/// Housekeeping beyond the trait's sweeps: half-ingested batches of dead node instances
/// become `deleting`, and the rows of deleted, archived and abandoned batches are removed.
pub(crate) async fn housekeeping(pool: &Pool) -> Result<(), StoreError> {
    {
        let mut client = connection(pool).await?;
        let tx = client.transaction().await.map_err(engine)?;
        if !try_leader(&tx, PURGE_LOCK).await? {
            return Ok(());
        }
        let abandoned = tx
            .execute(
                &format!(
                    "UPDATE batches b SET state = 4, purge_pending = true
                     WHERE b.state = 0 AND b.touched_at < now() - interval '{ABANDONED_AFTER}'
                       AND NOT EXISTS (SELECT 1 FROM nodes n
                                       WHERE n.instance = b.ingest_instance AND n.alive_until > now())"
                ),
                &[],
            )
            .await
            .map_err(engine)?;
        tx.commit().await.map_err(engine)?;
        if abandoned > 0 {
            tracing::info!(
                batches = abandoned,
                "removing batches that dead nodes left half-ingested"
            );
        }
    }
    purge_pending(pool).await
}

/// Removes the rows of batches marked `purge_pending`, a few batches a round.
async fn purge_pending(pool: &Pool) -> Result<(), StoreError> {
    let pending: Vec<i64> = {
        let client = connection(pool).await?;
        client
            .query(
                "SELECT pk FROM batches WHERE (state IN (0, 4) OR purge_pending) AND purge_pending
                 ORDER BY pk LIMIT 20",
                &[],
            )
            .await
            .map_err(engine)?
            .iter()
            .map(|r| r.try_get(0).map_err(engine))
            .collect::<Result<_, _>>()?
    };
    for pk in pending {
        if !purge(pool, pk, Some(PURGE_LOCK)).await? {
            break;
        }
    }
    Ok(())
}

/// Deletes a batch's results, queue and request rows in chunks of ids (its ids are one
/// contiguous block), then the batch row if it is being deleted or was abandoned, else
/// clears `purge_pending` (archived). With `leader`, each chunk first takes that leader lock;
/// returns false if it did not get it (another node is purging).
pub(crate) async fn purge(pool: &Pool, pk: i64, leader: Option<i64>) -> Result<bool, StoreError> {
    let mut client = connection(pool).await?;
    let Some(row) = client
        .query_opt(
            "SELECT first_request, state FROM batches WHERE pk = $1",
            &[&pk],
        )
        .await
        .map_err(engine)?
    else {
        return Ok(true);
    };
    let first: i64 = row.try_get(0).map_err(engine)?;
    let state: i16 = row.try_get(1).map_err(engine)?;
    let end: i64 = client
        .query_one(
            "SELECT COALESCE(max(id) + 1, $1) FROM requests WHERE id >= $1 AND id < $2",
            &[&first, &(first + IDS_PER_BATCH)],
        )
        .await
        .map_err(engine)?
        .try_get(0)
        .map_err(engine)?;
    let mut lo = first;
    loop {
        let tx = client.transaction().await.map_err(engine)?;
        if let Some(key) = leader
            && !try_leader(&tx, key).await?
        {
            return Ok(false);
        }
        if lo < end {
            let hi = (lo + CHUNK).min(end);
            for table in ["results", "queue"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE request_id >= $1 AND request_id < $2"),
                    &[&lo, &hi],
                )
                .await
                .map_err(engine)?;
            }
            tx.execute(
                "DELETE FROM requests WHERE id >= $1 AND id < $2",
                &[&lo, &hi],
            )
            .await
            .map_err(engine)?;
            tx.commit().await.map_err(engine)?;
            lo = hi;
            continue;
        }
        if state == INGESTING || state == DELETING {
            tx.execute("DELETE FROM batches WHERE pk = $1", &[&pk])
                .await
                .map_err(engine)?;
        } else {
            tx.execute(
                "UPDATE batches SET purge_pending = false WHERE pk = $1",
                &[&pk],
            )
            .await
            .map_err(engine)?;
        }
        tx.commit().await.map_err(engine)?;
        return Ok(true);
    }
}
