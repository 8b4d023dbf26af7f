//! `satchel-bench`: Satchel measured side by side with a baseline from the same run.
//!
//! Satchel's promise is that a batch costs little more than the physical work it implies:
//! parsing the body once, writing it once, calling the model. Every figure here is therefore
//! printed beside the baseline that stands for that work (or for what a user would do
//! instead), measured in the same run on the same machine, and the ratio between the two is
//! what to read: absolute numbers move with the machine and its load, ratios much less.
//!
//! The bench generates its workloads itself (`workload`), starts the real `satchel` binary
//! (found next to this one) as a child process on a fresh SQLite file for each measurement
//! (`proc`), and talks to it over HTTP like any client (`api`). Sections:
//! - `batch`: create, run on the emulator and download a 100,000-request batch of ~250 MB,
//!   and the same at 1,000 and 10,000 requests (`batch`);
//! - `list`: list latency and memory with 1,000 / 10,000 / 100,000 batches stored (`list`);
//! - `upstream`: throughput and added latency through `satchel mock-upstream`, beside `wrk`
//!   and Python asyncio scripts with aiohttp and httpx (`upstream`);
//! - `real-model`: output tokens/s on llama.cpp's server with a small real model, through
//!   Satchel and straight from the asyncio script (`real_model`; skipped without the model).
//! - `postgres`: the same big batch on the PostgreSQL engine (a throwaway cluster), one node
//!   and two, beside a binary COPY floor and the SQLite engine in the same run, with the CPU
//!   time the nodes and the cluster spent (`cpu`); and list latency with 100,000 batches
//!   stored (`postgres`).
//!
//! `--quick` shrinks every size so the whole run takes seconds; CI runs it so the bench
//! never rots. Nothing here asserts timings: the table says which targets are met.

mod api;
mod baselines;
mod batch;
mod cpu;
mod list;
mod postgres;
mod prefix;
mod proc;
mod real_model;
mod report;
mod upstream;
mod workload;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, ValueEnum};

use report::Row;

/// Satchel's benchmark: the real server beside its baselines, in one table.
#[derive(Debug, Parser)]
#[command(name = "satchel-bench", version, about)]
struct Cli {
    /// What to measure.
    #[arg(value_enum, default_value = "all")]
    what: What,

    /// Small sizes everywhere (a few seconds): for CI, to keep the bench working.
    #[arg(long)]
    quick: bool,

    /// Also write the table (with the machine's description and the date) to this file.
    #[arg(long)]
    out: Option<PathBuf>,

    /// Runs of the big batch; the table shows the median (default 3, 1 with --quick).
    #[arg(long)]
    repeat: Option<usize>,

    /// The satchel binary (default: `satchel` next to this executable).
    #[arg(long)]
    satchel: Option<PathBuf>,

    /// Only write the big batch's create body (the workload of `batch`) to this file and exit:
    /// for profiling the server by hand (`curl --data-binary @FILE`).
    #[arg(long, value_name = "FILE")]
    write_body: Option<PathBuf>,

    /// Where databases and scratch files go (default: a temporary directory, removed after).
    /// Put it on the disk you want measured: the create floor fsyncs there.
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum What {
    /// Every section.
    All,
    /// Create, emulator run, results and growth with batch size.
    Batch,
    /// Through the mock upstream, with wrk and the Python baselines.
    Upstream,
    /// List latency and memory with many batches stored.
    List,
    /// Through Satchel and directly on llama.cpp with a small real model.
    RealModel,
    /// The PostgreSQL engine beside SQLite: create, emulator run (one node, two), results.
    Postgres,
}

/// Sizes and places, shared by the sections.
pub struct Settings {
    pub satchel: PathBuf,
    pub work: PathBuf,
    pub cache: PathBuf,
    pub repeat: usize,
    pub batch_requests: usize,
    pub upstream_requests: usize,
    pub python_requests: usize,
    /// httpx is far slower at 256 in flight; fewer requests keep its run short.
    pub httpx_requests: usize,
    pub probes: usize,
    pub wrk_seconds: u32,
    pub list_levels: Vec<usize>,
    pub list_calls: usize,
    /// Batches stored before listing on PostgreSQL.
    pub postgres_list_batches: usize,
    /// The real-model section's small run (a few dozen requests, one round).
    pub quick_real_model: bool,
    /// How long after the first results download the big batch's is made again.
    pub results_again_after: Duration,
}

impl Settings {
    fn new(cli: &Cli, satchel: PathBuf, work: PathBuf) -> Result<Self> {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
            .context("neither XDG_CACHE_HOME nor HOME is set")?
            .join("satchel-bench");
        let settings = if cli.quick {
            Self {
                satchel,
                work,
                cache,
                repeat: cli.repeat.unwrap_or(1),
                batch_requests: 2_000,
                upstream_requests: 2_000,
                python_requests: 500,
                httpx_requests: 100,
                probes: 50,
                wrk_seconds: 1,
                list_levels: vec![100, 1_000],
                list_calls: 100,
                postgres_list_batches: 300,
                quick_real_model: true,
                results_again_after: Duration::from_secs(1),
            }
        } else {
            Self {
                satchel,
                work,
                cache,
                repeat: cli.repeat.unwrap_or(3),
                batch_requests: 100_000,
                upstream_requests: 100_000,
                python_requests: 20_000,
                httpx_requests: 2_000,
                probes: 200,
                wrk_seconds: 10,
                list_levels: vec![1_000, 10_000, 100_000],
                list_calls: 2_000,
                postgres_list_batches: 100_000,
                quick_real_model: false,
                results_again_after: Duration::from_secs(10),
            }
        };
        Ok(settings)
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    if let Some(path) = &cli.write_body {
        let requests = if cli.quick { 2_000 } else { 100_000 };
        std::fs::write(path, workload::create_body(requests, 1))?;
        eprintln!(
            "wrote a create body of {requests} requests to {}",
            path.display()
        );
        return Ok(());
    }
    let satchel = proc::satchel_binary(cli.satchel.as_deref())?;
    let temp;
    let work = match &cli.work_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => {
            temp = tempfile::Builder::new()
                .prefix("satchel-bench-")
                .tempdir_in(std::env::temp_dir())?;
            temp.path().to_owned()
        }
    };
    let settings = Settings::new(&cli, satchel, work)?;
    eprintln!(
        "satchel-bench: {} with {}{}",
        format!("{:?}", cli.what).to_lowercase(),
        settings.satchel.display(),
        if cli.quick { " (quick)" } else { "" }
    );
    let description = machine_description(cli.quick, &format!("{:?}", cli.what).to_lowercase());
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    if matches!(cli.what, What::All | What::Batch) {
        rows.extend(batch::section(&settings).await.context("batch section")?);
    }
    if matches!(cli.what, What::All | What::Upstream) {
        rows.extend(
            upstream::section(&settings)
                .await
                .context("upstream section")?,
        );
    }
    if matches!(cli.what, What::All | What::List) {
        rows.extend(list::section(&settings).await.context("list section")?);
    }
    if matches!(cli.what, What::All | What::RealModel) {
        rows.extend(
            real_model::section(&settings)
                .await
                .context("real-model section")?,
        );
    }
    if matches!(cli.what, What::All | What::Postgres) {
        rows.extend(
            postgres::section(&settings)
                .await
                .context("postgres section")?,
        );
    }
    let table = report::markdown(&rows);
    let met = rows
        .iter()
        .filter(|r| r.verdict == report::Verdict::Met)
        .count();
    let missed = rows
        .iter()
        .filter(|r| r.verdict == report::Verdict::Missed)
        .count();
    let mut summary = format!(
        "Targets: {met} met, {missed} not met. Whole run: {}.",
        report::fmt_s(started.elapsed().as_secs_f64())
    );
    if cli.quick {
        summary.push_str(
            " Quick mode: the sizes are too small for the targets, which are set for the full \
             run (and a release build); here they only show that every figure still works.",
        );
    }
    println!("{table}\n{summary}");
    if let Some(out) = &cli.out {
        let text = format!("{description}\n\n{table}\n{summary}\n");
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}

/// The machine and the moment: cores, CPU model, memory, load, date.
fn machine_description(quick: bool, what: &str) -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0)
        });
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    format!(
        "Machine: {cores} cores ({model}), {memory} memory; load average before the run: {load}.\n\
         Date: {}. Command: `satchel-bench {what}{}`.",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
        if quick { " --quick" } else { "" }
    )
}
