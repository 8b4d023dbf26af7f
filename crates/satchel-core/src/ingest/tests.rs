//! The create body end to end: the envelope, items, limits and errors, through
//! [`super::parse_create_body`].

use std::pin::Pin;
use std::task::{Context, Poll};

use futures::executor::block_on;
use tokio::io::ReadBuf;

use super::*;
use crate::model::NewRequest;

/// Parses `body` and returns the outcome and every request the store would have received.
fn parse(body: &str, max: usize) -> (Result<usize, IngestError>, Vec<NewRequest>, bool) {
    let (tx, mut rx) = mpsc::channel(1024);
    let result = block_on(parse_create_body(body.as_bytes(), max, &tx));
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
    assert!(message(r#"{"requests":[]} x"#).starts_with("The request body is not valid JSON: "));
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

/// A reader that hands out `step` bytes a call, to cut the body at every awkward place.
struct Trickle<'a> {
    bytes: &'a [u8],
    step: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.step.min(out.remaining()).min(self.bytes.len());
        out.put_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Poll::Ready(Ok(()))
    }
}

#[test]
fn the_same_requests_whatever_the_read_sizes() {
    let body = r#" { "requests" : [ {"custom_id":"a","params":{"s":"x\"]}\\","n":[1,{"m":"}"}],"t":0.75,"e":-12.5e-3,"b":true,"z":null}} ,
        {"params":{"t":"\u00e9\n"},"custom_id":"b"}, {"custom_id":"c","params":{}} ] } "#;
    let (expected, requests, _) = parse(body, 10);
    assert_eq!(expected.unwrap(), 3);
    assert_eq!(
        requests[0].params.get(),
        r#"{"s":"x\"]}\\","n":[1,{"m":"}"}],"t":0.75,"e":-12.5e-3,"b":true,"z":null}"#
    );
    for step in [1, 2, 3, 7, 64] {
        let (tx, mut rx) = mpsc::channel(1024);
        let reader = Trickle {
            bytes: body.as_bytes(),
            step,
        };
        assert_eq!(
            block_on(parse_create_body(reader, 10, &tx)).unwrap(),
            3,
            "step {step}"
        );
        drop(tx);
        let mut got = Vec::new();
        while let Ok(IngestChunk::Requests(r)) = rx.try_recv() {
            got.extend(r);
        }
        let ids: Vec<_> = got.iter().map(|r| r.custom_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"], "step {step}");
        assert_eq!(got[0].params.get(), requests[0].params.get());
        assert_eq!(got[1].params.get(), r#"{"t":"\u00e9\n"}"#);
    }
}

/// A reader whose first read stops after `cut` bytes, wherever that falls.
struct CutOnce<'a> {
    bytes: &'a [u8],
    cut: Option<usize>,
}

impl AsyncRead for CutOnce<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let n = self.cut.take().unwrap_or(usize::MAX);
        let n = n.min(out.remaining()).min(self.bytes.len());
        out.put_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Poll::Ready(Ok(()))
    }
}

#[test]
fn a_read_may_end_anywhere_inside_an_item() {
    let body = r#"{"requests":[ 
 {"custom_id":"a","params":{"t":0.75,"e":-12.5e-3,"u":"\u00e9\"","l":[true,false,null],"n":{"m":1}}} ,
 {"custom_id":"b","params":{"x":10}} ]}"#;
    for cut in 1..body.len() {
        let (tx, mut rx) = mpsc::channel(16);
        let reader = CutOnce {
            bytes: body.as_bytes(),
            cut: Some(cut),
        };
        let parsed = block_on(parse_create_body(reader, 10, &tx));
        assert_eq!(parsed.unwrap(), 2, "cut at {cut}");
        drop(tx);
        let Some(IngestChunk::Requests(got)) = rx.blocking_recv() else {
            panic!("no requests at cut {cut}");
        };
        assert_eq!(
            got[0].params.get(),
            r#"{"t":0.75,"e":-12.5e-3,"u":"\u00e9\"","l":[true,false,null],"n":{"m":1}}"#
        );
        assert_eq!(got[1].params.get(), r#"{"x":10}"#);
    }
}

#[test]
fn malformed_json_anywhere_is_refused() {
    let ok = r#"{"custom_id":"ok","params":{}}"#;
    for body in [
        format!(r#"{{"requests":[{ok},]}}"#),
        format!(r#"{{"requests":[{ok} {ok}]}}"#),
        format!(r#"{{"requests":[{ok}]"#),
        r#"{"requests":[{"custom_id":"a","params":{]}]}"#.to_owned(),
        r#"{"requests":[{"custom_id":"a","params":{"x":tru}}]}"#.to_owned(),
        r#"{"requests":[{"custom_id":"a","params":{"x":"unterminated}]}"#.to_owned(),
        format!(r#"{{"requests" [{ok}]}}"#),
        format!(r#"{{requests:[{ok}]}}"#),
        format!(r#"{{"requests":[{ok}]}},"#),
        "{".to_owned(),
        "nul".to_owned(),
        r"\u".to_owned(),
    ] {
        let text = message(&body);
        assert!(
            text.starts_with("The request body is not valid JSON: "),
            "{body}: {text}"
        );
    }
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

/// Differential check against serde_json on randomly damaged bodies: whatever serde_json
/// refuses as JSON, the ingest refuses too; whatever the ingest accepts, serde_json parses
/// to the same requests.
#[test]
fn agrees_with_serde_json_on_damaged_bodies() {
    let base = r#"{"requests":[{"custom_id":"a-1","params":{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"q \"x\" \\ [1,{2}] é"}],"n":-1.5e3,"t":true,"z":null}},{"params":{"k":[[],{}],"s":"\u00e9}]"},"custom_id":"b_2"}]}"#;
    let significant = b"{}[],:\"\\ 0e.-tfn";
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..3_000 {
        let mut body = base.as_bytes().to_vec();
        for _ in 0..rng.usize(1..=3) {
            let at = rng.usize(0..body.len());
            match rng.u8(0..3) {
                0 => {
                    body.remove(at);
                }
                1 => body.insert(at, significant[rng.usize(0..significant.len())]),
                _ => body[at] = significant[rng.usize(0..significant.len())],
            }
        }
        let Ok(text) = String::from_utf8(body) else {
            continue;
        };
        let (result, requests, committed) = parse(&text, 100);
        match serde_json::from_str::<serde_json::Value>(&text) {
            Err(_) => {
                assert!(
                    result.is_err() && !committed,
                    "accepted invalid JSON: {text}"
                );
            }
            Ok(value) => {
                if result.is_ok() {
                    let items = value["requests"].as_array().expect("requests is a list");
                    assert_eq!(items.len(), requests.len(), "{text}");
                    for (item, request) in items.iter().zip(&requests) {
                        let params: serde_json::Value =
                            serde_json::from_str(request.params.get()).unwrap();
                        assert_eq!(item["params"], params, "{text}");
                        assert_eq!(item["custom_id"], request.custom_id.as_str(), "{text}");
                    }
                }
            }
        }
    }
}

#[test]
fn params_over_32_mb_are_refused_naming_their_index() {
    let ok = r#"{"custom_id":"ok","params":{}}"#;
    let big = "x".repeat(MAX_PARAMS_BYTES);
    let body = format!(r#"{{"requests":[{ok},{{"custom_id":"big","params":{{"s":"{big}"}}}}]}}"#);
    assert_eq!(
        message(&body),
        "requests.1.params: Request too large: a request's params may be at most 33554432 bytes (32 MB)"
    );
    // Just under the limit is accepted.
    let fits = "x".repeat(MAX_PARAMS_BYTES - 8);
    let body = format!(r#"{{"requests":[{{"custom_id":"a","params":{{"s":"{fits}"}}}}]}}"#);
    let (result, requests, _) = parse(&body, 10);
    assert_eq!(result.unwrap(), 1);
    assert_eq!(requests[0].params.get().len(), MAX_PARAMS_BYTES);
}

#[test]
fn an_endless_item_is_refused_without_buffering_it_all() {
    // No closing quote: the item never ends; the parse gives up once it is too large.
    let body = format!(
        r#"{{"requests":[{{"custom_id":"a","params":{{"s":"{}"#,
        "x".repeat(MAX_ITEM_BYTES + (1 << 20))
    );
    assert_eq!(
        message(&body),
        "requests.0: Request too large: a request's params may be at most 33554432 bytes (32 MB)"
    );
}
