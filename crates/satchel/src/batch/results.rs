//! `satchel batch results ID [-o FILE]`: stream the results file to FILE or stdout as it
//! arrives (memory stays flat whatever its size), with a progress bar on a terminal.
//!
//! Lines are written as the server sent them (a `\r\n` becomes `\n`), not re-serialised:
//! what lands in the file is the API's JSONL. A line the client flags (a blank one) is
//! reported on stderr and makes the exit status 1; a download that breaks off says the file
//! is incomplete.

use std::fs::File;
use std::io::{BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget};
use satchel_client::Error;

use super::{Ctx, Failure, output};

#[derive(Debug, Args)]
pub struct ResultsArgs {
    /// Batch id (msgbatch_…).
    #[arg(value_name = "ID")]
    id: String,

    /// Write to this file (replaced if it exists) instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    output: Option<PathBuf>,

    /// Print lines as they settle, while the batch runs, until it ends (a Satchel
    /// extension; lines come in settle order, each once, through server restarts).
    #[arg(long)]
    follow: bool,

    /// With --follow: start after this cursor (printed when a follow stops early) rather
    /// than from the first line.
    #[arg(long, value_name = "CURSOR", requires = "follow")]
    after: Option<String>,
}

pub async fn run(ctx: &Ctx, args: ResultsArgs) -> Result<(), Failure> {
    if args.follow {
        return follow(ctx, args).await;
    }
    let client = ctx.client()?;
    let batches = client.messages().batches();
    let batch = batches.retrieve(&args.id).await?;
    let mut lines = batches.results_lines_of(&batch).await?;

    let (sink, target) = open_output(args.output.as_ref())?;
    let mut out = BufWriter::with_capacity(1 << 20, sink);
    let write_failed = |e: std::io::Error| Failure::Other(format!("cannot write to {target}: {e}"));

    // A bar only where it does not mix with the results themselves.
    let show_bar = std::io::stderr().is_terminal()
        && (args.output.is_some() || !std::io::stdout().is_terminal());
    let bar = progress_bar(batch.request_counts.total(), show_bar);

    let mut bytes: u64 = 0;
    let mut bad_lines = 0u64;
    let mut written = 0u64;
    while let Some(item) = lines.next().await {
        match item {
            Ok(line) => {
                let result = out.write_all(&line).and_then(|()| out.write_all(b"\n"));
                match result {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => {
                        bar.abandon();
                        return Err(write_failed(e));
                    }
                }
                written += 1;
                bytes += line.len() as u64 + 1;
                if written.is_multiple_of(256) {
                    bar.set_position(written);
                    bar.set_message(size(bytes));
                }
            }
            Err(Error::ResultLine { line, reason }) => {
                bad_lines += 1;
                bar.suspend(|| eprintln!("warning: results line {line}: {reason}"));
            }
            Err(e) => {
                bar.abandon();
                // Keep what arrived (it may be worth something) but say it is not all.
                let _ = out.flush();
                return Err(Failure::Other(format!(
                    "{e}; the download broke off after {written} lines: {target} is incomplete"
                )));
            }
        }
    }
    match out.flush() {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(write_failed(e)),
    }
    bar.set_position(written);
    bar.set_message(size(bytes));
    bar.finish();
    if args.output.is_some() {
        eprintln!("wrote {written} results ({}) to {target}", size(bytes));
    }
    if bad_lines > 0 {
        return Err(Failure::Other(format!(
            "{bad_lines} malformed line(s) in the results (reported above)"
        )));
    }
    Ok(())
}

/// Where lines go: FILE (replaced if it exists) or stdout, and its name for messages.
fn open_output(output: Option<&PathBuf>) -> Result<(Box<dyn Write>, String), Failure> {
    Ok(match output {
        Some(path) => {
            (
                Box::new(File::create(path).map_err(|e| {
                    Failure::Other(format!("cannot create {}: {e}", path.display()))
                })?),
                path.display().to_string(),
            )
        }
        None => (Box::new(std::io::stdout().lock()), "stdout".into()),
    })
}

/// `--follow`: lines as they settle, to FILE or stdout.
async fn follow(ctx: &Ctx, args: ResultsArgs) -> Result<(), Failure> {
    let (mut sink, target) = open_output(args.output.as_ref())?;
    let after = args.after.as_deref().unwrap_or(satchel_client::START);
    let (written, bytes, _) =
        super::follow::follow(ctx, &args.id, after, &mut sink, &target).await?;
    if args.output.is_some() {
        eprintln!("wrote {written} results ({}) to {target}", size(bytes));
    }
    Ok(())
}

fn size(bytes: u64) -> String {
    if bytes < 1_000_000 {
        format!("{:.1} KB", bytes as f64 / 1e3)
    } else {
        format!("{:.1} MB", bytes as f64 / 1e6)
    }
}

fn progress_bar(total: u64, visible: bool) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(total), target);
    let style =
        output::bar_style("{spinner} [{bar:30}] {pos}/{len} results · {msg} · {rate} · ETA {eta}");
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
