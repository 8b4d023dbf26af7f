//! One big batch through the emulator, and the same at smaller sizes.
//!
//! What it measures, each on a fresh server process and SQLite file:
//! - **create**: the time of the create call for the whole body, beside the *floor*, the least
//!   physical work a create implies: a bare `serde_json` parse of the same bytes (to
//!   `IgnoredAny`: validate, allocate nothing) plus writing them once to a file on the same
//!   disk with `fsync`, both in this process. The server's peak RSS (`VmHWM`) right after the
//!   create shows that the body is streamed, not held.
//! - **emulator**: from the create response to the batch seen `ended` (polled every 5 ms),
//!   with the emulator at zero latency: Satchel's own cost per request (claim, run, settle).
//! - **results**: the download of all result lines, beside reading the same bytes back from a
//!   file (page cache).
//! - **growth**: the same at 1/100 and 1/10 of the size, so per-request cost and peak memory
//!   can be compared across sizes: flat means the design holds.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use crate::api::{self, Api};
use crate::proc::Proc;
use crate::report::{
    Row, fmt_mb, fmt_mbps, fmt_rate, fmt_rss, fmt_s, fmt_x, median, secs, thousands,
};
use crate::{Settings, workload};

/// What one batch run measured.
#[derive(Debug, Clone)]
pub struct BatchRun {
    pub requests: usize,
    pub body_bytes: usize,
    pub create: Duration,
    pub create_peak_rss_kb: u64,
    pub to_ended: Duration,
    pub results: Duration,
    /// The same download again, a while after the first (see [`run_batch`]).
    pub results_later: Option<Duration>,
    pub results_bytes: u64,
    pub file_read: Duration,
    pub peak_rss_kb: u64,
}

/// The floor of a create: parse + write-once-with-fsync of the same bytes.
#[derive(Debug, Clone, Copy)]
pub struct Floor {
    pub parse: Duration,
    /// Writing and fsyncing, together.
    pub write: Duration,
    /// Of which the fsync.
    pub fsync: Duration,
}

impl Floor {
    pub fn total(&self) -> Duration {
        self.parse + self.write
    }
}

/// Flushes every dirty page on the machine (`sync`), so that the next fsync, the floor's or
/// the server's, waits for its own data and not for what earlier steps (or other programs)
/// left behind. Without it the floor's write moved between 0.1 s and 0.7 s from run to run.
pub fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
}

pub fn measure_floor(body: &[u8], dir: &Path) -> Result<Floor> {
    settle_disk();
    let started = Instant::now();
    serde_json::from_slice::<serde::de::IgnoredAny>(body).context("the workload is not JSON")?;
    let parse = started.elapsed();
    let path = dir.join("floor.json");
    let started = Instant::now();
    let mut file = std::fs::File::create(&path)?;
    // In 1 MiB writes: one write of the whole body is several times slower on Linux (0.4–0.7 s
    // here against 0.06–0.1 s), which would flatter the server.
    for block in body.chunks(1 << 20) {
        file.write_all(block)?;
    }
    let written = Instant::now();
    file.sync_all()?;
    let write = started.elapsed();
    let fsync = written.elapsed();
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(Floor {
        parse,
        write,
        fsync,
    })
}

/// Creates a batch of `requests` from `body` on a fresh server, waits for it to end on the
/// emulator, downloads its results and reads them back from a file.
/// With `again_after`, the results are downloaded a second time that long after the first:
/// the first download, made as soon as the batch ends (as an SDK does), overlaps the
/// checkpoint of the results just written; the second shows what that costs.
pub async fn run_batch(
    settings: &Settings,
    body: Bytes,
    requests: usize,
    name: &str,
    again_after: Option<Duration>,
) -> Result<BatchRun> {
    let db = settings.work.join(format!("{name}.db"));
    let server = Proc::serve(&settings.satchel, &db, &[]).await?;
    let api = Api::new(server.url(""))?;
    let body_bytes = body.len();

    settle_disk();
    let started = Instant::now();
    let batch = api.create(body).await?;
    let created = Instant::now();
    let create = created - started;
    let create_peak_rss_kb = server.peak_rss_kb()?;
    let id = api::id_of(&batch)?;

    let (ended, seen) = api
        .wait_ended(&id, Duration::from_millis(5), Duration::from_secs(3_600))
        .await?;
    let to_ended = seen - created;
    let succeeded = api::count_of(&ended, "succeeded");
    if succeeded != requests as u64 {
        bail!("{succeeded} of {requests} requests succeeded: {ended}");
    }

    let download = api.results(&id).await?;
    let lines: usize = download
        .chunks
        .iter()
        .map(|c| c.iter().filter(|&&b| b == b'\n').count())
        .sum();
    if lines != requests {
        bail!("results have {lines} lines, expected {requests}");
    }
    let results_later = match again_after {
        Some(wait) => {
            tokio::time::sleep(wait).await;
            let again = api.results(&id).await?;
            if again.bytes != download.bytes {
                bail!(
                    "the second download has {} bytes, the first {}",
                    again.bytes,
                    download.bytes
                );
            }
            Some(again.elapsed)
        }
        None => None,
    };
    let peak_rss_kb = server.peak_rss_kb()?;
    drop(server);

    // The baseline: the same bytes read back from a file (written and synced first, so the
    // read comes from the page cache, as a hot results table does for the server).
    let path = settings.work.join(format!("{name}.results.jsonl"));
    {
        let mut file = std::fs::File::create(&path)?;
        for chunk in &download.chunks {
            file.write_all(chunk)?;
        }
        file.sync_all()?;
    }
    drop(download.chunks);
    let started = Instant::now();
    let mut file = std::fs::File::open(&path)?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    let file_read = started.elapsed();
    if read != download.bytes {
        bail!("read back {read} bytes of {}", download.bytes);
    }
    std::fs::remove_file(&path)?;
    remove_db(&db);

    Ok(BatchRun {
        requests,
        body_bytes,
        create,
        create_peak_rss_kb,
        to_ended,
        results: download.elapsed,
        results_later,
        results_bytes: download.bytes,
        file_read,
        peak_rss_kb,
    })
}

/// The results row: the download right after `ended` (median of the runs), and the same
/// download made again a while later, the first at least 500 MB/s and 0.8x the second.
fn results_row(runs: &[BatchRun], results: f64, bytes: f64, file_read: f64) -> Row {
    let later: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.results_later.map(secs))
        .collect();
    let rate = bytes / results;
    let mut row = Row::new(
        "results",
        format!("results download ({}) right after `ended`", fmt_mb(bytes)),
    )
    .baseline(format!(
        "file read {}, {}",
        fmt_s(file_read),
        fmt_mbps(bytes / file_read)
    ));
    if later.is_empty() {
        return row
            .satchel(format!("{}, {}", fmt_s(results), fmt_mbps(rate)))
            .ratio(format!("{} the file read", fmt_x(file_read / results)))
            .target("≥ 500 MB/s", rate >= 500e6);
    }
    let later = median(&later);
    // Rates, so the ratio reads "the first as fast as the later one" at 1.
    let versus_later = later / results;
    row = row
        .satchel(format!(
            "{}, {}; the same download later: {}, {}",
            fmt_s(results),
            fmt_mbps(rate),
            fmt_s(later),
            fmt_mbps(bytes / later)
        ))
        .ratio(format!(
            "{} the later download; {} the file read",
            fmt_x(versus_later),
            fmt_x(file_read / results)
        ))
        .target(
            "≥ 500 MB/s and ≥ 0.8x the later download",
            rate >= 500e6 && versus_later >= 0.8,
        );
    row
}

/// Removes a database and its WAL, shared-memory, lock and params files.
pub fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm", ".lock", ".log"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(&name);
    }
    let _ = std::fs::remove_file(db.with_extension("log"));
    // A large batch's params files: left behind, they make the next server on the same path
    // refuse to start (the database looks lost).
    let mut params = db.as_os_str().to_owned();
    params.push(".params");
    let _ = std::fs::remove_dir_all(&params);
}

/// The big batch (median of `settings.repeat` runs, each beside its own floor), then the
/// smaller sizes. Returns the rows.
pub async fn section(settings: &Settings) -> Result<Vec<Row>> {
    let n = settings.batch_requests;
    eprintln!("[batch] generating {} requests", thousands(n as u64));
    let body = Bytes::from(workload::create_body(n, 1));
    let mb = body.len() as f64;
    eprintln!("[batch] body: {}", fmt_mb(mb));

    let mut floors = Vec::new();
    let mut runs = Vec::new();
    for round in 0..settings.repeat {
        let floor = measure_floor(&body, &settings.work)?;
        eprintln!(
            "[batch] round {}: floor parse {} + write {} (of which fsync {})",
            round + 1,
            fmt_s(secs(floor.parse)),
            fmt_s(secs(floor.write)),
            fmt_s(secs(floor.fsync))
        );
        floors.push(floor);
        let run = run_batch(
            settings,
            body.clone(),
            n,
            &format!("batch-{round}"),
            Some(settings.results_again_after),
        )
        .await?;
        eprintln!(
            "[batch] round {}: create {}, ended after {}, results {} in {}, peak RSS {}",
            round + 1,
            fmt_s(secs(run.create)),
            fmt_s(secs(run.to_ended)),
            fmt_mb(run.results_bytes as f64),
            fmt_s(secs(run.results)),
            fmt_rss(run.peak_rss_kb)
        );
        runs.push(run);
    }
    drop(body);

    let med = |f: &dyn Fn(&BatchRun) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    let create = med(&|r| secs(r.create));
    let parse = median(&floors.iter().map(|f| secs(f.parse)).collect::<Vec<_>>());
    let write = median(&floors.iter().map(|f| secs(f.write)).collect::<Vec<_>>());
    let floor = median(&floors.iter().map(|f| secs(f.total())).collect::<Vec<_>>());
    // The ratio of each round (the disk's mood moves the create and its floor together), then
    // the median of those.
    let create_ratio = median(
        &runs
            .iter()
            .zip(&floors)
            .map(|(r, f)| secs(r.create) / secs(f.total()))
            .collect::<Vec<_>>(),
    );
    let fsync = median(&floors.iter().map(|f| secs(f.fsync)).collect::<Vec<_>>());
    // The same without the fsync: what the create does itself (SQLite's `synchronous=NORMAL`
    // leaves syncing to the checkpoints, which run in the background).
    let unsynced_ratio = median(
        &runs
            .iter()
            .zip(&floors)
            .map(|(r, f)| secs(r.create) / secs(f.total() - f.fsync))
            .collect::<Vec<_>>(),
    );
    let create_rss = med(&|r| r.create_peak_rss_kb as f64) as u64;
    let to_ended = med(&|r| secs(r.to_ended));
    let results = med(&|r| secs(r.results));
    let results_bytes = med(&|r| r.results_bytes as f64);
    let file_read = med(&|r| secs(r.file_read));
    let peak_rss = med(&|r| r.peak_rss_kb as f64) as u64;
    let label = format!("{} requests / {}", thousands(n as u64), fmt_mb(mb));
    let runs_note = if settings.repeat > 1 {
        format!(" (median of {})", settings.repeat)
    } else {
        String::new()
    };

    let mut rows = vec![
        Row::new(
            "create",
            format!("create of {label}: time, rate{runs_note}"),
        )
        .satchel(format!("{}, {}", fmt_s(create), fmt_mbps(mb / create)))
        .baseline(format!(
            "floor {} = parse {} + write {} + fsync {} ({})",
            fmt_s(floor),
            fmt_s(parse),
            fmt_s(write - fsync),
            fmt_s(fsync),
            fmt_mbps(mb / floor)
        ))
        .ratio(format!(
            "{} the floor ({} the floor without its fsync)",
            fmt_x(create_ratio),
            fmt_x(unsynced_ratio)
        ))
        .target("≤ 1.5x the floor", create_ratio <= 1.5),
        Row::new("create", "server peak RSS while taking it (VmHWM)")
            .satchel(fmt_rss(create_rss))
            .baseline(format!("the body: {}", fmt_mb(mb)))
            .ratio(format!(
                "{} of the body",
                fmt_x(create_rss as f64 * 1024.0 / mb)
            ))
            .target("< 100 MB", create_rss < 100 * 1024),
        Row::new(
            "emulator",
            format!("create → `ended`, emulator at 0 latency{runs_note}"),
        )
        .satchel(format!(
            "{}, {}",
            fmt_s(to_ended),
            fmt_rate(n as f64 / to_ended)
        ))
        .target("≥ 50,000 requests/s", n as f64 / to_ended >= 50_000.0),
        results_row(&runs, results, results_bytes, file_read),
        Row::new("memory", "server peak RSS over create, run, results")
            .satchel(fmt_rss(peak_rss))
            .target("< 100 MB", peak_rss < 100 * 1024),
    ];

    // Growth: the same workload at 1/100 and 1/10 of the size, then the big run itself.
    let mut growth: Vec<BatchRun> = Vec::new();
    // (Each size as many times as the big batch, and the median of each figure.)
    for size in [n / 100, n / 10] {
        let size = size.max(10);
        let body = Bytes::from(workload::create_body(size, 1));
        let mut rounds = Vec::new();
        for round in 0..settings.repeat {
            let run = run_batch(
                settings,
                body.clone(),
                size,
                &format!("growth-{size}-{round}"),
                None,
            )
            .await?;
            eprintln!(
                "[growth] {size}: create {}, ended after {}, results {}, peak RSS {}",
                fmt_s(secs(run.create)),
                fmt_s(secs(run.to_ended)),
                fmt_s(secs(run.results)),
                fmt_rss(run.peak_rss_kb)
            );
            rounds.push(run);
        }
        let med = |f: &dyn Fn(&BatchRun) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
        if let Some(first) = rounds.first() {
            growth.push(BatchRun {
                create: Duration::from_secs_f64(med(&|r| secs(r.create))),
                to_ended: Duration::from_secs_f64(med(&|r| secs(r.to_ended))),
                results: Duration::from_secs_f64(med(&|r| secs(r.results))),
                peak_rss_kb: med(&|r| r.peak_rss_kb as f64) as u64,
                ..first.clone()
            });
        }
    }
    if let Some(big) = runs.first() {
        growth.push(BatchRun {
            create: Duration::from_secs_f64(create),
            to_ended: Duration::from_secs_f64(to_ended),
            results: Duration::from_secs_f64(results),
            peak_rss_kb: peak_rss,
            ..big.clone()
        });
    }
    let per_request_us = |d: Duration, r: &BatchRun| secs(d) * 1e6 / r.requests as f64;
    let smallest = growth.first().cloned();
    for run in &growth {
        let mut row = Row::new(
            "growth",
            format!(
                "{} requests ({}): create, to ended, results; µs a request; peak RSS",
                thousands(run.requests as u64),
                fmt_mb(run.body_bytes as f64)
            ),
        )
        .satchel(format!(
            "{} / {} / {}; {:.1} / {:.1} / {:.1} µs; {}",
            fmt_s(secs(run.create)),
            fmt_s(secs(run.to_ended)),
            fmt_s(secs(run.results)),
            per_request_us(run.create, run),
            per_request_us(run.to_ended, run),
            per_request_us(run.results, run),
            fmt_rss(run.peak_rss_kb)
        ));
        if let Some(small) = &smallest
            && small.requests != run.requests
        {
            row = row.ratio(format!(
                "per request vs {}: create {}, run {}; RSS {}",
                thousands(small.requests as u64),
                fmt_x(per_request_us(run.create, run) / per_request_us(small.create, small)),
                fmt_x(per_request_us(run.to_ended, run) / per_request_us(small.to_ended, small)),
                fmt_x(run.peak_rss_kb as f64 / small.peak_rss_kb as f64)
            ));
        }
        rows.push(row);
    }
    // Memory is bounded by configuration (read buffer, chunks in the channel, requests in
    // flight, settle groups), which a batch only fills past a few thousand requests: flat
    // means no growth from the middle size up.
    if let [small, middle, big] = growth.as_slice() {
        let ratio = big.peak_rss_kb as f64 / middle.peak_rss_kb as f64;
        rows.push(
            Row::new(
                "memory",
                format!(
                    "server peak RSS, {} / {} / {} requests",
                    thousands(small.requests as u64),
                    thousands(middle.requests as u64),
                    thousands(big.requests as u64)
                ),
            )
            .satchel(format!(
                "{} / {} / {}",
                fmt_rss(small.peak_rss_kb),
                fmt_rss(middle.peak_rss_kb),
                fmt_rss(big.peak_rss_kb)
            ))
            .ratio(format!(
                "{} from {} to {} requests ({} from {})",
                fmt_x(ratio),
                thousands(middle.requests as u64),
                thousands(big.requests as u64),
                fmt_x(big.peak_rss_kb as f64 / small.peak_rss_kb as f64),
                thousands(small.requests as u64)
            ))
            .target("flat (≤ 1.5x for 10x the requests)", ratio <= 1.5),
        );
    }
    Ok(rows)
}
