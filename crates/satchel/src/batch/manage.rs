//! `list`, `get`, `cancel`, `delete`: one call each, printed as a table or as JSON.

use clap::Args;
use satchel_client::{ListParams, MessageBatch};

use super::{Ctx, Failure, output};

/// The one argument of `get`, `cancel` and `delete`.
#[derive(Debug, Args)]
pub struct IdArg {
    /// Batch id (msgbatch_…).
    #[arg(value_name = "ID")]
    id: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Most batches to show (pages are fetched as needed).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..), conflicts_with = "all")]
    limit: u64,

    /// Show every batch.
    #[arg(long)]
    all: bool,

    /// Start after this batch (older ones).
    #[arg(long, value_name = "ID", conflicts_with = "before_id")]
    after_id: Option<String>,

    /// Start before this batch (newer ones).
    #[arg(long, value_name = "ID")]
    before_id: Option<String>,
}

pub async fn list(ctx: &Ctx, args: ListArgs) -> Result<(), Failure> {
    let client = ctx.client()?;
    let batches = client.messages().batches();
    let wanted = if args.all { u64::MAX } else { args.limit };
    // One more than shown, so a single page also tells whether there are more.
    let page_size = wanted.saturating_add(1).min(1000) as u32;
    let going_back = args.before_id.is_some();
    let mut params = ListParams::default().limit(page_size);
    if let Some(id) = args.after_id {
        params = params.after_id(id);
    }
    if let Some(id) = args.before_id {
        params = params.before_id(id);
    }
    // Paged here rather than through the client's item stream: going back (`before_id`),
    // each page holds the batches nearest the cursor but lists them newest first, and the
    // nearest are the ones to keep.
    let mut shown: Vec<MessageBatch> = Vec::new();
    let mut more = false;
    'pages: loop {
        let page = batches.list_page(&params).await?;
        let mut data = page.data;
        if going_back {
            data.reverse();
        }
        for batch in data {
            if shown.len() as u64 == wanted {
                more = true;
                break 'pages;
            }
            shown.push(batch);
        }
        let cursor = if going_back {
            page.first_id
        } else {
            page.last_id
        };
        match cursor {
            Some(id) if page.has_more => {
                let next = ListParams::default().limit(page_size);
                params = if going_back {
                    next.before_id(id)
                } else {
                    next.after_id(id)
                };
            }
            _ => break,
        }
    }
    if going_back {
        shown.reverse();
    }
    output::batches(&shown, ctx.json())?;
    if more && !ctx.json() {
        eprintln!("(more batches: use --limit N, --all, --after-id or --before-id)");
    }
    Ok(())
}

pub async fn get(ctx: &Ctx, args: IdArg) -> Result<(), Failure> {
    let batch = ctx
        .client()?
        .messages()
        .batches()
        .retrieve(&args.id)
        .await?;
    output::batch(&batch, ctx.json())
}

pub async fn cancel(ctx: &Ctx, args: IdArg) -> Result<(), Failure> {
    let batch = ctx.client()?.messages().batches().cancel(&args.id).await?;
    output::batch(&batch, ctx.json())
}

pub async fn delete(ctx: &Ctx, args: IdArg) -> Result<(), Failure> {
    let deleted = ctx.client()?.messages().batches().delete(&args.id).await?;
    if ctx.json() {
        output::json(&deleted)
    } else {
        output::print_stdout(&format!("deleted {}\n", deleted.id))
    }
}
