//! The OpenAI-format backend: `params` translated to `POST {base}/v1/chat/completions`, the
//! completion translated back to a `Message` ([`crate::translate`]).

use async_trait::async_trait;
use satchel_core::{Attempt, Backend, Failure, RequestContext};
use satchel_wire::{ErrorType, ids};
use serde_json::Value;

use crate::http::{self, Endpoint, HttpOptions, UpstreamError};
use crate::translate;

pub struct OpenAiBackend {
    endpoint: Endpoint,
}

impl OpenAiBackend {
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        options: HttpOptions,
    ) -> Result<Self, UpstreamError> {
        Ok(Self {
            endpoint: Endpoint::new(base_url, "chat/completions", api_key, options)?,
        })
    }
}

#[async_trait]
impl Backend for OpenAiBackend {
    /// The create call's Anthropic headers have no Chat Completions equivalent: not sent.
    async fn send(&self, params: &str, _request: &RequestContext<'_>) -> Attempt {
        let params: Value = match serde_json::from_str(params) {
            Ok(params) => params,
            Err(e) => {
                return Attempt::Failed(Failure::fatal(
                    ErrorType::InvalidRequestError,
                    e.to_string(),
                ));
            }
        };
        let body = match translate::to_chat_request(&params) {
            Ok(body) => body,
            Err(e) => return Attempt::Failed(Failure::fatal(ErrorType::InvalidRequestError, e.0)),
        };
        let mut request = self.endpoint.post(body.to_string());
        if let Some(key) = &self.endpoint.api_key {
            request = request.bearer_auth(key);
        }
        let body = match http::exchange(request, &self.endpoint.options).await {
            Ok(body) => body,
            Err(failure) => return Attempt::Failed(failure),
        };
        let completion: Value = match serde_json::from_slice(&body) {
            Ok(completion) => completion,
            Err(e) => return Attempt::Failed(http::malformed(e)),
        };
        let message = match translate::to_message(&completion, &params, &ids::new_message_id()) {
            Ok(message) => message,
            Err(e) => return Attempt::Failed(http::malformed(e)),
        };
        match serde_json::value::to_raw_value(&message) {
            Ok(raw) => Attempt::Message(raw),
            Err(e) => Attempt::Failed(http::malformed(e)),
        }
    }
}
