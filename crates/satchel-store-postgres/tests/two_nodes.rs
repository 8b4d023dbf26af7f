//! Two nodes on one PostgreSQL database (two stores, two node ids, two connection pools)
//! against the shared two-node conformance cases.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::sync::Arc;

use satchel_core::Store;
use satchel_store_postgres::{Options, PostgresStore};

type Pair = (Arc<dyn Store>, Arc<dyn Store>, ());

async fn open_two() -> Option<Pair> {
    let cluster = satchel_pg_test::shared("a PostgreSQL two-node test")?;
    let url = cluster.create_database();
    let a = PostgresStore::open(&url, "node-1", Options::default())
        .await
        .unwrap();
    let b = PostgresStore::open(&url, "node-2", Options::default())
        .await
        .unwrap();
    Some((Arc::new(a), Arc::new(b), ()))
}

satchel_store_conformance::store_conformance_two_nodes!(match open_two().await {
    Some(pair) => pair,
    None => return,
});

/// The webhook outbox between two nodes.
mod outbox {
    use super::*;

    satchel_store_conformance::outbox_conformance_two_nodes!(match open_two().await {
        Some(pair) => pair,
        None => return,
    });
}
