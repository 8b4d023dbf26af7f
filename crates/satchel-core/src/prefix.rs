//! The prompt prefix a request shares with others, as a grouping key.
//!
//! Model servers keep the KV cache of a prompt's beginning (llama.cpp's slots, vLLM's and
//! SGLang's prefix caching, Anthropic's prompt caching), so requests that start the same way
//! are cheaper run one after another than scattered. At ingest each request gets a key, a
//! hash of what comes first in its prompt — the model, the system prompt and the tools — and
//! claims take a batch's requests in key order, so those sharing a prefix go out together.
//! (Fairness across batches and workspaces is unchanged: it decides which batches a claim
//! serves; the key only orders requests within a batch.)
//!
//! The key is a hash of the values' bytes as sent: two prompts that differ only in
//! whitespace group apart, which costs a cache miss, never a wrong answer. The messages are
//! not part of it: the last turn differs from request to request, and reading every turn
//! would cost a scan of every prompt at ingest.

use std::hash::{DefaultHasher, Hash, Hasher};

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The fields that make the shared beginning of a prompt, in the order a chat template puts
/// them first.
const PREFIX_FIELDS: [&str; 3] = ["model", "system", "tools"];

/// The grouping key of a request's `params`: equal for requests whose model, system prompt
/// and tools are byte-for-byte equal. (Params that are not an object, which never run, get
/// the key of an object without those fields.)
pub fn prefix_key(params: &RawValue) -> i64 {
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
    let mut de = serde_json::Deserializer::from_str(params.get());
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
        prefix_key(&RawValue::from_string(json.to_owned()).unwrap())
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
    fn params_that_are_not_an_object_group_with_the_bare_ones() {
        assert_eq!(key("[1,2]"), key(r#"{"max_tokens":5}"#));
        assert_eq!(key("7"), key("{}"));
    }
}
