//! The Anthropic-format backend: `POST {base}/v1/messages` with the request's `params` exactly
//! as received, the reply's `Message` stored exactly as it came. The batch's create-call
//! headers go with it: `anthropic-beta` and `anthropic-user-profile-id` as the client sent
//! them, and the client's `anthropic-version` unless the backend pins one.

use async_trait::async_trait;
use satchel_core::{Attempt, Backend, RequestContext, UpstreamHeaders};
use serde_json::value::RawValue;

use crate::http::{self, Endpoint, HttpOptions, UpstreamError};

/// The `anthropic-version` sent upstream when neither the backend pins one nor the batch's
/// create call carried one (batches stored before Satchel kept the headers).
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

pub struct AnthropicBackend {
    endpoint: Endpoint,
    /// The `anthropic-version` this backend always sends, whatever the client's.
    pinned_version: Option<String>,
}

impl AnthropicBackend {
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        options: HttpOptions,
    ) -> Result<Self, UpstreamError> {
        Ok(Self {
            endpoint: Endpoint::new(base_url, "messages", api_key, options)?,
            pinned_version: None,
        })
    }

    /// Sends `version` as `anthropic-version` whatever the client sent.
    pub fn pin_version(mut self, version: Option<String>) -> Self {
        self.pinned_version = version;
        self
    }

    /// The `anthropic-version` to send for a batch that sent `headers`.
    fn version<'a>(&'a self, headers: &'a UpstreamHeaders) -> &'a str {
        self.pinned_version
            .as_deref()
            .or(headers.version.as_deref())
            .unwrap_or(ANTHROPIC_VERSION)
    }
}

#[async_trait]
impl Backend for AnthropicBackend {
    async fn send(&self, params: &str, request_context: &RequestContext<'_>) -> Attempt {
        let headers = request_context.headers;
        let mut request = self
            .endpoint
            .post(params.to_owned())
            .header("anthropic-version", self.version(headers));
        if let Some(beta) = &headers.beta {
            request = request.header("anthropic-beta", beta);
        }
        if let Some(profile) = &headers.user_profile_id {
            request = request.header("anthropic-user-profile-id", profile);
        }
        if let Some(key) = &self.endpoint.api_key {
            request = request.header("x-api-key", key);
        }
        let body = match http::exchange(request, &self.endpoint.options).await {
            Ok(body) => body,
            Err(failure) => return Attempt::Failed(failure),
        };
        // One pass checks the bytes are UTF-8 and JSON, and copies them once.
        match serde_json::from_slice::<Box<RawValue>>(&body) {
            Ok(message) if message.get().starts_with('{') => Attempt::Message(message),
            Ok(_) => Attempt::Failed(http::malformed("not a JSON object")),
            Err(e) => Attempt::Failed(http::malformed(e)),
        }
    }
}
