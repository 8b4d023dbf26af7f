//! The webhook outbox on PostgreSQL (`migrations/0004_webhooks.sql`), shared by every node:
//! events recorded by a trigger in the transaction that ends a batch; fan-out and claims
//! lock what they take with `FOR UPDATE SKIP LOCKED`, so two nodes never fan one event out
//! twice nor hold one delivery at once. Leases are judged by the database's clock (a node
//! with a fast clock must not take another's lease early); when a delivery is due is the
//! node's clock's (a skew only moves a retry by as much).

use async_trait::async_trait;
use deadpool_postgres::Pool;
use satchel_core::store::StoreError;
use satchel_core::webhooks::{
    AttemptRecord, ClaimedDelivery, DeliveryFilter, DeliveryKey, DeliveryRecord, DeliveryState,
    EventRecord, Outbox, Subscription,
};
use satchel_wire::Timestamp;
use tokio_postgres::Row;

use crate::db::{connection, db_time, engine, wall};

pub(crate) struct PostgresOutbox {
    pub pool: Pool,
}

const EVENT_COLUMNS: &str = "e.id, e.kind, e.batch_id, e.workspace, e.created_at";

fn event_from(row: &Row, at: usize) -> Result<EventRecord, StoreError> {
    Ok(EventRecord {
        id: row.try_get(at).map_err(engine)?,
        kind: row.try_get(at + 1).map_err(engine)?,
        batch_id: row.try_get(at + 2).map_err(engine)?,
        workspace: row.try_get(at + 3).map_err(engine)?,
        created_at: Timestamp::from_micros(row.try_get(at + 4).map_err(engine)?),
    })
}

/// The state a stored code stands for; a code this version does not know is an error.
fn state_from(code: i16) -> Result<DeliveryState, StoreError> {
    match code {
        0 => Ok(DeliveryState::Pending),
        1 => Ok(DeliveryState::Delivered),
        2 => Ok(DeliveryState::Failed),
        other => Err(StoreError::engine(
            format!("unknown delivery state {other}"),
            false,
        )),
    }
}

fn state_code(state: DeliveryState) -> i16 {
    match state {
        DeliveryState::Pending => 0,
        DeliveryState::Delivered => 1,
        DeliveryState::Failed => 2,
    }
}

#[async_trait]
impl Outbox for PostgresOutbox {
    async fn fan_out(
        &self,
        subscriptions: &[Subscription],
        limit: usize,
        now: Timestamp,
    ) -> Result<usize, StoreError> {
        let mut client = connection(&self.pool).await?;
        let tx = client.transaction().await.map_err(engine)?;
        let rows = tx
            .query(
                &format!(
                    "SELECT e.pk, {EVENT_COLUMNS} FROM webhook_events e WHERE NOT e.fanned_out
                     ORDER BY e.pk LIMIT $1 FOR UPDATE SKIP LOCKED"
                ),
                &[&(limit as i64)],
            )
            .await
            .map_err(engine)?;
        let (mut event_pks, mut workspaces, mut urls) = (Vec::new(), Vec::new(), Vec::new());
        let mut handled = Vec::with_capacity(rows.len());
        for row in &rows {
            let pk: i64 = row.try_get(0).map_err(engine)?;
            let event = event_from(row, 1)?;
            for s in subscriptions.iter().filter(|s| s.wants(&event)) {
                event_pks.push(pk);
                workspaces.push(event.workspace.clone());
                urls.push(s.url.clone());
            }
            handled.push(pk);
        }
        if handled.is_empty() {
            return Ok(0);
        }
        tx.execute(
            "INSERT INTO webhook_deliveries (event_pk, workspace, url, next_attempt_at, created_at)
             SELECT event_pk, workspace, url, $4, $4
             FROM unnest($1::bigint[], $2::text[], $3::text[]) AS s(event_pk, workspace, url)
             ON CONFLICT (event_pk, url) DO NOTHING",
            &[&event_pks, &workspaces, &urls, &now.as_micros()],
        )
        .await
        .map_err(engine)?;
        tx.execute(
            "UPDATE webhook_events SET fanned_out = true WHERE pk = ANY($1)",
            &[&handled],
        )
        .await
        .map_err(engine)?;
        tx.commit().await.map_err(engine)?;
        Ok(handled.len())
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        max: usize,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ClaimedDelivery>, StoreError> {
        let client = connection(&self.pool).await?;
        let rows = client
            .query(
                &format!(
                    "WITH claimed AS (
                         UPDATE webhook_deliveries SET attempts = attempts + 1,
                             lease_until = {until}, owner = $4
                         WHERE pk = ANY(ARRAY(
                             SELECT pk FROM webhook_deliveries
                             WHERE state = 0 AND next_attempt_at <= $1 AND lease_until <= {now}
                             ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED))
                         RETURNING pk, attempts, url, event_pk
                     )
                     SELECT c.pk, c.attempts, c.url, {EVENT_COLUMNS}
                     FROM claimed c JOIN webhook_events e ON e.pk = c.event_pk",
                    now = db_time("$1", "$3"),
                    until = db_time("$2", "$3"),
                ),
                &[
                    &now.as_micros(),
                    &until.as_micros(),
                    &wall(),
                    &owner,
                    &(max as i64),
                ],
            )
            .await
            .map_err(engine)?;
        rows.iter()
            .map(|r| {
                Ok(ClaimedDelivery {
                    key: DeliveryKey {
                        delivery: r.try_get(0).map_err(engine)?,
                        attempt: r.try_get(1).map_err(engine)?,
                    },
                    url: r.try_get(2).map_err(engine)?,
                    event: event_from(r, 3)?,
                })
            })
            .collect()
    }

    async fn release_deliveries(&self, owner: &str) -> Result<u64, StoreError> {
        let client = connection(&self.pool).await?;
        client
            .execute(
                "UPDATE webhook_deliveries SET lease_until = 0, owner = NULL
                 WHERE owner = $1 AND state = 0",
                &[&owner],
            )
            .await
            .map_err(engine)
    }

    async fn record_attempt(
        &self,
        key: DeliveryKey,
        outcome: AttemptRecord,
        now: Timestamp,
    ) -> Result<bool, StoreError> {
        let client = connection(&self.pool).await?;
        let next = outcome.next_attempt_at.map(Timestamp::as_micros);
        let changed = client
            .execute(
                "UPDATE webhook_deliveries SET state = $3, last_status = $4, last_error = $5,
                     last_attempt_at = $6, next_attempt_at = COALESCE($7, next_attempt_at),
                     lease_until = 0, owner = NULL
                 WHERE pk = $1 AND attempts = $2 AND state = 0",
                &[
                    &key.delivery,
                    &key.attempt,
                    &state_code(outcome.state),
                    &outcome.status.map(i32::from),
                    &outcome.error,
                    &now.as_micros(),
                    &next,
                ],
            )
            .await
            .map_err(engine)?;
        Ok(changed == 1)
    }

    async fn deliveries(
        &self,
        workspace: &str,
        filter: &DeliveryFilter,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let client = connection(&self.pool).await?;
        let rows = client
            .query(
                &format!(
                    "SELECT d.pk, d.url, d.state, d.attempts, d.last_status, d.last_error,
                         d.created_at, d.last_attempt_at, d.next_attempt_at, {EVENT_COLUMNS}
                     FROM webhook_deliveries d JOIN webhook_events e ON e.pk = d.event_pk
                     WHERE d.workspace = $1 AND ($2::text IS NULL OR e.batch_id = $2)
                         AND ($3::bigint IS NULL OR d.pk < $3)
                     ORDER BY d.pk DESC LIMIT $4"
                ),
                &[
                    &workspace,
                    &filter.batch_id,
                    &filter.before,
                    &(i64::from(limit) + 1),
                ],
            )
            .await
            .map_err(engine)?;
        rows.iter()
            .map(|r| {
                let state = state_from(r.try_get(2).map_err(engine)?)?;
                let status: Option<i32> = r.try_get(4).map_err(engine)?;
                let last_attempt: Option<i64> = r.try_get(7).map_err(engine)?;
                let next: i64 = r.try_get(8).map_err(engine)?;
                Ok(DeliveryRecord {
                    delivery: r.try_get(0).map_err(engine)?,
                    url: r.try_get(1).map_err(engine)?,
                    state,
                    attempts: r.try_get(3).map_err(engine)?,
                    last_status: status.and_then(|s| u16::try_from(s).ok()),
                    last_error: r.try_get(5).map_err(engine)?,
                    created_at: Timestamp::from_micros(r.try_get(6).map_err(engine)?),
                    last_attempt_at: last_attempt.map(Timestamp::from_micros),
                    next_attempt_at: (state == DeliveryState::Pending)
                        .then_some(Timestamp::from_micros(next)),
                    event: event_from(r, 9)?,
                })
            })
            .collect()
    }

    async fn purge_webhooks(&self, before: Timestamp) -> Result<u64, StoreError> {
        let mut client = connection(&self.pool).await?;
        let tx = client.transaction().await.map_err(engine)?;
        tx.execute(
            "DELETE FROM webhook_deliveries WHERE state <> 0 AND event_pk IN
                 (SELECT pk FROM webhook_events WHERE created_at < $1)",
            &[&before.as_micros()],
        )
        .await
        .map_err(engine)?;
        let removed = tx
            .execute(
                "DELETE FROM webhook_events e WHERE e.created_at < $1 AND e.fanned_out
                     AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.event_pk = e.pk)",
                &[&before.as_micros()],
            )
            .await
            .map_err(engine)?;
        tx.commit().await.map_err(engine)?;
        Ok(removed)
    }
}
