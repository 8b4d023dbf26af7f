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

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use bytes::Bytes;

use crate::api::{self, Api};
use crate::proc::{self, Proc};
use crate::report::{Row, fmt_ms, fmt_rate, fmt_rss, fmt_s, fmt_x, percentile, secs, thousands};
use crate::{Settings, batch, workload};

const CONCURRENCY: usize = 256;
const SCRIPT: &str = include_str!("../baselines/upstream_client.py");

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
    let wrk = match run_wrk(settings, &messages_url, &typical) {
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

struct Wrk {
    rps: f64,
    p50: f64,
    p99: f64,
}

fn run_wrk(settings: &Settings, url: &str, params: &str) -> Result<Wrk> {
    let body = settings.work.join("wrk-body.json");
    std::fs::write(&body, params)?;
    let script = settings.work.join("wrk-post.lua");
    std::fs::write(
        &script,
        format!(
            "local f = assert(io.open([[{}]], \"rb\"))\nwrk.method = \"POST\"\nwrk.body = f:read(\"*a\")\nf:close()\n\
             wrk.headers[\"content-type\"] = \"application/json\"\nwrk.headers[\"x-api-key\"] = \"satchel-bench\"\n\
             wrk.headers[\"anthropic-version\"] = \"2023-06-01\"\n",
            body.display()
        ),
    )?;
    let output = match Command::new("wrk")
        .args(["-t2", &format!("-c{CONCURRENCY}")])
        .arg(format!("-d{}s", settings.wrk_seconds))
        .arg("--latency")
        .arg("-s")
        .arg(&script)
        .arg(url)
        .stdin(Stdio::null())
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("n/a (install wrk)")
        }
        Err(e) => return Err(e).context("running wrk"),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    parse_wrk(&text)
}

/// Reads requests/s and the 50th and 99th latency percentiles from `wrk --latency` output.
fn parse_wrk(text: &str) -> Result<Wrk> {
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx")) {
        bail!("the mock refused wrk's requests: {}", line.trim());
    }
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .context("no Requests/sec in wrk's output")?;
    let percentile = |p: &str| -> Result<f64> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .and_then(|v| wrk_duration(v.trim()))
            .with_context(|| format!("no {p} latency in wrk's output"))
    };
    Ok(Wrk {
        rps,
        p50: percentile("50%")?,
        p99: percentile("99%")?,
    })
}

/// `512.00us`, `1.20ms`, `2.00s` → seconds.
fn wrk_duration(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return None,
    };
    Some(number * scale)
}

/// The venv's python, with aiohttp and httpx installed (once, cached).
fn python_env(settings: &Settings) -> Result<PathBuf> {
    let dir = settings.cache.join("venv");
    let python = dir.join("bin").join("python");
    let ready = |python: &Path| {
        Command::new(python)
            .args(["-c", "import aiohttp, httpx"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if ready(&python) {
        return Ok(python);
    }
    eprintln!(
        "[upstream] creating the Python venv at {} (pip install aiohttp httpx)",
        dir.display()
    );
    std::fs::create_dir_all(&settings.cache)?;
    let status = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&dir)
        .status()
        .context("python3 -m venv")?;
    if !status.success() {
        bail!("python3 -m venv failed ({status})");
    }
    let status = Command::new(dir.join("bin").join("pip"))
        .args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "aiohttp>=3.9,<4",
            "httpx>=0.27,<1",
        ])
        .status()
        .context("pip install aiohttp httpx")?;
    if !status.success() || !ready(&python) {
        bail!("pip install aiohttp httpx failed ({status})");
    }
    Ok(python)
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

/// What a run of the asyncio script did.
pub(crate) struct ScriptReport {
    /// Its result lines.
    pub lines: Vec<u8>,
    /// The sending, timed by the script.
    pub seconds: f64,
    pub requests_per_second: f64,
}

/// Runs the asyncio script with `client` on the first `count` requests of `requests` (JSONL)
/// against `url`, `concurrency` in flight; fails unless it wrote one line per request.
pub(crate) fn run_script(
    settings: &Settings,
    python: &Path,
    client: &str,
    url: &str,
    concurrency: usize,
    requests: &Path,
    count: usize,
) -> Result<ScriptReport> {
    let script = settings.work.join("upstream_client.py");
    std::fs::write(&script, SCRIPT)?;
    let out = settings.work.join(format!("python-{client}.results.jsonl"));
    let _ = std::fs::remove_file(&out);
    let output = Command::new(python)
        .arg(&script)
        .args(["--client", client, "--url", url, "--concurrency"])
        .arg(concurrency.to_string())
        .arg("--requests-file")
        .arg(requests)
        .arg("--limit")
        .arg(count.to_string())
        .arg("--out")
        .arg(&out)
        .stdin(Stdio::null())
        .output()
        .context("running the python baseline")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "{client} baseline failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let report: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .last()
            .context("the python baseline printed nothing")?,
    )?;
    let lines = std::fs::read(&out)?;
    let _ = std::fs::remove_file(&out);
    let written = lines.iter().filter(|&&b| b == b'\n').count();
    if written != count {
        bail!("the {client} baseline wrote {written} lines for {count} requests");
    }
    Ok(ScriptReport {
        lines,
        seconds: report["seconds"]
            .as_f64()
            .context("no seconds in the python report")?,
        requests_per_second: report["requests_per_second"]
            .as_f64()
            .context("no requests_per_second in the python report")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let text = "Running 2s test @ http://127.0.0.1:1/v1/messages\n  Latency Distribution\n     50%  512.00us\n     75%    1.00ms\n     90%    2.00ms\n     99%    4.50ms\n  100 requests in 2.00s, 1.00MB read\nRequests/sec:  51234.50\nTransfer/sec:      5.00MB\n";
        let wrk = parse_wrk(text).unwrap();
        assert_eq!(wrk.rps, 51234.5);
        assert!((wrk.p50 - 0.000512).abs() < 1e-12);
        assert!((wrk.p99 - 0.0045).abs() < 1e-12);
        assert!(parse_wrk("Non-2xx or 3xx responses: 5\nRequests/sec: 1\n").is_err());
    }
}
