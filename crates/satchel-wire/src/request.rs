//! One item of a create body: `{"custom_id", "params"}`, as clients send it.
//!
//! The server never deserialises whole requests through this type (its ingest parser keeps
//! `params` as raw bytes and checks the envelope as it streams); clients build create bodies
//! with it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One request of a batch: a `custom_id` unique in the batch, and the `params` of a Messages
/// API call (`model`, `max_tokens`, `messages`, …).
///
/// `P` is whatever serialises to the params object: a [`serde_json::Value`] by default, a
/// `Box<serde_json::value::RawValue>` to pass bytes through untouched, or a typed struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessageBatchRequest<P = Value> {
    /// The request's name in the results: `^[a-zA-Z0-9_-]{1,64}$`, unique in the batch.
    pub custom_id: String,
    /// The Messages API request body.
    pub params: P,
}

impl<P> MessageBatchRequest<P> {
    /// A request named `custom_id` with these `params`.
    pub fn new(custom_id: impl Into<String>, params: P) -> Self {
        Self {
            custom_id: custom_id.into(),
            params,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialises_as_the_api_expects() {
        let request =
            MessageBatchRequest::new("a", json!({"model": "m", "max_tokens": 1, "messages": []}));
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"custom_id":"a","params":{"max_tokens":1,"messages":[],"model":"m"}}"#
        );
    }
}
