//! What every operation shares: the batch states, reading a batch row, the database-clock
//! expression for leases, and PostgreSQL failures as the store's error.

use deadpool_postgres::{GenericClient, Object, Pool, PoolError};
use satchel_core::model::BatchRecord;
use satchel_core::store::StoreError;
use satchel_wire::{ProcessingStatus, RequestCounts, Timestamp};
use tokio_postgres::Row;

pub(crate) const INGESTING: i16 = 0;
pub(crate) const IN_PROGRESS: i16 = 1;
pub(crate) const CANCELING: i16 = 2;
pub(crate) const ENDED: i16 = 3;
pub(crate) const DELETING: i16 = 4;

/// Request ids reserved for each batch: far more than any batch may hold.
pub(crate) const IDS_PER_BATCH: i64 = 1 << 32;

/// Rows one statement of housekeeping, cancel or delete touches at most: big enough to be
/// quick, small enough that no statement writes a burst of WAL or holds locks for long.
pub(crate) const CHUNK: i64 = 5_000;

/// The database's clock now, in microseconds since the epoch (one reading per statement).
pub(crate) const DB_NOW: &str = "(extract(epoch from statement_timestamp()) * 1000000)::bigint";

/// A node's timestamp `$t` moved onto the database's clock, given `$wall`, the node's own
/// clock when it sent the statement: `$t` stays as far from the database's now as it was
/// from the node's. So leases are judged by one clock whatever the nodes' skew, while a
/// caller passing a `now` ahead of its clock (tests do) still sees that much time pass.
pub(crate) fn db_time(t: &str, wall: &str) -> String {
    format!("({t}::bigint + {DB_NOW} - {wall}::bigint)")
}

/// The node's clock, to pass as `$wall` in [`db_time`].
pub(crate) fn wall() -> i64 {
    Timestamp::now().as_micros()
}

pub(crate) const BATCH_COLUMNS: &str = "id, workspace, state, processing, succeeded, errored, \
     canceled, expired, created_at, expires_at, ended_at, cancel_initiated_at, archived_at";

/// The status a stored state stands for; a state this version does not know is an error,
/// never shown as something it is not.
pub(crate) fn status_of(state: i16) -> Result<ProcessingStatus, StoreError> {
    match state {
        IN_PROGRESS => Ok(ProcessingStatus::InProgress),
        CANCELING => Ok(ProcessingStatus::Canceling),
        ENDED => Ok(ProcessingStatus::Ended),
        other => Err(StoreError::engine(
            format!("unknown batch state {other}"),
            false,
        )),
    }
}

pub(crate) fn batch_from_row(row: &Row) -> Result<BatchRecord, StoreError> {
    let status = status_of(row.try_get::<_, i16>(2).map_err(engine)?)?;
    let ts = |i: usize| -> Result<Option<Timestamp>, StoreError> {
        Ok(row
            .try_get::<_, Option<i64>>(i)
            .map_err(engine)?
            .map(Timestamp::from_micros))
    };
    let count = |i: usize| -> Result<u64, StoreError> {
        Ok(row.try_get::<_, i64>(i).map_err(engine)?.max(0) as u64)
    };
    Ok(BatchRecord {
        id: row.try_get(0).map_err(engine)?,
        workspace: row.try_get(1).map_err(engine)?,
        status,
        counts: RequestCounts {
            processing: count(3)?,
            succeeded: count(4)?,
            errored: count(5)?,
            canceled: count(6)?,
            expired: count(7)?,
        },
        created_at: Timestamp::from_micros(row.try_get(8).map_err(engine)?),
        expires_at: Timestamp::from_micros(row.try_get(9).map_err(engine)?),
        ended_at: ts(10)?,
        cancel_initiated_at: ts(11)?,
        archived_at: ts(12)?,
    })
}

pub(crate) async fn batch_by_pk(
    client: &impl GenericClient,
    pk: i64,
) -> Result<BatchRecord, StoreError> {
    let statement = client
        .prepare_cached(&format!(
            "SELECT {BATCH_COLUMNS} FROM batches WHERE pk = $1"
        ))
        .await
        .map_err(engine)?;
    let row = client.query_one(&statement, &[&pk]).await.map_err(engine)?;
    batch_from_row(&row)
}

/// A batch's key facts, looked up by its public id within a workspace (never an invisible
/// one: ingesting or being deleted).
pub(crate) struct BatchKey {
    pub pk: i64,
    pub state: i16,
    pub first_request: i64,
    pub request_count: i64,
    pub archived: bool,
}

pub(crate) async fn find_batch(
    client: &impl GenericClient,
    workspace: &str,
    id: &str,
    lock: bool,
) -> Result<Option<BatchKey>, StoreError> {
    let sql = format!(
        "SELECT pk, state, first_request, request_count, archived_at IS NOT NULL FROM batches
         WHERE workspace = $1 AND id = $2 AND state IN (1, 2, 3){}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let statement = client.prepare_cached(&sql).await.map_err(engine)?;
    let row = client
        .query_opt(&statement, &[&workspace, &id])
        .await
        .map_err(engine)?;
    row.map(|r| {
        Ok(BatchKey {
            pk: r.try_get(0).map_err(engine)?,
            state: r.try_get(1).map_err(engine)?,
            first_request: r.try_get(2).map_err(engine)?,
            request_count: r.try_get(3).map_err(engine)?,
            archived: r.try_get(4).map_err(engine)?,
        })
    })
    .transpose()
}

/// A pooled connection.
pub(crate) async fn connection(pool: &Pool) -> Result<Object, StoreError> {
    pool.get().await.map_err(pool_error)
}

/// A PostgreSQL failure as the store's error, saying whether trying again later may help.
pub(crate) fn engine(e: tokio_postgres::Error) -> StoreError {
    let transient = match e.code() {
        Some(code) => transient_state(code.code()),
        // No SQLSTATE: the connection broke, or an I/O error, or a timeout.
        None => true,
    };
    StoreError::engine(e, transient)
}

/// SQLSTATEs after which the same call may succeed later: connection exceptions (08),
/// serialization failures and deadlocks (40), insufficient resources such as a full disk
/// (53), the server shutting down or starting (57P), lock timeouts (55P03), I/O errors (58).
fn transient_state(code: &str) -> bool {
    ["08", "40", "53", "57P", "55P03", "58"]
        .iter()
        .any(|prefix| code.starts_with(prefix))
}

pub(crate) fn pool_error(e: PoolError) -> StoreError {
    match e {
        PoolError::Backend(e) => engine(e),
        other => StoreError::engine(other.to_string(), true),
    }
}
