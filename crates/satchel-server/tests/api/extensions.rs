//! Satchel's extensions: results while a batch runs (`results?after=`) and re-running what
//! failed (`POST …/retry`). The hosted routes' behaviour is unchanged beside them.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{KEY_B, Reply, TestApp, requests};

async fn page(app: &TestApp, id: &str, query: &str) -> Reply {
    app.send(
        Method::GET,
        &format!("/v1/messages/batches/{id}/results?{query}"),
        None,
    )
    .await
}

fn lines(reply: &Reply) -> Vec<Value> {
    reply
        .text
        .split_terminator('\n')
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn results_are_read_while_the_batch_runs_each_line_once() {
    let app = TestApp::spawn_with(|c| {
        c.emulator.latency = Duration::from_millis(20);
        c.dispatch.max_in_flight = 8;
    })
    .await;
    let batch = app.create_ok(&requests(300, "partial")).await;
    let id = batch["id"].as_str().unwrap();

    // The hosted call still refuses a running batch, as the SDKs expect.
    app.results(id).await.assert_error(
        404,
        "not_found_error",
        &format!("Message Batch {id} has no available results."),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut cursor, mut seen, mut pages_while_running) = ("0".to_owned(), Vec::new(), 0);
    loop {
        let reply = page(&app, id, &format!("after={cursor}&wait=2&limit=50")).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/x-jsonl");
        let got = lines(&reply);
        assert!(got.len() <= 50);
        let status = reply.headers["satchel-batch-status"]
            .to_str()
            .unwrap()
            .to_owned();
        if status == "in_progress" && !got.is_empty() {
            pages_while_running += 1;
        }
        seen.extend(
            got.iter()
                .map(|l| l["custom_id"].as_str().unwrap().to_owned()),
        );
        cursor = reply.headers["satchel-results-cursor"]
            .to_str()
            .unwrap()
            .to_owned();
        if reply.headers["satchel-results-complete"] == "true" {
            assert_eq!(status, "ended");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never complete; {} lines",
            seen.len()
        );
    }
    assert!(
        pages_while_running > 0,
        "lines were read while the batch ran"
    );
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a line came twice");
    assert_eq!(seen.len(), 300);

    // Reading on from the last cursor gives nothing more, at once, and says complete.
    let reply = page(&app, id, &format!("after={cursor}&wait=30")).await;
    assert_eq!((reply.status.as_u16(), reply.text.as_str()), (200, ""));
    assert_eq!(reply.headers["satchel-results-complete"], "true");
    assert_eq!(reply.headers["satchel-results-cursor"], cursor.as_str());

    // The same lines as the hosted download, as a set.
    let hosted: HashSet<String> = app
        .result_lines(id)
        .await
        .iter()
        .map(|l| l.to_string())
        .collect();
    let reply = page(&app, id, "after=0&limit=10000").await;
    let partial: HashSet<String> = lines(&reply).iter().map(|l| l.to_string()).collect();
    assert_eq!(hosted, partial);

    // Another workspace's batch does not exist here either.
    app.as_key(KEY_B)
        .send(
            Method::GET,
            &format!("/v1/messages/batches/{id}/results?after=0"),
            None,
        )
        .await
        .assert_error(
            404,
            "not_found_error",
            &format!("Message Batch {id} not found."),
        );
}

#[tokio::test]
async fn a_wait_ends_when_a_line_settles() {
    let app = TestApp::spawn_with(|c| c.emulator.latency = Duration::from_millis(300)).await;
    let batch = app.create_ok(&requests(1, "slow")).await;
    let id = batch["id"].as_str().unwrap();
    let reply = page(&app, id, "after=0&wait=30").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(lines(&reply).len(), 1, "the wait returned with the line");
    assert_eq!(reply.headers["satchel-results-complete"], "true");
}

#[tokio::test]
async fn bad_extension_parameters_are_clear_errors() {
    let app = TestApp::spawn().await;
    let batch = app.create_ok(&requests(1, "x")).await;
    let id = batch["id"].as_str().unwrap();
    for (query, message) in [
        (
            "after=nonsense",
            "after: `after` must be a cursor from the `satchel-results-cursor` header, or 0 for the start",
        ),
        (
            "after=1.2.3",
            "after: `after` must be a cursor from the `satchel-results-cursor` header, or 0 for the start",
        ),
        (
            "after=0&wait=61",
            "wait: Input should be between 0 and 60 seconds",
        ),
        (
            "after=0&wait=soon",
            "wait: Input should be a number of seconds",
        ),
        (
            "after=0&limit=0",
            "limit: Input should be an integer from 1 to 10000",
        ),
        (
            "after=0&limit=10001",
            "limit: Input should be an integer from 1 to 10000",
        ),
        (
            "after=0&follow=1",
            "follow: not a parameter of results; use after, wait and limit",
        ),
    ] {
        page(&app, id, query)
            .await
            .assert_error(400, "invalid_request_error", message);
    }
    page(&app, "msgbatch_missing", "after=0")
        .await
        .assert_error(
            404,
            "not_found_error",
            "Message Batch msgbatch_missing not found.",
        );
}

async fn retry(app: &TestApp, id: &str, body: Option<Value>) -> Reply {
    app.send(
        Method::POST,
        &format!("/v1/messages/batches/{id}/retry"),
        body.map(|b| b.to_string()),
    )
    .await
}

/// The custom_ids of the batch's lines whose result is of one of `kinds` (for errored
/// lines, the error's type).
fn ids_of(lines: &[Value], kinds: &[&str]) -> HashSet<String> {
    lines
        .iter()
        .filter(|l| {
            let result = &l["result"];
            let kind = match result["type"].as_str().unwrap() {
                "errored" => result["error"]["error"]["type"].as_str().unwrap(),
                other => other,
            };
            kinds.contains(&kind)
        })
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn retry_reruns_what_failed_for_a_passing_reason() {
    let app = TestApp::spawn_with(|c| c.emulator.error_rate = 0.4).await;
    // Half the requests are invalid (max_tokens 0): errored for good, never retried by default.
    let mut batch_requests = requests(120, "again");
    for (i, r) in batch_requests
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .enumerate()
    {
        if i % 2 == 1 {
            r["params"]["max_tokens"] = json!(0);
        }
    }
    let source = app.create_ok(&batch_requests).await;
    let source_id = source["id"].as_str().unwrap();

    app.wait_ended(source_id, Duration::from_secs(30)).await;
    let source_lines = app.result_lines(source_id).await;
    let passing = ids_of(&source_lines, &["api_error", "overloaded_error"]);
    assert!(!passing.is_empty(), "the emulator injected some errors");

    let reply = retry(&app, source_id, None).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let body = reply.json();
    assert_eq!(body["type"], "message_batch_retry");
    assert_eq!(body["source_batch_id"], source_id);
    assert_eq!(body["request_count"], passing.len());
    let rerun = &body["batch"];
    assert_eq!(rerun["type"], "message_batch");
    assert_eq!(rerun["request_counts"]["processing"], passing.len());
    assert!(
        rerun.get("source_batch_id").is_none(),
        "the official shape is untouched"
    );
    let rerun_id = rerun["id"].as_str().unwrap();
    assert_ne!(rerun_id, source_id);
    app.wait_ended(rerun_id, Duration::from_secs(30)).await;
    let rerun_lines = app.result_lines(rerun_id).await;
    let rerun_ids: HashSet<String> = rerun_lines
        .iter()
        .map(|l| l["custom_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(rerun_ids, passing);
    // Same params as stored: each succeeded line echoes its original text.
    for line in &rerun_lines {
        if line["result"]["type"] == "succeeded" {
            let n: usize = line["custom_id"].as_str().unwrap()[1..].parse().unwrap();
            assert_eq!(
                line["result"]["message"]["content"][0]["text"],
                format!("again {n}")
            );
        }
    }

    // `errored: all` takes the invalid ones too.
    let reply = retry(
        &app,
        source_id,
        Some(json!({"errored": "all", "expired": false})),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let all_errored = ids_of(
        &source_lines,
        &["api_error", "overloaded_error", "invalid_request_error"],
    );
    assert_eq!(reply.json()["request_count"], all_errored.len());

    // Nothing qualifies: a clear refusal, nothing created.
    let before = app
        .send(Method::GET, "/v1/messages/batches?limit=100", None)
        .await
        .json()["data"]
        .as_array()
        .unwrap()
        .len();
    retry(
        &app,
        source_id,
        Some(json!({"errored": "none", "expired": false})),
    )
    .await
    .assert_error(
        400,
        "invalid_request_error",
        &format!(
            "Message Batch {source_id} has no requests to retry: the selection takes nothing."
        ),
    );
    let after = app
        .send(Method::GET, "/v1/messages/batches?limit=100", None)
        .await
        .json()["data"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(before, after);

    // Bad bodies, other workspaces.
    retry(&app, source_id, Some(json!({"errored": "sometimes"})))
        .await
        .assert_status_and_type(400, "invalid_request_error");
    retry(&app, source_id, Some(json!({"colour": "red"})))
        .await
        .assert_status_and_type(400, "invalid_request_error");
    retry(&app.as_key(KEY_B), source_id, None)
        .await
        .assert_error(
            404,
            "not_found_error",
            &format!("Message Batch {source_id} not found."),
        );
}

#[tokio::test]
async fn retry_is_refused_while_running_and_takes_canceled_when_asked() {
    let app = TestApp::spawn_with(|c| {
        c.emulator.latency = Duration::from_millis(200);
        c.dispatch.max_in_flight = 2;
    })
    .await;
    let batch = app.create_ok(&requests(40, "stop")).await;
    let id = batch["id"].as_str().unwrap();
    retry(&app, id, None).await.assert_error(
        400,
        "invalid_request_error",
        &format!("Message Batch {id} is still in_progress; only an ended batch can be retried."),
    );
    assert_eq!(app.cancel(id).await.status, 200);
    app.wait_ended(id, Duration::from_secs(30)).await;
    let lines = app.result_lines(id).await;
    let canceled = ids_of(&lines, &["canceled"]);
    assert!(!canceled.is_empty());
    // By default canceled requests are not re-run: here nothing else qualifies.
    let refused = retry(&app, id, None).await;
    refused.assert_status_and_type(400, "invalid_request_error");
    let reply = retry(&app, id, Some(json!({"canceled": true}))).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json()["request_count"], canceled.len());
}
