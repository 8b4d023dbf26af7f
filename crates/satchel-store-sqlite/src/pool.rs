//! The connections: one writer (SQLite allows one at a time) and a pool of readers, which WAL
//! mode lets run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use satchel_core::model::ClaimedRequest;
use satchel_wire::Timestamp;

use crate::ops;

const SCHEMA: &str = include_str!("schema.sql");

/// What the writer keeps between claims.
#[derive(Debug, Default)]
pub(crate) struct ClaimState {
    /// The batch served last, so the next claim starts after it (round robin).
    pub last_batch: i64,
    /// The last lease token handed out; tokens strictly increase.
    pub last_lease: i64,
    /// Counts claims, to rotate which workspace is served first.
    pub rotation: usize,
}

pub(crate) struct Writer {
    pub conn: Connection,
    pub claim: ClaimState,
}

pub(crate) struct Pool {
    path: PathBuf,
    writer: Mutex<Writer>,
    readers: Mutex<Vec<Connection>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a connection leaves it usable: SQLite rolls back the open
    // transaction when the statement or transaction guard is dropped.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Pool {
    pub fn open(path: &Path) -> rusqlite::Result<Self> {
        let mut conn = Connection::open(path)?;
        // Larger pages suit rows of a few KB of params (the default 4 KB wastes ~40%).
        // Only takes effect on a new file.
        conn.pragma_update(None, "page_size", 8192)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // In WAL mode NORMAL survives any process crash; only an OS crash or power loss may
        // drop the last transactions (never corrupting the file).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', 1), ('next_request_id', 1)",
            [],
        )?;
        ops::discard_unfinished_ingests(&mut conn)?;
        Ok(Self {
            path: path.to_owned(),
            writer: Mutex::new(Writer {
                conn,
                claim: ClaimState::default(),
            }),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> rusqlite::Result<T> {
        f(&mut lock(&self.writer).conn)
    }

    pub fn claim(
        &self,
        max: usize,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> rusqlite::Result<Vec<ClaimedRequest>> {
        let mut writer = lock(&self.writer);
        let Writer { conn, claim } = &mut *writer;
        ops::claim(conn, claim, max, now, lease_until)
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
