//! The commands doing their work: create, wait, list, results, cancel, delete.

use serde_json::Value;

use crate::helpers::*;
use crate::support::{self, Server};

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
