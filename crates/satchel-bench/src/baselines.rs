//! The baselines the upstream and real-model sections measure Satchel against: `wrk` posting
//! straight to the mock, and the asyncio script (`baselines/upstream_client.py`, aiohttp or
//! httpx) in a cached venv.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::Settings;

const SCRIPT: &str = include_str!("../baselines/upstream_client.py");

pub(crate) struct Wrk {
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
}

/// `wrk` with `connections` open, posting `params` to `url`.
pub(crate) fn run_wrk(
    settings: &Settings,
    url: &str,
    params: &str,
    connections: usize,
) -> Result<Wrk> {
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
        .args(["-t2", &format!("-c{connections}")])
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
pub(crate) fn python_env(settings: &Settings) -> Result<PathBuf> {
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
