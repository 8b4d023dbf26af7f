//! List: newest first, cursors both ways, limits.

use reqwest::Method;
use serde_json::Value;

use crate::helpers::{TestApp, requests};

async fn page(app: &TestApp, query: &str) -> Value {
    let reply = app
        .send(Method::GET, &format!("/v1/messages/batches{query}"), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.json()
}

fn ids(page: &Value) -> Vec<String> {
    page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn pages_newest_first_with_cursors_both_ways() {
    let app = TestApp::spawn().await;
    let mut created = Vec::new();
    for _ in 0..7 {
        created.push(
            app.create_ok(&requests(1, "x")).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();

    let all = page(&app, "").await;
    assert_eq!(ids(&all), newest_first);
    assert_eq!(all["has_more"], false);
    assert_eq!(all["first_id"], newest_first[0]);
    assert_eq!(all["last_id"], newest_first[6]);

    // Forward with after_id, as the SDKs auto-paginate.
    let mut walked = Vec::new();
    let mut query = "?limit=3".to_owned();
    loop {
        let p = page(&app, &query).await;
        walked.extend(ids(&p));
        assert_eq!(p["first_id"], p["data"][0]["id"]);
        if p["has_more"] == false {
            break;
        }
        query = format!("?limit=3&after_id={}", p["last_id"].as_str().unwrap());
    }
    assert_eq!(walked, newest_first);

    // Backward with before_id.
    let p = page(&app, &format!("?limit=2&before_id={}", newest_first[4])).await;
    assert_eq!(ids(&p), newest_first[2..4]);
    assert_eq!(p["has_more"], true);
    let p = page(&app, &format!("?limit=2&before_id={}", newest_first[2])).await;
    assert_eq!(ids(&p), newest_first[0..2]);
    assert_eq!(p["has_more"], false);

    // Both cursors: the batches strictly between them, newest first.
    let between = format!(
        "?limit=2&after_id={}&before_id={}",
        newest_first[0], newest_first[5]
    );
    let p = page(&app, &between).await;
    assert_eq!(ids(&p), newest_first[1..3]);
    assert_eq!(p["has_more"], true);
    let p = page(&app, "?after_id=after_id&before_id=before_id&limit=1").await;
    assert_eq!(
        ids(&p),
        Vec::<String>::new(),
        "the SDKs' generated test gets a page"
    );

    // A cursor whose batch is gone still works: ids compare by order.
    let p = page(&app, "?after_id=msgbatch_01zzzzzzzzzzzzzzzzzzzzzz&limit=2").await;
    assert_eq!(ids(&p), newest_first[0..2]);
    let p = page(&app, "?before_id=msgbatch_0111").await;
    assert_eq!(ids(&p), newest_first);

    // Beta flag and header are ignored.
    let p = page(&app, "?beta=true&limit=1").await;
    assert_eq!(ids(&p), newest_first[0..1]);
}

#[tokio::test]
async fn empty_list_and_bad_parameters() {
    let app = TestApp::spawn().await;
    let empty = page(&app, "").await;
    assert_eq!(
        empty,
        serde_json::json!({"data": [], "has_more": false, "first_id": null, "last_id": null})
    );
    for (query, message) in [
        (
            "?limit=0",
            "limit: Input should be greater than or equal to 1",
        ),
        (
            "?limit=1001",
            "limit: Input should be less than or equal to 1000",
        ),
        (
            "?limit=abc",
            "limit: Input should be a valid integer, unable to parse string as an integer",
        ),
    ] {
        app.send(Method::GET, &format!("/v1/messages/batches{query}"), None)
            .await
            .assert_error(400, "invalid_request_error", message);
    }
    assert_eq!(ids(&page(&app, "?limit=1000").await).len(), 0);
}
