//! The PostgreSQL store against the shared store conformance suite, each test on a fresh
//! database of a throwaway cluster (started once for this test binary; skipped, saying so,
//! when PostgreSQL is not installed unless SATCHEL_REQUIRE_PG=1).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::sync::Arc;

use satchel_core::Store;
use satchel_store_postgres::{Options, PostgresStore};

async fn open() -> Option<(Arc<dyn Store>, ())> {
    let cluster = satchel_pg_test::shared("a PostgreSQL conformance test")?;
    let url = cluster.create_database();
    let store = PostgresStore::open(&url, "test-node", Options::default())
        .await
        .unwrap();
    Some((Arc::new(store), ()))
}

satchel_store_conformance::store_conformance!(match open().await {
    Some(opened) => opened,
    None => return,
});

/// The webhook outbox's cases.
mod outbox {
    use super::*;

    satchel_store_conformance::outbox_conformance!(match open().await {
        Some(opened) => opened,
        None => return,
    });
}
