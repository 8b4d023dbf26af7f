//! Create: a batch's requests written as they stream in, with binary `COPY`, one short
//! transaction a chunk under an invisible `ingesting` batch row; the batch becomes visible
//! (and runnable) only in the transaction of its last chunk.
//!
//! No transaction is open while the next chunk is awaited from the client. Chunk commits
//! are asynchronous (`synchronous_commit = off`): the final, synchronous commit flushes the
//! WAL up to it, so everything before it is durable when the batch becomes visible. A
//! failure or a closed channel discards what was written, in chunks; if the node dies
//! instead, the rows stay invisible and housekeeping removes them once the batch's node
//! instance is gone (see `sweep::housekeeping`), never the next node to start.

use std::borrow::Cow;
use std::collections::HashMap;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use deadpool_postgres::{Object, Transaction};
use satchel_core::model::{BatchRecord, IngestChunk, NO_MODEL, NewBatch, NewRequest};
use satchel_core::prefix::PrefixOrder;
use satchel_core::store::StoreError;
use tokio::sync::mpsc;

use crate::PostgresStore;
use crate::db::{IDS_PER_BATCH, batch_by_pk, connection, engine};
use crate::node::CHANNEL;

pub(crate) async fn ingest(
    store: &PostgresStore,
    batch: NewBatch,
    mut chunks: mpsc::Receiver<IngestChunk>,
) -> Result<BatchRecord, StoreError> {
    let mut ingest = Ingest {
        store,
        prefix_order: batch.group_by_prefix.then(PrefixOrder::default),
        batch,
        head: None,
        next_id: 0,
    };
    // One chunk is kept in hand until it is known whether another follows: the last one is
    // written in the commit's transaction, so a batch of one chunk costs one transaction.
    let mut held: Option<Vec<NewRequest>> = None;
    // After the first (which creates the batch row), chunks are written on their own
    // connections, up to IN_FLIGHT at once: one COPY streams while the next is sent, rather
    // than every chunk waiting for the previous one's round trips and commit.
    let mut in_flight = FuturesUnordered::new();
    let outcome = loop {
        tokio::select! {
            biased;
            Some(written) = in_flight.next(), if !in_flight.is_empty() => {
                if let Err(e) = written {
                    break Err(e);
                }
            }
            chunk = chunks.recv(), if in_flight.len() < IN_FLIGHT => match chunk {
                Some(IngestChunk::Requests(requests)) => {
                    let Some(previous) = held.replace(requests) else {
                        continue;
                    };
                    match ingest.head {
                        None => {
                            if let Err(e) = ingest.write(&previous, false).await {
                                break Err(e);
                            }
                        }
                        Some((pk, _)) => {
                            let first_id = ingest.next_id;
                            ingest.next_id += previous.len() as i64;
                            let keys = ingest.claim_keys(&previous);
                            in_flight.push(write_rows(store, pk, first_id, keys, previous));
                        }
                    }
                }
                Some(IngestChunk::Commit) => {
                    // The batch becomes visible only once every chunk is in.
                    let mut failed = None;
                    while let Some(written) = in_flight.next().await {
                        if let Err(e) = written {
                            failed = Some(e);
                            break;
                        }
                    }
                    if let Some(e) = failed {
                        break Err(e);
                    }
                    let last = held.take().unwrap_or_default();
                    break ingest
                        .write(&last, true)
                        .await
                        .and_then(|record| record.ok_or(StoreError::IngestAborted));
                }
                None => break Err(StoreError::IngestAborted),
            },
        }
    };
    // Writes still in flight after a failure are dropped (rolled back) before the discard.
    drop(in_flight);
    if outcome.is_err()
        && let Some((pk, _)) = ingest.head
        && let Err(e) = discard(store, pk).await
    {
        // Housekeeping removes it once this node instance is gone.
        tracing::warn!(error = %e, "could not discard an aborted create");
    }
    outcome
}

/// Chunk writes in flight at once during a create.
const IN_FLIGHT: usize = 2;

/// Writes one chunk (not the first, not the last) of the batch `pk` in its own transaction.
async fn write_rows(
    store: &PostgresStore,
    pk: i64,
    first_id: i64,
    claim_keys: Vec<i64>,
    requests: Vec<NewRequest>,
) -> Result<(), StoreError> {
    let mut client = connection(&store.pool).await?;
    let models = model_ids(store, &client, &requests).await?;
    let tx = client.transaction().await.map_err(engine)?;
    tx.batch_execute("SET LOCAL synchronous_commit = off")
        .await
        .map_err(engine)?;
    copy_requests(&tx, first_id, &requests).await?;
    queue(&tx, pk, first_id, &models, &claim_keys).await?;
    tx.execute(
        "UPDATE batches SET touched_at = now() WHERE pk = $1",
        &[&pk],
    )
    .await
    .map_err(engine)?;
    tx.commit().await.map_err(engine)
}

async fn discard(store: &PostgresStore, pk: i64) -> Result<(), StoreError> {
    connection(&store.pool)
        .await?
        .execute(
            "UPDATE batches SET state = 4, purge_pending = true WHERE pk = $1 AND state = 0",
            &[&pk],
        )
        .await
        .map_err(engine)?;
    crate::sweep::purge(&store.pool, pk, None).await.map(|_| ())
}

/// A create in progress.
struct Ingest<'a> {
    store: &'a PostgresStore,
    batch: NewBatch,
    /// The claim keys of a batch ordered by prompt prefix (none: submission order).
    prefix_order: Option<PrefixOrder>,
    /// The batch row's pk and first request id, once a transaction holding them committed.
    head: Option<(i64, i64)>,
    /// The id of the next request.
    next_id: i64,
}

impl Ingest<'_> {
    /// The requests' claim keys, in submission order: by prompt prefix if the batch is
    /// ordered so, else all 0 (claims then go in submission order).
    fn claim_keys(&mut self, requests: &[NewRequest]) -> Vec<i64> {
        match &mut self.prefix_order {
            Some(order) => requests
                .iter()
                .map(|r| order.key(r.params.as_bytes()))
                .collect(),
            None => vec![0; requests.len()],
        }
    }

    /// Writes `requests` in one transaction (creating the batch row first if needed) and, if
    /// `commit`, makes the batch visible and runnable in the same transaction, returning it.
    async fn write(
        &mut self,
        requests: &[NewRequest],
        commit: bool,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let mut client = connection(&self.store.pool).await?;
        let models = model_ids(self.store, &client, requests).await?;
        let tx = client.transaction().await.map_err(engine)?;
        if !commit {
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .map_err(engine)?;
        }
        let (pk, first) = match self.head {
            Some(head) => head,
            None => {
                let b = &self.batch;
                let row = tx
                    .query_one(
                        "INSERT INTO batches (id, workspace, state, first_request, created_at, expires_at, ingest_instance, upstream_headers)
                         VALUES ($1, $2, 0, nextval('request_blocks') * $3, $4, $5, $6, $7)
                         RETURNING pk, first_request",
                        &[
                            &b.id,
                            &b.workspace,
                            &IDS_PER_BATCH,
                            &b.created_at.as_micros(),
                            &b.expires_at.as_micros(),
                            &self.store.instance,
                            &b.upstream_headers,
                        ],
                    )
                    .await
                    .map_err(engine)?;
                let head = (
                    row.try_get(0).map_err(engine)?,
                    row.try_get(1).map_err(engine)?,
                );
                self.next_id = head.1;
                head
            }
        };
        if !requests.is_empty() {
            copy_requests(&tx, self.next_id, requests).await?;
            let keys = self.claim_keys(requests);
            queue(&tx, pk, self.next_id, &models, &keys).await?;
        }
        let record = if commit {
            let count = self.next_id + requests.len() as i64 - first;
            tx.execute(
                "UPDATE batches SET state = 1, request_count = $2, processing = $2,
                     ingest_instance = NULL
                 WHERE pk = $1",
                &[&pk, &count],
            )
            .await
            .map_err(engine)?;
            // Other nodes' dispatchers look at once rather than at their next poll.
            tx.execute("SELECT pg_notify($1, '')", &[&CHANNEL])
                .await
                .map_err(engine)?;
            Some(batch_by_pk(&tx, pk).await?)
        } else {
            tx.execute(
                "UPDATE batches SET touched_at = now() WHERE pk = $1",
                &[&pk],
            )
            .await
            .map_err(engine)?;
            None
        };
        tx.commit().await.map_err(engine)?;
        self.head = Some((pk, first));
        self.next_id += requests.len() as i64;
        Ok(record)
    }
}

/// Each request's model id (its route key), interning names not seen before. Outside the
/// chunk's transaction: an id, once given, never changes.
async fn model_ids(
    store: &PostgresStore,
    client: &Object,
    requests: &[NewRequest],
) -> Result<Vec<i32>, StoreError> {
    let mut ids = Vec::with_capacity(requests.len());
    let mut local: HashMap<Cow<'_, str>, i32> = HashMap::new();
    for request in requests {
        let Some(model) = satchel_core::routing::model_of(request.params.as_bytes()) else {
            ids.push(NO_MODEL as i32);
            continue;
        };
        if let Some(&id) = local.get(model.as_ref()) {
            ids.push(id);
            continue;
        }
        let known = store
            .models
            .lock()
            .ok()
            .and_then(|m| m.get(model.as_ref()).copied());
        let id = match known {
            Some(id) => id,
            None => {
                let id = intern(client, &model).await?;
                if let Ok(mut m) = store.models.lock() {
                    m.insert(model.clone().into_owned(), id);
                }
                id
            }
        };
        local.insert(model, id);
        ids.push(id);
    }
    Ok(ids)
}

async fn intern(client: &Object, model: &str) -> Result<i32, StoreError> {
    client
        .execute(
            "INSERT INTO models (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            &[&model],
        )
        .await
        .map_err(engine)?;
    client
        .query_one("SELECT id FROM models WHERE name = $1", &[&model])
        .await
        .map_err(engine)?
        .try_get(0)
        .map_err(engine)
}

/// The requests' rows through binary `COPY` (params sent as they are, not hex-doubled). The
/// chunk is encoded here into one buffer and sent as one message: written row by row, the
/// driver flushed about every 4 KB, a channel send for nearly every row.
async fn copy_requests(
    tx: &Transaction<'_>,
    first_id: i64,
    requests: &[NewRequest],
) -> Result<(), StoreError> {
    use futures::SinkExt;
    let sink = tx
        .copy_in("COPY requests (id, custom_id, params) FROM STDIN (FORMAT binary)")
        .await
        .map_err(engine)?;
    let mut sink = std::pin::pin!(sink);
    sink.send(encode_rows(first_id, requests))
        .await
        .map_err(engine)?;
    sink.as_mut().finish().await.map_err(engine)?;
    Ok(())
}

/// The binary COPY stream of `requests` as (id bigint, custom_id text, params bytea): the
/// signature and header, one tuple each (field count, then each field's length and bytes, all
/// big-endian), the trailer.
fn encode_rows(first_id: i64, requests: &[NewRequest]) -> bytes::Bytes {
    use bytes::BufMut;
    let size: usize = requests
        .iter()
        .map(|r| 2 + 12 + 4 + r.custom_id.len() + 4 + r.params.len())
        .sum();
    let mut buf = bytes::BytesMut::with_capacity(19 + size + 2);
    buf.put_slice(b"PGCOPY\n\xff\r\n\0");
    buf.put_i32(0); // flags
    buf.put_i32(0); // header extension length
    for (offset, request) in requests.iter().enumerate() {
        buf.put_i16(3);
        buf.put_i32(8);
        buf.put_i64(first_id + offset as i64);
        buf.put_i32(request.custom_id.len() as i32);
        buf.put_slice(request.custom_id.as_bytes());
        let params = request.params.as_bytes();
        buf.put_i32(params.len() as i32);
        buf.put_slice(params);
    }
    buf.put_i16(-1);
    buf.freeze()
}

/// The chunk's queue rows, in one statement: its ids are consecutive, each with its model
/// and prefix key (arrays, so the statement is one whatever their runs).
async fn queue(
    tx: &Transaction<'_>,
    pk: i64,
    first_id: i64,
    models: &[i32],
    claim_keys: &[i64],
) -> Result<(), StoreError> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO queue (request_id, batch_pk, model, prefix)
             SELECT $1::bigint + t.i - 1, $2, t.model, t.prefix
             FROM unnest($3::int[], $4::bigint[]) WITH ORDINALITY AS t(model, prefix, i)",
        )
        .await
        .map_err(engine)?;
    tx.execute(&statement, &[&first_id, &pk, &models, &claim_keys])
        .await
        .map_err(engine)?;
    Ok(())
}
