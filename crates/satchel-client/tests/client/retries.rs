//! The SDKs' retry rules against fake servers: which failures are retried, how often, how
//! long the client waits, and timeouts.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;
use satchel_client::{Client, Error};

use crate::support::{Fake, ended_batch};

/// A fake whose retrieve answers `status` with `headers` for the first `failures` hits,
/// then a batch.
async fn failing(
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    failures: usize,
) -> Fake {
    Fake::start(move |base, hits| {
        let handler = move |headers_in: HeaderMap| {
            let hits = hits.clone();
            let base = base.clone();
            async move {
                assert_eq!(headers_in["x-api-key"], "k");
                assert_eq!(headers_in["anthropic-version"], "2023-06-01");
                let n = hits.fetch_add(1, Ordering::SeqCst);
                if n < failures {
                    let mut response = (
                        StatusCode::from_u16(status).unwrap(),
                        [("request-id", format!("req_fail{n}"))],
                        r#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"},"request_id":"req_body"}"#,
                    )
                        .into_response();
                    for (name, value) in headers {
                        response.headers_mut().insert(*name, value.parse().unwrap());
                    }
                    response
                } else {
                    axum::Json(ended_batch("msgbatch_1", &format!("{base}/r"))).into_response()
                }
            }
        };
        axum::Router::new().route("/v1/messages/batches/{id}", get(handler))
    })
    .await
}

async fn retrieve(client: &Client) -> Result<satchel_client::MessageBatch, Error> {
    client.messages().batches().retrieve("msgbatch_1").await
}

#[tokio::test]
async fn a_429_with_retry_after_ms_is_retried_until_it_succeeds() {
    let fake = failing(429, &[("retry-after-ms", "30")], 2).await;
    let started = Instant::now();
    let batch = retrieve(&fake.client(|b| b)).await.unwrap();
    assert_eq!(batch.id, "msgbatch_1");
    assert_eq!(fake.hits(), 3, "two retries");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(60) && took < Duration::from_millis(400),
        "waited as told (2 x 30 ms), not the 0.5 s backoff: {took:?}"
    );
}

#[tokio::test]
async fn retries_are_spent_then_the_last_error_is_returned() {
    let fake = failing(503, &[("retry-after", "0.02")], usize::MAX).await;
    let error = retrieve(&fake.client(|b| b.max_retries(3)))
        .await
        .unwrap_err();
    assert_eq!(fake.hits(), 4, "first try and three retries");
    let Error::Api(api) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(api.status, 503);
    assert_eq!(api.message, "slow down");
    assert_eq!(
        api.request_id.as_deref(),
        Some("req_fail3"),
        "the header's id"
    );
    assert_eq!(
        error.to_string(),
        "503 rate_limit_error: slow down (request-id: req_fail3)"
    );
}

#[tokio::test]
async fn max_retries_zero_turns_retries_off() {
    let fake = failing(429, &[("retry-after-ms", "10")], usize::MAX).await;
    let error = retrieve(&fake.client(|b| b.max_retries(0)))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(429));
    assert_eq!(fake.hits(), 1);
}

#[tokio::test]
async fn the_sdk_statuses_are_retried_and_client_errors_are_not() {
    for status in [408, 409, 500, 529] {
        let fake = failing(status, &[("retry-after-ms", "5")], 1).await;
        retrieve(&fake.client(|b| b)).await.unwrap();
        assert_eq!(fake.hits(), 2, "{status} is retried");
    }
    for status in [400, 401, 403, 404, 413] {
        let fake = failing(status, &[("retry-after-ms", "5")], 1).await;
        let error = retrieve(&fake.client(|b| b)).await.unwrap_err();
        assert_eq!(error.status(), Some(status));
        assert_eq!(fake.hits(), 1, "{status} is not retried");
    }
}

#[tokio::test]
async fn x_should_retry_overrides_the_status() {
    let fake = failing(500, &[("x-should-retry", "false")], usize::MAX).await;
    retrieve(&fake.client(|b| b)).await.unwrap_err();
    assert_eq!(fake.hits(), 1, "x-should-retry: false");

    let fake = failing(
        400,
        &[("x-should-retry", "true"), ("retry-after-ms", "5")],
        2,
    )
    .await;
    retrieve(&fake.client(|b| b)).await.unwrap();
    assert_eq!(fake.hits(), 3, "x-should-retry: true");
}

#[tokio::test]
async fn without_retry_after_the_wait_is_exponential_backoff() {
    let fake = failing(503, &[], 2).await;
    let started = Instant::now();
    retrieve(&fake.client(|b| b)).await.unwrap();
    let took = started.elapsed();
    // 0.5 s then 1 s, each shortened by up to 25 % of jitter; never a long wait.
    assert!(
        took >= Duration::from_millis(1_120) && took < Duration::from_secs(30),
        "{took:?}"
    );
    assert_eq!(fake.hits(), 3);
}

#[tokio::test]
async fn a_retry_after_beyond_a_minute_is_still_waited_not_cut_to_a_backoff() {
    // Capped at 60 s (the one rule, satchel_wire::retry), so no retry comes within seconds.
    let fake = failing(503, &[("retry-after", "3600")], 1).await;
    let client = fake.client(|b| b);
    let call = tokio::time::timeout(Duration::from_secs(3), retrieve(&client)).await;
    assert!(call.is_err(), "still waiting to retry: {call:?}");
    assert_eq!(fake.hits(), 1, "not retried within the asked wait");
}

#[tokio::test]
async fn connection_failures_are_retried_then_reported() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = Client::builder()
        .base_url(format!("http://127.0.0.1:{port}"))
        .api_key("k")
        .max_retries(1)
        .build()
        .unwrap();
    let started = Instant::now();
    let error = retrieve(&client).await.unwrap_err();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
    assert!(
        error.to_string().to_lowercase().contains("refused"),
        "names the cause: {error}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(370),
        "one backoff"
    );
}

#[tokio::test]
async fn a_slow_server_times_out_and_each_attempt_gets_the_timeout() {
    let fake = Fake::start(|_, hits| {
        let handler = move || {
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                // Far longer than any bound below: only the client's timeout ends the wait.
                tokio::time::sleep(Duration::from_secs(120)).await;
                "too late"
            }
        };
        axum::Router::new().route("/v1/messages/batches/{id}", get(handler))
    })
    .await;
    let client = fake.client(|b| b.timeout(Duration::from_millis(150)).max_retries(1));
    let started = Instant::now();
    let error = retrieve(&client).await.unwrap_err();
    assert!(matches!(error, Error::Timeout { .. }), "{error:?}");
    assert_eq!(fake.hits(), 2, "a timeout is retried");
    // Two attempts of 150 ms and a backoff, never the server's 120 s.
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[tokio::test]
async fn a_success_that_is_not_a_batch_is_a_decode_error() {
    let fake = Fake::start(|_, _| {
        axum::Router::new().route(
            "/v1/messages/batches/{id}",
            get(|| async { ([("request-id", "req_odd")], r#"{"id": 5}"#) }),
        )
    })
    .await;
    let error = retrieve(&fake.client(|b| b)).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::Decode {
                operation: "retrieve",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.request_id(), Some("req_odd"));
}

#[tokio::test]
async fn a_body_cut_off_mid_read_is_retried_like_a_connection_failure() {
    let fake = Fake::start(|base, hits| {
        let handler = move || {
            let hits = hits.clone();
            let base = base.clone();
            async move {
                let full = ended_batch("msgbatch_1", &format!("{base}/r")).to_string();
                if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                    // Half the JSON, then the connection is cut.
                    let half = full[..full.len() / 2].to_owned();
                    let chunks =
                        futures::stream::iter([Ok(half), Err("cut")]).then(|c| async move {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            c.map(bytes::Bytes::from).map_err(std::io::Error::other)
                        });
                    axum::body::Body::from_stream(chunks).into_response()
                } else {
                    full.into_response()
                }
            }
        };
        axum::Router::new().route("/v1/messages/batches/{id}", get(handler))
    })
    .await;
    let batch = retrieve(&fake.client(|b| b)).await.unwrap();
    assert_eq!(batch.id, "msgbatch_1");
    assert_eq!(fake.hits(), 2);

    let fake_again = Fake::start(|_, hits| {
        let handler = move || {
            hits.fetch_add(1, Ordering::SeqCst);
            async {
                let chunks =
                    futures::stream::iter([Ok("{\"id\":"), Err("cut")]).then(|c| async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        c.map(bytes::Bytes::from).map_err(std::io::Error::other)
                    });
                axum::body::Body::from_stream(chunks)
            }
        };
        axum::Router::new().route("/v1/messages/batches/{id}", get(handler))
    })
    .await;
    let error = retrieve(&fake_again.client(|b| b.max_retries(0)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Connection { .. }), "{error:?}");
}
