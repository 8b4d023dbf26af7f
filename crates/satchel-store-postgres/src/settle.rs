//! Settling: a request's result line is written in the transaction that deletes its queue
//! row, only if its lease token is still current, and the batch's counts move with it (last,
//! so the batch row is locked for as short a time as possible; the batch ends in the same
//! transaction when nothing is left processing). Whoever deletes the queue row writes the
//! line, so two nodes settling, sweeping or canceling the same request end it once.

use std::collections::HashSet;

use deadpool_postgres::{GenericClient, Pool};
use satchel_core::model::{OutcomeKind, Settlement};
use satchel_core::result_line::{TerminalKind, terminal_line_parts};
use satchel_core::store::StoreError;
use satchel_wire::Timestamp;

use crate::db::{connection, db_time, engine, wall};

/// Deletes the current leases' queue rows, writes their lines, and returns the count moves
/// per batch, in batch order. `DELETE … USING unnest(…)` is planned as a loop of primary-key
/// probes (the EXPLAIN test checks it).
pub const SETTLE_SQL: &str = "WITH s AS (
         SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bytea[], $4::bool[])
             AS s(request_id, token, line, ok)
     ), gone AS (
         DELETE FROM queue q USING s
         WHERE q.request_id = s.request_id AND q.lease_token = s.token
         RETURNING q.request_id, q.batch_pk
     ), kept AS (
         INSERT INTO results (request_id, line)
         SELECT s.request_id, s.line FROM gone JOIN s ON s.request_id = gone.request_id
     )
     SELECT g.batch_pk, count(*) FILTER (WHERE s.ok), count(*) FILTER (WHERE NOT s.ok)
     FROM gone g JOIN s ON s.request_id = g.request_id
     GROUP BY g.batch_pk ORDER BY g.batch_pk";

pub(crate) async fn settle(
    pool: &Pool,
    settlements: &[Settlement],
    now: Timestamp,
) -> Result<(), StoreError> {
    if settlements.is_empty() {
        return Ok(());
    }
    // In request order (the order rows are locked in: see claim::sorted_keys), each request
    // once.
    let mut order: Vec<&Settlement> = settlements.iter().collect();
    order.sort_by_key(|s| s.request.request);
    let mut seen = HashSet::new();
    order.retain(|s| seen.insert(s.request.request));
    let ids: Vec<i64> = order.iter().map(|s| s.request.request).collect();
    let tokens: Vec<i64> = order.iter().map(|s| s.request.lease).collect();
    let lines: Vec<&[u8]> = order.iter().map(|s| s.line.as_slice()).collect();
    let ok: Vec<bool> = order
        .iter()
        .map(|s| s.kind == OutcomeKind::Succeeded)
        .collect();

    let mut client = connection(pool).await?;
    let tx = client.transaction().await.map_err(engine)?;
    let statement = tx.prepare_cached(SETTLE_SQL).await.map_err(engine)?;
    let moved = tx
        .query(&statement, &[&ids, &tokens, &lines, &ok])
        .await
        .map_err(engine)?;
    let count = tx
        .prepare_cached(
            "UPDATE batches SET processing = processing - $2 - $3,
                 succeeded = succeeded + $2, errored = errored + $3,
                 state = CASE WHEN processing - $2 - $3 = 0 AND state IN (1, 2) THEN 3 ELSE state END,
                 ended_at = CASE WHEN processing - $2 - $3 = 0 AND state IN (1, 2) THEN $4 ELSE ended_at END
             WHERE pk = $1",
        )
        .await
        .map_err(engine)?;
    for row in moved {
        let pk: i64 = row.try_get(0).map_err(engine)?;
        let succeeded: i64 = row.try_get(1).map_err(engine)?;
        let errored: i64 = row.try_get(2).map_err(engine)?;
        tx.execute(&count, &[&pk, &succeeded, &errored, &now.as_micros()])
            .await
            .map_err(engine)?;
    }
    tx.commit().await.map_err(engine)
}

/// Turns up to `limit` requests of the batch that are not leased (or whose lease ran out)
/// into `canceled` / `expired` lines, moving the counts and ending the batch if nothing is
/// left, in the caller's transaction. Rows another transaction holds are skipped (a later
/// sweep takes them). Returns how many it ended.
pub(crate) async fn end_unleased(
    tx: &impl GenericClient,
    pk: i64,
    kind: TerminalKind,
    now: Timestamp,
    limit: i64,
) -> Result<u64, StoreError> {
    let (prefix, suffix) = terminal_line_parts(kind);
    // Unprepared, like the claim it shares `runnable_rows` with (see there): planned for the
    // queue as it is, not as it was when a cached plan was made.
    let statement = format!(
        "WITH gone AS (
                 DELETE FROM queue WHERE request_id = ANY(ARRAY({unleased}))
                 RETURNING request_id
             ), ins AS (
                 INSERT INTO results (request_id, line)
                 SELECT g.request_id, $5::bytea || convert_to(r.custom_id, 'UTF8') || $6::bytea
                 FROM gone g JOIN requests r ON r.id = g.request_id
                 RETURNING 1
             )
             SELECT count(*) FROM ins",
        unleased =
            crate::claim::runnable_rows("$1::bigint", &db_time("$2", "$3"), "", "$4::bigint")
    );
    let ended: i64 = tx
        .query_one(
            statement.as_str(),
            &[
                &pk,
                &now.as_micros(),
                &wall(),
                &limit,
                &prefix.as_bytes(),
                &suffix.as_bytes(),
            ],
        )
        .await
        .map_err(engine)?
        .try_get(0)
        .map_err(engine)?;
    if ended > 0 {
        let column = match kind {
            TerminalKind::Canceled => "canceled",
            TerminalKind::Expired => "expired",
        };
        let count = tx
            .prepare_cached(&format!(
                "UPDATE batches SET processing = processing - $2, {column} = {column} + $2,
                     state = CASE WHEN processing - $2 = 0 AND state IN (1, 2) THEN 3 ELSE state END,
                     ended_at = CASE WHEN processing - $2 = 0 AND state IN (1, 2) THEN $3 ELSE ended_at END
                 WHERE pk = $1"
            ))
            .await
            .map_err(engine)?;
        tx.execute(&count, &[&pk, &ended, &now.as_micros()])
            .await
            .map_err(engine)?;
    } else {
        // Nothing left to end here: the batch may be done (its last request settled while
        // it was in progress and the batch was then canceled).
        let done = tx
            .prepare_cached(
                "UPDATE batches SET state = 3, ended_at = $2
                 WHERE pk = $1 AND processing = 0 AND state IN (1, 2)",
            )
            .await
            .map_err(engine)?;
        tx.execute(&done, &[&pk, &now.as_micros()])
            .await
            .map_err(engine)?;
    }
    Ok(ended as u64)
}
