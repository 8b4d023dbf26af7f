//! `real-model`'s second figure: prefix grouping on llama.cpp. A workload of long system
//! prompts shuffled across the batch runs through Satchel twice, with its requests claimed in
//! submission order (`--group-by-prefix off`) and grouped by prompt prefix (`on`); the figure
//! is requests per second, grouped against ungrouped, with the prompt tokens llama.cpp
//! reports as read from its cache (`cache_read_input_tokens`) and evaluated (`input_tokens`).
//!
//! llama.cpp keeps each slot's last prompt in its KV cache and gives a request the idle slot
//! whose cache matches it best; a request whose system prompt is already in a slot skips
//! evaluating it. Each run's prompts start with the run's number, so no run reads another's
//! cache.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::Settings;
use crate::api::{self, Api};
use crate::proc::Proc;
use crate::report::{Row, fmt_s, fmt_x};

const FIGURE: &str = "prefix grouping on llama.cpp (long system prompts shuffled): requests/s";

/// Words the system prompts are made of (seeded, so every run has the same prompts).
const WORDS: [&str; 24] = [
    "river", "stone", "lamp", "garden", "window", "letter", "harbor", "candle", "mountain",
    "bridge", "orchard", "compass", "lantern", "meadow", "anchor", "feather", "island", "thunder",
    "violin", "copper", "saddle", "glacier", "pepper", "willow",
];

/// The workload: `n` requests over `groups` system prompts of about `words` words each, in
/// a shuffled order; each prompt starts with `run`.
fn workload(run: usize, n: usize, groups: usize, words: usize, model: &str) -> Vec<Value> {
    let mut rng = fastrand::Rng::with_seed(7);
    let prompts: Vec<String> = (0..groups)
        .map(|g| {
            let body: Vec<&str> = (0..words)
                .map(|_| WORDS[rng.usize(..WORDS.len())])
                .collect();
            format!(
                "Run {run}. You are assistant number {g}. Keep these words in mind: {}.",
                body.join(" ")
            )
        })
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    order
        .into_iter()
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "params": {
                "model": model, "max_tokens": 8, "temperature": 0,
                "system": prompts[i % groups],
                "messages": [{"role": "user", "content": format!("Say one word (#{i}).")}],
            }})
        })
        .collect()
}

/// One run's figures.
struct Run {
    seconds: f64,
    requests: usize,
    cached: u64,
    evaluated: u64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds.max(1e-9)
    }
}

/// Measures the figure against llama.cpp at `llama_base` (with `slots` slots), the model
/// named `model`.
pub async fn figure(
    settings: &Settings,
    llama_base: &str,
    slots: usize,
    model: &str,
) -> Result<Row> {
    let (n, groups, words) = if settings.quick_real_model {
        (32, 8, 150)
    } else {
        (200, 20, 250)
    };
    let config = settings.work.join("prefix-satchel.toml");
    std::fs::write(
        &config,
        format!(
            "[[backends]]\nname = \"llama\"\nkind = \"anthropic\"\nbase_url = \"{llama_base}\"\nmax_concurrency = {slots}\ntimeout = \"600s\"\n"
        ),
    )?;
    // Alternating, so a change in the machine's load falls on both.
    let mut runs: [Option<Run>; 2] = [None, None];
    let rounds = if settings.quick_real_model { 1 } else { 2 };
    let mut run_no = 0;
    for round in 0..rounds {
        for (side, mode) in ["off", "on"].into_iter().enumerate() {
            run_no += 1;
            let requests = workload(run_no, n, groups, words, model);
            let run = through_satchel(settings, &config, mode, &requests, run_no).await?;
            eprintln!(
                "[real-model] prefix round {round}, grouping {mode}: {n} requests in {} = {:.2}/s; prompt tokens from cache {}, evaluated {}",
                fmt_s(run.seconds),
                run.rate(),
                run.cached,
                run.evaluated
            );
            let best = &mut runs[side];
            if best.as_ref().is_none_or(|b| run.rate() > b.rate()) {
                *best = Some(run);
            }
        }
    }
    let [Some(off), Some(on)] = runs else {
        bail!("no run measured");
    };
    let ratio = on.rate() / off.rate();
    Ok(Row::new(
        "real-model",
        format!("{FIGURE}, {n} requests, {groups} prompts of ~{words} words"),
    )
    .satchel(format!(
        "{:.2}/s grouped ({} prompt tokens from cache, {} evaluated)",
        on.rate(),
        on.cached,
        on.evaluated
    ))
    .baseline(format!(
        "{:.2}/s in submission order ({} from cache, {} evaluated)",
        off.rate(),
        off.cached,
        off.evaluated
    ))
    .ratio(fmt_x(ratio))
    .target("≥ 1.3x submission order", ratio >= 1.3))
}

async fn through_satchel(
    settings: &Settings,
    config: &std::path::Path,
    mode: &str,
    requests: &[Value],
    run_no: usize,
) -> Result<Run> {
    let server = Proc::serve(
        &settings.satchel,
        &settings.work.join(format!("prefix-{run_no}.db")),
        &[
            "--config".into(),
            config.display().to_string(),
            "--group-by-prefix".into(),
            mode.into(),
        ],
    )
    .await?;
    let api = Api::new(server.url(""))?;
    let body: bytes::Bytes = json!({ "requests": requests }).to_string().into();
    let started = Instant::now();
    let batch = api.create(body).await?;
    let id = api::id_of(&batch)?;
    let (_, ended) = api
        .wait_ended(&id, Duration::from_millis(50), Duration::from_secs(3_600))
        .await?;
    let seconds = ended.duration_since(started).as_secs_f64();
    let lines = api.results(&id).await?.chunks.concat();
    let (mut cached, mut evaluated, mut count) = (0, 0, 0);
    for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let line: Value = serde_json::from_slice(line)?;
        if line["result"]["type"] != "succeeded" {
            bail!("a request did not succeed: {line}");
        }
        let usage = &line["result"]["message"]["usage"];
        cached += usage["cache_read_input_tokens"].as_u64().unwrap_or(0);
        evaluated += usage["input_tokens"]
            .as_u64()
            .context("a reply without usage.input_tokens")?;
        count += 1;
    }
    if count != requests.len() {
        bail!("{count} result lines for {} requests", requests.len());
    }
    Ok(Run {
        seconds,
        requests: count,
        cached,
        evaluated,
    })
}
