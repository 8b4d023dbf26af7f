//! Identifiers: `msgbatch_`, `msg_` and `req_` followed by 24 base58 characters starting `01`.
//!
//! Batch ids sort by creation time: after `01` come nine characters encoding the millisecond
//! timestamp, then thirteen random ones. Within one millisecond the random part increases
//! monotonically, so ids from one process are strictly increasing and newest-first listing
//! and cursors are a plain ordering of the id strings (the base58 alphabet is in ASCII order).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const TIME_CHARS: usize = 9;
const RANDOM_CHARS: usize = 13;

pub const BATCH_PREFIX: &str = "msgbatch_";
pub const MESSAGE_PREFIX: &str = "msg_";
pub const REQUEST_PREFIX: &str = "req_";

/// State behind monotonic ids: the last millisecond used and the random part issued in it.
static LAST: Mutex<(u64, u128)> = Mutex::new((0, 0));

fn push_base58(out: &mut String, mut value: u128, width: usize) {
    let mut buf = [b'1'; 32];
    for slot in buf[..width].iter_mut().rev() {
        *slot = ALPHABET[(value % 58) as usize];
        value /= 58;
    }
    out.extend(buf[..width].iter().map(|&b| b as char));
}

/// 58^13: the number of distinct random parts.
const RANDOM_SPACE: u128 = 58u128.pow(RANDOM_CHARS as u32);

fn time_sortable_body() -> String {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (ms, random) = {
        let mut last = LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (last_ms, last_random) = *last;
        // Leave headroom in a fresh random part so many ids in one millisecond stay monotonic.
        let fresh = || u128::from(fastrand::u64(..)) % (RANDOM_SPACE / 2);
        let next = if now_ms > last_ms {
            (now_ms, fresh())
        } else if last_random + 1 < RANDOM_SPACE {
            // Same millisecond (or the clock stepped back): keep counting up.
            (last_ms, last_random + 1)
        } else {
            (last_ms + 1, fresh())
        };
        *last = next;
        next
    };
    let mut body = String::with_capacity(24);
    body.push_str("01");
    push_base58(&mut body, u128::from(ms), TIME_CHARS);
    push_base58(&mut body, random, RANDOM_CHARS);
    body
}

fn random_body() -> String {
    let mut body = String::with_capacity(24);
    body.push_str("01");
    push_base58(
        &mut body,
        u128::from(fastrand::u64(..)) << 64 | u128::from(fastrand::u64(..)),
        22,
    );
    body
}

/// A new batch id, greater than every batch id this process issued before.
pub fn new_batch_id() -> String {
    format!("{BATCH_PREFIX}{}", time_sortable_body())
}

/// A new message id (`msg_…`).
pub fn new_message_id() -> String {
    format!("{MESSAGE_PREFIX}{}", random_body())
}

/// A new tool call id (`toolu_…`), for the emulator's `tool_use` blocks.
pub fn new_tool_use_id() -> String {
    format!("toolu_{}", random_body())
}

/// A new request id (`req_…`), as sent in the `request-id` header.
pub fn new_request_id() -> String {
    format!("{REQUEST_PREFIX}{}", random_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_ids_have_the_documented_shape_and_increase() {
        let mut previous = new_batch_id();
        for _ in 0..10_000 {
            let id = new_batch_id();
            let body = id.strip_prefix(BATCH_PREFIX).unwrap();
            assert_eq!(body.len(), 24);
            assert!(body.starts_with("01"));
            assert!(body[2..].bytes().all(|b| ALPHABET.contains(&b)));
            assert!(id > previous, "{id} should sort after {previous}");
            previous = id;
        }
    }

    #[test]
    fn other_ids_have_24_characters() {
        assert_eq!(new_message_id().len(), MESSAGE_PREFIX.len() + 24);
        assert_eq!(new_request_id().len(), REQUEST_PREFIX.len() + 24);
    }

    #[test]
    fn alphabet_is_in_ascii_order() {
        assert!(ALPHABET.windows(2).all(|w| w[0] < w[1]));
    }
}
