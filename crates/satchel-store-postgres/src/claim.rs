//! Leases: claim (fair shares across workspaces and batches, one statement with `FOR UPDATE
//! SKIP LOCKED`), renew, release, and recover a node's previous life's leases.
//!
//! Two nodes claiming at once never take the same row: each locks the rows it picks and
//! skips those another has locked. Lease ends are on the database's clock (see
//! [`crate::db::db_time`]); tokens come from the `lease_tokens` sequence, so they strictly
//! increase across all nodes.

use std::collections::{BTreeMap, HashMap};

use deadpool_postgres::Pool;
use satchel_core::model::{
    ClaimedRequest, ModelFilter, OutcomeKind, RequestKey, Settlement, claimed_params,
};
use satchel_core::result_line;
use satchel_core::store::StoreError;
use satchel_wire::{ErrorType, Timestamp};

use crate::PostgresStore;
use crate::db::{connection, db_time, engine, wall};

/// Each batch's share of `room`: each workspace an equal part, each of its batches an equal
/// part of that (rounded up in serving order, so the shares add up to `room`).
fn shares(workspaces: &[Vec<i64>], room: usize) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut left = room;
    for (i, batches) in workspaces.iter().enumerate() {
        let mut workspace_left = left.div_ceil(workspaces.len() - i);
        left -= workspace_left;
        for (j, &pk) in batches.iter().enumerate() {
            let share = workspace_left.div_ceil(batches.len() - j);
            workspace_left -= share;
            if share > 0 {
                out.push((pk, share as i64));
            }
        }
    }
    out
}

/// Rounds of one claim at most: after the first, the room that batches with fewer runnable
/// requests than their share left goes to those that filled theirs.
const ROUNDS: usize = 3;

/// Up to `n` runnable rows of batch `batch` (SQL expressions; `filter`: any further
/// condition on `q`), locked `FOR UPDATE SKIP LOCKED`: first those whose lease has run out
/// (the leased rows, by lease end: rare, abandoned work), then those not leased, in claim
/// order `(prefix, request_id)`. Each half reads its own partial index (migration 0005), so
/// the rows in flight at the head of a big batch are never walked past. Statements using it
/// are not prepared once and cached: see [`claim`].
pub(crate) fn runnable_rows(batch: &str, now: &str, filter: &str, n: &str) -> String {
    format!(
        "SELECT u.request_id FROM (
             SELECT * FROM (
                 SELECT q.request_id FROM queue q
                 WHERE q.batch_pk = {batch} AND q.lease_token <> 0 AND q.lease_until <= {now}
                   {filter}
                 ORDER BY q.lease_until LIMIT {n} FOR UPDATE SKIP LOCKED) ran_out
             UNION ALL
             SELECT * FROM (
                 SELECT q.request_id FROM queue q
                 WHERE q.batch_pk = {batch} AND q.lease_token = 0 {filter}
                 ORDER BY q.prefix, q.request_id LIMIT {n} FOR UPDATE SKIP LOCKED) unleased
         ) u LIMIT {n}"
    )
}

/// The claim statement. `$1`/`$2`: batches and their shares; `$3`: now; `$4`: until; `$5`:
/// the node's clock; `$6`: owner; `$7`: models (NULL: any); then `$8`, the token, after the
/// first round (the first draws it from the sequence).
///
/// The rows are picked inside `= ANY(ARRAY(…))`, not joined with `UPDATE … FROM picked`:
/// the join was planned as a hash over the whole queue (365 ms against 0.54 ms on 400k rows;
/// the EXPLAIN test keeps it so).
pub fn claim_sql(first_round: bool) -> String {
    let token = if first_round {
        "(SELECT nextval('lease_tokens'))"
    } else {
        "$8::bigint"
    };
    let picked = runnable_rows(
        "want.batch_pk",
        &db_time("$3", "$5"),
        "AND ($7::int[] IS NULL OR q.model = ANY($7::int[]))",
        "want.n",
    );
    format!(
        "WITH want AS (
             SELECT w.batch_pk, w.n FROM unnest($1::bigint[], $2::bigint[]) AS w(batch_pk, n)
             JOIN batches b ON b.pk = w.batch_pk
             WHERE b.state = 1 AND b.expires_at > $3::bigint
         ), taken AS (
             UPDATE queue SET lease_until = {until}, lease_token = {token}, owner = $6::text
             WHERE request_id = ANY(ARRAY(
                 SELECT p.request_id FROM want CROSS JOIN LATERAL ({picked}) p))
             RETURNING request_id, batch_pk, lease_token, prefix
         )
         SELECT t.request_id, t.batch_pk, t.lease_token, r.custom_id, r.params
         FROM taken t JOIN requests r ON r.id = t.request_id
         ORDER BY t.prefix, t.request_id",
        until = db_time("$4", "$5"),
    )
}

pub(crate) async fn claim(
    store: &PostgresStore,
    owner: &str,
    max: usize,
    models: &ModelFilter,
    now: Timestamp,
    until: Timestamp,
) -> Result<Vec<ClaimedRequest>, StoreError> {
    let model_ids: Option<Vec<i32>> = match models {
        ModelFilter::Any => None,
        ModelFilter::Only(ids) if ids.is_empty() => return Ok(Vec::new()),
        ModelFilter::Only(ids) => Some(ids.iter().map(|&id| id as i32).collect()),
    };
    if max == 0 {
        return Ok(Vec::new());
    }
    let client = connection(&store.pool).await?;
    let running_sql = client
        .prepare_cached(
            "SELECT pk, workspace FROM batches WHERE state IN (1, 2) AND state = 1 AND expires_at > $1",
        )
        .await
        .map_err(engine)?;
    let running: Vec<(i64, String)> = client
        .query(&running_sql, &[&now.as_micros()])
        .await
        .map_err(engine)?
        .iter()
        .map(|r| Ok((r.try_get(0).map_err(engine)?, r.try_get(1).map_err(engine)?)))
        .collect::<Result<_, StoreError>>()?;
    if running.is_empty() {
        return Ok(Vec::new());
    }
    let mut workspaces = {
        let mut state = store
            .claims
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.round_robin(running)
    };
    // Not prepared (cached): a statement prepared while the queue was small keeps a generic
    // plan made for that size, and for this one that plan was a sort of every runnable row of
    // the batch (80 ms on 100k rows; the bench saw 3x the CPU a request). Unnamed, it is
    // planned for the queue as it is at each claim.
    let (first_sql, next_sql) = (claim_sql(true), claim_sql(false));
    let mut claimed: Vec<ClaimedRequest> = Vec::with_capacity(max);
    let mut unreadable: Vec<Settlement> = Vec::new();
    let mut token: Option<i64> = None;
    for _ in 0..ROUNDS {
        let room = max - claimed.len() - unreadable.len();
        if room == 0 || workspaces.is_empty() {
            break;
        }
        let shares = shares(&workspaces, room);
        let (pks, ns): (Vec<i64>, Vec<i64>) = shares.iter().copied().unzip();
        let (now, until, wall) = (now.as_micros(), until.as_micros(), wall());
        let rows = match token {
            None => {
                client
                    .query(
                        first_sql.as_str(),
                        &[&pks, &ns, &now, &until, &wall, &owner, &model_ids],
                    )
                    .await
            }
            Some(token) => {
                client
                    .query(
                        next_sql.as_str(),
                        &[&pks, &ns, &now, &until, &wall, &owner, &model_ids, &token],
                    )
                    .await
            }
        }
        .map_err(engine)?;
        let mut taken: BTreeMap<i64, i64> = BTreeMap::new();
        for row in rows {
            let key = RequestKey {
                request: row.try_get(0).map_err(engine)?,
                batch: row.try_get(1).map_err(engine)?,
                lease: row.try_get(2).map_err(engine)?,
            };
            token = Some(key.lease);
            *taken.entry(key.batch).or_default() += 1;
            let custom_id: String = row.try_get(3).map_err(engine)?;
            let params: Vec<u8> = row.try_get(4).map_err(engine)?;
            match claimed_params(params) {
                Ok(params) => claimed.push(ClaimedRequest {
                    request: key,
                    custom_id,
                    params,
                    // Filled in below, once per batch.
                    upstream_headers: None,
                }),
                Err(problem) => {
                    // Never runnable as it is: end it as data rather than leave the batch
                    // waiting for a request that can never start.
                    tracing::error!(request_id = key.request, %problem, "a request's stored params cannot be read; it ends errored");
                    unreadable.push(Settlement {
                        request: key,
                        kind: OutcomeKind::Errored,
                        line: result_line::errored(
                            &custom_id,
                            ErrorType::ApiError,
                            &format!("Satchel could not read this request's stored params ({problem}); it was not sent."),
                        ),
                    });
                }
            }
        }
        // Only batches that filled their share may have more.
        let full: Vec<i64> = shares
            .iter()
            .filter(|(pk, n)| taken.get(pk) == Some(n))
            .map(|&(pk, _)| pk)
            .collect();
        for batches in &mut workspaces {
            batches.retain(|pk| full.contains(pk));
        }
        workspaces.retain(|batches| !batches.is_empty());
    }
    // Each batch's upstream headers, read once for all its claimed requests.
    let mut pks: Vec<i64> = claimed.iter().map(|c| c.request.batch).collect();
    pks.sort_unstable();
    pks.dedup();
    if !pks.is_empty() {
        let headers: HashMap<i64, Option<String>> = client
            .query(
                "SELECT pk, upstream_headers FROM batches WHERE pk = ANY($1)",
                &[&pks],
            )
            .await
            .map_err(engine)?
            .iter()
            .map(|r| Ok((r.try_get(0).map_err(engine)?, r.try_get(1).map_err(engine)?)))
            .collect::<Result<_, StoreError>>()?;
        for request in &mut claimed {
            request.upstream_headers = headers.get(&request.request.batch).cloned().flatten();
        }
    }
    drop(client);
    if !unreadable.is_empty() {
        crate::settle::settle(&store.pool, &unreadable, now).await?;
    }
    Ok(claimed)
}

/// The params bytes as read back, or what is wrong with them.
/// The leases as two arrays sorted by request id, so that every statement locking several
/// queue rows locks them in the same order (two such transactions then never deadlock).
fn sorted_keys(leases: &[RequestKey]) -> (Vec<i64>, Vec<i64>) {
    let mut keys: Vec<(i64, i64)> = leases.iter().map(|k| (k.request, k.lease)).collect();
    keys.sort_unstable();
    keys.into_iter().unzip()
}

pub fn renew_sql() -> String {
    format!(
        "UPDATE queue q SET lease_until = {until}
         FROM unnest($1::bigint[], $2::bigint[]) AS s(request_id, token)
         WHERE q.request_id = s.request_id AND q.lease_token = s.token
         RETURNING q.request_id, q.lease_token",
        until = db_time("$3", "$4")
    )
}

pub(crate) async fn renew(
    pool: &Pool,
    leases: Vec<RequestKey>,
    until: Timestamp,
) -> Result<Vec<RequestKey>, StoreError> {
    if leases.is_empty() {
        return Ok(Vec::new());
    }
    let client = connection(pool).await?;
    let statement = client.prepare_cached(&renew_sql()).await.map_err(engine)?;
    let (ids, tokens) = sorted_keys(&leases);
    let renewed: std::collections::HashSet<(i64, i64)> = client
        .query(&statement, &[&ids, &tokens, &until.as_micros(), &wall()])
        .await
        .map_err(engine)?
        .iter()
        .map(|r| Ok((r.try_get(0).map_err(engine)?, r.try_get(1).map_err(engine)?)))
        .collect::<Result<_, StoreError>>()?;
    Ok(leases
        .into_iter()
        .filter(|k| !renewed.contains(&(k.request, k.lease)))
        .collect())
}

pub(crate) async fn release(pool: &Pool, leases: Vec<RequestKey>) -> Result<(), StoreError> {
    if leases.is_empty() {
        return Ok(());
    }
    let client = connection(pool).await?;
    let statement = client
        .prepare_cached(
            "UPDATE queue q SET lease_until = 0, lease_token = 0, owner = NULL
             FROM unnest($1::bigint[], $2::bigint[]) AS s(request_id, token)
             WHERE q.request_id = s.request_id AND q.lease_token = s.token",
        )
        .await
        .map_err(engine)?;
    let (ids, tokens) = sorted_keys(&leases);
    client
        .execute(&statement, &[&ids, &tokens])
        .await
        .map_err(engine)?;
    Ok(())
}

/// Releases `owner`'s leases: its previous life's, since a live node's id is held by that
/// node alone (see `node.rs`).
pub(crate) async fn recover(pool: &Pool, owner: &str) -> Result<u64, StoreError> {
    let client = connection(pool).await?;
    client
        .execute(
            "UPDATE queue SET lease_until = 0, lease_token = 0, owner = NULL WHERE owner = $1",
            &[&owner],
        )
        .await
        .map_err(engine)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_room() {
        let workspaces = vec![vec![1, 2], vec![3]];
        assert_eq!(shares(&workspaces, 40), [(1, 10), (2, 10), (3, 20)]);
        assert_eq!(shares(&workspaces, 3), [(1, 1), (2, 1), (3, 1)]);
        assert_eq!(shares(&workspaces, 1), [(1, 1)]);
        let total: i64 = shares(&[vec![1, 2, 3], vec![4, 5]], 17)
            .iter()
            .map(|s| s.1)
            .sum();
        assert_eq!(total, 17);
    }
}
