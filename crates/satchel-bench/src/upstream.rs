//! Through a model over HTTP: Satchel in front of `satchel mock-upstream` (an Anthropic-style
//! `POST /v1/messages` answering at once), beside what else could drive the same mock.
//!
//! - **mock capacity**: `wrk` (2 threads, 256 connections) posting a request of the
//!   workload's average size straight to the mock: the most any client can get out of it on
//!   this machine.
//! - **Satchel**: a batch of the workload created on a server whose one backend is the mock
//!   (`max_concurrency = 256`); throughput is requests over the time from the create response
//!   to `ended`, so it includes claiming, calling, recording every result durably and the
//!   batch's bookkeeping.
//! - **the Python baselines**: `baselines/upstream_client.py`, asyncio with a semaphore of
//!   256, one POST per request, each response appended to a JSONL file: what a user writes
//!   instead, with aiohttp (the fast choice) and httpx (what the official SDK uses). It runs in
//!   a venv under `~/.cache/satchel-bench`, created and filled (`pip install aiohttp httpx`)
//!   on first use.
//! - **added latency**: one-request batches sent one after another to the idle server. A
//!   request's own path in Satchel is from the moment its batch exists (the create response,
//!   read on this machine's clock) to the batch's `ended_at` (the server's clock, the same
//!   clock, µs): claim, call, record. Minus a direct round trip to the mock with the same
//!   request, that is what Satchel adds (p50 and p99 of each, over the same number of
//!   samples; the p99 difference is only indicative, the two tails are not paired). The
//!   whole one-request batch, `ended_at − created_at`, creation included, is shown too.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};
use bytes::Bytes;

use crate::api::{self, Api};
use crate::baselines::{python_env, run_script, run_wrk};
use crate::proc::{self, Proc};
use crate::report::{Row, fmt_ms, fmt_rate, fmt_rss, fmt_s, fmt_x, percentile, secs, thousands};
use crate::{Settings, batch, workload};

const CONCURRENCY: usize = 256;

pub async fn section(settings: &Settings) -> Result<Vec<Row>> {
    let figures = [
        "mock upstream capacity (wrk, 256 connections)",
        "through the mock upstream, 0 latency, concurrency 256",
        "added latency per request (p50 / p99)",
    ];
    if !proc::has_mock_upstream(&settings.satchel) {
        eprintln!("[upstream] `satchel mock-upstream` is not available: skipped");
        return Ok(figures
            .iter()
            .map(|f| Row::unavailable("upstream", *f, "n/a (mock upstream not available)"))
            .collect());
    }
    let mock = Proc::mock_upstream(&settings.satchel, settings.work.join("mock.log")).await?;
    let messages_url = mock.url("/v1/messages");
    let typical = workload::typical_params(1);

    // The mock's own capacity.
    let wrk = match run_wrk(settings, &messages_url, &typical, CONCURRENCY) {
        Ok(wrk) => {
            eprintln!(
                "[upstream] wrk: {}, p50 {}, p99 {}",
                fmt_rate(wrk.rps),
                fmt_ms(wrk.p50),
                fmt_ms(wrk.p99)
            );
            Some(wrk)
        }
        Err(e) => {
            eprintln!("[upstream] wrk: {e:#}");
            None
        }
    };

    // Satchel in front of the mock.
    let n = settings.upstream_requests;
    let config = settings.work.join("upstream.toml");
    std::fs::write(
        &config,
        format!(
            "[[backends]]\nname = \"mock\"\nkind = \"anthropic\"\nbase_url = \"http://{}\"\nmodels = [\"*\"]\nmax_concurrency = {CONCURRENCY}\n",
            mock.addr
        ),
    )?;
    let db = settings.work.join("upstream.db");
    let server = Proc::serve(
        &settings.satchel,
        &db,
        &["--config".into(), config.display().to_string()],
    )
    .await?;
    let api = Api::new(server.url(""))?;
    eprintln!("[upstream] Satchel: a batch of {}", thousands(n as u64));
    let body = Bytes::from(workload::create_body(n, 1));
    let batch = api.create(body).await?;
    let created = Instant::now();
    let id = api::id_of(&batch)?;
    let (ended, seen) = api
        .wait_ended(&id, Duration::from_millis(5), Duration::from_secs(3_600))
        .await?;
    let through = secs(seen - created);
    let succeeded = api::count_of(&ended, "succeeded");
    if succeeded != n as u64 {
        bail!(
            "through the mock, {succeeded} of {n} requests succeeded: {ended}\n{}",
            server.log_text()
        );
    }
    let satchel_rps = n as f64 / through;
    let peak_rss = server.peak_rss_kb()?;
    eprintln!(
        "[upstream] Satchel: {} in {}, peak RSS {}",
        fmt_rate(satchel_rps),
        fmt_s(through),
        fmt_rss(peak_rss)
    );

    // Added latency, idle.
    let probes = probe_latency(settings, &api, &messages_url, &typical).await?;
    eprintln!(
        "[upstream] create response → ended p50 {} p99 {}; one-request batch p50 {} p99 {}; direct p50 {} p99 {}",
        fmt_ms(probes.request_p50),
        fmt_ms(probes.request_p99),
        fmt_ms(probes.batch_p50),
        fmt_ms(probes.batch_p99),
        fmt_ms(probes.direct_p50),
        fmt_ms(probes.direct_p99)
    );
    drop(server);
    batch::remove_db(&db);

    // The Python baselines.
    let python = match python_env(settings) {
        Ok(python) => Some(python),
        Err(e) => {
            eprintln!("[upstream] python baselines unavailable: {e:#}");
            None
        }
    };
    let mut baselines = Vec::new();
    for (client, count) in [
        ("aiohttp", settings.python_requests),
        ("httpx", settings.httpx_requests),
    ] {
        let outcome = match &python {
            Some(python) => run_python(settings, python, client, &messages_url, count),
            None => Err(anyhow::anyhow!("no python venv")),
        };
        match &outcome {
            Ok(rps) => eprintln!("[upstream] python {client}: {}", fmt_rate(*rps)),
            Err(e) => eprintln!("[upstream] python {client}: {e:#}"),
        }
        baselines.push((client, count, outcome.ok()));
    }
    drop(mock);

    let mut rows = Vec::new();
    let mut capacity = Row::new("upstream", figures[0]);
    capacity = match &wrk {
        Some(w) => capacity.baseline(format!(
            "{}; latency p50 {} / p99 {}",
            fmt_rate(w.rps),
            fmt_ms(w.p50),
            fmt_ms(w.p99)
        )),
        None => capacity.baseline("n/a (install wrk)"),
    };
    rows.push(capacity);
    let mut through_row = Row::new(
        "upstream",
        format!(
            "{}: {} requests, create response → `ended`",
            figures[1],
            thousands(n as u64)
        ),
    )
    .satchel(format!(
        "{}, {} (peak RSS {})",
        fmt_s(through),
        fmt_rate(satchel_rps),
        fmt_rss(peak_rss)
    ))
    .target("≥ 10,000 requests/s", satchel_rps >= 10_000.0);
    if let Some(w) = &wrk {
        through_row = through_row
            .baseline(format!("mock capacity (wrk) {}", fmt_rate(w.rps)))
            .ratio(format!(
                "{} of the mock's capacity",
                fmt_x(satchel_rps / w.rps)
            ));
    }
    rows.push(through_row);
    for (client, count, rps) in baselines {
        let mut row = Row::new(
            "upstream",
            format!("Satchel vs a Python asyncio script ({client}, semaphore 256, JSONL out)"),
        )
        .satchel(fmt_rate(satchel_rps));
        row = match rps {
            Some(rps) => {
                let row = row
                    .baseline(format!(
                        "{} ({} requests)",
                        fmt_rate(rps),
                        thousands(count as u64)
                    ))
                    .ratio(format!("{} the script", fmt_x(satchel_rps / rps)));
                if client == "aiohttp" {
                    row.target("≥ 3x aiohttp", satchel_rps >= 3.0 * rps)
                } else {
                    row
                }
            }
            None => row.baseline("n/a (python venv: see the log)"),
        };
        rows.push(row);
    }
    let added_p50 = probes.request_p50 - probes.direct_p50;
    rows.push(
        Row::new(
            "upstream",
            format!(
                "{}: one-request batches on the idle server, create response → `ended_at`, \
                 minus a direct call ({} samples)",
                figures[2], settings.probes
            ),
        )
        .satchel(format!(
            "{} / {} (create response → ended {} / {})",
            fmt_ms(added_p50.max(0.0)),
            fmt_ms((probes.request_p99 - probes.direct_p99).max(0.0)),
            fmt_ms(probes.request_p50),
            fmt_ms(probes.request_p99)
        ))
        .baseline(format!(
            "direct call to the mock {} / {}",
            fmt_ms(probes.direct_p50),
            fmt_ms(probes.direct_p99)
        ))
        .target("added p50 < 1 ms", added_p50 < 0.001),
    );
    rows.push(
        Row::new(
            "upstream",
            "one-request batch, whole: `ended_at − created_at` (creation included), p50 / p99",
        )
        .satchel(format!(
            "{} / {}",
            fmt_ms(probes.batch_p50),
            fmt_ms(probes.batch_p99)
        ))
        .baseline(format!(
            "direct call to the mock {} / {}",
            fmt_ms(probes.direct_p50),
            fmt_ms(probes.direct_p99)
        )),
    );
    Ok(rows)
}

struct Probes {
    /// From the create response to `ended_at`: the request's own path (claim, call, record).
    request_p50: f64,
    request_p99: f64,
    /// `ended_at − created_at`: the whole one-request batch, its creation included.
    batch_p50: f64,
    batch_p99: f64,
    direct_p50: f64,
    direct_p99: f64,
}

async fn probe_latency(
    settings: &Settings,
    api: &Api,
    messages_url: &str,
    params: &str,
) -> Result<Probes> {
    let body = Bytes::from(format!(
        r#"{{"requests":[{{"custom_id":"probe","params":{params}}}]}}"#
    ));
    let mut in_batch = Vec::new();
    let mut after_create = Vec::new();
    for _ in 0..settings.probes {
        let batch = api.create(body.clone()).await?;
        let created = SystemTime::now();
        let (ended, _) = api
            .wait_ended(
                &api::id_of(&batch)?,
                Duration::from_millis(1),
                Duration::from_secs(60),
            )
            .await?;
        let ended_at = api::time_of(&ended, "ended_at")?;
        let took = ended_at
            .duration_since(api::time_of(&ended, "created_at")?)
            .unwrap_or_default();
        in_batch.push(secs(took));
        // Same machine, same clock: from the create response to the server's `ended_at`.
        after_create.push(secs(ended_at.duration_since(created).unwrap_or_default()));
    }
    let http = reqwest::Client::new();
    let params = Bytes::from(params.to_owned());
    let mut direct = Vec::new();
    for _ in 0..settings.probes {
        let started = Instant::now();
        let response = http
            .post(messages_url)
            .header("content-type", "application/json")
            .header("x-api-key", "satchel-bench")
            .header("anthropic-version", "2023-06-01")
            .body(params.clone())
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        direct.push(secs(started.elapsed()));
        if !status.is_success() {
            bail!("the mock answered {status}");
        }
    }
    Ok(Probes {
        request_p50: percentile(&after_create, 0.5),
        request_p99: percentile(&after_create, 0.99),
        batch_p50: percentile(&in_batch, 0.5),
        batch_p99: percentile(&in_batch, 0.99),
        direct_p50: percentile(&direct, 0.5),
        direct_p99: percentile(&direct, 0.99),
    })
}

/// Runs the script with `client` on `count` requests; returns its requests/s.
fn run_python(
    settings: &Settings,
    python: &Path,
    client: &str,
    url: &str,
    count: usize,
) -> Result<f64> {
    let requests = settings.work.join(format!("python-requests-{count}.jsonl"));
    if !requests.exists() {
        std::fs::write(&requests, workload::requests_jsonl(count, 1))?;
    }
    let report = run_script(settings, python, client, url, CONCURRENCY, &requests, count)?;
    Ok(report.requests_per_second)
}
