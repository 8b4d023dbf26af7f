//! Listing with many batches stored, and memory in the number of batches.
//!
//! One SQLite file, filled in steps (1,000, 10,000, 100,000 batches) over HTTP: tiny
//! one-request batches created concurrently, as many clients would, so the store holds real
//! batches with real requests and results (each runs on the emulator and ends). After each
//! step a server is started afresh on the file and the newest page (`limit=20`) is listed many
//! times in a row on one keep-alive connection: p50 and p99 of those calls show the cost,
//! which must not grow with the number stored, and that server's peak memory shows whether
//! anything is kept per stored batch. (The memory of the server that took the creates is
//! shown too: it reflects the concurrency it went through, threads and allocator arenas,
//! rather than what is stored.)

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use bytes::Bytes;
use futures::StreamExt;

use crate::api::{self, Api};
use crate::proc::Proc;
use crate::report::{Row, fmt_ms, fmt_rate, fmt_rss, fmt_s, fmt_x, percentile, thousands};
use crate::{Settings, batch};

pub const CREATE_CONCURRENCY: usize = 32;

struct Level {
    stored: usize,
    p50: f64,
    p99: f64,
    /// The fresh server after the list calls: now and peak.
    rss_kb: u64,
    peak_kb: u64,
    /// The server that took the creates, just before it was stopped.
    filling_rss_kb: u64,
}

/// A one-request create body.
fn tiny_body(i: usize) -> Bytes {
    Bytes::from(format!(
        r#"{{"requests":[{{"custom_id":"only","params":{{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{{"role":"user","content":"Is batch {i} listed?"}}]}}}}]}}"#
    ))
}

/// Creates one tiny batch for each of `numbers` over HTTP, [`CREATE_CONCURRENCY`] at a time,
/// as many clients would, and waits for the last created to end (they run on the emulator in
/// creation order, so the store then holds them all with their results). Returns the time
/// the creates took.
pub async fn fill(api: &Api, numbers: std::ops::Range<usize>) -> Result<Duration> {
    let started = Instant::now();
    let mut creates = futures::stream::iter(numbers)
        .map(|i| {
            let api = api.clone();
            async move { api.create(tiny_body(i)).await }
        })
        .buffer_unordered(CREATE_CONCURRENCY);
    let mut last = None;
    while let Some(created) = creates.next().await {
        last = Some(created?);
    }
    drop(creates);
    let took = started.elapsed();
    if let Some(last) = last {
        api.wait_ended(
            &api::id_of(&last)?,
            Duration::from_millis(20),
            Duration::from_secs(600),
        )
        .await?;
    }
    Ok(took)
}

/// p50 and p99 of `calls` lists of the newest page (`limit=20`) in a row on one keep-alive
/// connection, after a few unmeasured ones; every page must be full.
pub async fn list_latency(api: &Api, calls: usize, stored: usize) -> Result<(f64, f64)> {
    for _ in 0..20 {
        api.list(20).await?;
    }
    let mut samples = Vec::with_capacity(calls);
    for _ in 0..calls {
        let started = Instant::now();
        let page = api.list(20).await?;
        samples.push(secs_of(started.elapsed()));
        if page["data"].as_array().map_or(0, Vec::len) != 20.min(stored) {
            bail!("list returned a short page: {page}");
        }
    }
    Ok((percentile(&samples, 0.5), percentile(&samples, 0.99)))
}

pub async fn section(settings: &Settings) -> Result<Vec<Row>> {
    let db = settings.work.join("list.db");
    let mut server = Proc::serve(&settings.satchel, &db, &[]).await?;
    let mut api = Api::new(server.url(""))?;
    let mut stored = 0usize;
    let mut levels = Vec::new();
    let mut fill_time = Duration::ZERO;
    for &target in &settings.list_levels {
        let took = fill(&api, stored..target).await?;
        fill_time += took;
        eprintln!(
            "[list] {} batches stored ({} in {})",
            thousands(target as u64),
            fmt_rate((target - stored) as f64 / secs_of(took)),
            fmt_s(secs_of(took))
        );
        stored = target;
        server.check_alive()?;
        let filling_rss_kb = server.rss_kb()?;

        // Measure on a server started afresh on the same file, so its memory reflects the
        // batches stored, not the history of the process that took the creates.
        drop(server);
        server = Proc::serve(&settings.satchel, &db, &[]).await?;
        api = Api::new(server.url(""))?;
        let (p50, p99) = list_latency(&api, settings.list_calls, stored).await?;
        let level = Level {
            stored,
            p50,
            p99,
            rss_kb: server.rss_kb()?,
            peak_kb: server.peak_rss_kb()?,
            filling_rss_kb,
        };
        eprintln!(
            "[list] {} stored: p50 {}, p99 {}; fresh server RSS {} (peak {}); the filling server had {}",
            thousands(stored as u64),
            fmt_ms(level.p50),
            fmt_ms(level.p99),
            fmt_rss(level.rss_kb),
            fmt_rss(level.peak_kb),
            fmt_rss(filling_rss_kb)
        );
        levels.push(level);
    }
    drop(server);
    batch::remove_db(&db);

    let mut rows = vec![
        Row::new(
            "list",
            format!(
                "filling the store: {} one-request batches created over HTTP, {} at a time",
                thousands(stored as u64),
                CREATE_CONCURRENCY
            ),
        )
        .satchel(format!(
            "{}, {}",
            fmt_s(secs_of(fill_time)),
            fmt_rate(stored as f64 / secs_of(fill_time))
        )),
    ];
    let first = levels.first().map(|l| (l.p50, l.p99, l.peak_kb));
    for level in &levels {
        let mut row = Row::new(
            "list",
            format!(
                "list (limit 20) p50 / p99, {} batches stored; RSS of a server started on them (of the one that took the creates)",
                thousands(level.stored as u64)
            ),
        )
        .satchel(format!(
            "{} / {}; {} ({})",
            fmt_ms(level.p50),
            fmt_ms(level.p99),
            fmt_rss(level.peak_kb),
            fmt_rss(level.filling_rss_kb)
        ));
        if let Some((p50, p99, rss)) = first
            && level.stored != levels[0].stored
        {
            row = row.ratio(format!(
                "p50 {}, p99 {}, RSS {} vs {}",
                fmt_x(level.p50 / p50),
                fmt_x(level.p99 / p99),
                fmt_x(level.peak_kb as f64 / rss as f64),
                thousands(levels[0].stored as u64)
            ));
        }
        if level.stored == stored {
            // Flat: the typical call (p50) costs the same; p99 over a couple of thousand calls
            // is the machine's noise as much as Satchel's, so it is held to the 5 ms bound.
            let flat = first.is_none_or(|(p50, _, _)| level.p50 <= 1.5 * p50);
            row = row.target("p99 < 5 ms; p50 flat (≤ 1.5x)", level.p99 < 0.005 && flat);
        }
        rows.push(row);
    }
    if let (Some(small), Some(big)) = (levels.first(), levels.last())
        && levels.len() > 1
    {
        let ratio = big.peak_kb as f64 / small.peak_kb as f64;
        rows.push(
            Row::new(
                "memory",
                format!(
                    "peak RSS of a server serving {} vs {} stored batches",
                    thousands(big.stored as u64),
                    thousands(small.stored as u64)
                ),
            )
            .satchel(format!(
                "{} vs {}",
                fmt_rss(big.peak_kb),
                fmt_rss(small.peak_kb)
            ))
            .ratio(fmt_x(ratio))
            .target("flat (≤ 1.5x)", ratio <= 1.5),
        );
    }
    Ok(rows)
}

pub fn secs_of(d: Duration) -> f64 {
    d.as_secs_f64().max(1e-9)
}
