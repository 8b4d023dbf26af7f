//! Golden cases of the Messages ⇄ Chat Completions translation, both ways: every file in
//! `tests/golden/` holds inputs and the exact expected output.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::path::PathBuf;

use satchel_upstream::translate::{to_chat_request, to_message};
use serde_json::Value;

fn cases(prefix: &str) -> Vec<(String, Value)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        match value {
            Value::Array(items) => cases.extend(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, v)| (format!("{name}[{i}]"), v)),
            ),
            single => cases.push((name, single)),
        }
    }
    assert!(!cases.is_empty(), "no golden files starting {prefix}");
    cases
}

#[test]
fn requests_translate_to_the_expected_chat_completions() {
    for (name, case) in cases("request_") {
        let translated =
            to_chat_request(&case["anthropic"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(translated, case["openai"], "{name}");
    }
}

#[test]
fn untranslatable_requests_fail_with_a_clear_message() {
    for (name, case) in cases("untranslatable") {
        let error = to_chat_request(&case["anthropic"]).expect_err(&name);
        assert_eq!(error.0, case["error"].as_str().unwrap(), "{name}");
    }
}

#[test]
fn completions_translate_back_to_the_expected_messages() {
    for (name, case) in cases("response_") {
        let message = to_message(&case["completion"], &case["params"], "msg_golden")
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(message, case["message"], "{name}");
        // And the result parses as the wire type clients use.
        serde_json::from_value::<satchel_wire::Message>(message)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
