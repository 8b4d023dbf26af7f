//! The seam between the dispatcher and whatever answers a request: a model behind it, or the
//! emulator. A backend sees one request's `params` and nothing of batches.

use async_trait::async_trait;
use satchel_wire::ErrorType;
use serde_json::value::RawValue;

/// How one request ended on a backend.
#[derive(Debug)]
pub enum BackendOutcome {
    /// The `Message` the model returned, as bytes, stored and served unchanged.
    Message(Box<RawValue>),
    /// The request failed for good; becomes an `errored` line.
    Error { kind: ErrorType, message: String },
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Runs one request. Never panics on bad `params`: they become an `Error` outcome.
    async fn run(&self, params: &RawValue) -> BackendOutcome;
}
