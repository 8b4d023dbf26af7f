//! Results bodies a real server never sends but the client must survive: `\r\n`, a last line
//! without terminator, bad lines, a connection cut mid-body; and `results_url` followed as
//! given.

use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{HeaderMap, Uri};
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use satchel_client::Error;

use crate::support::{Fake, ended_batch};

const A: &str = r#"{"custom_id":"a","result":{"type":"canceled"}}"#;
const B: &str = r#"{"custom_id":"b","result":{"type":"expired"}}"#;

/// A fake whose batch points its `results_url` at another path (with a query), serving
/// `chunks` there; the last chunk may be an error, which cuts the connection.
async fn serving(chunks: Vec<Result<&'static str, &'static str>>) -> Fake {
    Fake::start(move |base, hits| {
        let results_url = format!("{base}/files/abc/content?download=1");
        axum::Router::new()
            .route(
                "/v1/messages/batches/{id}",
                get(move || async move { axum::Json(ended_batch("msgbatch_1", &results_url)) }),
            )
            .route(
                "/files/abc/content",
                get(move |uri: Uri, headers: HeaderMap| {
                    let chunks = chunks.clone();
                    async move {
                        hits.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(uri.query(), Some("download=1"), "followed verbatim");
                        assert_eq!(headers["x-api-key"], "k", "authenticated like the SDKs");
                        // Paced, so the head and the first lines are on the wire before
                        // a failure cuts the connection.
                        let paced = futures::stream::iter(chunks).then(|c| async move {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                            c
                        });
                        let stream = paced.map(|c| {
                            c.map(|s| Bytes::from_static(s.as_bytes()))
                                .map_err(std::io::Error::other)
                        });
                        (
                            [("content-type", "application/x-jsonl")],
                            Body::from_stream(stream),
                        )
                    }
                }),
            )
    })
    .await
}

#[tokio::test]
async fn crlf_and_an_unterminated_last_line_are_fine() {
    let fake = serving(vec![Ok(A), Ok("\r"), Ok("\n"), Ok(B)]).await;
    let client = fake.client(|b| b);
    let lines: Vec<_> = client
        .messages()
        .batches()
        .results("msgbatch_1")
        .await
        .unwrap()
        .collect()
        .await;
    let ids: Vec<_> = lines.into_iter().map(|l| l.unwrap().custom_id).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn bad_lines_are_error_items_and_the_rest_still_arrives() {
    let fake = serving(vec![
        Ok(A),
        Ok("\n{\"custom_id\":\"x\"}\n\n"),
        Ok(B),
        Ok("\n"),
    ])
    .await;
    let client = fake.client(|b| b);
    let mut results = client
        .messages()
        .batches()
        .results("msgbatch_1")
        .await
        .unwrap();
    let mut items = Vec::new();
    while let Some(item) = results.next().await {
        items.push(item);
    }
    assert_eq!(items.len(), 4);
    assert_eq!(items[0].as_ref().unwrap().custom_id, "a");
    assert!(
        matches!(items[1], Err(Error::ResultLine { line: 2, .. })),
        "{:?}",
        items[1]
    );
    assert!(
        matches!(items[2], Err(Error::ResultLine { line: 3, .. })),
        "blank: {:?}",
        items[2]
    );
    assert_eq!(items[3].as_ref().unwrap().custom_id, "b");
    assert_eq!(results.lines_read(), 4);
}

#[tokio::test]
async fn a_connection_cut_mid_body_is_an_error_not_a_short_file() {
    let fake = serving(vec![Ok(A), Ok("\n"), Ok(B), Err("boom")]).await;
    let client = fake.client(|b| b);
    let items: Vec<_> = client
        .messages()
        .batches()
        .results("msgbatch_1")
        .await
        .unwrap()
        .collect()
        .await;
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0].as_ref().unwrap().custom_id, "a");
    // The half-received line `B` is not handed out as if it were whole.
    assert!(
        matches!(items[1], Err(Error::Connection { .. })),
        "{:?}",
        items[1]
    );
}
