//! `satchel batch wait ID` (and `create --wait`): poll the batch until it ends, drawing a
//! progress bar with the five counts, the rate and an ETA while stderr is a terminal.
//!
//! The bar's position is the requests no longer processing, which the API moves live while
//! a batch runs; indicatif derives the rate and ETA from how fast it moves.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget};
use satchel_client::{Client, MessageBatch, ProcessingStatus, RequestCounts};

use super::{Ctx, Failure, output};

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Batch id (msgbatch_…).
    #[arg(value_name = "ID")]
    id: String,

    #[command(flatten)]
    follow: FollowArgs,
}

/// How to follow a batch; shared by `wait` and `create --wait`.
#[derive(Debug, Args)]
pub struct FollowArgs {
    /// Exit with status 3 if any request of the batch errored.
    #[arg(long)]
    fail_on_error: bool,

    /// Time between two looks at the batch.
    #[arg(long, default_value = "2s", value_parser = parse_interval)]
    interval: Duration,
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_millis(10) => Ok(d),
        Ok(_) => Err("must be at least 10ms".into()),
        Err(e) => Err(e.to_string()),
    }
}

pub async fn run(ctx: &Ctx, args: WaitArgs) -> Result<(), Failure> {
    let client = ctx.client()?;
    follow_and_report(ctx, &client, &args.id, &args.follow).await
}

/// Follows the batch to its end, prints it, and applies `--fail-on-error`.
pub async fn follow_and_report(
    ctx: &Ctx,
    client: &Client,
    id: &str,
    args: &FollowArgs,
) -> Result<(), Failure> {
    let batch = follow(client, id, args.interval).await?;
    output::batch(&batch, ctx.json())?;
    let counts = batch.request_counts;
    if args.fail_on_error && counts.errored > 0 {
        return Err(Failure::RequestsErrored {
            errored: counts.errored,
            total: counts.total(),
        });
    }
    Ok(())
}

async fn follow(client: &Client, id: &str, interval: Duration) -> Result<MessageBatch, Failure> {
    let batches = client.messages().batches();
    let mut batch = batches.retrieve(id).await?;
    let bar = progress_bar(&batch);
    loop {
        show(&bar, &batch);
        if batch.processing_status == ProcessingStatus::Ended {
            bar.finish();
            return Ok(batch);
        }
        // Tick the spinner and elapsed time between polls, so a slow batch looks alive.
        let mut waited = Duration::ZERO;
        while waited < interval {
            let step = (interval - waited).min(Duration::from_millis(200));
            tokio::time::sleep(step).await;
            waited += step;
            bar.tick();
        }
        batch = match batches.retrieve(id).await {
            Ok(batch) => batch,
            Err(e) => {
                bar.abandon();
                return Err(e.into());
            }
        };
    }
}

fn progress_bar(batch: &MessageBatch) -> ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(batch.request_counts.total()), target);
    let style = output::bar_style(
        "{spinner} {prefix} [{bar:30}] {pos}/{len} {msg}\n  {rate} · ETA {eta} · {elapsed} elapsed",
    );
    bar.set_style(style);
    bar.set_prefix(batch.id.clone());
    bar
}

fn show(bar: &ProgressBar, batch: &MessageBatch) {
    let counts = &batch.request_counts;
    bar.set_length(counts.total());
    bar.set_position(counts.total() - counts.processing);
    bar.set_message(message(batch.processing_status, counts));
}

fn message(status: ProcessingStatus, c: &RequestCounts) -> String {
    format!(
        "{} · succeeded {} · errored {} · canceled {} · expired {} · processing {}",
        status.as_str(),
        c.succeeded,
        c.errored,
        c.canceled,
        c.expired,
        c.processing
    )
}
