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

/// The two-node cases with one handle passed as both nodes: SQLite allows one process per
/// file, so here they check the rules between two owners, not two connections.
mod two_nodes {
    use super::*;

    satchel_store_conformance::store_conformance_two_nodes!({
        let (store, guard) = open();
        (store.clone(), store, guard)
    });
}

/// The webhook outbox's cases.
mod outbox {
    use super::*;

    satchel_store_conformance::outbox_conformance!(open());

    satchel_store_conformance::outbox_conformance_two_nodes!({
        let (store, guard) = open();
        (store.clone(), store, guard)
    });
}
