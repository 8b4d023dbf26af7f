//! The SQLite store against the shared store conformance suite, each test on a fresh file.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::sync::Arc;

use satchel_core::Store;
use satchel_store_sqlite::SqliteStore;

fn open() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("satchel.db")).unwrap();
    (Arc::new(store), dir)
}

satchel_store_conformance::store_conformance!(open());
