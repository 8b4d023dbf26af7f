//! Cancel, expiry, delete and retention, driven for real with short windows.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{TestApp, requests};

fn counts_sum(batch: &Value) -> u64 {
    ["processing", "succeeded", "errored", "canceled", "expired"]
        .iter()
        .map(|k| batch["request_counts"][k].as_u64().unwrap())
        .sum()
}

#[tokio::test]
async fn a_batch_runs_to_ended_with_live_counts() {
    let app = TestApp::spawn_with(|c| {
        c.emulator.latency = Duration::from_millis(30);
        c.dispatch.max_in_flight = 10;
    })
    .await;
    let batch = app.create_ok(&requests(100, "count me")).await;
    let id = batch["id"].as_str().unwrap();
    // While it runs, the counts always sum to the total.
    let mut saw_partial = false;
    loop {
        let now = app.get(id).await.json();
        assert_eq!(counts_sum(&now), 100, "{now}");
        let done = now["request_counts"]["succeeded"].as_u64().unwrap();
        saw_partial |= done > 0 && done < 100;
        if now["processing_status"] == "ended" {
            assert_eq!(done, 100);
            assert!(now["ended_at"].is_string());
            let url = now["results_url"].as_str().unwrap();
            assert_eq!(
                url,
                format!("{}/v1/messages/batches/{id}/results", app.base)
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_partial, "counts move while the batch runs");
}

#[tokio::test]
async fn cancel_ends_pending_requests_and_lets_in_flight_ones_finish() {
    let app = TestApp::spawn_with(|c| {
        c.emulator.latency = Duration::from_millis(400);
        c.dispatch.max_in_flight = 5;
    })
    .await;
    let batch = app.create_ok(&requests(200, "cancel me")).await;
    let id = batch["id"].as_str().unwrap();
    app.wait_in_flight(1, Duration::from_secs(30)).await; // the first ones started
    let canceled = app.cancel(id).await;
    assert_eq!(canceled.status, StatusCode::OK, "{}", canceled.text);
    let canceled = canceled.json();
    assert_eq!(canceled["processing_status"], "canceling", "{canceled}");
    assert!(canceled["cancel_initiated_at"].is_string());
    assert_eq!(counts_sum(&canceled), 200);
    let in_flight = canceled["request_counts"]["processing"].as_u64().unwrap();
    assert!(
        (1..=5).contains(&in_flight),
        "only the started requests remain: {canceled}"
    );

    let ended = app.wait_ended(id, Duration::from_secs(10)).await;
    let counts = &ended["request_counts"];
    assert_eq!(counts["processing"], 0);
    assert_eq!(
        counts["succeeded"].as_u64().unwrap(),
        in_flight,
        "in-flight requests finished"
    );
    assert_eq!(counts["canceled"].as_u64().unwrap(), 200 - in_flight);
    assert_eq!(
        ended["cancel_initiated_at"],
        canceled["cancel_initiated_at"]
    );

    let lines = app.result_lines(id).await;
    assert_eq!(lines.len(), 200);
    let canceled_lines = lines
        .iter()
        .filter(|l| l["result"]["type"] == "canceled")
        .count();
    assert_eq!(canceled_lines as u64, 200 - in_flight);
    assert_eq!(
        lines
            .iter()
            .find(|l| l["result"]["type"] == "canceled")
            .unwrap()["result"],
        serde_json::json!({"type": "canceled"})
    );

    // Cancelling again changes nothing.
    let again = app.cancel(id).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json(), app.get(id).await.json());
}

#[tokio::test]
async fn requests_not_started_by_expires_at_end_expired() {
    let app = TestApp::spawn_with(|c| {
        c.lifecycle.expiry = Duration::from_millis(600);
        c.emulator.latency = Duration::from_millis(250);
        c.dispatch.max_in_flight = 2;
    })
    .await;
    let batch = app.create_ok(&requests(40, "too slow")).await;
    let id = batch["id"].as_str().unwrap();
    let ended = app.wait_ended(id, Duration::from_secs(10)).await;
    let counts = &ended["request_counts"];
    let succeeded = counts["succeeded"].as_u64().unwrap();
    let expired = counts["expired"].as_u64().unwrap();
    assert!((2..40).contains(&succeeded), "{ended}");
    assert_eq!(succeeded + expired, 40, "{ended}");
    let lines = app.result_lines(id).await;
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["result"]["type"] == "expired")
            .count() as u64,
        expired
    );
    assert!(ended["cancel_initiated_at"].is_null());
}

#[tokio::test]
async fn delete_only_once_ended_then_404_everywhere() {
    let app = TestApp::spawn_with(|c| c.emulator.latency = Duration::from_millis(300)).await;
    let batch = app.create_ok(&requests(3, "x")).await;
    let id = batch["id"].as_str().unwrap();
    app.delete(id).await.assert_error(
        400,
        "invalid_request_error",
        "In progress batches cannot be deleted. Consider canceling the batch instead.",
    );
    app.results(id).await.assert_error(
        404,
        "not_found_error",
        &format!("Message Batch {id} has no available results."),
    );
    app.wait_ended(id, Duration::from_secs(10)).await;
    let deleted = app.delete(id).await;
    assert_eq!(deleted.status, StatusCode::OK);
    assert_eq!(
        deleted.json(),
        serde_json::json!({"id": id, "type": "message_batch_deleted"})
    );
    let not_found = format!("Message Batch {id} not found.");
    app.get(id)
        .await
        .assert_error(404, "not_found_error", &not_found);
    app.results(id)
        .await
        .assert_error(404, "not_found_error", &not_found);
    app.cancel(id)
        .await
        .assert_error(404, "not_found_error", &not_found);
    app.delete(id)
        .await
        .assert_error(404, "not_found_error", &not_found);
}

#[tokio::test]
async fn results_are_purged_after_retention_and_archived_at_set() {
    let app = TestApp::spawn_with(|c| c.lifecycle.retention = Duration::from_millis(700)).await;
    let batch = app.create_ok(&requests(5, "keep briefly")).await;
    let id = batch["id"].as_str().unwrap();
    let ended = app.wait_ended(id, Duration::from_secs(5)).await;
    assert!(ended["archived_at"].is_null());
    assert_eq!(app.result_lines(id).await.len(), 5);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let archived = loop {
        let now = app.get(id).await.json();
        if now["archived_at"].is_string() {
            break now;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never archived: {now}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        archived["request_counts"]["succeeded"], 5,
        "counts survive the purge"
    );
    app.results(id).await.assert_error(
        404,
        "not_found_error",
        &format!("Message Batch {id} has no available results."),
    );
    // Still deletable.
    assert_eq!(app.delete(id).await.status, StatusCode::OK);
}

#[tokio::test]
async fn workspaces_share_the_run_slots_fairly() {
    let app = TestApp::spawn_with(|c| {
        c.emulator.latency = Duration::from_millis(10);
        c.dispatch.max_in_flight = 4;
    })
    .await;
    // Workspace A floods with five batches; workspace B then submits one small batch.
    let mut flood = Vec::new();
    for _ in 0..5 {
        flood.push(
            app.create_ok(&requests(200, "flood")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let b = app.as_key(crate::helpers::KEY_B);
    let small = b.create_ok(&requests(40, "small")).await;
    b.wait_ended(small["id"].as_str().unwrap(), Duration::from_secs(30))
        .await;
    let mut flood_done = 0;
    for id in &flood {
        flood_done += app.get(id).await.json()["request_counts"]["succeeded"]
            .as_u64()
            .unwrap();
    }
    // Half the slots went to B: A ran about as many requests as B meanwhile, not five
    // times as many (which per-batch fairness alone would give).
    assert!(
        flood_done < 120,
        "workspace A ran {flood_done} requests while B ran 40"
    );
}

#[tokio::test]
async fn a_state_this_version_does_not_know_is_an_error_not_in_progress() {
    let app = TestApp::spawn().await;
    let batch = app.create_ok(&requests(2, "odd state")).await;
    let id = batch["id"].as_str().unwrap();
    app.wait_ended(id, Duration::from_secs(30)).await;
    // As a newer version (or a damaged file) might leave it.
    let db = rusqlite::Connection::open(&app.db).unwrap();
    db.busy_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(
        db.execute("UPDATE batches SET state = 9 WHERE id = ?1", [id])
            .unwrap(),
        1
    );
    app.get(id)
        .await
        .assert_error(500, "api_error", "Internal server error");
    let listed = app
        .send(reqwest::Method::GET, "/v1/messages/batches", None)
        .await;
    listed.assert_error(500, "api_error", "Internal server error");
}
