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

/// The same suite on a store opened as a server with one catch-all route opens it, without
/// the per-model claim index: claims by model are still answered (by a scan).
mod without_claims_by_model {
    use super::*;
    use satchel_store_sqlite::Options;

    fn open() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            claims_by_model: false,
        };
        let store = SqliteStore::open_with(&dir.path().join("satchel.db"), &options).unwrap();
        (Arc::new(store), dir)
    }

    satchel_store_conformance::store_conformance!(open());
}

/// The per-model claim index exists exactly when the store is opened for claims by model,
/// following the option from one start to the next.
#[test]
fn the_per_model_claim_index_follows_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("satchel.db");
    let has_index = || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'queue_claim_by_model'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
            == 1
    };
    for wanted in [false, true, true, false] {
        let options = satchel_store_sqlite::Options {
            claims_by_model: wanted,
        };
        let store = SqliteStore::open_with(&path, &options).unwrap();
        assert_eq!(has_index(), wanted);
        drop(store);
    }
}
