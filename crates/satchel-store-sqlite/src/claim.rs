//! Claims: leasing runnable requests to a node, fairly across workspaces and batches, with
//! their params read from the row or the batch's params file. A request whose params cannot
//! be read ends `errored` in the same transaction rather than being handed out.

use rusqlite::{Connection, TransactionBehavior, params};
use satchel_core::fairness::ClaimOrder;
use satchel_core::model::{
    ClaimedRequest, ModelFilter, OutcomeKind, RequestKey, Settlement, claimed_params,
};
use satchel_core::result_line;
use satchel_wire::{ErrorType, Timestamp};

use crate::blobs::Blobs;
use crate::ops::settle_in;

/// Where a picked request's params are: in its row, or at an offset of its batch's file.
enum Stored {
    Inline(Vec<u8>),
    File(i64, i64),
}

/// The terms of the leases a claim grants.
pub(crate) struct Lease<'a> {
    pub owner: &'a str,
    pub now: Timestamp,
    pub until: Timestamp,
}

pub(crate) fn claim(
    conn: &mut Connection,
    blobs: &Blobs,
    order: &mut ClaimOrder,
    lease: &Lease<'_>,
    max: usize,
    models: &ModelFilter,
) -> rusqlite::Result<Vec<ClaimedRequest>> {
    let Lease { owner, now, until } = *lease;
    if max == 0 || matches!(models, ModelFilter::Only(ids) if ids.is_empty()) {
        return Ok(Vec::new());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Only in_progress batches run; canceling ones only finish what is in flight.
    // (`state IN (1, 2)` lets SQLite use the partial index of open batches.)
    let running: Vec<(i64, String)> = tx
        .prepare_cached(
            "SELECT pk, workspace FROM batches WHERE state IN (1, 2) AND state = 1 AND expires_at > ?1",
        )?
        .query_map([now.as_micros()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let workspaces = order.round_robin(running);
    let token: i64 = tx
        .prepare_cached(
            "UPDATE meta SET value = value + 1 WHERE key = 'next_lease_token' RETURNING value",
        )?
        .query_row([], |r| r.get(0))?;
    let mut claimed = Vec::with_capacity(max);
    let mut unreadable: Vec<Settlement> = Vec::new();
    {
        // The models as a JSON list for `json_each`: one statement whatever their number.
        let (filter, model_ids) = match models {
            ModelFilter::Any => ("", String::new()),
            ModelFilter::Only(ids) => (
                "AND q.model IN (SELECT value FROM json_each(?4))",
                serde_json::to_string(ids).unwrap_or_default(),
            ),
        };
        let mut pick = tx.prepare_cached(&format!(
            "SELECT q.request_id, r.custom_id, r.params, r.params_at, r.params_len
             FROM queue q JOIN requests r ON r.id = q.request_id
             WHERE q.batch_pk = ?1 AND q.lease_until <= ?2 {filter} LIMIT ?3"
        ))?;
        let mut first_request =
            tx.prepare_cached("SELECT first_request FROM batches WHERE pk = ?1")?;
        let mut upstream_headers =
            tx.prepare_cached("SELECT upstream_headers FROM batches WHERE pk = ?1")?;
        // Leases are taken in one statement per batch, after the pick is read: an update per
        // row, in the middle of the pick's scan of the index it changes, cost a tenth of a
        // settled request's instructions (each one also made the scan seek again).
        let mut take = tx.prepare_cached(
            "UPDATE queue SET lease_until = ?2, lease_token = ?3, owner = ?4
             WHERE request_id IN (SELECT value FROM json_each(?1))",
        )?;
        // Fair shares at two levels: each workspace an equal part of the room left, each of
        // its batches an equal part of that; what one cannot use passes to the next.
        let mut workspaces_left = workspaces.len();
        for batches in workspaces {
            let workspace_room = (max - claimed.len()).div_ceil(workspaces_left.max(1));
            workspaces_left -= 1;
            let workspace_start = claimed.len();
            let mut batches_left = batches.len();
            for pk in batches {
                let room = workspace_room - (claimed.len() - workspace_start);
                if room == 0 {
                    break;
                }
                let share = room.div_ceil(batches_left);
                batches_left -= 1;
                let picked = {
                    let mut rows = if model_ids.is_empty() {
                        pick.query(params![pk, now.as_micros(), share as i64])?
                    } else {
                        pick.query(params![pk, now.as_micros(), share as i64, model_ids])?
                    };
                    let mut picked = Vec::with_capacity(share);
                    while let Some(row) = rows.next()? {
                        let stored = match row.get::<_, Option<i64>>(3)? {
                            None => Stored::Inline(row.get_ref(2)?.as_blob()?.to_vec()),
                            Some(at) => Stored::File(at, row.get(4)?),
                        };
                        picked.push((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, stored));
                    }
                    picked
                };
                if picked.is_empty() {
                    continue;
                }
                let ids: Vec<i64> = picked.iter().map(|(id, ..)| *id).collect();
                let ids = serde_json::to_string(&ids).unwrap_or_default();
                take.execute(params![ids, until.as_micros(), token, owner])?;
                // The params of those stored in the batch's file, read together.
                let spans: Vec<(u64, usize)> = picked
                    .iter()
                    .filter_map(|(_, _, stored)| match stored {
                        Stored::File(at, len) => Some((*at as u64, (*len).max(0) as usize)),
                        Stored::Inline(_) => None,
                    })
                    .collect();
                let mut from_file = if spans.is_empty() {
                    Vec::new()
                } else {
                    let first: i64 = first_request.query_row([pk], |r| r.get(0))?;
                    match blobs.open(first) {
                        Ok(file) => Blobs::read_spans(&file, &spans),
                        Err(e) => spans
                            .iter()
                            .map(|_| Err(std::io::Error::new(e.kind(), e.to_string())))
                            .collect(),
                    }
                }
                .into_iter();
                // The batch's upstream headers, read on its first request claimed.
                let mut headers: Option<Option<String>> = None;
                for (request_id, custom_id, stored) in picked {
                    let key = RequestKey {
                        batch: pk,
                        request: request_id,
                        lease: token,
                    };
                    let bytes = match stored {
                        Stored::Inline(bytes) => Ok(bytes),
                        Stored::File(..) => from_file.next().unwrap_or_else(|| {
                            Err(std::io::Error::other("a params span was not read"))
                        }),
                    };
                    match stored_params(bytes) {
                        Ok(params) => {
                            let headers = match &headers {
                                Some(h) => h.clone(),
                                None => headers
                                    .insert(upstream_headers.query_row([pk], |r| r.get(0))?)
                                    .clone(),
                            };
                            claimed.push(ClaimedRequest {
                                request: key,
                                custom_id,
                                params,
                                upstream_headers: headers,
                            })
                        }
                        Err(problem) => {
                            // Never runnable again as it is: end it as data rather than
                            // leave the batch waiting for a request that can never start.
                            tracing::error!(request_id, %problem, "a request's stored params cannot be read; it ends errored");
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
            }
        }
    }
    if !unreadable.is_empty() {
        settle_in(&tx, &unreadable, now)?;
    }
    tx.commit()?;
    Ok(claimed)
}

/// The params bytes as read back from the store, or what is wrong with them.
fn stored_params(bytes: std::io::Result<Vec<u8>>) -> Result<Box<str>, String> {
    let bytes = bytes.map_err(|e| format!("the params file could not be read: {e}"))?;
    claimed_params(bytes)
}
