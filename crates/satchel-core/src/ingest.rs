//! The create body, parsed as it streams in.
//!
//! A create body may be 256 MB, so it is never held whole: a serde visitor walks it once from a
//! buffered reader, checks the envelope and every `custom_id` on the way, keeps each `params`
//! as the raw bytes received, and hands requests to the store in chunks through a bounded
//! channel. Memory is bounded by the chunk size and the set of `custom_id`s seen.
//!
//! Error messages follow the API's pydantic style (`requests.3.custom_id: Field required`).
//! The parse stops at the first problem; the store then discards what it had received, so a
//! bad item at the very end still creates nothing.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Read};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::model::{IngestChunk, NewRequest};

/// Requests per chunk sent to the store: big enough for cheap multi-row writes, small enough
/// to keep memory flat.
pub const CHUNK_REQUESTS: usize = 1_000;

/// Why a create body was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body is JSON but breaks the create schema; the message is the API's.
    #[error("{0}")]
    Invalid(String),
    /// The body is not JSON; the detail is the parser's.
    #[error("The request body is not valid JSON: {0}")]
    NotJson(String),
    /// Reading the body failed (the client went away, or the body was too large).
    #[error("reading the request body failed: {0}")]
    Read(io::Error),
    /// The store stopped taking requests (it failed; its error says why).
    #[error("the store stopped taking requests")]
    StoreGone,
}

/// Parses a create body from `reader`, sending its requests to `sink` and
/// [`IngestChunk::Commit`] once the whole body proved valid. Returns the number of requests.
///
/// Blocking: run it on a blocking thread.
pub fn parse_create_body(
    reader: impl Read,
    max_requests: usize,
    sink: &mpsc::Sender<IngestChunk>,
) -> Result<usize, IngestError> {
    let mut state = State {
        sink,
        max_requests,
        chunk: Vec::with_capacity(CHUNK_REQUESTS),
        seen: HashSet::new(),
        count: 0,
        saw_requests: false,
        problem: None,
    };
    let reader = io::BufReader::with_capacity(256 * 1024, reader);
    let mut de = serde_json::Deserializer::from_reader(reader);
    let parsed = BodySeed { state: &mut state }
        .deserialize(&mut de)
        .and_then(|()| de.end());
    if let Some(problem) = state.problem.take() {
        return Err(problem);
    }
    if let Err(e) = parsed {
        return Err(if e.is_io() {
            IngestError::Read(io::Error::from(e))
        } else {
            IngestError::NotJson(e.to_string())
        });
    }
    if !state.saw_requests {
        return Err(IngestError::Invalid("requests: Field required".into()));
    }
    match state.count {
        0 => {
            return Err(IngestError::Invalid(
                "requests: List should have at least 1 item after validation, not 0".into(),
            ));
        }
        n if n > max_requests => {
            return Err(IngestError::Invalid(format!(
                "requests: List should have at most {max_requests} items after validation, not {n}"
            )));
        }
        _ => {}
    }
    state.flush()?;
    sink.blocking_send(IngestChunk::Commit)
        .map_err(|_| IngestError::StoreGone)?;
    Ok(state.count)
}

struct State<'a> {
    sink: &'a mpsc::Sender<IngestChunk>,
    max_requests: usize,
    chunk: Vec<NewRequest>,
    seen: HashSet<String>,
    count: usize,
    saw_requests: bool,
    /// The first problem found; the serde error that unwinds the parse only carries it out.
    problem: Option<IngestError>,
}

impl State<'_> {
    /// Records `problem` and returns the error that stops the parse.
    fn fail<E: de::Error>(&mut self, problem: IngestError) -> E {
        let message = problem.to_string();
        self.problem.get_or_insert(problem);
        E::custom(message)
    }

    fn invalid<E: de::Error>(&mut self, message: String) -> E {
        self.fail(IngestError::Invalid(message))
    }

    fn flush(&mut self) -> Result<(), IngestError> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.chunk, Vec::with_capacity(CHUNK_REQUESTS));
        self.sink
            .blocking_send(IngestChunk::Requests(chunk))
            .map_err(|_| IngestError::StoreGone)
    }

    fn accept<E: de::Error>(&mut self, request: NewRequest) -> Result<(), E> {
        if !self.seen.insert(request.custom_id.clone()) {
            return Err(self.invalid(format!(
                "requests: custom_id's must be unique within a batch. Duplicate custom_id found: {}",
                request.custom_id
            )));
        }
        self.count += 1;
        // Past the limit the rest is still read, only to report the real count.
        if self.count <= self.max_requests {
            self.chunk.push(request);
            if self.chunk.len() >= CHUNK_REQUESTS
                && let Err(e) = self.flush()
            {
                return Err(self.fail(e));
            }
        }
        Ok(())
    }
}

/// The top-level object: `{"requests": [...]}` and nothing else.
struct BodySeed<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// Lets a visitor report "not the expected kind of value" in the API's words.
macro_rules! reject_other_kinds {
    ($message:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Err(self.reject())
        }
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str($message)
        }
    };
}

impl BodySeed<'_, '_> {
    fn reject<E: de::Error>(self) -> E {
        self.state
            .invalid("Input should be a valid dictionary".into())
    }
}

impl<'de> Visitor<'de> for BodySeed<'_, '_> {
    type Value = ();
    reject_other_kinds!("a JSON object");

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "requests" && !self.state.saw_requests {
                self.state.saw_requests = true;
                map.next_value_seed(RequestsSeed {
                    state: &mut *self.state,
                })?;
            } else if key == "requests" {
                return Err(self.state.invalid("requests: given more than once".into()));
            } else {
                return Err(self
                    .state
                    .invalid(format!("{key}: Extra inputs are not permitted")));
            }
        }
        Ok(())
    }
}

/// The `requests` array.
struct RequestsSeed<'s, 'a> {
    state: &'s mut State<'a>,
}

impl<'de> DeserializeSeed<'de> for RequestsSeed<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl RequestsSeed<'_, '_> {
    fn reject<E: de::Error>(self) -> E {
        self.state
            .invalid("requests: Input should be a valid list".into())
    }
}

impl<'de> Visitor<'de> for RequestsSeed<'_, '_> {
    type Value = ();
    reject_other_kinds!("a JSON array");

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        Err(self.reject())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        while let Some(request) = seq.next_element_seed(ItemSeed {
            state: &mut *self.state,
            index,
        })? {
            self.state.accept(request)?;
            index += 1;
        }
        Ok(())
    }
}

/// One item: `{"custom_id": "...", "params": {...}}`.
struct ItemSeed<'s, 'a> {
    state: &'s mut State<'a>,
    index: usize,
}

impl<'de> DeserializeSeed<'de> for ItemSeed<'_, '_> {
    type Value = NewRequest;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<NewRequest, D::Error> {
        d.deserialize_any(self)
    }
}

impl ItemSeed<'_, '_> {
    fn reject<E: de::Error>(self) -> E {
        let message = format!(
            "requests.{}: Input should be a valid dictionary",
            self.index
        );
        self.state.invalid(message)
    }

    fn custom_id<E: de::Error>(&mut self, raw: &RawValue) -> Result<String, E> {
        let i = self.index;
        let Ok(id) = serde_json::from_str::<String>(raw.get()) else {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: Input should be a valid string"
            )));
        };
        if id.chars().count() > satchel_wire::MAX_CUSTOM_ID_LEN {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: String should have at most 64 characters"
            )));
        }
        if !satchel_wire::is_valid_custom_id(&id) {
            return Err(self.state.invalid(format!(
                "requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )));
        }
        Ok(id)
    }
}

impl<'de> Visitor<'de> for ItemSeed<'_, '_> {
    type Value = NewRequest;
    reject_other_kinds!("a request object");

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<NewRequest, A::Error> {
        Err(self.reject())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<NewRequest, A::Error> {
        let i = self.index;
        let mut custom_id = None;
        let mut params: Option<Box<RawValue>> = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "custom_id" => {
                    let raw: Box<RawValue> = map.next_value()?;
                    custom_id = Some(self.custom_id(&raw)?);
                }
                "params" => {
                    let raw: Box<RawValue> = map.next_value()?;
                    if !raw.get().starts_with('{') {
                        return Err(self.state.invalid(format!(
                            "requests.{i}.params: Input should be a valid dictionary"
                        )));
                    }
                    params = Some(raw);
                }
                other => {
                    let message = format!("requests.{i}.{other}: Extra inputs are not permitted");
                    let _: IgnoredAny = map.next_value()?;
                    return Err(self.state.invalid(message));
                }
            }
        }
        let Some(custom_id) = custom_id else {
            return Err(self
                .state
                .invalid(format!("requests.{i}.custom_id: Field required")));
        };
        let Some(params) = params else {
            return Err(self
                .state
                .invalid(format!("requests.{i}.params: Field required")));
        };
        Ok(NewRequest { custom_id, params })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `body` and returns the outcome and every request the store would have received.
    fn parse(body: &str, max: usize) -> (Result<usize, IngestError>, Vec<NewRequest>, bool) {
        let (tx, mut rx) = mpsc::channel(1024);
        let result = parse_create_body(body.as_bytes(), max, &tx);
        drop(tx);
        let mut requests = Vec::new();
        let mut committed = false;
        while let Ok(chunk) = rx.try_recv() {
            match chunk {
                IngestChunk::Requests(r) => requests.extend(r),
                IngestChunk::Commit => committed = true,
            }
        }
        (result, requests, committed)
    }

    fn message(body: &str) -> String {
        match parse(body, 100_000) {
            (Err(e), _, committed) => {
                assert!(!committed, "a refused body must never commit");
                e.to_string()
            }
            (Ok(n), ..) => panic!("expected an error, parsed {n} requests"),
        }
    }

    #[test]
    fn keeps_params_bytes_as_received_in_order() {
        let body = r#"{"requests":[{"custom_id":"a","params":{"model" : "m",  "x":[1,2]}},{"params":{},"custom_id":"b-_9"}]}"#;
        let (result, requests, committed) = parse(body, 10);
        assert_eq!(result.unwrap(), 2);
        assert!(committed);
        assert_eq!(requests[0].custom_id, "a");
        assert_eq!(requests[0].params.get(), r#"{"model" : "m",  "x":[1,2]}"#);
        assert_eq!(requests[1].custom_id, "b-_9");
    }

    #[test]
    fn envelope_errors_use_the_api_messages() {
        assert_eq!(message(r#"{}"#), "requests: Field required");
        assert_eq!(
            message(r#"{"requests":[]}"#),
            "requests: List should have at least 1 item after validation, not 0"
        );
        assert_eq!(
            message(r#"{"requests":{}}"#),
            "requests: Input should be a valid list"
        );
        assert_eq!(
            message(r#"{"requests":[], "extra": 1}"#),
            "extra: Extra inputs are not permitted"
        );
        assert_eq!(message(r#"[]"#), "Input should be a valid dictionary");
        assert!(message(r#"{"requests":[}"#).starts_with("The request body is not valid JSON: "));
        assert!(
            message(r#"{"requests":[]} x"#).starts_with("The request body is not valid JSON: ")
        );
        assert!(message("").starts_with("The request body is not valid JSON: "));
    }

    #[test]
    fn item_errors_name_the_index() {
        let ok = r#"{"custom_id":"ok","params":{}}"#;
        assert_eq!(
            message(&format!(r#"{{"requests":[{ok},{{"params":{{}}}}]}}"#)),
            "requests.1.custom_id: Field required"
        );
        assert_eq!(
            message(r#"{"requests":[{"custom_id":"x"}]}"#),
            "requests.0.params: Field required"
        );
        assert_eq!(
            message(r#"{"requests":[{"custom_id":"x","params":[]}]}"#),
            "requests.0.params: Input should be a valid dictionary"
        );
        assert_eq!(
            message(r#"{"requests":[{"custom_id":7,"params":{}}]}"#),
            "requests.0.custom_id: Input should be a valid string"
        );
        assert_eq!(
            message(&format!(
                r#"{{"requests":[{ok},{{"custom_id":"a.b","params":{{}}}}]}}"#
            )),
            "requests.1.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"
        );
        assert_eq!(
            message(&format!(
                r#"{{"requests":[{{"custom_id":"{}","params":{{}}}}]}}"#,
                "a".repeat(65)
            )),
            "requests.0.custom_id: String should have at most 64 characters"
        );
        assert_eq!(
            message(r#"{"requests":[{"custom_id":"x","params":{},"p":1}]}"#),
            "requests.0.p: Extra inputs are not permitted"
        );
        assert_eq!(
            message(r#"{"requests":[3]}"#),
            "requests.0: Input should be a valid dictionary"
        );
        assert_eq!(
            message(
                r#"{"requests":[{"custom_id":"dup","params":{}},{"custom_id":"dup","params":{}}]}"#
            ),
            "requests: custom_id's must be unique within a batch. Duplicate custom_id found: dup"
        );
    }

    #[test]
    fn too_many_requests_reports_the_real_count_and_creates_nothing() {
        let items: Vec<String> = (0..2_503)
            .map(|i| format!(r#"{{"custom_id":"r{i}","params":{{}}}}"#))
            .collect();
        let body = format!(r#"{{"requests":[{}]}}"#, items.join(","));
        let (result, _, committed) = parse(&body, 2_500);
        assert_eq!(
            result.unwrap_err().to_string(),
            "requests: List should have at most 2500 items after validation, not 2503"
        );
        assert!(!committed);
    }

    #[test]
    fn a_bad_item_after_many_chunks_never_commits() {
        let mut items: Vec<String> = (0..3_000)
            .map(|i| format!(r#"{{"custom_id":"r{i}","params":{{}}}}"#))
            .collect();
        items.push(r#"{"custom_id":"bad id","params":{}}"#.into());
        let body = format!(r#"{{"requests":[{}]}}"#, items.join(","));
        let (result, requests, committed) = parse(&body, 100_000);
        assert!(result.is_err());
        assert_eq!(
            requests.len(),
            3_000,
            "earlier chunks were streamed to the store"
        );
        assert!(!committed, "but the batch was never committed");
    }
}
