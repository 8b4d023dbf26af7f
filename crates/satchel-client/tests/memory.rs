//! Results are streamed, not buffered: ~200 MB of result lines, generated on the fly by a fake
//! server in this process, pass through the client while the process's peak memory barely
//! moves. Alone in its test binary, so no other test's memory is counted.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

use std::time::Instant;

use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use futures::StreamExt;
use satchel_client::{BatchResult, Client};
use serde_json::json;

const LINES: usize = 190_000;
const LINES_PER_CHUNK: usize = 64;

/// Result line `i`: a succeeded message of about 1.1 KB, the size of a short real answer.
fn line(i: usize) -> String {
    let text = format!("answer {i} ").repeat(55);
    format!(
        r#"{{"custom_id":"r{i}","result":{{"type":"succeeded","message":{{"id":"msg_01{i:022}","type":"message","role":"assistant","content":[{{"type":"text","text":"{text}","citations":null}}],"model":"claude-test","stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":12,"output_tokens":240,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"service_tier":"batch"}}}}}}}}"#
    ) + "\n"
}

/// Peak resident memory of this process so far, in KB.
fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_mb_results_file_streams_in_bounded_memory() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let results_url = format!("{base}/v1/messages/batches/msgbatch_big/results");
    let batch = json!({
        "id": "msgbatch_big", "type": "message_batch", "processing_status": "ended",
        "request_counts": {"processing": 0, "succeeded": LINES, "errored": 0, "canceled": 0, "expired": 0},
        "ended_at": "2024-09-24T18:37:24.100435Z", "created_at": "2024-09-24T18:37:24.100435Z",
        "expires_at": "2024-09-25T18:37:24.100435Z", "cancel_initiated_at": null,
        "archived_at": null, "results_url": results_url,
    });
    let app = axum::Router::new()
        .route(
            "/v1/messages/batches/msgbatch_big",
            get(move || async move { axum::Json(batch) }),
        )
        .route(
            "/v1/messages/batches/msgbatch_big/results",
            get(|| async {
                // Generated chunk by chunk as the client reads: the server holds one chunk.
                let chunks =
                    futures::stream::iter((0..LINES).step_by(LINES_PER_CHUNK)).map(|start| {
                        let chunk: String = (start..(start + LINES_PER_CHUNK).min(LINES))
                            .map(line)
                            .collect();
                        Ok::<_, std::io::Error>(Bytes::from(chunk))
                    });
                (
                    [("content-type", "application/x-jsonl")],
                    Body::from_stream(chunks),
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let client = Client::builder()
        .base_url(&base)
        .api_key("k")
        .build()
        .unwrap();
    let before_kb = peak_rss_kb();
    let started = Instant::now();
    let mut results = client
        .messages()
        .batches()
        .results("msgbatch_big")
        .await
        .unwrap();
    let mut count = 0usize;
    let mut bytes = 0usize;
    while let Some(item) = results.next().await {
        let item = item.unwrap();
        assert_eq!(item.custom_id, format!("r{count}"), "in order, none lost");
        if let BatchResult::Succeeded { message } = &item.result {
            bytes += message.get().len();
        }
        if count.is_multiple_of(50_000) {
            let message = item.result.parse_message().unwrap().unwrap();
            assert_eq!(message.usage.output_tokens, 240);
        }
        count += 1;
    }
    let took = started.elapsed();
    assert_eq!(count, LINES);
    let total_mb = (0..LINES)
        .step_by(10_000)
        .map(|i| line(i).len())
        .sum::<usize>() as f64
        * 10_000.0
        / 1e6;
    assert!(
        (190.0..260.0).contains(&total_mb),
        "the file is about 200 MB: {total_mb:.0} MB"
    );
    assert!(
        bytes as f64 > total_mb * 1e6 * 0.6,
        "the messages are most of it"
    );
    let growth_mb = (peak_rss_kb().saturating_sub(before_kb)) / 1024;
    eprintln!(
        "streamed {count} lines (~{total_mb:.0} MB) in {took:.2?}: {:.0} MB/s; peak RSS grew {growth_mb} MB",
        total_mb / took.as_secs_f64()
    );
    assert!(
        growth_mb < 64,
        "peak RSS grew {growth_mb} MB while streaming ~{total_mb:.0} MB of results"
    );
}
