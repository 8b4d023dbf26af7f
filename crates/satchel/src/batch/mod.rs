//! `satchel batch …`: the Message Batches API from the shell, through `satchel-client`.
//!
//! Works against a Satchel server or Anthropic's own API (same wire): create a batch from a
//! JSONL file (validated locally first), follow it with a progress bar, fetch its results,
//! list, get, cancel, delete. Tables for people by default, `--json` for scripts; errors are
//! one line with the server's message and request id; the exit status says what happened.
//!
//! One file per concern: `create` (reading and validating the requests file), `wait` (the
//! progress bar), `results` (the download), `manage` (list, get, cancel, delete), `output`
//! (tables and JSON).

mod create;
mod follow;
mod manage;
mod output;
mod results;
mod retry;
mod wait;

use std::fmt;

use clap::{Args, Subcommand};
use satchel_client::{Client, DEFAULT_BASE_URL};

/// Exit status, as documented in `satchel batch --help`.
const EXIT_API_ERROR: i32 = 1;
const EXIT_USAGE: i32 = 2;
const EXIT_REQUESTS_ERRORED: i32 = 3;

/// The exit status in brief, under each command's help.
const EXIT_CODES_SHORT: &str = "Exit status: 0 ok, 1 API or connection error, 2 usage or local validation error \
(nothing sent), 3 requests errored with --fail-on-error. More: satchel batch --help";

const EXIT_CODES_HELP: &str = "\
Exit status:
  0  success
  1  the API answered with an error, or could not be reached (the error line names the
     status, error type, message and request id); also a results download that broke off
  2  usage or local validation error (bad flags, no API key, an unreadable or invalid
     requests file): nothing was sent
  3  --fail-on-error was given and at least one request of the batch errored

Connection flags default to the official SDKs' variables: ANTHROPIC_BASE_URL,
ANTHROPIC_API_KEY, ANTHROPIC_AUTH_TOKEN. For a local Satchel server:
  export ANTHROPIC_BASE_URL=http://127.0.0.1:8080 ANTHROPIC_API_KEY=anything";

/// Talk to the Message Batches API (a Satchel server or Anthropic's) from the shell.
#[derive(Debug, Args)]
#[command(after_help = EXIT_CODES_HELP)]
pub struct BatchArgs {
    #[command(flatten)]
    connection: Connection,

    #[command(subcommand)]
    command: BatchCommand,
}

/// Flags every command takes, listed apart from the command's own.
#[derive(Debug, Args)]
#[command(next_help_heading = "Connection and output")]
struct Connection {
    /// Base URL of the API: a Satchel server, or Anthropic's [default: https://api.anthropic.com]
    #[arg(long, env = "ANTHROPIC_BASE_URL", global = true)]
    base_url: Option<String>,

    /// API key, sent as `x-api-key`.
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,

    /// Token sent as `Authorization: Bearer` (instead of, or besides, --api-key).
    #[arg(
        long,
        env = "ANTHROPIC_AUTH_TOKEN",
        hide_env_values = true,
        global = true
    )]
    auth_token: Option<String>,

    /// Print JSON instead of tables, for scripts.
    #[arg(long, global = true)]
    json: bool,

    /// Retries of a failed call (connection errors, 408, 409, 429, 5xx), as the SDKs do.
    #[arg(long, default_value_t = satchel_client::DEFAULT_MAX_RETRIES, global = true)]
    max_retries: u32,

    /// Time allowed for each call, and between two reads of a results download.
    #[arg(long, default_value_t = satchel_client::DEFAULT_TIMEOUT.into(), global = true)]
    timeout: humantime::Duration,
}

#[derive(Debug, Subcommand)]
enum BatchCommand {
    /// Create a batch from a JSONL file, one {"custom_id", "params"} object a line.
    ///
    /// The file is checked locally first (JSON, custom_id format and uniqueness, the API's
    /// limits), with line numbers in the errors: if anything is wrong, nothing is sent.
    #[command(after_help = EXIT_CODES_SHORT)]
    Create(create::CreateArgs),

    /// Follow a batch until it ends, with a live progress bar on a terminal.
    #[command(after_help = EXIT_CODES_SHORT)]
    Wait(wait::WaitArgs),

    /// List batches, newest first.
    #[command(after_help = EXIT_CODES_SHORT)]
    List(manage::ListArgs),

    /// Show one batch: status, counts, times, results URL.
    #[command(after_help = EXIT_CODES_SHORT)]
    Get(manage::IdArg),

    /// Cancel a batch: requests not yet started end `canceled`, running ones finish.
    #[command(after_help = EXIT_CODES_SHORT)]
    Cancel(manage::IdArg),

    /// Delete an ended batch and its results, for good.
    #[command(after_help = EXIT_CODES_SHORT)]
    Delete(manage::IdArg),

    /// Download the results of an ended batch (JSONL, one line per request, in order), or
    /// with --follow print them as they settle.
    #[command(after_help = EXIT_CODES_SHORT)]
    Results(results::ResultsArgs),

    /// Re-run what failed: a new batch from an ended batch's requests that errored for a
    /// passing reason (api_error, overloaded_error, rate_limit_error, timeout_error) or
    /// expired, with the same custom_ids and params (a Satchel extension).
    #[command(after_help = EXIT_CODES_SHORT)]
    Retry(retry::RetryArgs),
}

/// What every command gets: how to reach the API and how to print.
struct Ctx {
    connection: Connection,
}

impl Ctx {
    fn json(&self) -> bool {
        self.connection.json
    }

    /// The client, built on first need, so a requests file is validated (and refused)
    /// even without a key.
    fn client(&self) -> Result<Client, Failure> {
        let c = &self.connection;
        if c.api_key.as_deref().is_none_or(|k| k.trim().is_empty())
            && c.auth_token.as_deref().is_none_or(|k| k.trim().is_empty())
        {
            return Err(Failure::Usage(
                "no API key: pass --api-key or set ANTHROPIC_API_KEY (or --auth-token / \
                 ANTHROPIC_AUTH_TOKEN)"
                    .into(),
            ));
        }
        // An empty variable means unset, as in the SDKs.
        let base_url = c
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or(DEFAULT_BASE_URL);
        let mut builder = Client::builder()
            .base_url(base_url)
            .max_retries(c.max_retries)
            .timeout(c.timeout.into());
        if let Some(key) = c.api_key.as_deref().filter(|k| !k.trim().is_empty()) {
            builder = builder.api_key(key);
        }
        if let Some(token) = c.auth_token.as_deref().filter(|k| !k.trim().is_empty()) {
            builder = builder.auth_token(token);
        }
        builder.build().map_err(|e| Failure::Usage(e.to_string()))
    }
}

/// Why a command failed, and so its exit status.
#[derive(Debug)]
enum Failure {
    /// Bad flags, no key, an invalid requests file: nothing was sent.
    Usage(String),
    /// The API said no, or could not be reached.
    Api(satchel_client::Error),
    /// Anything else that went wrong after the API was reached (writing the results file…).
    Other(String),
    /// `--fail-on-error` and some requests errored.
    RequestsErrored { errored: u64, total: u64 },
}

impl Failure {
    fn exit_code(&self) -> i32 {
        match self {
            Self::Usage(_) => EXIT_USAGE,
            Self::Api(_) | Self::Other(_) => EXIT_API_ERROR,
            Self::RequestsErrored { .. } => EXIT_REQUESTS_ERRORED,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Usage(message) | Self::Other(message) => f.write_str(message),
            Self::Api(error) => write!(f, "{error}"),
            Self::RequestsErrored { errored, total } => {
                write!(f, "{errored} of {total} requests errored (--fail-on-error)")
            }
        }
    }
}

impl From<satchel_client::Error> for Failure {
    fn from(error: satchel_client::Error) -> Self {
        match error {
            // A client that cannot be built is a usage problem.
            satchel_client::Error::Config(message) => Self::Usage(message),
            other => Self::Api(other),
        }
    }
}

/// Runs a `satchel batch` command; on failure prints one line to stderr and exits with the
/// documented status (so it returns only on success).
pub fn run(args: BatchArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ctx = Ctx {
        connection: args.connection,
    };
    let outcome = runtime.block_on(async {
        match args.command {
            BatchCommand::Create(a) => create::run(&ctx, a).await,
            BatchCommand::Wait(a) => wait::run(&ctx, a).await,
            BatchCommand::List(a) => manage::list(&ctx, a).await,
            BatchCommand::Get(a) => manage::get(&ctx, a).await,
            BatchCommand::Cancel(a) => manage::cancel(&ctx, a).await,
            BatchCommand::Delete(a) => manage::delete(&ctx, a).await,
            BatchCommand::Results(a) => results::run(&ctx, a).await,
            BatchCommand::Retry(a) => retry::run(&ctx, a).await,
        }
    });
    // Nothing may outlive the command (a half-read results stream, pooled connections).
    drop(runtime);
    match outcome {
        Ok(()) => Ok(()),
        Err(failure) => {
            eprintln!("error: {failure}");
            std::process::exit(failure.exit_code());
        }
    }
}
