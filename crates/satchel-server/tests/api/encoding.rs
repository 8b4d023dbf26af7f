//! Compressed request bodies (decoded as they stream) and compressed answers.

use async_compression::tokio::bufread::{GzipDecoder, GzipEncoder, ZlibEncoder, ZstdEncoder};
use reqwest::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::helpers::{KEY_A, TestApp, requests};

async fn all(mut reader: impl AsyncRead + Unpin) -> Vec<u8> {
    let mut out = Vec::new();
    reader.read_to_end(&mut out).await.unwrap();
    out
}

async fn post(app: &TestApp, encoding: &str, body: Vec<u8>) -> (u16, Value) {
    let reply = app
        .client
        .post(format!("{}/v1/messages/batches", app.base))
        .header("x-api-key", KEY_A)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .header("content-encoding", encoding)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = reply.status().as_u16();
    (
        status,
        serde_json::from_slice(&reply.bytes().await.unwrap()).unwrap(),
    )
}

#[tokio::test]
async fn gzip_deflate_and_zstd_bodies_are_decoded() {
    let app = TestApp::spawn().await;
    let body = json!({ "requests": requests(3_000, "compressed") }).to_string();
    let plain = body.as_bytes();
    for (name, encoded) in [
        ("gzip", all(GzipEncoder::new(plain)).await),
        ("deflate", all(ZlibEncoder::new(plain)).await),
        ("zstd", all(ZstdEncoder::new(plain)).await),
    ] {
        assert!(encoded.len() < plain.len() / 2, "{name} compresses");
        let (status, batch) = post(&app, name, encoded).await;
        assert_eq!(status, 200, "{name}: {batch}");
        assert_eq!(batch["request_counts"]["processing"], 3_000, "{name}");
    }
    // A broken stream is the client's mistake, and creates nothing.
    let mut broken = all(GzipEncoder::new(plain)).await;
    broken.truncate(broken.len() / 2);
    let (status, reply) = post(&app, "gzip", broken).await;
    assert_eq!(status, 400, "{reply}");
    let (status, reply) = post(&app, "br", plain.to_vec()).await;
    assert_eq!(status, 400, "{reply}");
    assert_eq!(reply["error"]["type"], "invalid_request_error");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"br\" is not supported"),
        "{reply}"
    );
    let list = app
        .send(Method::GET, "/v1/messages/batches", None)
        .await
        .json();
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn answers_are_compressed_when_asked_results_included() {
    let app = TestApp::spawn().await;
    let batch = app.create_ok(&requests(500, "squeeze me")).await;
    let id = batch["id"].as_str().unwrap();
    app.wait_ended(id, std::time::Duration::from_secs(60)).await;
    let url = format!("{}/v1/messages/batches/{id}/results", app.base);
    let get = |encoding: Option<&'static str>| {
        let mut request = app
            .client
            .get(&url)
            .header("x-api-key", KEY_A)
            .header("anthropic-version", "2023-06-01");
        if let Some(encoding) = encoding {
            request = request.header("accept-encoding", encoding);
        }
        request.send()
    };
    let plain = get(None).await.unwrap();
    assert!(!plain.headers().contains_key("content-encoding"));
    let plain = plain.bytes().await.unwrap();
    let zipped = get(Some("gzip")).await.unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["content-type"], "application/x-jsonl");
    let zipped = zipped.bytes().await.unwrap();
    assert!(zipped.len() < plain.len() / 3);
    let unzipped = all(GzipDecoder::new(&zipped[..])).await;
    assert_eq!(unzipped, plain.to_vec());
    assert_eq!(String::from_utf8(unzipped).unwrap().lines().count(), 500);
}
