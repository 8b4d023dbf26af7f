//! What only the PostgreSQL store has: node ids held by one live process, migrations when
//! nodes start at once, the plans of the hot statements, and housekeeping of what a dead
//! node half-ingested.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::sync::Arc;
use std::time::{Duration, Instant};

use satchel_core::Store;
use satchel_core::model::{IngestChunk, ListCursor, ModelFilter, NewBatch, NewRequest};
use satchel_store_postgres::{OpenError, Options, PostgresStore, statements};
use satchel_wire::Timestamp;
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

fn database(test: &str) -> Option<String> {
    Some(satchel_pg_test::shared(test)?.create_database())
}

async fn open(url: &str, node: &str) -> Result<PostgresStore, OpenError> {
    PostgresStore::open(url, node, Options::default()).await
}

async fn sql(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn a_live_node_id_is_refused_and_free_again_once_its_holder_is_gone() {
    let Some(url) = database("a_live_node_id_is_refused") else {
        return;
    };
    let first = open(&url, "node-x").await.unwrap();
    let second = open(&url, "node-x").await;
    assert!(
        matches!(second, Err(OpenError::NodeIdInUse(ref id)) if id == "node-x"),
        "a second live node with the same id is refused"
    );
    assert!(open(&url, "node-y").await.is_ok(), "another id is fine");
    drop(first);
    // Its connection closes, PostgreSQL frees the lock: a restart under the same id works.
    open(&url, "node-x").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_starting_at_once_apply_each_migration_once() {
    let Some(url) = database("nodes_starting_at_once_apply_each_migration_once") else {
        return;
    };
    let starts = (0..4).map(|i| {
        let url = url.clone();
        tokio::spawn(async move { open(&url, &format!("node-{i}")).await.map(|_| ()) })
    });
    for start in futures_join(starts).await {
        start.unwrap();
    }
    let client = sql(&url).await;
    let applied: Vec<i32> = client
        .query_one(
            "SELECT array_agg(version ORDER BY version) FROM satchel_migrations",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // One row per migration file, in order: each applied once, none skipped.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/src/migrations"))
        .unwrap()
        .count();
    assert_eq!(applied, (1..=migrations as i32).collect::<Vec<_>>());
    // And starting again on a migrated database changes nothing.
    open(&url, "node-again").await.unwrap();
}

async fn futures_join(
    handles: impl Iterator<Item = tokio::task::JoinHandle<Result<(), OpenError>>>,
) -> Vec<Result<(), OpenError>> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await.unwrap());
    }
    out
}

/// Fills the queue with `n` requests over a few batches, straight in SQL (quick), with
/// statistics, as a large running deployment would have.
async fn big_queue(client: &tokio_postgres::Client, n: i64) {
    client
        .batch_execute(&format!(
            "INSERT INTO batches (id, workspace, state, first_request, request_count, processing,
                                  created_at, expires_at)
             SELECT 'b' || g, 'w', 1, g * 4294967296, {per}, {per}, 0, 9000000000000000
             FROM generate_series(1, 4) g;
             INSERT INTO requests (id, custom_id, params)
             SELECT b * 4294967296 + i, 'r' || i, convert_to('{{}}', 'UTF8')
             FROM generate_series(1, 4) b, generate_series(0, {per} - 1) i;
             INSERT INTO queue (request_id, batch_pk, lease_until, lease_token)
             SELECT b * 4294967296 + i, b,
                    CASE WHEN i < {per} / 2 THEN 9000000000000000 ELSE 0 END, 1
             FROM generate_series(1, 4) b, generate_series(0, {per} - 1) i;
             ANALYZE;",
            per = n / 4
        ))
        .await
        .unwrap();
}

async fn plan(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> String {
    client
        .query(&format!("EXPLAIN {sql}"), params)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The claim must pick rows inside `= ANY(ARRAY(…))`: joined with `UPDATE … FROM picked` it
/// was planned as a hash over the whole queue (365 ms against 0.54 ms on 400k rows). Settle
/// and renew join the queue with their arrays, and must probe it by primary key too.
#[tokio::test]
async fn the_hot_statements_probe_the_queue_by_index() {
    let Some(url) = database("the_hot_statements_probe_the_queue_by_index") else {
        return;
    };
    let store = open(&url, "node").await.unwrap();
    let client = sql(&url).await;
    big_queue(&client, 200_000).await;
    let pks: Vec<i64> = vec![1, 2, 3, 4];
    let shares: Vec<i64> = vec![128, 128, 128, 128];
    let models: Option<Vec<i32>> = None;
    let (now, until, wall) = (1_i64, 2_i64, 1_i64);
    let owner = "node";
    let claim = plan(
        &client,
        &statements::claim_sql(true),
        &[&pks, &shares, &now, &until, &wall, &owner, &models],
    )
    .await;
    let ids: Vec<i64> = (0..512).map(|i| 4294967296 + 60_000 + i).collect();
    let tokens: Vec<i64> = vec![1; 512];
    let lines: Vec<&[u8]> = vec![b"{}"; 512];
    let ok = vec![true; 512];
    let settle = plan(
        &client,
        statements::SETTLE_SQL,
        &[&ids, &tokens, &lines, &ok],
    )
    .await;
    let renew = plan(
        &client,
        &statements::renew_sql(),
        &[&ids, &tokens, &until, &wall],
    )
    .await;
    for (name, plan) in [("claim", &claim), ("settle", &settle), ("renew", &renew)] {
        // Every read of the big tables is an index probe (the tiny batches table may be
        // scanned and hashed).
        let scans_a_big_table = plan.lines().any(|line| {
            let line = line.trim_start().trim_start_matches("->  ");
            ["queue", "requests", "results"]
                .iter()
                .any(|t| line.contains(&format!(" on {t} ")) || line.ends_with(&format!(" on {t}")))
                && !line.starts_with("Index")
                && !line.starts_with("Update on")
                && !line.starts_with("Delete on")
                && !line.starts_with("Insert on")
        });
        assert!(
            !scans_a_big_table,
            "the {name} statement scans a whole table:\n{plan}"
        );
    }
    // And it is quick for real: half of each batch's head is leased, the rest runnable.
    let started = Instant::now();
    let now = Timestamp::now();
    let claimed = store
        .claim(
            owner,
            512,
            &ModelFilter::Any,
            now,
            now.plus(Duration::from_secs(60)),
        )
        .await
        .unwrap();
    assert_eq!(claimed.len(), 512);
    eprintln!(
        "claim of 512 from a 200k-row queue: {:?}",
        started.elapsed()
    );
}

fn request(i: usize) -> NewRequest {
    NewRequest {
        custom_id: format!("r{i}"),
        params: RawValue::from_string(format!(r#"{{"model":"m","n":{i}}}"#))
            .unwrap()
            .into(),
    }
}

/// A node that dies mid-create leaves rows nobody sees; another node's housekeeping removes
/// them once the dead node's heartbeat has run out and the batch has been untouched a while,
/// and leaves a live node's create in progress alone.
#[tokio::test]
async fn housekeeping_removes_only_dead_nodes_half_ingested_batches() {
    let Some(url) = database("housekeeping_removes_only_dead_nodes_half_ingested_batches") else {
        return;
    };
    let dying = Arc::new(open(&url, "dying").await.unwrap());
    let survivor = open(&url, "survivor").await.unwrap();
    let now = Timestamp::now();
    // Two chunks written (the first is committed once the second arrives), never committed.
    let (tx, rx) = mpsc::channel(4);
    let batch = NewBatch {
        id: "msgbatch_half".into(),
        workspace: "w".into(),
        created_at: now,
        expires_at: now.plus(Duration::from_secs(3600)),
        upstream_headers: None,
        group_by_prefix: false,
    };
    let create = tokio::spawn({
        let dying = dying.clone();
        async move { dying.create_batch(batch, rx).await }
    });
    tx.send(IngestChunk::Requests((0..300).map(request).collect()))
        .await
        .unwrap();
    tx.send(IngestChunk::Requests((300..600).map(request).collect()))
        .await
        .unwrap();
    let client = sql(&url).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while client
        .query_one("SELECT count(*) FROM requests", &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        < 300
    {
        assert!(
            Instant::now() < deadline,
            "the first chunk was never written"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The node dies: its create stops where it is (no discard), its connections close.
    create.abort();
    std::mem::forget(tx);
    drop(dying);
    assert!(
        survivor
            .get_batch("w", "msgbatch_half")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        survivor
            .list_batches("w", &ListCursor::Start, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let later = Timestamp::now();
    assert!(survivor.archive(later, later).await.is_ok());
    let count = |table: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    assert_eq!(
        count("requests").await,
        300,
        "too recent to be judged abandoned"
    );
    // A minute later and with its node's heartbeat run out, it is removed.
    client
        .batch_execute(
            "UPDATE batches SET touched_at = now() - interval '2 minutes';
             UPDATE nodes SET alive_until = now() - interval '1 second' WHERE id = 'dying';",
        )
        .await
        .unwrap();
    survivor.archive(later, later).await.unwrap();
    assert_eq!(count("requests").await, 0);
    assert_eq!(count("queue").await, 0);
    assert_eq!(count("batches").await, 0);
    // A live node's old, slow create is not touched.
    client
        .batch_execute(
            "INSERT INTO batches (id, workspace, state, first_request, created_at, expires_at,
                                  ingest_instance, touched_at)
             SELECT 'msgbatch_slow', 'w', 0, 99 * 4294967296, 0, 0, instance,
                    now() - interval '1 hour'
             FROM nodes WHERE id = 'survivor'",
        )
        .await
        .unwrap();
    survivor.archive(later, later).await.unwrap();
    assert_eq!(count("batches").await, 1);
}

/// One batch of `n` requests whose first `leased` in claim order (prefix, request_id) are
/// leased far into the future, the rest runnable: what the claim sees when many requests of
/// a big batch are in flight at once.
async fn leased_head(client: &tokio_postgres::Client, n: i64, leased: i64) {
    client
        .batch_execute(&format!(
            "INSERT INTO batches (id, workspace, state, first_request, request_count, processing,
                                  created_at, expires_at)
             VALUES ('big', 'w', 1, 4294967296, {n}, {n}, 0, 9000000000000000);
             INSERT INTO requests (id, custom_id, params)
             SELECT 4294967296 + i, 'r' || i, convert_to('{{}}', 'UTF8')
             FROM generate_series(0, {n} - 1) i;
             INSERT INTO queue (request_id, batch_pk, lease_until, lease_token)
             SELECT 4294967296 + i, 1,
                    CASE WHEN i < {leased} THEN 9000000000000000 ELSE 0 END,
                    CASE WHEN i < {leased} THEN 1 ELSE 0 END
             FROM generate_series(0, {n} - 1) i;"
        ))
        .await
        .unwrap();
    // Apart: VACUUM cannot run in the implicit transaction of a multi-statement batch.
    client.batch_execute("VACUUM ANALYZE").await.unwrap();
}

/// The claim must not walk past the rows already leased: with the first half of a 100k-row
/// batch in flight, a claim of 512 reads about 512 queue rows, not 50,000 (each a heap
/// fetch to learn the lease has not run out). EXPLAIN ANALYZE runs it in a transaction
/// rolled back, planned as the store plans it (unprepared, for the queue as it is).
#[tokio::test]
async fn the_claim_does_not_walk_past_leased_rows() {
    let Some(url) = database("the_claim_does_not_walk_past_leased_rows") else {
        return;
    };
    let _store = open(&url, "node").await.unwrap();
    let mut client = sql(&url).await;
    leased_head(&client, 100_000, 50_000).await;
    let tx = client.transaction().await.unwrap();
    let (pks, shares, models): (Vec<i64>, Vec<i64>, Option<Vec<i32>>) = (vec![1], vec![512], None);
    let now = Timestamp::now().as_micros();
    let until = now + 60_000_000;
    let plan: Vec<String> = tx
        .query(
            &format!("EXPLAIN (ANALYZE, BUFFERS) {}", statements::claim_sql(true)),
            &[&pks, &shares, &now, &until, &now, &"node", &models],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    tx.rollback().await.unwrap();
    let plan = plan.join("\n");
    eprintln!("{plan}");
    let claimed: i64 = plan
        .lines()
        .find(|l| l.contains("Update on queue"))
        .and_then(|l| l.split("rows=").nth(2))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no update in the plan:\n{plan}"));
    assert_eq!(claimed, 512, "the claim takes its share:\n{plan}");
    let passed_over: i64 = plan
        .lines()
        .filter_map(|l| l.split("Rows Removed by Filter: ").nth(1))
        .map(|v| v.trim().parse::<i64>().unwrap())
        .sum();
    assert!(
        passed_over < 5_000,
        "the claim walked past {passed_over} leased rows:\n{plan}"
    );
}
