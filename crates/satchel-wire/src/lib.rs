//! The wire types of Anthropic's Message Batches API, exactly as the official SDKs see them.
//!
//! This crate is the contract shared by the server and any Rust client: it knows serde and
//! nothing else (no HTTP crate, no SQL, no runtime). [`retry`] holds the one retry rule both
//! sides of a call follow (reading `retry-after` from header text, backoff). Every type here serialises to the shapes in
//! `shared/spec/message-batches-api.md`; nothing more, nothing less.

mod batch;
mod error;
pub mod ids;
mod message;
mod request;
mod result;
pub mod retry;
mod time;

pub use batch::{
    DeletedMessageBatch, ListPage, MessageBatch, MessageBatchType, ProcessingStatus, RequestCounts,
};
pub use error::{ErrorObject, ErrorResponse, ErrorType};
pub use message::{ContentBlock, Message, Usage};
pub use request::MessageBatchRequest;
pub use result::{BatchResult, BatchResultLine};
pub use time::Timestamp;

/// Most requests one batch may hold.
pub const MAX_REQUESTS_PER_BATCH: usize = 100_000;
/// Largest create body accepted, in bytes (256 MiB).
pub const MAX_CREATE_BODY_BYTES: u64 = 256 * 1024 * 1024;
/// Longest `custom_id`.
pub const MAX_CUSTOM_ID_LEN: usize = 64;
/// Default and bounds of a list page's `limit`.
pub const LIST_LIMIT_DEFAULT: u32 = 20;
pub const LIST_LIMIT_MAX: u32 = 1000;

/// Whether `id` is a valid `custom_id`: `^[a-zA-Z0-9_-]{1,64}$`.
pub fn is_valid_custom_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_CUSTOM_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Longest piece of client input an error message quotes, in characters.
pub const QUOTE_MAX_CHARS: usize = 100;

/// `text` for quoting in an error message: whole when short, otherwise its first
/// [`QUOTE_MAX_CHARS`] characters and `…`. A message that echoes input (a key, an id, a
/// version) would otherwise be as large as the input: a 5 MB key made a 5 MB error body.
pub fn quote_short(text: &str) -> String {
    match text.char_indices().nth(QUOTE_MAX_CHARS) {
        None => text.to_owned(),
        Some((cut, _)) => format!("{}…", &text[..cut]),
    }
}

#[cfg(test)]
mod quote_tests {
    use super::*;

    #[test]
    fn short_text_is_whole_and_long_text_is_cut_on_a_char_boundary() {
        assert_eq!(quote_short("requests"), "requests");
        let exact = "k".repeat(QUOTE_MAX_CHARS);
        assert_eq!(quote_short(&exact), exact);
        let huge = "k".repeat(5_000_000);
        let quoted = quote_short(&huge);
        assert_eq!(quoted, format!("{}…", "k".repeat(QUOTE_MAX_CHARS)));
        let wide = "é".repeat(QUOTE_MAX_CHARS + 1);
        assert_eq!(quote_short(&wide).chars().count(), QUOTE_MAX_CHARS + 1);
    }
}
