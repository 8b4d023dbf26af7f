//! Creating a batch as its body streams in, and removing what a create left unfinished.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{IoSlice, Write};
use std::sync::Arc;

use rusqlite::{Connection, Statement, TransactionBehavior, params};
use satchel_core::model::{BatchRecord, IngestChunk, NO_MODEL, NewBatch, NewRequest};
use satchel_core::prefix::PrefixOrder;
use satchel_core::store::StoreError;
use tokio::sync::mpsc;

use crate::blobs::Blobs;
use crate::engine;
use crate::ops::{IDS_PER_BATCH, batch_by_pk};
use crate::pool::Pool;

/// Removes what a create left behind if the process died before committing it, and params
/// files that no batch needs any more.
pub(crate) fn discard_unfinished_ingests(
    conn: &mut Connection,
    blobs: &Blobs,
) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let orphans: Vec<(i64, i64)> = tx
        .prepare("SELECT pk, first_request FROM batches WHERE state = 0")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    for &(pk, first) in &orphans {
        tx.execute(
            "DELETE FROM requests WHERE id >= ?1 AND id < ?2",
            params![first, first + IDS_PER_BATCH],
        )?;
        tx.execute("DELETE FROM queue WHERE batch_pk = ?1", [pk])?;
        tx.execute("DELETE FROM batches WHERE pk = ?1", [pk])?;
    }
    let live: HashSet<i64> = tx
        .prepare("SELECT first_request FROM batches WHERE archived_at IS NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    tx.commit()?;
    if let Err(e) = blobs.remove_orphans(&live) {
        tracing::warn!(error = %e, "could not sweep the params files");
    }
    Ok(())
}

/// Stores a batch as its requests stream in. Requests are written in short transactions (one
/// a chunk, each on a blocking thread only while it writes) under an invisible `ingesting`
/// batch row, so a slow upload holds no thread and never blocks other writers. Each chunk also
/// queues its requests (claims only look at running batches, so they wait unseen), so the
/// final commit never reads back what was written.
///
/// The writer keeps one chunk in hand until it knows whether another follows: the last chunk
/// is written in the same transaction as the commit, and the batch row in the same one as the
/// first chunk, so a batch that fits in one chunk (most small ones) costs one transaction.
pub(crate) async fn ingest(
    pool: Arc<Pool>,
    batch: NewBatch,
    mut chunks: mpsc::Receiver<IngestChunk>,
) -> Result<BatchRecord, StoreError> {
    let prefix_order = batch.group_by_prefix.then(PrefixOrder::default);
    let mut ingest = Ingest {
        batch,
        prefix_order,
        head: None,
        next_id: 0,
        file: None,
        unsynced: 0,
        syncing: None,
        models: HashMap::new(),
    };
    // What to remove if the create fails: the params file and, once committed, the rows.
    let mut left = Leftovers::default();
    let mut held: Option<Vec<NewRequest>> = None;
    let outcome = loop {
        let (requests, commit) = match chunks.recv().await {
            Some(IngestChunk::Requests(requests)) => match held.replace(requests) {
                Some(previous) => (previous, false),
                None => continue,
            },
            Some(IngestChunk::Commit) => (held.take().unwrap_or_default(), true),
            None => break Err(StoreError::IngestAborted),
        };
        let writer = pool.clone();
        let written = tokio::task::spawn_blocking(move || {
            let result =
                writer.with_writer(|conn| ingest.write(conn, &writer.blobs, &requests, commit));
            (ingest, result)
        })
        .await;
        let result = match written {
            Ok((back, result)) => {
                ingest = back;
                left = ingest.leftovers();
                result.map_err(engine)
            }
            Err(e) => break Err(StoreError::Task(e.to_string())),
        };
        match (result, commit) {
            (Err(e), _) => break Err(e),
            (Ok(record), true) => break record.ok_or(StoreError::IngestAborted),
            (Ok(_), false) => {}
        }
    };
    if outcome.is_err() {
        let pool = pool.clone();
        // Best effort: what this leaves, the next start removes.
        let _ = tokio::task::spawn_blocking(move || left.discard(&pool)).await;
    }
    outcome
}

/// What a failed create must remove.
#[derive(Debug, Default, Clone, Copy)]
struct Leftovers {
    /// The first request id of a params file that was created.
    file: Option<i64>,
    /// The batch row's pk and first request id, once a transaction holding them committed.
    rows: Option<(i64, i64)>,
}

impl Leftovers {
    fn discard(self, pool: &Pool) {
        if let Some(first) = self.file {
            pool.blobs.remove(first);
        }
        let Some((pk, first)) = self.rows else {
            return;
        };
        let discarded = pool.with_writer(|conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM requests WHERE id >= ?1 AND id < ?2",
                params![first, first + IDS_PER_BATCH],
            )?;
            tx.execute("DELETE FROM queue WHERE batch_pk = ?1", [pk])?;
            tx.execute("DELETE FROM batches WHERE pk = ?1", [pk])?;
            tx.commit()
        });
        if let Err(e) = discarded {
            // Start-up removes it for good.
            tracing::warn!(error = %e, "could not discard an aborted create");
        }
    }
}

/// A create in progress, as the writer sees it.
struct Ingest {
    batch: NewBatch,
    /// The batch row's pk and first request id, once a transaction holding them committed.
    head: Option<(i64, i64)>,
    /// The id of the next request.
    next_id: i64,
    /// A batch of more than one chunk keeps its params in a file: its first request id (its
    /// name), the file and its length.
    file: Option<(i64, File, u64)>,
    /// Bytes written to the file since the last background sync started.
    unsynced: u64,
    /// The background sync in flight, if any.
    syncing: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    /// Model ids seen in this create (a model's id never changes once interned).
    models: HashMap<String, i64>,
    /// The claim keys of a batch ordered by prompt prefix (none: submission order).
    prefix_order: Option<PrefixOrder>,
}

/// Bytes written to a params file after which its writeback is started in the background, so
/// that the sync before the commit only waits for the tail.
const BACKGROUND_SYNC_BYTES: u64 = 32 << 20;

impl Ingest {
    /// Writes `requests` in one transaction (creating the batch row first if needed) and, if
    /// `commit`, makes the batch visible and runnable in the same transaction, returning it.
    /// The first write that is not also the commit means more chunks follow: from then on
    /// the params go to the batch's file (written, and synced before the commit).
    ///
    /// Called with the writer held: if the first write fails, its request ids go back to be
    /// reserved by the next create, so the file named after them is removed here, before
    /// another create can reserve them and make a file of the same name.
    fn write(
        &mut self,
        conn: &mut Connection,
        blobs: &Blobs,
        requests: &[NewRequest],
        commit: bool,
    ) -> rusqlite::Result<Option<BatchRecord>> {
        let first_write = self.head.is_none();
        let written = self.write_chunk(conn, blobs, requests, commit);
        if written.is_err()
            && first_write
            && let Some((first, ..)) = self.file.take()
        {
            blobs.remove(first);
        }
        written
    }

    fn write_chunk(
        &mut self,
        conn: &mut Connection,
        blobs: &Blobs,
        requests: &[NewRequest],
        commit: bool,
    ) -> rusqlite::Result<Option<BatchRecord>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let (pk, first) = match self.head {
            Some(head) => head,
            None => {
                let first: i64 = tx.query_row(
                    "UPDATE meta SET value = value + ?1 WHERE key = 'next_request_id' RETURNING value - ?1",
                    [IDS_PER_BATCH],
                    |r| r.get(0),
                )?;
                let b = &self.batch;
                tx.execute(
                    "INSERT INTO batches (id, workspace, state, first_request, created_at, expires_at, upstream_headers)
                     VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6)",
                    params![b.id, b.workspace, first, b.created_at.as_micros(), b.expires_at.as_micros(), b.upstream_headers],
                )?;
                self.next_id = first;
                if !commit {
                    let file = blobs.create(first).map_err(io_error)?;
                    self.file = Some((first, file, 0));
                }
                (tx.last_insert_rowid(), first)
            }
        };
        if let Some((_, file, len)) = &mut self.file {
            let mut at = *len as i64;
            let first_id = self.next_id;
            insert_rows(
                &tx,
                "INSERT INTO requests (id, custom_id, params, params_at, params_len) VALUES ",
                "(?,?,X'',?,?)",
                requests,
                |insert, param, offset, request| {
                    let size = request.params.len() as i64;
                    insert.raw_bind_parameter(param, first_id + offset as i64)?;
                    insert.raw_bind_parameter(param + 1, &request.custom_id)?;
                    insert.raw_bind_parameter(param + 2, at)?;
                    insert.raw_bind_parameter(param + 3, size)?;
                    at += size;
                    Ok(())
                },
            )?;
            let at = at as u64;
            let mut slices: Vec<IoSlice<'_>> = requests
                .iter()
                .map(|r| IoSlice::new(r.params.as_bytes()))
                .collect();
            write_all_vectored(file, &mut slices).map_err(io_error)?;
            self.unsynced += at - *len;
            *len = at;
            if commit {
                if let Some(syncing) = self.syncing.take() {
                    syncing
                        .join()
                        .map_err(|_| io_error(std::io::Error::other("the sync thread panicked")))?
                        .map_err(io_error)?;
                }
                file.sync_data().map_err(io_error)?;
            } else if self.unsynced >= BACKGROUND_SYNC_BYTES
                && self.syncing.as_ref().is_none_or(|s| s.is_finished())
            {
                // A finished sync's error would show again in the final one: ignore it here.
                let clone = file.try_clone().map_err(io_error)?;
                self.syncing = Some(std::thread::spawn(move || clone.sync_data()));
                self.unsynced = 0;
            }
        } else {
            let first_id = self.next_id;
            insert_rows(
                &tx,
                "INSERT INTO requests (id, custom_id, params) VALUES ",
                "(?,?,?)",
                requests,
                |insert, param, offset, request| {
                    insert.raw_bind_parameter(param, first_id + offset as i64)?;
                    insert.raw_bind_parameter(param + 1, &request.custom_id)?;
                    insert.raw_bind_parameter(param + 2, request.params.as_bytes())
                },
            )?;
        }
        // The chunk's ids are consecutive: its queue rows go in one statement, in id order,
        // with each request's model (and, for a batch ordered by prompt prefix, its claim
        // key) from a JSON list. (A statement per run of one model cost more than all the
        // rest of a create when a batch mixes models: each paid its own start, and rows
        // inserted by separate statements each search the indexes anew.)
        let models = requests
            .iter()
            .map(|request| self.model_id(&tx, request))
            .collect::<rusqlite::Result<Vec<i64>>>()?;
        if self.prefix_order.is_none() {
            let models = serde_json::to_string(&models).map_err(|e| io_error(e.into()))?;
            tx.prepare_cached(
                "INSERT INTO queue (request_id, batch_pk, lease_until, model)
                 SELECT ?1 + key, ?2, 0, value FROM json_each(?3)",
            )?
            .execute(params![self.next_id, pk, models])?;
        } else {
            let rows: Vec<(i64, i64)> = models
                .into_iter()
                .zip(requests)
                .map(|(model, request)| (model, self.claim_key(request)))
                .collect();
            let rows = serde_json::to_string(&rows).map_err(|e| io_error(e.into()))?;
            tx.prepare_cached(
                "INSERT INTO queue (request_id, batch_pk, lease_until, model, prefix)
                 SELECT ?1 + key, ?2, 0, value ->> 0, value ->> 1 FROM json_each(?3)",
            )?
            .execute(params![self.next_id, pk, rows])?;
        }
        let record = if commit {
            let count = self.next_id + requests.len() as i64 - first;
            tx.execute(
                "UPDATE batches SET state = 1, request_count = ?2, processing = ?2 WHERE pk = ?1",
                params![pk, count],
            )?;
            Some(batch_by_pk(&tx, pk)?)
        } else {
            None
        };
        tx.commit()?;
        self.head = Some((pk, first));
        self.next_id += requests.len() as i64;
        Ok(record)
    }
}

impl Ingest {
    /// What a failure from here on must remove (nothing before a write committed: see
    /// [`Ingest::write`]).
    fn leftovers(&self) -> Leftovers {
        Leftovers {
            file: self.head.and(self.file.as_ref().map(|(first, ..)| *first)),
            rows: self.head,
        }
    }

    /// The request's claim key if its batch is ordered by prompt prefix, else 0 (claims then
    /// go in submission order).
    fn claim_key(&mut self, request: &NewRequest) -> i64 {
        match &mut self.prefix_order {
            Some(order) => order.key(request.params.as_bytes()),
            None => 0,
        }
    }

    /// The id of the request's model (its route key), interned in `models` on first sight.
    fn model_id(&mut self, tx: &Connection, request: &NewRequest) -> rusqlite::Result<i64> {
        let Some(model) = satchel_core::routing::model_of(request.params.as_bytes()) else {
            return Ok(NO_MODEL);
        };
        if let Some(&id) = self.models.get(model.as_ref()) {
            return Ok(id);
        }
        tx.prepare_cached("INSERT OR IGNORE INTO models (name) VALUES (?1)")?
            .execute([model.as_ref()])?;
        let id: i64 = tx
            .prepare_cached("SELECT id FROM models WHERE name = ?1")?
            .query_row([model.as_ref()], |r| r.get(0))?;
        self.models.insert(model.into_owned(), id);
        Ok(id)
    }
}

/// Rows per `INSERT` statement for a chunk's requests. One statement a row paid SQLite's
/// statement start and a b-tree descent for every request (a third of a big create's writer
/// time); a JSON list read with `->>` cost more still (BENCHMARKS.md, "Issue 13, second pass").
const ROWS_PER_INSERT: usize = 128;

/// Inserts one row per element of `items` with multi-row `INSERT … VALUES` statements:
/// `ROWS_PER_INSERT` rows at a time, the rest 16 and then one at a time, so only three
/// statement shapes are prepared (and cached). `row` is one row's placeholders (`?` only);
/// `bind` binds one item's parameters from the given index on.
fn insert_rows<T>(
    tx: &Connection,
    head: &str,
    row: &str,
    items: &[T],
    mut bind: impl FnMut(&mut Statement<'_>, usize, usize, &T) -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    let per_row = row.matches('?').count();
    let mut done = 0;
    for size in [ROWS_PER_INSERT, 16, 1] {
        let whole = (items.len() - done) / size;
        if whole == 0 {
            continue;
        }
        let mut sql = String::with_capacity(head.len() + size * (row.len() + 1));
        sql.push_str(head);
        for i in 0..size {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(row);
        }
        let mut insert = tx.prepare_cached(&sql)?;
        for _ in 0..whole {
            for (i, item) in items[done..done + size].iter().enumerate() {
                bind(&mut insert, 1 + i * per_row, done + i, item)?;
            }
            insert.raw_execute()?;
            done += size;
        }
    }
    Ok(())
}

/// Writes every byte of `slices` (the params of a chunk, in order) without first copying them
/// into one buffer.
fn write_all_vectored(file: &mut File, mut slices: &mut [IoSlice<'_>]) -> std::io::Result<()> {
    while !slices.is_empty() {
        match file.write_vectored(slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut slices, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A params file problem, reported through the store's error type.
pub(crate) fn io_error(e: std::io::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}
