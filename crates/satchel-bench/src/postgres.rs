//! The PostgreSQL engine beside SQLite, in the same run: the big batch created on a node
//! whose `--db` is a throwaway PostgreSQL cluster (started here from the installed binaries,
//! `fsync=on`), run on the emulator by one node and by two, and downloaded.
//!
//! Baselines: the *COPY floor*, the least a create on PostgreSQL implies (parse the body,
//! then binary `COPY` its custom ids and params into a bare table of the same shape in one
//! transaction, from this process), and the SQLite engine on the same body.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::api::{self, Api};
use crate::batch;
use crate::proc::Proc;
use crate::report::{Row, fmt_mb, fmt_mbps, fmt_rate, fmt_s, fmt_x, secs, thousands};
use crate::{Settings, workload};

/// What one run on PostgreSQL measured.
struct PgRun {
    create: Duration,
    to_ended: Duration,
    results: Duration,
    results_bytes: u64,
}

/// The COPY floor: parsing, then copying.
struct CopyFloor {
    parse: Duration,
    copy: Duration,
}

pub async fn section(settings: &Settings) -> Result<Vec<Row>> {
    let Some(cluster) = satchel_pg_test::Cluster::start("the bench's postgres section") else {
        return Ok(vec![Row::unavailable(
            "postgres",
            "the PostgreSQL engine",
            "no PostgreSQL binaries (install postgresql)",
        )]);
    };
    let n = settings.batch_requests;
    let body = Bytes::from(workload::create_body(n, 1));
    let mb = body.len() as f64;
    let label = format!("{} requests / {}", thousands(n as u64), fmt_mb(mb));

    eprintln!("[postgres] SQLite, same body");
    let sqlite = batch::run_batch(settings, body.clone(), n, "pg-beside-sqlite", None).await?;
    eprintln!("[postgres] COPY floor");
    let floor = copy_floor(&cluster.create_database(), &body).await?;
    eprintln!("[postgres] one node");
    let one = run(settings, &cluster.create_database(), body.clone(), n, 1).await?;
    eprintln!("[postgres] two nodes");
    let two = run(settings, &cluster.create_database(), body, n, 2).await?;
    let floor_total = secs(floor.parse + floor.copy);
    let rate = |d: Duration| n as f64 / secs(d);

    Ok(vec![
        Row::new("postgres", format!("create of {label} on PostgreSQL"))
            .satchel(format!(
                "{}, {}",
                fmt_s(secs(one.create)),
                fmt_mbps(mb / secs(one.create))
            ))
            .baseline(format!(
                "COPY floor {} = parse {} + binary COPY in one transaction {}; SQLite engine {}",
                fmt_s(floor_total),
                fmt_s(secs(floor.parse)),
                fmt_s(secs(floor.copy)),
                fmt_s(secs(sqlite.create))
            ))
            .ratio(format!(
                "{} the COPY floor, {} SQLite",
                fmt_x(secs(one.create) / floor_total),
                fmt_x(secs(one.create) / secs(sqlite.create))
            ))
            .target("≤ 2x the COPY floor", secs(one.create) <= 2.0 * floor_total),
        Row::new(
            "postgres",
            "create → `ended`, emulator at 0 latency, one PostgreSQL node",
        )
        .satchel(format!(
            "{}, {}",
            fmt_s(secs(one.to_ended)),
            fmt_rate(rate(one.to_ended))
        ))
        .baseline(format!(
            "SQLite engine {}, {}",
            fmt_s(secs(sqlite.to_ended)),
            fmt_rate(rate(sqlite.to_ended))
        ))
        .ratio(format!(
            "{} SQLite's rate",
            fmt_x(secs(sqlite.to_ended) / secs(one.to_ended))
        ))
        .target("≥ 5,000 requests/s", rate(one.to_ended) >= 5_000.0),
        Row::new(
            "postgres",
            "create → `ended`, emulator at 0 latency, two PostgreSQL nodes",
        )
        .satchel(format!(
            "{}, {}",
            fmt_s(secs(two.to_ended)),
            fmt_rate(rate(two.to_ended))
        ))
        .baseline(format!("one node {}", fmt_rate(rate(one.to_ended))))
        .ratio(format!(
            "{} one node",
            fmt_x(secs(one.to_ended) / secs(two.to_ended))
        ))
        // Issue 9's target: a second node adds at least half a node's throughput.
        .target(
            "≥ 1.5x one node",
            secs(one.to_ended) / secs(two.to_ended) >= 1.5,
        ),
        Row::new(
            "postgres",
            format!(
                "results download from PostgreSQL ({})",
                fmt_mb(one.results_bytes as f64)
            ),
        )
        .satchel(format!(
            "{}, {}",
            fmt_s(secs(one.results)),
            fmt_mbps(one.results_bytes as f64 / secs(one.results))
        ))
        .baseline(format!(
            "SQLite engine {}",
            fmt_mbps(sqlite.results_bytes as f64 / secs(sqlite.results))
        ))
        .ratio(format!(
            "{} SQLite's rate",
            fmt_x(secs(sqlite.results) / secs(one.results))
        ))
        .target(
            "≥ 300 MB/s",
            one.results_bytes as f64 / secs(one.results) >= 300e6,
        ),
    ])
}

#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow)]
    requests: Vec<Item<'a>>,
}

#[derive(Deserialize)]
struct Item<'a> {
    custom_id: &'a str,
    #[serde(borrow)]
    params: &'a RawValue,
}

/// Parse the body, then binary COPY its requests into a table shaped like the store's
/// (`bytea` stored EXTERNAL), in one transaction.
async fn copy_floor(url: &str, body: &[u8]) -> Result<CopyFloor> {
    let started = Instant::now();
    let parsed: Body<'_> = serde_json::from_slice(body).context("the workload is not JSON")?;
    let parse = started.elapsed();
    let (mut client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    client
        .batch_execute(
            "CREATE TABLE floor (id bigint PRIMARY KEY, custom_id text NOT NULL, params bytea NOT NULL);
             ALTER TABLE floor ALTER COLUMN params SET STORAGE EXTERNAL;",
        )
        .await?;
    let started = Instant::now();
    let tx = client.transaction().await?;
    let sink = tx
        .copy_in("COPY floor (id, custom_id, params) FROM STDIN (FORMAT binary)")
        .await?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::TEXT, Type::BYTEA]);
    let mut writer = std::pin::pin!(writer);
    for (i, item) in parsed.requests.iter().enumerate() {
        let id = i as i64;
        writer
            .as_mut()
            .write(&[&id, &item.custom_id, &item.params.get().as_bytes()])
            .await?;
    }
    writer.as_mut().finish().await?;
    tx.commit().await?;
    let copy = started.elapsed();
    drop(client);
    let _ = driver.await;
    Ok(CopyFloor { parse, copy })
}

/// The batch on `nodes` fresh nodes sharing `url`: created on the first, waited for, and
/// downloaded from the last.
async fn run(settings: &Settings, url: &str, body: Bytes, n: usize, nodes: usize) -> Result<PgRun> {
    let mut procs = Vec::new();
    for i in 0..nodes {
        let log = settings.work.join(format!("pg-{nodes}-node-{i}.log"));
        procs.push(Proc::serve_shared(&settings.satchel, url, &format!("bench-{i}"), log).await?);
    }
    let first = Api::new(procs[0].url(""))?;
    batch::settle_disk();
    let started = Instant::now();
    let created = first.create(body).await?;
    let create = started.elapsed();
    let id = api::id_of(&created)?;
    let created_at = Instant::now();
    let (ended, seen) = first
        .wait_ended(&id, Duration::from_millis(5), Duration::from_secs(3_600))
        .await?;
    let to_ended = seen - created_at;
    let succeeded = api::count_of(&ended, "succeeded");
    if succeeded != n as u64 {
        bail!("{succeeded} of {n} requests succeeded: {ended}");
    }
    let last = Api::new(procs[nodes - 1].url(""))?;
    let download = last.results(&id).await?;
    Ok(PgRun {
        create,
        to_ended,
        results: download.elapsed,
        results_bytes: download.bytes,
    })
}
