//! Satchel's extensions of the API (not in the hosted API, so not in the SDKs): results
//! while a batch runs, followed as a stream, and re-running what failed.

use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use reqwest::Method;
use satchel_wire::{MessageBatch, ProcessingStatus};
use serde::{Deserialize, Serialize};

use crate::batches::Batches;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::results::LineDecoder;
use crate::transport::{Call, Transport};

/// The cursor before every line: where a reader starts.
pub const START: &str = "0";

/// How long one page request may wait on the server for new lines.
const FOLLOW_WAIT: Duration = Duration::from_secs(20);

/// How long a follower keeps trying to reach a server that went away (a restart, a deploy)
/// before it gives up with the last error.
pub const FOLLOW_RECONNECT_FOR: Duration = Duration::from_secs(600);

/// Lines settled after a cursor, as one call answered them.
#[derive(Debug, Clone)]
pub struct SettledPage {
    /// The raw result lines (without their `\n`), in settle order.
    pub lines: Vec<Bytes>,
    /// Where the next read goes on from: pass it as `after`.
    pub cursor: String,
    /// The batch has ended and no line follows this page.
    pub complete: bool,
    /// The batch's status when the page was read.
    pub status: ProcessingStatus,
}

/// Which requests of an ended batch [`Batches::retry`] re-runs.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetryOptions {
    /// `retryable` (default: `api_error`, `overloaded_error`, `rate_limit_error`,
    /// `timeout_error`), `all` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errored: Option<String>,
    /// Re-run the expired requests (default: yes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expired: Option<bool>,
    /// Re-run the canceled requests (default: no).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canceled: Option<bool>,
}

/// The answer to [`Batches::retry`]: the new batch and what it re-runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Retried {
    /// The batch it re-runs requests of.
    pub source_batch_id: String,
    /// How many requests the new batch holds.
    pub request_count: u64,
    /// The new batch.
    pub batch: MessageBatch,
}

impl Batches<'_> {
    /// The lines of batch `id` settled after `after` ([`START`] for all), at most `limit`
    /// (server default 1,000); if none has settled yet, the server waits up to `wait` for
    /// one. Works while the batch runs and after it ended, until its results are archived.
    pub async fn settled(
        &self,
        id: &str,
        after: &str,
        wait: Option<Duration>,
        limit: Option<u32>,
    ) -> Result<SettledPage> {
        settled_page(self.client, id, after, wait, limit).await
    }

    /// Follows batch `id`'s results as they settle, from `after` ([`START`] for all): a
    /// stream of pages that ends after the page that completes the batch. Each line comes
    /// once. Across a server restart the follower reconnects and goes on from its cursor
    /// (for up to [`FOLLOW_RECONNECT_FOR`]).
    pub fn follow(&self, id: &str, after: &str) -> impl Stream<Item = Result<SettledPage>> + use<> {
        let state = Follow {
            client: Arc::clone(self.client),
            id: id.to_owned(),
            cursor: Some(after.to_owned()),
        };
        futures::stream::try_unfold(state, |mut state| async move {
            let Some(cursor) = state.cursor.take() else {
                return Ok(None);
            };
            let page = state.next_page(&cursor).await?;
            if !page.complete {
                state.cursor = Some(page.cursor.clone());
            }
            Ok(Some((page, state)))
        })
    }

    /// Creates a new batch from ended batch `id`'s requests that did not succeed, as
    /// `options` selects (by default: errored for a passing reason, and expired), with the
    /// same `custom_id`s and params.
    pub async fn retry(&self, id: &str, options: &RetryOptions) -> Result<Retried> {
        let mut call = Call::new(
            "retry",
            Method::POST,
            self.client
                .url(&["v1", "messages", "batches", id, "retry"])?,
        );
        call.body = Some(Bytes::from(
            serde_json::to_vec(options).map_err(|e| Error::Protocol(e.to_string()))?,
        ));
        self.client.json(call).await
    }
}

struct Follow {
    client: Arc<Transport>,
    id: String,
    /// Where to go on from; `None` once complete.
    cursor: Option<String>,
}

impl Follow {
    /// The next page with at least one line, or the one that completes the batch; through
    /// a server that goes away for a while.
    async fn next_page(&self, cursor: &str) -> Result<SettledPage> {
        let mut unreachable_since = None;
        loop {
            match settled_page(&self.client, &self.id, cursor, Some(FOLLOW_WAIT), None).await {
                Ok(page) if page.lines.is_empty() && !page.complete => unreachable_since = None,
                Ok(page) => return Ok(page),
                Err(e) if is_passing(&e) => {
                    let since = *unreachable_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= FOLLOW_RECONNECT_FOR {
                        return Err(e);
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether an error may pass by itself: the server unreachable or overloaded for a while.
fn is_passing(e: &Error) -> bool {
    match e {
        Error::Connection { .. } | Error::Timeout { .. } => true,
        Error::Api(api) => matches!(api.status, 408 | 409 | 429) || api.status >= 500,
        _ => false,
    }
}

async fn settled_page(
    client: &Transport,
    id: &str,
    after: &str,
    wait: Option<Duration>,
    limit: Option<u32>,
) -> Result<SettledPage> {
    let mut url = client.url(&["v1", "messages", "batches", id, "results"])?;
    {
        let mut query = url.query_pairs_mut();
        query.append_pair("after", after);
        if let Some(wait) = wait {
            query.append_pair("wait", &wait.as_secs_f64().to_string());
        }
        if let Some(limit) = limit {
            query.append_pair("limit", &limit.to_string());
        }
    }
    let mut call = Call::new("results", Method::GET, url);
    call.accept = "application/x-jsonl";
    let response = client.streaming(call).await?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let missing = |name: &str| {
        Error::Protocol(format!(
            "the answer has no {name} header: is this a Satchel server?"
        ))
    };
    let cursor =
        header("satchel-results-cursor").ok_or_else(|| missing("satchel-results-cursor"))?;
    let complete = header("satchel-results-complete")
        .ok_or_else(|| missing("satchel-results-complete"))?
        == "true";
    let status = header("satchel-batch-status").ok_or_else(|| missing("satchel-batch-status"))?;
    let status: ProcessingStatus =
        serde_json::from_value(serde_json::Value::String(status.clone()))
            .map_err(|_| Error::Protocol(format!("unknown batch status {status:?}")))?;
    let body = response.bytes().await.map_err(Error::transport)?;
    let mut decoder = LineDecoder::default();
    decoder.push(&body);
    let mut lines = Vec::new();
    while let Some(line) = decoder.next_line() {
        lines.push(line);
    }
    if let Some(rest) = decoder.finish() {
        lines.push(rest);
    }
    Ok(SettledPage {
        lines,
        cursor,
        complete,
        status,
    })
}
