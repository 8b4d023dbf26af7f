#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

//! `satchel batch …` as a real process against a real `satchel serve` process: the README's
//! walk-through, every command, local validation, the error lines and the exit statuses.

mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;
use support::Server;

const BIN: &str = env!("CARGO_BIN_EXE_satchel");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/requests.jsonl");

/// `satchel batch ARGS` against `server` with `key`, nothing inherited from the environment.
fn batch_as(server: &Server, key: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(BIN);
    command
        .arg("batch")
        .args(["--base-url", &server.url(""), "--api-key", key])
        .args(args);
    run(command, stdin)
}

fn batch(server: &Server, args: &[&str]) -> Output {
    batch_as(server, "any-key", args, None)
}

fn run(mut command: Command, stdin: Option<&str>) -> Output {
    for var in [
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_AUTH_TOKEN",
        "ANTHROPIC_BASE_URL",
        "SATCHEL_API_KEYS",
    ] {
        command.env_remove(var);
    }
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Asserts the exit status, showing both streams if it differs.
fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

fn json(output: &Output) -> Value {
    serde_json::from_str(&stdout(output)).unwrap_or_else(|e| panic!("{e}: {}", stdout(output)))
}

/// The one error line a failed command prints.
fn error_line(output: &Output) -> String {
    let text = stderr(output);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "one error line: {text}");
    lines[0].to_owned()
}

fn example_ids() -> Vec<String> {
    std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["custom_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn the_readme_walk_through_create_wait_results_delete() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("satchel.db"), &[]).await;
    let ids = example_ids();
    assert!(ids.len() >= 5, "the example has a handful of requests");

    let created = batch(
        &server,
        &["create", EXAMPLE, "--wait", "--interval", "100ms", "--json"],
    );
    assert_exit(&created, 0);
    let ended = json(&created);
    let id = ended["id"].as_str().unwrap().to_owned();
    assert_eq!(ended["processing_status"], "ended");
    assert_eq!(ended["request_counts"]["succeeded"], ids.len());
    assert!(stderr(&created).contains(&format!("created {id} ({} requests)", ids.len())));

    let file = dir.path().join("results.jsonl");
    let results = batch(&server, &["results", &id, "-o", file.to_str().unwrap()]);
    assert_exit(&results, 0);
    assert!(
        stderr(&results).contains(&format!("wrote {} results", ids.len())),
        "{}",
        stderr(&results)
    );
    let written = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<Value> = written
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<&str> = lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ids, "one line per request, in file order");
    assert_eq!(
        lines[0]["result"]["message"]["content"][0]["text"],
        "Hello, world"
    );

    // To stdout: the same bytes, exactly the server's.
    let to_stdout = batch(&server, &["results", &id]);
    assert_exit(&to_stdout, 0);
    assert_eq!(stdout(&to_stdout), written);
    let (_, served) =
        support::client_get(&server.url(&format!("/v1/messages/batches/{id}/results"))).await;
    assert_eq!(written, served);

    let shown = batch(&server, &["get", &id]);
    assert_exit(&shown, 0);
    let text = stdout(&shown);
    assert!(
        text.contains(&format!("id                   {id}")),
        "{text}"
    );
    assert!(text.contains("status               ended"), "{text}");
    assert!(
        text.contains(&format!(
            "{n} requests: {n} succeeded, 0 errored",
            n = ids.len()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("results_url          {}", server.url(""))),
        "{text}"
    );
    assert_eq!(
        json(&batch(&server, &["get", &id, "--json"]))["id"],
        id.as_str()
    );

    let listed = batch(&server, &["list"]);
    assert_exit(&listed, 0);
    let text = stdout(&listed);
    assert!(text.starts_with("ID "), "{text}");
    assert!(
        text.contains("STATUS") && text.contains("SUCCEEDED"),
        "{text}"
    );
    assert!(text.lines().nth(1).unwrap().starts_with(&id), "{text}");
    let listed = json(&batch(&server, &["list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["id"], id.as_str());

    let deleted = batch(&server, &["delete", &id]);
    assert_exit(&deleted, 0);
    assert_eq!(stdout(&deleted), format!("deleted {id}\n"));

    let gone = batch(&server, &["get", &id]);
    assert_exit(&gone, 1);
    let line = error_line(&gone);
    assert!(
        line.starts_with(&format!(
            "error: 404 not_found_error: Message Batch {id} not found. (request-id: req_"
        )),
        "{line}"
    );
    assert!(stdout(&gone).is_empty());
}

#[tokio::test]
async fn create_from_stdin_then_wait_and_list_in_pages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("satchel.db"), &[]).await;
    let mut made = Vec::new();
    for i in 0..3 {
        let line = format!(
            r#"{{"custom_id":"only-{i}","params":{{"model":"m","max_tokens":8,"messages":[{{"role":"user","content":"hi {i}"}}]}}}}"#
        );
        let created = batch_as(&server, "any-key", &["create", "-", "--json"], Some(&line));
        assert_exit(&created, 0);
        let batch = json(&created);
        assert_eq!(batch["request_counts"].as_object().unwrap().len(), 5);
        made.push(batch["id"].as_str().unwrap().to_owned());
    }
    let waited = batch(&server, &["wait", &made[0], "--interval", "50ms"]);
    assert_exit(&waited, 0);
    assert!(
        stdout(&waited).contains("status               ended"),
        "{}",
        stdout(&waited)
    );

    // Newest first; --limit shows that many and says there are more.
    let two = batch(&server, &["list", "--limit", "2", "--json"]);
    assert_exit(&two, 0);
    let ids: Vec<Value> = json(&two)
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].clone())
        .collect();
    assert_eq!(ids, [made[2].as_str(), made[1].as_str()]);
    let two_human = batch(&server, &["list", "--limit", "2"]);
    assert!(
        stderr(&two_human).contains("more batches"),
        "{}",
        stderr(&two_human)
    );
    let all = json(&batch(&server, &["list", "--all", "--json"]));
    assert_eq!(all.as_array().unwrap().len(), 3);
    let older = json(&batch(&server, &["list", "--after-id", &made[2], "--json"]));
    let older: Vec<&str> = older
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(older, [made[1].as_str(), made[0].as_str()]);
    let newer = json(&batch(
        &server,
        &["list", "--before-id", &made[0], "--limit", "1", "--json"],
    ));
    assert_eq!(newer.as_array().unwrap().len(), 1);
    assert_eq!(newer[0]["id"], made[1].as_str(), "the nearest newer one");
    let newer = json(&batch(
        &server,
        &["list", "--before-id", &made[0], "--json"],
    ));
    let newer: Vec<&str> = newer
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(newer, [made[2].as_str(), made[1].as_str()], "newest first");
}

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
async fn cancel_delete_and_results_of_a_running_batch() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("satchel.db"),
        // Slow enough that only the first request has started when the cancel arrives.
        &["--emulator-latency", "3s", "--max-in-flight", "1"],
    )
    .await;
    let created = batch(&server, &["create", EXAMPLE, "--json"]);
    assert_exit(&created, 0);
    let id = json(&created)["id"].as_str().unwrap().to_owned();

    let early = batch(&server, &["results", &id]);
    assert_exit(&early, 1);
    assert!(
        error_line(&early).contains(&format!(
            "Message Batch {id} has no results yet: it is in_progress"
        )),
        "{}",
        stderr(&early)
    );

    let refused = batch(&server, &["delete", &id]);
    assert_exit(&refused, 1);
    assert!(
        error_line(&refused).starts_with(
            "error: 400 invalid_request_error: In progress batches cannot be deleted. \
             Consider canceling the batch instead. (request-id: req_"
        ),
        "{}",
        stderr(&refused)
    );

    let canceled = batch(&server, &["cancel", &id, "--json"]);
    assert_exit(&canceled, 0);
    let canceled = json(&canceled);
    assert_eq!(canceled["processing_status"], "canceling");
    assert!(canceled["cancel_initiated_at"].is_string());

    let ended = batch(&server, &["wait", &id, "--interval", "50ms", "--json"]);
    assert_exit(&ended, 0);
    let ended = json(&ended);
    assert_eq!(ended["processing_status"], "ended");
    let n = example_ids().len() as u64;
    assert_eq!(
        ended["request_counts"]["canceled"].as_u64().unwrap(),
        n - 1,
        "{ended}"
    );

    let results = batch(&server, &["results", &id]);
    assert_exit(&results, 0);
    assert_eq!(
        stdout(&results).matches("\"type\":\"canceled\"").count() as u64,
        n - 1
    );
    let deleted = batch(&server, &["delete", &id, "--json"]);
    assert_exit(&deleted, 0);
    assert_eq!(
        json(&deleted),
        serde_json::json!({"id": id, "type": "message_batch_deleted"})
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
