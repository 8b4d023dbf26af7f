//! A Rust client for Anthropic's **Message Batches API**, shaped like the official SDKs'
//! `client.messages.batches`, for Satchel and, unchanged, for Anthropic's own API (the wire
//! is the same).
//!
//! ```no_run
//! # async fn run() -> Result<(), satchel_client::Error> {
//! use futures::TryStreamExt;
//! use satchel_client::{Client, ListParams, MessageBatchRequest, ProcessingStatus};
//! use serde_json::json;
//!
//! // ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL (e.g. http://127.0.0.1:8080), like the SDKs.
//! let client = Client::from_env()?;
//! let batches = client.messages().batches();
//!
//! let requests = vec![MessageBatchRequest::new("greeting", json!({
//!     "model": "claude-sonnet-4-5", "max_tokens": 64,
//!     "messages": [{"role": "user", "content": "Hello, world"}],
//! }))];
//! let batch = batches.create(&requests).await?;
//! while batches.retrieve(&batch.id).await?.processing_status != ProcessingStatus::Ended {
//!     tokio::time::sleep(std::time::Duration::from_millis(500)).await;
//! }
//!
//! // A stream of typed lines, parsed as the bytes arrive.
//! let mut results = batches.results(&batch.id).await?;
//! while let Some(line) = results.try_next().await? {
//!     println!("{} {}", line.custom_id, line.result.kind());
//! }
//!
//! // A stream of batches that fetches the pages itself.
//! let mut all = batches.list(ListParams::default().limit(100));
//! while let Some(batch) = all.try_next().await? {
//!     println!("{} {:?}", batch.id, batch.request_counts);
//! }
//!
//! let deleted = batches.delete(&batch.id).await?;
//! # let _ = deleted;
//! # Ok(()) }
//! ```
//!
//! Behaviour follows the official SDKs:
//!
//! - **Auth**: `x-api-key` ([`ClientBuilder::api_key`], `ANTHROPIC_API_KEY`) or
//!   `Authorization: Bearer` ([`ClientBuilder::auth_token`], `ANTHROPIC_AUTH_TOKEN`);
//!   `anthropic-version: 2023-06-01` on every request.
//! - **Retries**: connection failures, timeouts, 408, 409, 429 and 5xx are retried
//!   ([`ClientBuilder::max_retries`], default 2), obeying `x-should-retry`, `retry-after-ms`
//!   and `retry-after` (capped at 60 s), else backing off exponentially from 0.5 s to 8 s with
//!   jitter. Like the SDKs, a `create` that failed that way is sent again, so a batch that
//!   was in fact created before the connection broke can exist twice.
//! - **Errors**: an error status is an [`ApiError`] with the status, `error.type`, message
//!   and `request-id`.
//! - **Results** follow the batch's `results_url` as given (an absolute URL) and are parsed
//!   line by line from the byte stream, tolerating `\r\n`; see [`Results`].
//!
//! The types are `satchel-wire`'s, the same the server serialises.

#![warn(missing_docs)]

mod batches;
mod client;
mod error;
mod extensions;
mod results;
pub mod retry;
mod transport;

pub use batches::{BatchList, Batches, CreateBody, ListParams, Messages};
pub use client::{
    API_VERSION, Client, ClientBuilder, DEFAULT_BASE_URL, DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT,
};
pub use error::{ApiError, Error, Result};
pub use extensions::{FOLLOW_RECONNECT_FOR, Retried, RetryOptions, START, SettledPage};
pub use results::{MAX_LINE_BYTES, ResultLines, Results};
pub use retry::{INITIAL_RETRY_DELAY, MAX_RETRY_DELAY};

pub use satchel_wire::{
    BatchResult, BatchResultLine, ContentBlock, DeletedMessageBatch, ErrorResponse, ErrorType,
    ListPage, Message, MessageBatch, MessageBatchRequest, ProcessingStatus, RequestCounts,
    Timestamp, Usage,
};
