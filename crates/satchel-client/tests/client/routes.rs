//! Every route of a real server, through the client, and the API's error answers.

use std::collections::HashSet;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use satchel_client::{
    BatchResult, ContentBlock, DeletedMessageBatch, Error, ErrorType, ListParams,
    MessageBatchRequest, ProcessingStatus,
};
use serde_json::json;

use crate::support::{App, KEY_A, KEY_B, requests, wait_ended};

fn assert_api_error(error: &Error, status: u16, kind: ErrorType, message: &str) {
    let Error::Api(api) = error else {
        panic!("expected an API error, got {error:?}");
    };
    assert_eq!(api.status, status, "{api}");
    assert_eq!(api.kind(), Some(kind), "{api}");
    assert_eq!(api.message, message);
    assert!(
        api.request_id.as_deref().unwrap().starts_with("req_"),
        "{api:?}"
    );
    assert_eq!(error.status(), Some(status));
    assert_eq!(error.request_id(), api.request_id.as_deref());
}

#[tokio::test]
async fn create_retrieve_results_delete() {
    let app = App::spawn().await;
    let client = app.client();
    let batches = client.messages().batches();
    let mut reqs = requests(3, "hello");
    reqs.push(MessageBatchRequest::new(
        "no-max",
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
    ));
    let batch = batches.create(&reqs).await.unwrap();
    assert!(batch.id.starts_with("msgbatch_"));
    assert_eq!(batch.request_counts.total(), 4);
    assert_eq!(batch.results_url, None);

    let again = batches.retrieve(&batch.id).await.unwrap();
    assert_eq!(again.id, batch.id);
    let ended = wait_ended(&client, &batch.id).await;
    assert_eq!(ended.request_counts.succeeded, 3);
    assert_eq!(ended.request_counts.errored, 1);
    assert_eq!(
        ended.results_url.as_deref(),
        Some(format!("{}/v1/messages/batches/{}/results", app.base, batch.id).as_str())
    );

    let lines: Vec<_> = batches
        .results(&batch.id)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<&str> = lines.iter().map(|l| l.custom_id.as_str()).collect();
    assert_eq!(ids, ["r0", "r1", "r2", "no-max"], "submission order");
    let message = lines[1].result.parse_message().unwrap().unwrap();
    assert_eq!(message.content, vec![ContentBlock::text("hello 1")]);
    assert_eq!(message.model, "claude-test");
    assert_eq!(message.usage.service_tier.as_deref(), Some("batch"));
    match &lines[3].result {
        BatchResult::Errored { error } => {
            assert_eq!(error.error.kind, ErrorType::InvalidRequestError);
            assert_eq!(error.error.message, "max_tokens: Field required");
        }
        other => panic!("expected errored, got {other:?}"),
    }

    // The raw lines are the server's bytes, and results_of skips the retrieve.
    let raw: Vec<_> = batches
        .results_lines_of(&ended)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(raw.len(), 4);
    assert!(raw[0].starts_with(br#"{"custom_id":"r0","result":{"type":"succeeded""#));
    assert_eq!(batches.results_of(&ended).await.unwrap().count().await, 4);

    let deleted: DeletedMessageBatch = batches.delete(&batch.id).await.unwrap();
    assert_eq!(deleted, DeletedMessageBatch::new(&batch.id));
    let gone = format!("Message Batch {} not found.", batch.id);
    for error in [
        batches.retrieve(&batch.id).await.unwrap_err(),
        batches.cancel(&batch.id).await.unwrap_err(),
        batches.delete(&batch.id).await.unwrap_err(),
        batches.results(&batch.id).await.err().unwrap(),
    ] {
        assert_api_error(&error, 404, ErrorType::NotFoundError, &gone);
    }
}

#[tokio::test]
async fn list_pages_itself_both_ways() {
    let app = App::spawn().await;
    let client = app.client();
    let batches = client.messages().batches();
    let mut created = Vec::new();
    for i in 0..7 {
        created.push(
            batches
                .create(&requests(1, &format!("b{i}")))
                .await
                .unwrap()
                .id,
        );
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let listed: Vec<String> = batches
        .list(ListParams::default().limit(3))
        .map_ok(|b| b.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(listed, newest_first, "three pages, newest first");

    let default: Vec<String> = batches
        .list(ListParams::default())
        .map_ok(|b| b.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(default, newest_first);

    let page = batches
        .list_page(&ListParams::default().limit(2))
        .await
        .unwrap();
    assert!(page.has_more);
    assert_eq!(page.first_id.as_deref(), Some(newest_first[0].as_str()));
    assert_eq!(page.last_id.as_deref(), Some(newest_first[1].as_str()));

    let older: Vec<String> = batches
        .list(ListParams::default().limit(2).after_id(&newest_first[2]))
        .map_ok(|b| b.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(older, newest_first[3..]);

    // Going back with before_id walks towards newer batches until there are none.
    let newer: HashSet<String> = batches
        .list(ListParams::default().limit(2).before_id(&created[2]))
        .map_ok(|b| b.id)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(newer, created[3..].iter().cloned().collect::<HashSet<_>>());

    // Another workspace sees none of them.
    let other = app.client_with(|b| b.api_key(KEY_B));
    let theirs: Vec<_> = other
        .messages()
        .batches()
        .list(ListParams::default())
        .try_collect()
        .await
        .unwrap();
    assert!(theirs.is_empty());

    let error = batches
        .list(ListParams::default().limit(1001))
        .try_collect::<Vec<_>>()
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(400), "{error}");
}

#[tokio::test]
async fn cancel_then_delete_and_the_in_progress_refusals() {
    let app = App::spawn_with(|c| {
        c.emulator.latency = Duration::from_millis(400);
        c.dispatch.max_in_flight = 2;
    })
    .await;
    let client = app.client();
    let batches = client.messages().batches();
    let batch = batches.create(&requests(50, "cancel me")).await.unwrap();

    let error = batches.delete(&batch.id).await.unwrap_err();
    assert_api_error(
        &error,
        400,
        ErrorType::InvalidRequestError,
        "In progress batches cannot be deleted. Consider canceling the batch instead.",
    );
    match batches.results(&batch.id).await.err().unwrap() {
        Error::ResultsNotReady {
            id,
            processing_status,
        } => {
            assert_eq!(id, batch.id);
            assert_eq!(processing_status, ProcessingStatus::InProgress);
        }
        other => panic!("expected ResultsNotReady, got {other:?}"),
    }

    tokio::time::sleep(Duration::from_millis(100)).await;
    let canceling = batches.cancel(&batch.id).await.unwrap();
    assert_eq!(canceling.processing_status, ProcessingStatus::Canceling);
    assert!(canceling.cancel_initiated_at.is_some());
    let ended = wait_ended(&client, &batch.id).await;
    assert_eq!(
        ended.request_counts.canceled + ended.request_counts.succeeded,
        50
    );
    assert!(ended.request_counts.canceled >= 48, "{ended:?}");
    // Cancel of an ended batch returns it unchanged.
    assert_eq!(batches.cancel(&batch.id).await.unwrap(), ended);
    let lines: Vec<_> = batches
        .results(&batch.id)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(lines.len(), 50);
    batches.delete(&batch.id).await.unwrap();
}

#[tokio::test]
async fn both_auth_styles_and_the_auth_errors() {
    let app = App::spawn().await;
    let bearer = app.client_with(|b| b.auth_token(KEY_A));
    let batch = bearer
        .messages()
        .batches()
        .create(&requests(1, "x"))
        .await
        .unwrap();
    // The same workspace through x-api-key.
    app.client()
        .messages()
        .batches()
        .retrieve(&batch.id)
        .await
        .unwrap();

    let wrong = app.client_with(|b| b.api_key("sk-nope"));
    let error = wrong
        .messages()
        .batches()
        .retrieve(&batch.id)
        .await
        .unwrap_err();
    assert_api_error(
        &error,
        401,
        ErrorType::AuthenticationError,
        "invalid x-api-key",
    );

    let other = app.client_with(|b| b.api_key(KEY_B));
    let error = other
        .messages()
        .batches()
        .retrieve(&batch.id)
        .await
        .unwrap_err();
    assert_api_error(
        &error,
        404,
        ErrorType::NotFoundError,
        &format!("Message Batch {} not found.", batch.id),
    );
}

#[tokio::test]
async fn the_server_validation_errors_come_back_typed() {
    let app = App::spawn().await;
    let batches_client = app.client();
    let batches = batches_client.messages().batches();
    let mut dup = requests(2, "x");
    dup[1].custom_id = "r0".into();
    assert_api_error(
        &batches.create(&dup).await.unwrap_err(),
        400,
        ErrorType::InvalidRequestError,
        "requests: custom_id's must be unique within a batch. Duplicate custom_id found: r0",
    );
    let none: Vec<MessageBatchRequest> = Vec::new();
    assert_api_error(
        &batches.create(&none).await.unwrap_err(),
        400,
        ErrorType::InvalidRequestError,
        "requests: List should have at least 1 item after validation, not 0",
    );
    let mut bad = requests(1, "x");
    bad[0].custom_id = "has space".into();
    assert_api_error(
        &batches.create(&bad).await.unwrap_err(),
        400,
        ErrorType::InvalidRequestError,
        "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'",
    );
    // An id that tries to climb out of its path segment is just an unknown id.
    assert_api_error(
        &batches
            .retrieve("../../v1/messages/batches")
            .await
            .unwrap_err(),
        404,
        ErrorType::NotFoundError,
        "Message Batch ../../v1/messages/batches not found.",
    );
    // Nothing was created by any of that.
    let page = batches.list_page(&ListParams::default()).await.unwrap();
    assert!(page.data.is_empty());
}

#[tokio::test]
async fn a_base_url_with_a_trailing_slash_works() {
    let app = App::spawn().await;
    let client = satchel_client::Client::builder()
        .base_url(format!("{}/", app.base))
        .api_key(KEY_A)
        .build()
        .unwrap();
    let batch = client
        .messages()
        .batches()
        .create(&requests(1, "x"))
        .await
        .unwrap();
    assert_eq!(
        client
            .messages()
            .batches()
            .retrieve(&batch.id)
            .await
            .unwrap()
            .id,
        batch.id
    );
}
