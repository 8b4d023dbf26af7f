//! The emulator following fixtures: each kind of rule, validation before fixtures, and the
//! merged reply checked as a `Message`.

use std::io::Write;

use satchel_wire::ErrorType;
use serde_json::Value;

use super::{Emulator, EmulatorConfig};
use crate::backend::{Attempt, Backend, RequestContext, Retry};
use crate::forward::UpstreamHeaders;

static NO_HEADERS: UpstreamHeaders = UpstreamHeaders {
    version: None,
    beta: None,
    user_profile_id: None,
};

pub(super) fn context(batch: i64, custom_id: &'static str) -> RequestContext<'static> {
    RequestContext {
        batch,
        custom_id,
        headers: &NO_HEADERS,
    }
}

fn emulator(rules: &str) -> (Emulator, tempfile::NamedTempFile) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(rules.as_bytes()).unwrap();
    let emulator = Emulator::open(EmulatorConfig {
        fixtures: Some(file.path().to_owned()),
        ..EmulatorConfig::default()
    })
    .unwrap();
    (emulator, file)
}

const HI: &str = r#"{"model":"m","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;

fn params(text: &str) -> String {
    text.to_owned()
}

async fn send(emulator: &Emulator, custom_id: &'static str, text: &str) -> Attempt {
    emulator.send(&params(text), &context(7, custom_id)).await
}

fn message(attempt: Attempt) -> Value {
    match attempt {
        Attempt::Message(raw) => serde_json::from_str(raw.get()).unwrap(),
        Attempt::Failed(f) => panic!("expected a message, got {f:?}"),
    }
}

#[tokio::test]
async fn a_message_rule_is_merged_over_the_generated_reply() {
    let (emulator, _file) = emulator(
        r#"{"match":{"custom_id":"short"},"message":{"content":[{"type":"text","text":"Hi!"}],"stop_reason":"max_tokens","usage":{"output_tokens":1}}}"#,
    );
    let reply = message(send(&emulator, "short", HI).await);
    assert_eq!(reply["content"][0]["text"], "Hi!");
    assert_eq!(reply["stop_reason"], "max_tokens");
    assert_eq!(reply["usage"]["output_tokens"], 1);
    // The rest is the generated reply's.
    assert_eq!(reply["model"], "m");
    assert_eq!(reply["usage"]["service_tier"], "batch");
    assert!(reply["id"].as_str().unwrap().starts_with("msg_"));
    // Unmatched requests get the usual echo.
    assert_eq!(
        message(send(&emulator, "other", HI).await)["content"][0]["text"],
        "hi"
    );
}

#[tokio::test]
async fn an_error_rule_fails_every_attempt_classified_like_an_upstream() {
    let (emulator, _file) = emulator(concat!(
        r#"{"match":{"custom_id":"busy"},"error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        "\n",
        r#"{"match":{"params":{"model":"gone"}},"error":{"type":"not_found_error","message":"model: gone"}}"#,
    ));
    for _ in 0..3 {
        let Attempt::Failed(failure) = send(&emulator, "busy", HI).await else {
            panic!("expected a failure");
        };
        assert_eq!(failure.kind, ErrorType::OverloadedError);
        assert!(matches!(failure.retry, Retry::Throttled { .. }));
    }
    let gone = HI.replace(r#""model":"m""#, r#""model":"gone""#);
    let Attempt::Failed(failure) = send(&emulator, "any", &gone).await else {
        panic!("expected a failure");
    };
    assert_eq!(
        (failure.kind, failure.retry),
        (ErrorType::NotFoundError, Retry::Never)
    );
    assert_eq!(failure.message, "model: gone");
}

#[tokio::test]
async fn fail_first_fails_then_succeeds() {
    let (emulator, _file) = emulator(
        r#"{"match":{"custom_id":"flaky-*"},"fail_first":2,"error":{"type":"api_error","message":"boom"}}"#,
    );
    for _ in 0..2 {
        let Attempt::Failed(failure) = send(&emulator, "flaky-1", HI).await else {
            panic!("expected a failure");
        };
        assert_eq!(failure.kind, ErrorType::ApiError);
        assert!(matches!(failure.retry, Retry::Transient { .. }));
    }
    assert_eq!(
        message(send(&emulator, "flaky-1", HI).await)["content"][0]["text"],
        "hi"
    );
}

#[tokio::test]
async fn validation_comes_before_fixtures() {
    let (emulator, _file) = emulator(r#"{"message":{"stop_reason":"end_turn"}}"#);
    let Attempt::Failed(failure) = send(&emulator, "a", r#"{"model":"m","max_tokens":5}"#).await
    else {
        panic!("invalid params must fail");
    };
    assert_eq!(
        (failure.kind, failure.message.as_str()),
        (ErrorType::InvalidRequestError, "messages: Field required")
    );
}

#[tokio::test]
async fn a_merged_reply_that_is_no_message_fails_naming_the_rule() {
    let (emulator, _file) = emulator("# comment\n{\"message\":{\"content\":\"not a list\"}}\n");
    let Attempt::Failed(failure) = send(&emulator, "a", HI).await else {
        panic!("expected a failure");
    };
    assert_eq!(failure.kind, ErrorType::ApiError);
    assert!(failure.message.contains("line 2"), "{}", failure.message);
}

#[tokio::test(start_paused = true)]
async fn a_latency_rule_overrides_the_emulator_s_latency() {
    let (emulator, _file) = emulator(r#"{"match":{"custom_id":"slow"},"latency_ms":5000}"#);
    let started = tokio::time::Instant::now();
    message(send(&emulator, "slow", HI).await);
    assert!(started.elapsed() >= std::time::Duration::from_secs(5));
    let started = tokio::time::Instant::now();
    message(send(&emulator, "fast", HI).await);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[tokio::test]
async fn reload_applies_new_rules_and_keeps_them_on_a_bad_file() {
    let (emulator, file) = emulator(r#"{"match":{"custom_id":"a"},"message":{"model":"one"}}"#);
    assert_eq!(message(send(&emulator, "a", HI).await)["model"], "one");
    std::fs::write(
        file.path(),
        r#"{"match":{"custom_id":"a"},"message":{"model":"two"}}"#,
    )
    .unwrap();
    emulator.reload();
    assert_eq!(message(send(&emulator, "a", HI).await)["model"], "two");
    std::fs::write(file.path(), "{broken").unwrap();
    emulator.reload();
    assert_eq!(message(send(&emulator, "a", HI).await)["model"], "two");
}
