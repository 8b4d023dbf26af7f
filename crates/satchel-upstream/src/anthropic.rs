//! The Anthropic-format backend: `POST {base}/v1/messages` with the request's `params` exactly
//! as received, the reply's `Message` stored exactly as it came.

use async_trait::async_trait;
use satchel_core::{Attempt, Backend};
use serde_json::value::RawValue;

use crate::http::{self, Endpoint, HttpOptions, UpstreamError};

/// The `anthropic-version` sent upstream.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct AnthropicBackend {
    endpoint: Endpoint,
}

impl AnthropicBackend {
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        options: HttpOptions,
    ) -> Result<Self, UpstreamError> {
        Ok(Self {
            endpoint: Endpoint::new(base_url, "messages", api_key, options)?,
        })
    }
}

#[async_trait]
impl Backend for AnthropicBackend {
    async fn send(&self, params: &RawValue) -> Attempt {
        let mut request = self
            .endpoint
            .post(params.get().to_owned())
            .header("anthropic-version", ANTHROPIC_VERSION);
        if let Some(key) = &self.endpoint.api_key {
            request = request.header("x-api-key", key);
        }
        let body = match http::exchange(request, &self.endpoint.options).await {
            Ok(body) => body,
            Err(failure) => return Attempt::Failed(failure),
        };
        let text = match String::from_utf8(body.to_vec()) {
            Ok(text) => text,
            Err(e) => return Attempt::Failed(http::malformed(e)),
        };
        match RawValue::from_string(text) {
            Ok(message) if message.get().trim_start().starts_with('{') => Attempt::Message(message),
            Ok(_) => Attempt::Failed(http::malformed("not a JSON object")),
            Err(e) => Attempt::Failed(http::malformed(e)),
        }
    }
}
