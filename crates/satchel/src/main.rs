//! `satchel`: the one binary. `satchel serve` runs the server; the command line is a thin
//! shell over `satchel-server`.

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
    Serve(serve::ServeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve::run(args),
    }
}
