//! `satchel`: the one binary. `satchel serve` runs the server, `satchel batch …` is the
//! client, `satchel mock-upstream` a fake model server; each a thin shell over a library.

mod batch;
mod mock;
mod serve;

use clap::{Parser, Subcommand};

/// Satchel: a self-hosted Message Batches server, wire-compatible with Anthropic's API.
#[derive(Parser)]
#[command(name = "satchel", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Message Batches API (embedded SQLite store, emulator backend).
    Serve(Box<serve::ServeArgs>),
    /// Create, follow, list and fetch batches from the shell (Satchel or Anthropic's API).
    Batch(batch::BatchArgs),
    /// Run a fake model server (Anthropic and OpenAI formats) with latency and fault
    /// injection, for tests and benchmarks.
    MockUpstream(mock::MockArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Batch(args) => batch::run(args),
        Command::MockUpstream(args) => mock::run(args),
    }
}
