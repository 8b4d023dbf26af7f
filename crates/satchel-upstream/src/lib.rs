//! Backends that run requests on real model servers over HTTP.
//!
//! - [`anthropic`]: servers that speak the Messages API (Anthropic, vLLM, llama.cpp, Ollama):
//!   `params` are posted as received and the reply stored as it came.
//! - [`openai`]: servers that speak Chat Completions (vLLM, SGLang, llama.cpp, LM Studio,
//!   OpenAI): `params` are translated there and the reply translated back ([`translate`]).
//! - [`http`]: what both share: the client, and the classification of failures into
//!   retryable or final (the dispatcher does the retrying).

pub mod anthropic;
pub mod http;
pub mod openai;
pub mod translate;
pub mod webhook;

pub use anthropic::AnthropicBackend;
pub use http::{HttpOptions, UpstreamError};
pub use openai::OpenAiBackend;

/// The endpoint URL for `path` (e.g. `messages`) under `base_url`: `{base}/v1/{path}`, or
/// `{base}/{path}` when the base already ends in `/v1` (the OpenAI convention).
pub fn endpoint(base_url: &str, path: &str) -> String {
    let base = base_url.trim_end_matches('/');
    if base.ends_with("/v1") {
        format!("{base}/{path}")
    } else {
        format!("{base}/v1/{path}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_accept_both_base_url_conventions() {
        assert_eq!(
            super::endpoint("http://h:8000", "messages"),
            "http://h:8000/v1/messages"
        );
        assert_eq!(
            super::endpoint("http://h:8000/v1/", "chat/completions"),
            "http://h:8000/v1/chat/completions"
        );
        assert_eq!(
            super::endpoint("https://api.anthropic.com/", "messages"),
            "https://api.anthropic.com/v1/messages"
        );
    }
}
