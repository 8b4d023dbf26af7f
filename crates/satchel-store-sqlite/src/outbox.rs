//! The webhook outbox on SQLite (`outbox.sql`): events recorded by a trigger in the
//! transaction that ends a batch, deliveries fanned out from them, leased, attempted and
//! logged. One process owns the file, so a lease only guards against this process's own
//! overlapping steps and a previous life's attempt.

use std::sync::Arc;

use async_trait::async_trait;
use rusqlite::{Connection, Row, TransactionBehavior, params};
use satchel_core::store::StoreError;
use satchel_core::webhooks::{
    AttemptRecord, ClaimedDelivery, DeliveryFilter, DeliveryKey, DeliveryRecord, DeliveryState,
    EventRecord, Outbox, Subscription,
};
use satchel_wire::Timestamp;

use crate::pool::Pool;

pub(crate) const SCHEMA: &str = include_str!("outbox.sql");

pub(crate) struct SqliteOutbox {
    pub pool: Arc<Pool>,
}

impl SqliteOutbox {
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        crate::pool::write(&self.pool, f).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        crate::pool::read(&self.pool, f).await
    }
}

const EVENT_COLUMNS: &str = "e.id, e.kind, e.batch_id, e.workspace, e.created_at";

fn event_from(row: &Row<'_>, at: usize) -> rusqlite::Result<EventRecord> {
    Ok(EventRecord {
        id: row.get(at)?,
        kind: row.get(at + 1)?,
        batch_id: row.get(at + 2)?,
        workspace: row.get(at + 3)?,
        created_at: Timestamp::from_micros(row.get(at + 4)?),
    })
}

/// The state a stored code stands for; a code this version does not know is an error, never
/// shown as something it is not.
fn state_from(code: i64) -> rusqlite::Result<DeliveryState> {
    match code {
        0 => Ok(DeliveryState::Pending),
        1 => Ok(DeliveryState::Delivered),
        2 => Ok(DeliveryState::Failed),
        other => Err(rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Integer,
            format!("unknown delivery state {other}").into(),
        )),
    }
}

fn state_code(state: DeliveryState) -> i64 {
    match state {
        DeliveryState::Pending => 0,
        DeliveryState::Delivered => 1,
        DeliveryState::Failed => 2,
    }
}

fn fan_out(
    conn: &mut Connection,
    subscriptions: &[Subscription],
    limit: usize,
    now: Timestamp,
) -> rusqlite::Result<usize> {
    // Deferred: a step with nothing to do (most) only reads. This is the writer connection,
    // the process's only one, so nobody else can write in between.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let events: Vec<(i64, EventRecord)> = tx
        .prepare_cached(&format!(
            "SELECT e.pk, {EVENT_COLUMNS} FROM webhook_events e WHERE e.fanned_out = 0
             ORDER BY e.pk LIMIT ?1"
        ))?
        .query_map([limit as i64], |r| Ok((r.get(0)?, event_from(r, 1)?)))?
        .collect::<Result<_, _>>()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO webhook_deliveries (event_pk, workspace, url, next_attempt_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?4)",
        )?;
        let mut mark =
            tx.prepare_cached("UPDATE webhook_events SET fanned_out = 1 WHERE pk = ?1")?;
        for (pk, event) in &events {
            for s in subscriptions.iter().filter(|s| s.wants(event)) {
                insert.execute(params![pk, event.workspace, s.url, now.as_micros()])?;
            }
            mark.execute([pk])?;
        }
    }
    tx.commit()?;
    Ok(events.len())
}

fn claim(
    conn: &mut Connection,
    owner: &str,
    max: usize,
    now: Timestamp,
    until: Timestamp,
) -> rusqlite::Result<Vec<ClaimedDelivery>> {
    // Deferred, as in fan_out: nothing due, nothing written.
    let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
    let due: Vec<ClaimedDelivery> = tx
        .prepare_cached(&format!(
            "SELECT d.pk, d.attempts + 1, d.url, {EVENT_COLUMNS}
             FROM webhook_deliveries d JOIN webhook_events e ON e.pk = d.event_pk
             WHERE d.state = 0 AND d.next_attempt_at <= ?1 AND d.lease_until <= ?1
             ORDER BY d.next_attempt_at LIMIT ?2"
        ))?
        .query_map(params![now.as_micros(), max as i64], |r| {
            Ok(ClaimedDelivery {
                key: DeliveryKey {
                    delivery: r.get(0)?,
                    attempt: r.get(1)?,
                },
                url: r.get(2)?,
                event: event_from(r, 3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    {
        let mut lease = tx.prepare_cached(
            "UPDATE webhook_deliveries SET attempts = ?2, lease_until = ?3, owner = ?4 WHERE pk = ?1",
        )?;
        for d in &due {
            lease.execute(params![
                d.key.delivery,
                d.key.attempt,
                until.as_micros(),
                owner
            ])?;
        }
    }
    tx.commit()?;
    Ok(due)
}

fn record_attempt(
    conn: &mut Connection,
    key: DeliveryKey,
    outcome: &AttemptRecord,
    now: Timestamp,
) -> rusqlite::Result<bool> {
    let changed = conn
        .prepare_cached(
            "UPDATE webhook_deliveries SET state = ?3, last_status = ?4, last_error = ?5,
                 last_attempt_at = ?6, next_attempt_at = COALESCE(?7, next_attempt_at),
                 lease_until = 0, owner = NULL
             WHERE pk = ?1 AND attempts = ?2 AND state = 0",
        )?
        .execute(params![
            key.delivery,
            key.attempt,
            state_code(outcome.state),
            outcome.status,
            outcome.error,
            now.as_micros(),
            outcome.next_attempt_at.map(Timestamp::as_micros),
        ])?;
    Ok(changed == 1)
}

fn deliveries(
    conn: &Connection,
    workspace: &str,
    filter: &DeliveryFilter,
    limit: u32,
) -> rusqlite::Result<Vec<DeliveryRecord>> {
    let mut statement = conn.prepare_cached(&format!(
        "SELECT d.pk, d.url, d.state, d.attempts, d.last_status, d.last_error, d.created_at,
             d.last_attempt_at, d.next_attempt_at, {EVENT_COLUMNS}
         FROM webhook_deliveries d JOIN webhook_events e ON e.pk = d.event_pk
         WHERE d.workspace = ?1 AND (?2 IS NULL OR e.batch_id = ?2) AND (?3 IS NULL OR d.pk < ?3)
         ORDER BY d.pk DESC LIMIT ?4"
    ))?;
    let rows = statement.query_map(
        params![
            workspace,
            filter.batch_id,
            filter.before,
            i64::from(limit) + 1
        ],
        |r| {
            let state = state_from(r.get(2)?)?;
            Ok(DeliveryRecord {
                delivery: r.get(0)?,
                url: r.get(1)?,
                state,
                attempts: r.get(3)?,
                last_status: r.get(4)?,
                last_error: r.get(5)?,
                created_at: Timestamp::from_micros(r.get(6)?),
                last_attempt_at: r.get::<_, Option<i64>>(7)?.map(Timestamp::from_micros),
                next_attempt_at: (state == DeliveryState::Pending)
                    .then(|| r.get::<_, i64>(8).map(Timestamp::from_micros))
                    .transpose()?,
                event: event_from(r, 9)?,
            })
        },
    )?;
    rows.collect()
}

fn purge(conn: &mut Connection, before: Timestamp) -> rusqlite::Result<u64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "DELETE FROM webhook_deliveries WHERE state <> 0 AND event_pk IN
             (SELECT pk FROM webhook_events WHERE created_at < ?1)",
        [before.as_micros()],
    )?;
    let removed = tx.execute(
        "DELETE FROM webhook_events AS e WHERE e.created_at < ?1 AND e.fanned_out = 1
             AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_pk = e.pk)",
        [before.as_micros()],
    )?;
    tx.commit()?;
    Ok(removed as u64)
}

#[async_trait]
impl Outbox for SqliteOutbox {
    async fn fan_out(
        &self,
        subscriptions: &[Subscription],
        limit: usize,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let subscriptions = subscriptions.to_vec();
        self.write(move |c| fan_out(c, &subscriptions, limit, now))
            .await
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        max: usize,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let owner = owner.to_owned();
        self.write(move |c| claim(c, &owner, max, now, until)).await
    }

    async fn release_deliveries(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE webhook_deliveries SET lease_until = 0, owner = NULL
                 WHERE owner = ?1 AND state = 0",
                [owner],
            )
            .map(|n| n as u64)
        })
        .await
    }

    async fn record_attempt(
        &self,
        key: DeliveryKey,
        outcome: AttemptRecord,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        self.write(move |c| record_attempt(c, key, &outcome, now))
            .await
    }

    async fn deliveries(
        &self,
        workspace: &str,
        filter: &DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let (workspace, filter) = (workspace.to_owned(), filter.clone());
        self.read(move |c| deliveries(c, &workspace, &filter, limit))
            .await
    }

    async fn purge_webhooks(&self, before: Timestamp) -> Result<u64, StoreError> {
        self.write(move |c| purge(c, before)).await
    }
}
