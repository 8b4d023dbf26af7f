//! `satchel batch retry ID`: a new batch from an ended batch's requests that did not
//! succeed, printed like `get`, with the batch it re-runs.

use clap::{Args, ValueEnum};
use satchel_client::RetryOptions;

use super::{Ctx, Failure, output};

#[derive(Debug, Args)]
pub struct RetryArgs {
    /// The ended batch to re-run requests of (msgbatch_…).
    #[arg(value_name = "ID")]
    id: String,

    /// Which errored requests to re-run.
    #[arg(long, value_enum, default_value_t = Errored::Retryable)]
    errored: Errored,

    /// Leave the expired requests out (they are re-run by default).
    #[arg(long)]
    no_expired: bool,

    /// Re-run the canceled requests too.
    #[arg(long)]
    canceled: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Errored {
    /// api_error, overloaded_error, rate_limit_error and timeout_error.
    Retryable,
    /// Every errored request, whatever its error.
    All,
    /// No errored request.
    None,
}

pub async fn run(ctx: &Ctx, args: RetryArgs) -> Result<(), Failure> {
    let options = RetryOptions {
        errored: Some(
            match args.errored {
                Errored::Retryable => "retryable",
                Errored::All => "all",
                Errored::None => "none",
            }
            .to_owned(),
        ),
        expired: Some(!args.no_expired),
        canceled: Some(args.canceled),
    };
    let retried = ctx
        .client()?
        .messages()
        .batches()
        .retry(&args.id, &options)
        .await?;
    if ctx.json() {
        return output::json(&retried);
    }
    output::print_stdout(&format!(
        "{} re-runs {} request(s) of {}\n",
        retried.batch.id, retried.request_count, retried.source_batch_id
    ))?;
    output::batch(&retried.batch, false)
}
