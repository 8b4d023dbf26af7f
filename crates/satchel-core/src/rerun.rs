//! Re-running what failed: a new batch made from an ended batch's requests that did not
//! succeed (by default those errored for a reason worth retrying, and the expired), with the
//! same `custom_id`s and the params as stored. An extension of the hosted API.
//!
//! The new batch is created through the same all-or-nothing ingest as any other (and the same
//! per-workspace queue limit), fed from the store instead of a request body, so it is as
//! durable as one the client uploaded.

use std::collections::HashSet;

use satchel_wire::{ErrorType, ProcessingStatus};
use serde::Deserialize;
use tokio::sync::mpsc;

use crate::forward::UpstreamHeaders;
use crate::lifecycle::{BatchError, Batches};
use crate::model::{BatchRecord, IngestChunk, NewRequest, SettleCursor};
use crate::partial::MAX_PAGE_LINES;
use crate::store::StoreError;

/// Which of a batch's `errored` requests a re-run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErroredSelection {
    /// Those whose error may pass by itself ([`RETRYABLE`]).
    #[default]
    Retryable,
    /// Every errored request, whatever its error.
    All,
    /// None of them.
    None,
}

/// The error types a re-run takes by default: the server's or the upstream's trouble, not
/// the request's own fault.
pub const RETRYABLE: [ErrorType; 4] = [
    ErrorType::ApiError,
    ErrorType::OverloadedError,
    ErrorType::RateLimitError,
    ErrorType::TimeoutError,
];

/// Which requests of an ended batch a re-run takes, by how they ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetrySelection {
    pub errored: ErroredSelection,
    pub expired: bool,
    pub canceled: bool,
}

impl Default for RetrySelection {
    fn default() -> Self {
        Self {
            errored: ErroredSelection::Retryable,
            expired: true,
            canceled: false,
        }
    }
}

/// The parts of a result line a selection looks at.
#[derive(Deserialize)]
struct Line {
    custom_id: String,
    result: Outcome,
}

#[derive(Deserialize)]
struct Outcome {
    #[serde(rename = "type")]
    kind: String,
    error: Option<ErrorEnvelope>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "type")]
    kind: String,
}

impl RetrySelection {
    /// The `custom_id` of the request behind `line` if this selection takes it.
    pub fn take(&self, line: &[u8]) -> Option<String> {
        let line: Line = serde_json::from_slice(line).ok()?;
        let taken = match line.result.kind.as_str() {
            "errored" => match self.errored {
                ErroredSelection::All => true,
                ErroredSelection::None => false,
                ErroredSelection::Retryable => line.result.error.is_some_and(|e| {
                    RETRYABLE
                        .iter()
                        .any(|t| t.as_str() == e.error.kind.as_str())
                }),
            },
            "expired" => self.expired,
            "canceled" => self.canceled,
            _ => false,
        };
        taken.then_some(line.custom_id)
    }

    /// What this selection takes, in words, for the error when nothing qualifies.
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        match self.errored {
            ErroredSelection::Retryable => parts.push(format!(
                "errored with {}",
                RETRYABLE.map(|t| t.as_str()).join(", ")
            )),
            ErroredSelection::All => parts.push("errored".to_owned()),
            ErroredSelection::None => {}
        }
        if self.expired {
            parts.push("expired".to_owned());
        }
        if self.canceled {
            parts.push("canceled".to_owned());
        }
        if parts.is_empty() {
            "the selection takes nothing.".to_owned()
        } else {
            format!("none ended {}.", parts.join(" or "))
        }
    }
}

/// A re-run that was created: the new batch, the one it re-runs, how many requests it took.
#[derive(Debug)]
pub struct Rerun {
    pub batch: BatchRecord,
    pub source: String,
    pub requests: usize,
}

/// How many stored requests are read at a time while the new batch is fed.
const FEED_PAGE: usize = 1_000;

impl Batches {
    /// Creates a batch from the requests of ended batch `id` that `selection` takes, sending
    /// `headers` upstream with them as a create call's would be.
    pub async fn retry(
        &self,
        workspace: &str,
        id: &str,
        selection: RetrySelection,
        headers: &UpstreamHeaders,
    ) -> Result<Rerun, BatchError> {
        let source = self.get(workspace, id).await?;
        if source.status != ProcessingStatus::Ended {
            return Err(BatchError::RetryNotEnded {
                id: id.to_owned(),
                status: source.status.as_str(),
            });
        }
        if source.archived_at.is_some() {
            return Err(BatchError::NoResults(id.to_owned()));
        }
        let chosen = self.choose(workspace, id, &selection).await?;
        if chosen.is_empty() {
            return Err(BatchError::NothingToRetry(
                id.to_owned(),
                selection.describe(),
            ));
        }
        let requests = chosen.len();
        let batch = self.new_batch(workspace, headers);
        let (sink, chunks) = mpsc::channel(4);
        let feed = self.feed(workspace, id, chosen, sink);
        let (fed, stored) = tokio::join!(feed, self.store_batch(workspace, batch, chunks));
        let stored = stored?;
        fed?;
        let batch = stored?;
        self.work_arrived.notify_one();
        Ok(Rerun {
            batch,
            source: id.to_owned(),
            requests,
        })
    }

    /// The `custom_id`s of the requests `selection` takes, read from the batch's results.
    async fn choose(
        &self,
        workspace: &str,
        id: &str,
        selection: &RetrySelection,
    ) -> Result<HashSet<String>, BatchError> {
        let mut chosen = HashSet::new();
        let mut after = SettleCursor::START;
        loop {
            let page = self
                .store
                .settled_since(workspace, id, after, MAX_PAGE_LINES, usize::MAX)
                .await?
                .ok_or_else(|| BatchError::NotFound(id.to_owned()))?;
            chosen.extend(
                page.lines
                    .split(|b| *b == b'\n')
                    .filter(|l| !l.is_empty())
                    .filter_map(|l| selection.take(l)),
            );
            if page.complete || page.count == 0 {
                return Ok(chosen);
            }
            after = page.next;
        }
    }

    /// Sends the chosen requests, as stored, to the ingest of the new batch, then commits it.
    /// (Dropping `sink` without the commit discards what was sent.)
    async fn feed(
        &self,
        workspace: &str,
        id: &str,
        mut chosen: HashSet<String>,
        sink: mpsc::Sender<IngestChunk>,
    ) -> Result<(), BatchError> {
        let mut from = 0;
        while !chosen.is_empty() {
            let page = self
                .store
                .stored_requests(workspace, id, from, FEED_PAGE)
                .await?;
            if page.is_empty() {
                break;
            }
            from += page.len() as i64;
            let taken: Vec<NewRequest> = page
                .into_iter()
                .filter(|r| chosen.remove(&r.custom_id))
                .map(|r| NewRequest {
                    custom_id: r.custom_id,
                    params: r.params.into(),
                })
                .collect();
            if !taken.is_empty() && sink.send(IngestChunk::Requests(taken)).await.is_err() {
                return Err(StoreError::IngestAborted.into());
            }
        }
        if !chosen.is_empty() {
            // The batch was deleted while it was read: commit nothing.
            return Err(BatchError::NotFound(id.to_owned()));
        }
        sink.send(IngestChunk::Commit)
            .await
            .map_err(|_| StoreError::IngestAborted.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errored(kind: &str) -> String {
        format!(
            r#"{{"custom_id":"e-{kind}","result":{{"type":"errored","error":{{"type":"error","error":{{"type":"{kind}","message":"m"}}}}}}}}"#
        )
    }

    const SUCCEEDED: &str = r#"{"custom_id":"s","result":{"type":"succeeded","message":{"id":"msg_1","content":[{"type":"text","text":"x"}]}}}"#;
    const EXPIRED: &str = r#"{"custom_id":"x","result":{"type":"expired"}}"#;
    const CANCELED: &str = r#"{"custom_id":"c","result":{"type":"canceled"}}"#;

    #[test]
    fn the_default_takes_retryable_errors_and_expired_only() {
        let s = RetrySelection::default();
        for kind in [
            "api_error",
            "overloaded_error",
            "rate_limit_error",
            "timeout_error",
        ] {
            assert_eq!(s.take(errored(kind).as_bytes()), Some(format!("e-{kind}")));
        }
        for kind in [
            "invalid_request_error",
            "not_found_error",
            "permission_error",
        ] {
            assert_eq!(s.take(errored(kind).as_bytes()), None, "{kind}");
        }
        assert_eq!(s.take(EXPIRED.as_bytes()), Some("x".into()));
        assert_eq!(s.take(CANCELED.as_bytes()), None);
        assert_eq!(s.take(SUCCEEDED.as_bytes()), None);
    }

    #[test]
    fn flags_widen_or_narrow_the_selection() {
        let all = RetrySelection {
            errored: ErroredSelection::All,
            expired: false,
            canceled: true,
        };
        assert!(
            all.take(errored("invalid_request_error").as_bytes())
                .is_some()
        );
        assert_eq!(all.take(EXPIRED.as_bytes()), None);
        assert_eq!(all.take(CANCELED.as_bytes()), Some("c".into()));
        assert_eq!(all.take(SUCCEEDED.as_bytes()), None);
        let none = RetrySelection {
            errored: ErroredSelection::None,
            expired: false,
            canceled: false,
        };
        assert_eq!(none.take(errored("api_error").as_bytes()), None);
        assert_eq!(none.describe(), "the selection takes nothing.");
    }

    #[test]
    fn the_description_names_what_was_looked_for() {
        assert_eq!(
            RetrySelection::default().describe(),
            "none ended errored with api_error, overloaded_error, rate_limit_error, timeout_error or expired."
        );
    }
}
