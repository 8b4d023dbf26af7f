//! How fast results come down through the client: downloads one ended batch's results twice,
//! as raw lines and as parsed lines, and prints MB/s for each.
//!
//! ```sh
//! export ANTHROPIC_BASE_URL=http://127.0.0.1:8080 ANTHROPIC_API_KEY=anything
//! cargo run --release -p satchel-client --example results_throughput -- msgbatch_…
//! ```

use std::time::Instant;

use futures::StreamExt;
use satchel_client::Client;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let id = std::env::args()
        .nth(1)
        .ok_or("usage: results_throughput BATCH_ID")?;
    let client = Client::from_env()?;
    let batches = client.messages().batches();
    let batch = batches.retrieve(&id).await?;

    let started = Instant::now();
    let mut lines = batches.results_lines_of(&batch).await?;
    let (mut count, mut bytes) = (0u64, 0u64);
    while let Some(line) = lines.next().await {
        bytes += line?.len() as u64 + 1;
        count += 1;
    }
    report("raw lines", count, bytes, started);

    let started = Instant::now();
    let mut results = batches.results_of(&batch).await?;
    let mut parsed = 0u64;
    while let Some(line) = results.next().await {
        line?;
        parsed += 1;
    }
    report("parsed lines", parsed, bytes, started);
    Ok(())
}

fn report(what: &str, count: u64, bytes: u64, started: Instant) {
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{what}: {count} lines, {:.1} MB in {secs:.2} s: {:.0} MB/s, {:.0} lines/s",
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        count as f64 / secs
    );
}
