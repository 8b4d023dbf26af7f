//! The order in which a batch's requests go out, for model servers' prefix caches.
//!
//! Model servers keep the KV cache of a prompt's beginning (llama.cpp's slots and its prompt
//! cache, vLLM's and SGLang's prefix caching, Anthropic's prompt caching), so a request whose
//! prefix is already cached skips evaluating it. At ingest each request of a batch is put in
//! a group, by a hash of what comes first in its prompt — the model, the system prompt and the
//! tools — and given a claim key: claims take a batch's requests in key order, which is
//! the first request of every group, then the second of every group, and so on.
//!
//! Why interleave rather than send each group in one run: requests run several at a time, and
//! a group's requests started together all miss the cache (none has filled it yet) — measured
//! on llama.cpp, one run per group evaluated 1.7x the prompt tokens of the shuffled order.
//! Interleaved, each prefix is evaluated once, by its group's first request, while the others
//! run requests of other groups; every later request of the group finds it cached. (Fairness
//! across batches and workspaces is unchanged: it decides which batches a claim serves; the
//! key only orders requests within a batch.)
//!
//! The group is a hash of the values' bytes as sent: two prompts that differ only in
//! whitespace group apart, which costs a cache miss, never a wrong answer. The messages are
//! not part of it: the last turn differs from request to request, and reading every turn
//! would cost a scan of every prompt at ingest.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The fields that make the shared beginning of a prompt, in the order a chat template puts
/// them first.
const PREFIX_FIELDS: [&str; 3] = ["model", "system", "tools"];

/// Bits of a claim key that hold the group; the rank within the group sits above them.
const GROUP_BITS: u32 = 40;

/// The claim keys of one batch's requests, given in submission order (see the module's doc).
#[derive(Debug, Default)]
pub struct PrefixOrder {
    /// Requests seen so far per group.
    ranks: HashMap<i64, i64>,
}

impl PrefixOrder {
    /// The claim key of the batch's next request: its rank within its prefix group, then the
    /// group. Ranks fit: a batch holds at most 100,000 requests, far under 2^23.
    pub fn key(&mut self, params: &[u8]) -> i64 {
        let group = prefix_key(params) & ((1 << GROUP_BITS) - 1);
        let rank = self.ranks.entry(group).or_insert(0);
        let key = (*rank << GROUP_BITS) | group;
        *rank += 1;
        key
    }
}

/// The grouping key of a request's `params`: equal for requests whose model, system prompt
/// and tools are byte-for-byte equal. (Params that are not an object, which never run, get
/// the key of an object without those fields.)
pub fn prefix_key(params: &[u8]) -> i64 {
    struct Collect<'de>([Option<&'de str>; 3]);
    impl<'de> Visitor<'de> for &mut Collect<'de> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                match PREFIX_FIELDS.iter().position(|f| *f == key) {
                    Some(i) => self.0[i] = Some(map.next_value::<&'de RawValue>()?.get()),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                if self.0.iter().all(Option::is_some) {
                    // All found: the rest need not be read (the error is discarded).
                    return Err(de::Error::custom("found"));
                }
            }
            Ok(())
        }
    }
    let mut found = Collect([None; 3]);
    let mut de = serde_json::Deserializer::from_slice(params);
    // Stopped early once all are found, or by params that are not an object: either way the
    // key is what was found.
    let _ = (&mut de).deserialize_map(&mut found);
    let mut hasher = DefaultHasher::new();
    found.0.hash(&mut hasher);
    hasher.finish() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(json: &str) -> i64 {
        prefix_key(
            RawValue::from_string(json.to_owned())
                .unwrap()
                .get()
                .as_bytes(),
        )
    }

    #[test]
    fn requests_sharing_model_system_and_tools_share_a_key() {
        let a = key(
            r#"{"model":"m","system":"long shared prompt","messages":[{"role":"user","content":"one"}]}"#,
        );
        let b = key(
            r#"{"messages":[{"role":"user","content":"two"}],"system":"long shared prompt","model":"m","max_tokens":5}"#,
        );
        assert_eq!(a, b, "the messages and the key order do not matter");
    }

    #[test]
    fn a_different_model_system_or_tools_is_another_group() {
        let base = key(r#"{"model":"m","system":"s","messages":[]}"#);
        assert_ne!(base, key(r#"{"model":"n","system":"s","messages":[]}"#));
        assert_ne!(base, key(r#"{"model":"m","system":"t","messages":[]}"#));
        assert_ne!(base, key(r#"{"model":"m","messages":[]}"#));
        assert_ne!(
            base,
            key(
                r#"{"model":"m","system":"s","tools":[{"name":"x","input_schema":{}}],"messages":[]}"#
            )
        );
        // A field's absence is not the same as any of its values.
        assert_ne!(key(r#"{"system":"m"}"#), key(r#"{"model":"m"}"#));
    }

    #[test]
    fn claim_keys_take_every_group_in_turn() {
        let raw = |system: &str| {
            RawValue::from_string(format!(
                r#"{{"model":"m","system":"{system}","messages":[]}}"#
            ))
            .unwrap()
        };
        let mut order = PrefixOrder::default();
        // Submitted as a a a b b c: claimed as a b c, then a b, then a.
        let submitted = ["a", "a", "a", "b", "b", "c"];
        let keys: Vec<i64> = submitted
            .iter()
            .map(|s| order.key(raw(s).get().as_bytes()))
            .collect();
        let mut claimed: Vec<usize> = (0..submitted.len()).collect();
        claimed.sort_by_key(|&i| (keys[i], i));
        let groups: Vec<&str> = claimed.iter().map(|&i| submitted[i]).collect();
        let mut firsts = groups[..3].to_vec();
        firsts.sort_unstable();
        assert_eq!(firsts, ["a", "b", "c"], "{groups:?}");
        let mut seconds = groups[3..5].to_vec();
        seconds.sort_unstable();
        assert_eq!(seconds, ["a", "b"], "{groups:?}");
        assert_eq!(groups[5], "a");
        // Within a group, submission order.
        let a_positions: Vec<usize> = claimed
            .iter()
            .copied()
            .filter(|&i| submitted[i] == "a")
            .collect();
        assert_eq!(a_positions, [0, 1, 2]);
        assert!(keys.iter().all(|k| *k >= 0));
    }

    #[test]
    fn params_that_are_not_an_object_group_with_the_bare_ones() {
        assert_eq!(key("[1,2]"), key(r#"{"max_tokens":5}"#));
        assert_eq!(key("7"), key("{}"));
    }
}
