//! The connections: one writer (SQLite allows one at a time) and a pool of readers, which WAL
//! mode lets run beside the writer.
//!
//! Checkpoints (copying pages from the WAL into the database file) run on a thread of their
//! own, woken after each write, rather than inside the writer's commits as SQLite's automatic
//! checkpoint does: during a large create that copy was a third of the writer's time, and it
//! can run beside the writer on another core. The writer keeps SQLite's automatic checkpoint
//! only as a backstop, at a much larger WAL size.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use satchel_core::fairness::ClaimOrder;
use satchel_core::model::{ClaimedRequest, ModelFilter};
use satchel_core::store::StoreError;
use satchel_wire::Timestamp;

use crate::Options;
use crate::blobs::Blobs;

const SCHEMA: &str = include_str!("schema.sql");

pub(crate) struct Writer {
    pub conn: Connection,
    /// The order claims serve batches in, rotating from one claim to the next.
    pub claim: ClaimOrder,
}

pub(crate) struct Pool {
    path: PathBuf,
    /// The params files of large batches.
    pub blobs: Blobs,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
    /// Wakes the checkpoint thread; dropping it (with the pool) stops the thread.
    checkpoint: Option<SyncSender<()>>,
}

/// The WAL size after which the writer checkpoints by itself: a backstop, above the largest
/// create body, so that the writer never stops to copy pages in the middle of a create while
/// the checkpoint thread keeps up.
const WRITER_AUTOCHECKPOINT_BYTES: i64 = 512 << 20;

/// Once a checkpoint has caught up, the WAL file is cut back to this size (a WAL file that is
/// reused is cheaper to write than one that grows, so it is not cut back further).
const WAL_SIZE_LIMIT: i64 = 256 << 20;

fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )
}

/// The per-model claim index exists exactly when claims may ask for some models only (the
/// server has several routes). It costs every request three index writes (at ingest, when
/// leased, when settled), and its key puts the model before the request id, so a create
/// mixing models inserts in as many places instead of appending: the largest part of the
/// create's SQLite work. A server with one catch-all route never claims by model, so it does
/// without; the index is built at start when a configuration with routes comes back (one
/// server process per file, so no other process relies on it meanwhile). Without it a claim
/// by model is still answered, by a scan.
fn claims_by_model(conn: &Connection, wanted: bool) -> rusqlite::Result<()> {
    conn.execute_batch(if wanted {
        "CREATE INDEX IF NOT EXISTS queue_claim_by_model ON queue (batch_pk, model, lease_until, prefix);"
    } else {
        "DROP INDEX IF EXISTS queue_claim_by_model;"
    })
}

/// Brings a file made by an older version up to the current schema.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    // Large batches' params moved to files.
    if !has_column(conn, "requests", "params_at")? {
        conn.execute_batch(
            "ALTER TABLE requests ADD COLUMN params_at INTEGER;
             ALTER TABLE requests ADD COLUMN params_len INTEGER;",
        )?;
    }
    // Leases gained an owner and a token. The old leases had neither (their end was their
    // token, and one process owned them all): they belonged to a process that is gone.
    if !has_column(conn, "queue", "owner")? {
        conn.execute_batch(
            "ALTER TABLE queue ADD COLUMN lease_token INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE queue ADD COLUMN owner TEXT;
             UPDATE queue SET lease_until = 0;",
        )?;
    }
    // Requests gained a recorded model (old rows: 0, none recorded; any route may take them).
    if !has_column(conn, "queue", "model")? {
        conn.execute_batch("ALTER TABLE queue ADD COLUMN model INTEGER NOT NULL DEFAULT 0;")?;
    }
    // Batches gained the create call's headers to send upstream (old batches: none).
    if !has_column(conn, "batches", "upstream_headers")? {
        conn.execute_batch("ALTER TABLE batches ADD COLUMN upstream_headers TEXT;")?;
    }
    // Results gained their place in the settle order (old lines: 0, settled before any).
    if !has_column(conn, "results", "seq")? {
        conn.execute_batch("ALTER TABLE results ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;")?;
    }
    // Requests gained a prompt-prefix key; claims read the runnable requests of a batch in
    // its order (old rows: 0, one group).
    if !has_column(conn, "queue", "prefix")? {
        conn.execute_batch("ALTER TABLE queue ADD COLUMN prefix INTEGER NOT NULL DEFAULT 0;")?;
    }
    // Claims of any model take requests in the order of queue_claim: by claim key (0 for a
    // batch not ordered by prompt prefix), then id, so results are appended where they go
    // and a claim's params are read in file order. (Without such an index claims went
    // through the per-model one, model by model: settles then wrote results in interleaved
    // streams, and a 100k run read and wrote twice the bytes.) Claims of some models use
    // queue_claim_by_model (see claims_by_model below).
    conn.execute_batch(
        "DROP INDEX IF EXISTS queue_runnable;
         DROP INDEX IF EXISTS queue_by_model;
         CREATE INDEX IF NOT EXISTS queue_claim ON queue (batch_pk, lease_until, prefix);
         CREATE INDEX IF NOT EXISTS results_by_seq ON results (seq, request_id);
         INSERT OR IGNORE INTO meta (key, value)
             SELECT 'settle_seq', COALESCE(MAX(seq), 0) FROM results;",
    )?;
    Ok(())
}

/// Starts the checkpoint thread on its own connection. None if it could not start: the
/// writer's automatic checkpoint then does the work, at SQLite's usual threshold.
fn spawn_checkpointer(path: &Path) -> Option<SyncSender<()>> {
    let conn = match Connection::open(path) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(error = %e, "no checkpoint thread; checkpoints run in the writer");
            return None;
        }
    };
    let (wake, woken) = sync_channel(1);
    let started = std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || checkpoint_loop(&conn, &woken));
    match started {
        Ok(_) => Some(wake),
        Err(e) => {
            tracing::warn!(error = %e, "no checkpoint thread; checkpoints run in the writer");
            None
        }
    }
}

/// The least time between two checkpoints: each one syncs the WAL and the database file, so
/// under a stream of small writes they are batched rather than run after every commit.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);

/// Copies the WAL into the database when woken, at most every [`CHECKPOINT_INTERVAL`], until
/// the pool is gone. Wake-ups that arrive meanwhile are merged (the channel holds one).
fn checkpoint_loop(conn: &Connection, woken: &Receiver<()>) {
    let mut last = std::time::Instant::now();
    while woken.recv().is_ok() {
        if let Some(wait) = CHECKPOINT_INTERVAL.checked_sub(last.elapsed()) {
            std::thread::sleep(wait);
        }
        last = std::time::Instant::now();
        // PASSIVE: never waits for the writer or readers; what it cannot copy now it copies
        // next time.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "checkpoint failed; retrying at the next write");
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection leaves it usable: SQLite rolls back the open
    // transaction when the statement or transaction guard is dropped.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    pub fn open(path: &Path, options: &Options) -> rusqlite::Result<Self> {
        let mut conn = Connection::open(path)?;
        // Larger pages suit rows of a few KB of params (the default 4 KB wastes ~40%).
        // (Larger still made big creates faster while their params went through SQLite, but
        // cost every small transaction; big batches now keep params in files, see blobs.rs.)
        // Only takes effect on a new file.
        conn.pragma_update(None, "page_size", 8192)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL survives any process crash; only an OS crash or power loss may
        // drop the last transactions (never corrupting the file).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', 1), ('next_request_id', 1), ('next_lease_token', 0)",
            [],
        )?;
        migrate(&conn)?;
        claims_by_model(&conn, options.claims_by_model)?;
        conn.execute_batch(crate::outbox::SCHEMA)?;
        let blobs = Blobs::new(path);
        crate::ingest::discard_unfinished_ingests(&mut conn, &blobs)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        let checkpoint = spawn_checkpointer(path);
        if checkpoint.is_some() {
            let page: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
            conn.pragma_update(
                None,
                "wal_autocheckpoint",
                WRITER_AUTOCHECKPOINT_BYTES / page.max(512),
            )?;
        }
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(Writer {
                conn,
                claim: ClaimOrder::default(),
            }),
            readers: Mutex::new(Vec::new()),
            checkpoint,
            blobs,
        })
    }

    pub fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let result = f(&mut lock(&self.writer).conn);
        self.wrote();
        result
    }

    /// Wakes the checkpoint thread (if it is already awake, the wake-up is merged).
    fn wrote(&self) {
        if let Some(wake) = &self.checkpoint
            && let Err(TrySendError::Disconnected(())) = wake.try_send(())
        {
            tracing::warn!("the checkpoint thread stopped");
        }
    }

    pub fn claim(
        &self,
        owner: &str,
        max: usize,
        models: &ModelFilter,
        now: Timestamp,
        until: Timestamp,
    ) -> rusqlite::Result<Vec<ClaimedRequest>> {
        let claimed = {
            let mut writer = lock(&self.writer);
            let Writer { conn, claim } = &mut *writer;
            let lease = crate::claim::Lease { owner, now, until };
            crate::claim::claim(conn, &self.blobs, claim, &lease, max, models)
        };
        self.wrote();
        claimed
    }

    pub fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        let conn = match lock(&self.readers).pop() {
            Some(conn) => conn,
            None => self.open_reader()?,
        };
        let result = f(&conn);
        lock(&self.readers).push(conn);
        result
    }

    fn open_reader(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        Ok(conn)
    }
}

/// Runs `f` on the pool from a blocking thread: the one way async store code reaches SQLite.
pub(crate) async fn blocking<T: Send + 'static>(
    pool: &Arc<Pool>,
    f: impl FnOnce(&Pool) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    let pool = pool.clone();
    tokio::task::spawn_blocking(move || f(&pool))
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
        .map_err(crate::engine)
}

/// Runs `f` with the writer connection, from a blocking thread.
pub(crate) async fn write<T: Send + 'static>(
    pool: &Arc<Pool>,
    f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    blocking(pool, move |pool| pool.with_writer(f)).await
}

/// Runs `f` with a reader connection, from a blocking thread.
pub(crate) async fn read<T: Send + 'static>(
    pool: &Arc<Pool>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, StoreError> {
    blocking(pool, move |pool| pool.with_reader(f)).await
}
