//! Satchel's embedded store: one SQLite file in WAL mode, and beside it `<db>.params/`, the
//! params of large batches (see `blobs.rs`).
//!
//! Layout (see `schema.sql`): `batches` (one row a batch, with its live counts), `requests`
//! (the `params` bytes, immutable: inline for a batch that fits in one ingest chunk, else an
//! offset and length in the batch's params file), `queue` (a narrow row for each request still
//! to run, with its lease), `results` (the final JSONL line of each settled request). A
//! batch's requests take a contiguous block of ids reserved at create, so a batch's results
//! are a primary-key range read in submission order, with no index and no sort.
//!
//! Writes go through one connection (SQLite has one writer anyway), reads through a small
//! pool; all of it on tokio's blocking threads; checkpoints on a thread of their own (see
//! `pool.rs`). The process takes an exclusive lock on `<db>.lock`, so leases can be released
//! at start-up: nobody else can hold them.

mod blobs;
mod claim;
mod ingest;
mod ops;
mod outbox;
mod partial;
mod pool;
mod results;
mod stats;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use satchel_core::model::{
    BatchRecord, ClaimedRequest, DeleteOutcome, IngestChunk, ListCursor, ModelFilter, NewBatch,
    RequestKey, SettleCursor, SettledPage, Settlement, StoreStats, StoredRequest,
};
use satchel_core::store::{ResultStream, Store, StoreError};
use satchel_wire::Timestamp;
use tokio::sync::mpsc;

use pool::Pool;

/// Errors opening the store (the file, the lock, the schema).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is in use by another Satchel process (lock file {lock})")]
    Locked { path: PathBuf, lock: PathBuf },
    #[error(
        "{path} is {state}, but {params} holds the params of batches: the database was lost or \
         replaced. Refusing to start (nothing was changed); restore the database from a backup, \
         or move {params} away to start empty"
    )]
    DatabaseLost {
        path: PathBuf,
        params: PathBuf,
        state: &'static str,
    },
    #[error("cannot open the SQLite database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
}

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Whether claims may ask for some models only (the server has several routes): keeps
    /// the per-model claim index, which a server with one catch-all route does without
    /// (see `pool.rs`). Default: yes, the safe side.
    pub claims_by_model: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            claims_by_model: true,
        }
    }
}

/// The SQLite store.
pub struct SqliteStore {
    pool: Arc<Pool>,
    /// Held for the life of the store: the exclusive lock on `<db>.lock`.
    _lock: File,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and takes its lock.
    pub fn open(path: &Path) -> Result<Self, OpenError> {
        Self::open_with(path, &Options::default())
    }

    /// [`SqliteStore::open`] with `options`.
    pub fn open_with(path: &Path, options: &Options) -> Result<Self, OpenError> {
        let lock_path = lock_path(path);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| OpenError::Io {
                path: lock_path.clone(),
                source,
            })?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked {
                path: path.to_owned(),
                lock: lock_path,
            });
        }
        refuse_lost_database(path)?;
        let pool = Pool::open(path, options).map_err(|source| OpenError::Sqlite {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            pool: Arc::new(pool),
            _lock: lock,
        })
    }

    /// Runs `f` with the writer connection on a blocking thread.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        pool::write(&self.pool, f).await
    }

    /// Runs `f` with a reader connection on a blocking thread.
    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        pool::read(&self.pool, f).await
    }
}

/// A database that is missing or empty while its params directory holds files was lost or
/// replaced: starting would sweep those files as orphans, so refuse instead.
fn refuse_lost_database(db: &Path) -> Result<(), OpenError> {
    let state = match std::fs::metadata(db) {
        Ok(meta) if meta.len() > 0 => return Ok(()),
        Ok(_) => "empty",
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "missing",
        Err(source) => {
            return Err(OpenError::Io {
                path: db.to_owned(),
                source,
            });
        }
    };
    let params = blobs::Blobs::new(db).dir().to_owned();
    let holds_files = std::fs::read_dir(&params).is_ok_and(|mut entries| entries.next().is_some());
    if holds_files {
        return Err(OpenError::DatabaseLost {
            path: db.to_owned(),
            params,
            state,
        });
    }
    Ok(())
}

fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// A SQLite failure as the store's error, saying whether trying again later may help.
pub(crate) fn engine(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let transient = match &e {
        rusqlite::Error::SqliteFailure(failure, _) => matches!(
            failure.code,
            C::DatabaseBusy | C::DatabaseLocked | C::DiskFull | C::SystemIoFailure | C::OutOfMemory
        ),
        // A params file could not be written or read (see ops::io_error): I/O, so maybe.
        rusqlite::Error::ToSqlConversionFailure(_) => true,
        _ => false,
    };
    StoreError::engine(e, transient)
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_batch(
        &self,
        batch: NewBatch,
        chunks: mpsc::Receiver<IngestChunk>,
    ) -> Result<BatchRecord, StoreError> {
        ingest::ingest(self.pool.clone(), batch, chunks).await
    }

    async fn get_batch(
        &self,
        workspace: &str,
        id: &str,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let (workspace, id) = (workspace.to_owned(), id.to_owned());
        self.read(move |c| ops::get_batch(c, &workspace, &id)).await
    }

    async fn list_batches(
        &self,
        workspace: &str,
        cursor: &ListCursor,
        limit: u32,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        let (workspace, cursor) = (workspace.to_owned(), cursor.clone());
        self.read(move |c| ops::list_batches(c, &workspace, &cursor, limit))
            .await
    }

    async fn cancel_batch(
        &self,
        workspace: &str,
        id: &str,
        now: Timestamp,
    ) -> Result<Option<BatchRecord>, StoreError> {
        let (workspace, id) = (workspace.to_owned(), id.to_owned());
        self.write(move |c| ops::cancel_batch(c, &workspace, &id, now))
            .await
    }

    async fn delete_batch(&self, workspace: &str, id: &str) -> Result<DeleteOutcome, StoreError> {
        let (workspace, id) = (workspace.to_owned(), id.to_owned());
        let blobs = self.pool.blobs.clone();
        self.write(move |c| ops::delete_batch(c, &blobs, &workspace, &id))
            .await
    }

    async fn queued_requests(&self, workspace: &str) -> Result<u64, StoreError> {
        let workspace = workspace.to_owned();
        self.read(move |c| ops::queued_requests(c, &workspace))
            .await
    }

    fn results(&self, workspace: &str, id: &str) -> ResultStream {
        results::stream_results(self.pool.clone(), workspace.to_owned(), id.to_owned())
    }

    async fn settled_since(
        &self,
        workspace: &str,
        id: &str,
        after: SettleCursor,
        max_lines: usize,
        max_bytes: usize,
    ) -> Result<Option<SettledPage>, StoreError> {
        let (workspace, id) = (workspace.to_owned(), id.to_owned());
        self.read(move |c| {
            // One snapshot for the batch's state and its lines.
            let tx = c.unchecked_transaction()?;
            partial::settled_since(&tx, &workspace, &id, after, max_lines, max_bytes)
        })
        .await
    }

    async fn stored_requests(
        &self,
        workspace: &str,
        id: &str,
        from: i64,
        limit: usize,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        let (workspace, id) = (workspace.to_owned(), id.to_owned());
        let blobs = self.pool.blobs.clone();
        self.read(move |c| partial::stored_requests(c, &blobs, &workspace, &id, from, limit))
            .await
    }

    async fn claim(
        &self,
        owner: &str,
        max: usize,
        models: &ModelFilter,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ClaimedRequest>, StoreError> {
        let pool = self.pool.clone();
        let (owner, models) = (owner.to_owned(), models.clone());
        tokio::task::spawn_blocking(move || pool.claim(&owner, max, &models, now, until))
            .await
            .map_err(|e| StoreError::Task(e.to_string()))?
            .map_err(engine)
    }

    async fn settle(
        &self,
        settlements: Arc<[Settlement]>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.write(move |c| ops::settle(c, &settlements, now)).await
    }

    async fn release(&self, requests: Vec<RequestKey>) -> Result<(), StoreError> {
        self.write(move |c| ops::release(c, &requests)).await
    }

    async fn running_batches(&self, now: Timestamp) -> Result<Vec<i64>, StoreError> {
        self.read(move |c| ops::running_batches(c, now)).await
    }

    async fn sweep_unrunnable(&self, now: Timestamp) -> Result<u64, StoreError> {
        self.write(move |c| ops::sweep_unrunnable(c, now)).await
    }

    async fn archive(&self, created_before: Timestamp, now: Timestamp) -> Result<u64, StoreError> {
        let blobs = self.pool.blobs.clone();
        self.write(move |c| ops::archive(c, &blobs, created_before, now))
            .await
    }

    async fn models(&self) -> Result<Vec<(i64, String)>, StoreError> {
        self.read(ops::models).await
    }

    async fn renew(
        &self,
        leases: Vec<RequestKey>,
        until: Timestamp,
    ) -> Result<Vec<RequestKey>, StoreError> {
        self.write(move |c| ops::renew(c, &leases, until)).await
    }

    async fn recover(&self, owner: &str) -> Result<u64, StoreError> {
        let owner = owner.to_owned();
        self.write(move |c| ops::recover(c, &owner)).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(stats::stats).await
    }

    fn webhook_outbox(&self) -> Option<Arc<dyn satchel_core::webhooks::Outbox>> {
        Some(Arc::new(outbox::SqliteOutbox {
            pool: self.pool.clone(),
        }))
    }
}
