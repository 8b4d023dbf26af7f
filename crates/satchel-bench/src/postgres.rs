//! The PostgreSQL engine beside SQLite, in the same run: the big batch created on a node
//! whose `--db` is a throwaway PostgreSQL cluster (started here from the installed binaries,
//! `fsync=on`), run on the emulator by one node and by two, and downloaded.
//!
//! Baselines: the *COPY floor*, the least a create on PostgreSQL implies (parse the body,
//! then binary `COPY` its custom ids and params into a bare table of the same shape in one
//! transaction, from this process), and the SQLite engine on the same body. Then list
//! latency with many tiny batches stored, filled as the list section fills SQLite.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio_postgres::NoTls;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

use crate::api::{self, Api};
use crate::cpu::{CpuTime, Meter};
use crate::proc::Proc;
use crate::report::{
    Row, fmt_mb, fmt_mbps, fmt_ms, fmt_rate, fmt_rss, fmt_s, fmt_x, secs, thousands,
};
use crate::{Settings, workload};
use crate::{batch, list};

/// What one run on PostgreSQL measured.
struct PgRun {
    create: Duration,
    /// The creating node's peak RSS, read as the create returns (kB).
    create_rss_kb: u64,
    to_ended: Duration,
    /// CPU spent from create to `ended`, by the nodes and by the cluster.
    cpu: CpuTime,
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
    eprintln!(
        "[postgres] list with {} batches stored",
        thousands(settings.postgres_list_batches as u64)
    );
    let listed = list_run(settings, &cluster.create_database()).await?;
    let floor_total = secs(floor.parse + floor.copy);
    let rate = |d: Duration| n as f64 / secs(d);

    Ok(vec![
        Row::new("postgres", format!("create of {label} on PostgreSQL"))
            .satchel(format!(
                "{}, {}; node peak RSS {}",
                fmt_s(secs(one.create)),
                fmt_mbps(mb / secs(one.create)),
                fmt_rss(one.create_rss_kb)
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
            .target(
                "≤ 2x the COPY floor at < 100 MB RSS",
                secs(one.create) <= 2.0 * floor_total && one.create_rss_kb < 100 * 1024,
            ),
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
            "{} SQLite's rate; {}",
            fmt_x(secs(sqlite.to_ended) / secs(one.to_ended)),
            busy(&one, n)
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
            "{} one node; {}",
            fmt_x(secs(one.to_ended) / secs(two.to_ended)),
            busy(&two, n)
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
        Row::new(
            "postgres",
            format!(
                "list (limit 20) p50 / p99, {} batches stored on PostgreSQL",
                thousands(listed.stored as u64)
            ),
        )
        .satchel(format!("{} / {}", fmt_ms(listed.p50), fmt_ms(listed.p99)))
        .baseline(format!(
            "filled over HTTP, {} at a time: {}",
            list::CREATE_CONCURRENCY,
            fmt_rate(listed.stored as f64 / secs(listed.fill))
        ))
        .target("p99 < 5 ms", listed.p99 < 0.005),
    ])
}

/// How the machine's cores were spent from create to `ended`: the nodes' and the cluster's
/// CPU time, other processes' (the machine may be shared) and idle, as shares of the wall
/// time on all cores. Idle cores during a run mean it waits on something else than CPU.
/// And the CPU time a request cost (nodes and cluster), which bounds the rate the cores
/// allow whatever the number of nodes.
fn busy(run: &PgRun, n: usize) -> String {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let share = |cpu: f64| 100.0 * cpu / secs(run.to_ended) / cores;
    let others = 100.0 - share(run.cpu.total()) - share(run.cpu.idle);
    let per_request = run.cpu.total() / n as f64;
    format!(
        "CPU of {cores} cores: satchel {:.0}%, PostgreSQL {:.0}%, other processes {:.0}%, idle {:.0}%; \
         {:.0} µs CPU a request (satchel {:.0} + PostgreSQL {:.0}): at most {} on {cores} free cores",
        share(run.cpu.satchel),
        share(run.cpu.postgres),
        others.max(0.0),
        share(run.cpu.idle),
        per_request * 1e6,
        run.cpu.satchel / n as f64 * 1e6,
        run.cpu.postgres / n as f64 * 1e6,
        fmt_rate(cores / per_request)
    )
}

/// What the list run measured.
struct Listed {
    stored: usize,
    fill: Duration,
    p50: f64,
    p99: f64,
}

/// A node on a fresh database, filled with tiny batches as the list section fills SQLite,
/// then listed.
async fn list_run(settings: &Settings, url: &str) -> Result<Listed> {
    let stored = settings.postgres_list_batches;
    let log = settings.work.join("pg-list-node.log");
    let node = Proc::serve_shared(&settings.satchel, url, "bench-list", log).await?;
    let api = Api::new(node.url(""))?;
    let fill = list::fill(&api, 0..stored).await?;
    let (p50, p99) = list::list_latency(&api, settings.list_calls, stored).await?;
    Ok(Listed {
        stored,
        fill,
        p50,
        p99,
    })
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

/// The CPU meter of `procs` and the cluster of `url` (found through a backend's parent).
async fn meter(url: &str, procs: &[Proc]) -> Result<Meter> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    let driver = tokio::spawn(connection);
    let backend: i32 = client
        .query_one("SELECT pg_backend_pid()", &[])
        .await?
        .try_get(0)?;
    let meter = Meter::new(
        procs.iter().map(Proc::pid).collect(),
        u32::try_from(backend)?,
    );
    drop(client);
    let _ = driver.await;
    meter
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
    let meter = meter(url, &procs).await?;
    batch::settle_disk();
    let started = Instant::now();
    let created = first.create(body).await?;
    let create = started.elapsed();
    let create_rss_kb = procs[0].peak_rss_kb()?;
    let id = api::id_of(&created)?;
    let created_at = Instant::now();
    let cpu_at_create = meter.read()?;
    let (ended, seen) = first
        .wait_ended(&id, Duration::from_millis(5), Duration::from_secs(3_600))
        .await?;
    let cpu = meter.read()? - cpu_at_create;
    let to_ended = seen - created_at;
    let succeeded = api::count_of(&ended, "succeeded");
    if succeeded != n as u64 {
        bail!("{succeeded} of {n} requests succeeded: {ended}");
    }
    let last = Api::new(procs[nodes - 1].url(""))?;
    let download = last.results(&id).await?;
    Ok(PgRun {
        create,
        create_rss_kb,
        to_ended,
        cpu,
        results: download.elapsed,
        results_bytes: download.bytes,
    })
}
