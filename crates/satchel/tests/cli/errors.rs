//! Refusals, error lines, exit statuses and help.

use std::process::Command;

use serde_json::Value;

use crate::helpers::*;
use crate::support::{self, Server};

#[tokio::test]
async fn a_bad_file_is_refused_with_line_numbers_and_nothing_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("satchel.db"), &[]).await;
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(
        &bad,
        concat!(
            r#"{"custom_id":"a","params":{"model":"m","max_tokens":8,"messages":[]}}"#,
            "\n",
            r#"{"custom_id":"a","params":{"model":"m","max_tokens":8,"messages":[]}}"#,
            "\n{oops\n",
            r#"{"custom_id":"has space","params":{}}"#,
            "\n",
            r#"{"custom_id":"b","params":{},"stream":true}"#,
            "\n",
        ),
    )
    .unwrap();
    let refused = batch(&server, &["create", bad.to_str().unwrap()]);
    assert_exit(&refused, 2);
    let text = stderr(&refused);
    let name = bad.display();
    for expected in [
        format!("{name}:2: duplicate custom_id \"a\" (first on line 1)"),
        format!("{name}:3: not valid JSON (column 2)"),
        format!("{name}:4: custom_id \"has space\" must be 1 to 64 characters"),
        format!("{name}:5: unknown field `stream`"),
        format!("4 problems in {name}; nothing was sent"),
    ] {
        assert!(text.contains(&expected), "missing {expected:?} in:\n{text}");
    }

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n\n").unwrap();
    let refused = batch(&server, &["create", empty.to_str().unwrap()]);
    assert_exit(&refused, 2);
    assert!(
        stderr(&refused).contains("has no requests"),
        "{}",
        stderr(&refused)
    );

    let missing = batch(&server, &["create", "/nonexistent/requests.jsonl"]);
    assert_exit(&missing, 2);
    assert!(
        error_line(&missing).starts_with("error: cannot read /nonexistent/requests.jsonl"),
        "{}",
        stderr(&missing)
    );

    // A good file but no key: refused before anything is sent.
    let mut no_key = Command::new(BIN);
    no_key.args(["batch", "--base-url", &server.url(""), "create", EXAMPLE]);
    let refused = run(no_key, None);
    assert_exit(&refused, 2);
    assert!(
        error_line(&refused).contains("no API key"),
        "{}",
        stderr(&refused)
    );

    let (_, list) = support::client_get(&server.url("/v1/messages/batches")).await;
    assert_eq!(
        serde_json::from_str::<Value>(&list).unwrap()["data"],
        serde_json::json!([]),
        "nothing was created"
    );
}

#[tokio::test]
async fn fail_on_error_exits_3_when_requests_errored() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("satchel.db"),
        &["--emulator-error-rate", "1"],
    )
    .await;
    let n = example_ids().len();
    let failed = batch(
        &server,
        &[
            "create",
            EXAMPLE,
            "--wait",
            "--fail-on-error",
            "--interval",
            "50ms",
        ],
    );
    assert_exit(&failed, 3);
    assert_eq!(
        error_line(&failed),
        format!("error: {n} of {n} requests errored (--fail-on-error)")
    );
    assert!(
        stdout(&failed).contains(&format!("{n} errored")),
        "the batch is still shown"
    );

    // Without the flag an errored request is the batch's business, not a failure.
    let id = stdout(&failed)
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    assert_exit(&batch(&server, &["wait", &id]), 0);
    assert_exit(&batch(&server, &["wait", &id, "--fail-on-error"]), 3);
}

#[tokio::test]
async fn auth_errors_and_an_unreachable_server_are_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("satchel.db"), &["--api-keys", "right-key"]).await;
    let denied = batch_as(&server, "wrong-key", &["list"], None);
    assert_exit(&denied, 1);
    assert!(
        error_line(&denied)
            .starts_with("error: 401 authentication_error: invalid x-api-key (request-id: req_"),
        "{}",
        stderr(&denied)
    );
    assert_exit(&batch_as(&server, "right-key", &["list"], None), 0);

    // The Bearer style, through the SDKs' variable.
    let mut bearer = Command::new(BIN);
    bearer
        .args(["batch", "list", "--json"])
        .env("ANTHROPIC_BASE_URL", server.url(""))
        .env("ANTHROPIC_AUTH_TOKEN", "right-key");
    bearer.env_remove("ANTHROPIC_API_KEY");
    let output = bearer.output().unwrap();
    assert_exit(&output, 0);
    assert_eq!(json(&output), serde_json::json!([]));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut nowhere = Command::new(BIN);
    nowhere.args([
        "batch",
        "--base-url",
        &format!("http://127.0.0.1:{port}"),
        "--api-key",
        "k",
        "--max-retries",
        "0",
        "get",
        "msgbatch_x",
    ]);
    let unreachable = run(nowhere, None);
    assert_exit(&unreachable, 1);
    let line = error_line(&unreachable);
    assert!(line.starts_with("error: connection error: "), "{line}");
    assert!(line.to_lowercase().contains("refused"), "{line}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["batch", "get"][..],
        &["batch", "list", "--limit", "0"],
        &["batch", "wait", "x", "--interval", "soon"],
        &["batch", "frobnicate"],
    ] {
        let output = run(
            {
                let mut c = Command::new(BIN);
                c.args(args);
                c
            },
            None,
        );
        assert_exit(&output, 2);
    }
}

#[test]
fn help_covers_every_command_flag_and_exit_status() {
    let help = |args: &[&str]| {
        let output = support::run_to_exit(args);
        assert!(output.status.success(), "{args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let top = help(&["batch", "--help"]);
    for word in [
        "create",
        "wait",
        "list",
        "get",
        "cancel",
        "delete",
        "results",
        "--base-url",
        "--api-key",
        "--auth-token",
        "--json",
        "--max-retries",
        "--timeout",
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "Exit status",
        "  3  --fail-on-error",
    ] {
        assert!(top.contains(word), "batch --help lacks {word}:\n{top}");
    }
    for (command, flags) in [
        (
            "create",
            &["FILE", "--wait", "--fail-on-error", "--interval"][..],
        ),
        ("wait", &["ID", "--fail-on-error", "--interval"]),
        ("list", &["--limit", "--all", "--after-id", "--before-id"]),
        ("get", &["ID"]),
        ("cancel", &["ID"]),
        ("delete", &["ID"]),
        ("results", &["ID", "--output"]),
    ] {
        let text = help(&["batch", command, "--help"]);
        for flag in flags.iter().chain(&["--json", "--base-url", "Exit status"]) {
            assert!(
                text.contains(flag),
                "batch {command} --help lacks {flag}:\n{text}"
            );
        }
    }
    assert!(help(&["--help"]).contains("batch"));
}
