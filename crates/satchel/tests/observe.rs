//! Seeing inside a running Satchel: the health probes (and readiness during a drain), JSON
//! log lines, and the Prometheus metrics scraped while a batch runs. Real `satchel serve`
//! processes, real HTTP, real signals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Server, create_batch};

fn requests(n: usize) -> String {
    let requests: Vec<Value> = (0..n)
        .map(|i| {
            json!({"custom_id": format!("r{i}"), "params": {"model": "claude-test", "max_tokens": 16,
                "messages": [{"role": "user", "content": format!("request {i}")}]}})
        })
        .collect();
    json!({ "requests": requests }).to_string()
}

/// A GET without any key or version header: what a probe sends.
async fn probe(url: &str) -> Result<(u16, Value), reqwest::Error> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = response.text().await?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

async fn wait_for(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readiness_turns_false_on_sigterm_while_the_node_drains_and_liveness_stays() {
    let dir = tempfile::tempdir().unwrap();
    // Each emulated request takes 5 s: the drain stays open while attempts finish. For the
    // first second after the signal the API serves on, not ready; the metrics listener
    // answers until the very end.
    let mut server = Server::start(
        &dir.path().join("s.db"),
        &[
            "--emulator-latency",
            "5s",
            "--drain-delay",
            "1s",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    )
    .await;
    let metrics_addr = server.metrics_addr.expect("the metrics address bound");
    let (status, body) = probe(&server.url("/healthz")).await.unwrap();
    assert_eq!((status, &body), (200, &json!({"status": "ok"})));
    let (status, body) = probe(&server.url("/readyz")).await.unwrap();
    assert_eq!((status, &body), (200, &json!({"status": "ready"})));
    let (status, _) = probe(&format!("http://{metrics_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    create_batch(&server, requests(4)).await;
    wait_for(
        "the attempts to start",
        Duration::from_secs(20),
        async || {
            let scrape = Scrape::take(&format!("http://{metrics_addr}/metrics")).await;
            scrape.value("satchel_backend_in_flight", &[("backend", "emulator")]) == 4.0
        },
    )
    .await;

    let sent = std::process::Command::new("kill")
        .args(["-TERM", &server_pid(&server)])
        .status()
        .unwrap();
    assert!(sent.success());
    // During the drain delay the API still answers: not ready, but alive.
    wait_for(
        "/readyz to answer 503 draining",
        Duration::from_secs(20),
        async || match probe(&server.url("/readyz")).await {
            Ok((503, body)) => {
                assert_eq!(body, json!({"status": "draining"}));
                true
            }
            Ok((200, _)) => false,
            other => panic!("unexpected readiness answer during the drain: {other:?}"),
        },
    )
    .await;
    let (status, _) = probe(&server.url("/healthz")).await.unwrap();
    assert_eq!(status, 200, "alive while draining");
    // Then the API stops accepting while the attempts in flight finish; the metrics
    // listener still says why.
    wait_for(
        "the API to stop accepting",
        Duration::from_secs(20),
        async || probe(&server.url("/healthz")).await.is_err(),
    )
    .await;
    assert!(
        server.is_running(),
        "attempts in flight keep the drain open"
    );
    let (status, body) = probe(&format!("http://{metrics_addr}/readyz"))
        .await
        .unwrap();
    assert_eq!((status, body), (503, json!({"status": "draining"})));
    let status = server
        .signal_and_wait("TERM", Duration::from_secs(60))
        .await;
    assert!(status.success(), "exit 0 after the drain: {status:?}");
    // The attempts in flight at the signal finished and were stored.
    let log = server.log_text();
    assert!(log.contains("settled=4"), "{log}");
}

fn server_pid(server: &Server) -> String {
    server.pid().to_string()
}

#[tokio::test]
async fn json_logs_carry_request_id_route_status_latency_and_batch_id_and_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-secret-never-logged-123";
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--log-format", "json", "--api-keys", key],
    )
    .await;
    let client = reqwest::Client::new();
    let created = client
        .post(server.url("/v1/messages/batches"))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .header("content-type", "application/json")
        .body(requests(2))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let created: Value = serde_json::from_str(&created).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let got = client
        .get(server.url(&format!("/v1/messages/batches/{id}")))
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    let request_id = got.headers()["request-id"].to_str().unwrap().to_owned();

    let mut lines = Vec::new();
    wait_for("both request lines", Duration::from_secs(10), async || {
        lines = server
            .log_text()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .filter(|l| l["message"] == "request")
            .collect();
        lines.len() >= 2
    })
    .await;
    let create = lines
        .iter()
        .find(|l| l["method"] == "POST")
        .expect("the create's line");
    assert_eq!(create["route"], "/v1/messages/batches", "{create}");
    assert_eq!(create["status"], 200, "{create}");
    assert_eq!(create["batch_id"], id.as_str(), "{create}");
    assert!(create["elapsed_ms"].is_u64(), "{create}");
    assert!(
        create["request_id"].as_str().unwrap().starts_with("req_"),
        "{create}"
    );
    let get = lines
        .iter()
        .find(|l| l["request_id"] == request_id.as_str())
        .expect("the retrieve's line, by its request-id header");
    assert_eq!(get["route"], "/v1/messages/batches/{id}", "{get}");
    assert_eq!(get["batch_id"], id.as_str(), "{get}");
    assert_eq!(get["status"], 200);
    assert!(!server.log_text().contains(key), "the key is never logged");
}

/// One scrape of `/metrics`, parsed by a Prometheus text-format parser.
struct Scrape(prometheus_parse::Scrape);

impl Scrape {
    async fn take(url: &str) -> Self {
        let response = reqwest::get(url).await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        Self(prometheus_parse::Scrape::parse(lines).unwrap())
    }

    /// The value of the one sample of `metric` whose labels include `labels`; 0 if none.
    fn value(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        use prometheus_parse::Value;
        let matching: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| {
                s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                ref other => panic!("{metric} is not a number: {other:?}"),
            })
            .collect();
        assert!(matching.len() <= 1, "{metric} {labels:?}: {matching:?}");
        matching.first().copied().unwrap_or(0.0)
    }

    /// The histogram `metric` whose labels include `labels`: its buckets, checked to be
    /// cumulative, their `+Inf` count equal to the `_count` sample.
    fn histogram_count(&self, metric: &str, labels: &[(&str, &str)]) -> f64 {
        use prometheus_parse::Value;
        let buckets = self
            .0
            .samples
            .iter()
            .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v)))
            .map(|s| match &s.value {
                Value::Histogram(b) => b.clone(),
                other => panic!("{metric} is not a histogram: {other:?}"),
            })
            .unwrap_or_else(|| panic!("no histogram {metric} {labels:?}"));
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count),
            "{metric}: buckets not cumulative: {buckets:?}"
        );
        let inf = buckets.last().unwrap();
        assert!(inf.less_than.is_infinite());
        let count = self.value(&format!("{metric}_count"), labels);
        assert_eq!(inf.count, count, "{metric}: +Inf bucket vs _count");
        count
    }
}

#[tokio::test]
async fn metrics_move_while_a_batch_runs_and_agree_with_its_counts_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &[
            "--metrics-listen",
            "127.0.0.1:0",
            "--emulator-latency",
            "150ms",
            "--max-in-flight",
            "4",
        ],
    )
    .await;
    let metrics_addr = server.metrics_addr.expect("the metrics address bound");
    let metrics_url = format!("http://{metrics_addr}/metrics");
    // The metrics listener takes no API key; the API's listener does not serve metrics.
    let before = Scrape::take(&metrics_url).await;
    assert_eq!(
        before.value("satchel_batches", &[("status", "in_progress")]),
        0.0
    );
    let (status, _) = support::client_get(&server.url("/metrics")).await;
    assert_eq!(status, 404, "metrics are not on the API listener");

    // 40 requests the emulator answers and 4 it refuses (no messages): 11 rounds of 4 at
    // 150 ms, well over a second of running to watch.
    let n = 44;
    let mut items: Vec<Value> = (0..40)
        .map(|i| {
            json!({"custom_id": format!("ok{i}"), "params": {"model": "claude-test", "max_tokens": 16,
                "messages": [{"role": "user", "content": format!("request {i}")}]}})
        })
        .collect();
    items.extend((0..4).map(|i| {
        json!({"custom_id": format!("bad{i}"), "params": {"model": "claude-test", "max_tokens": 16, "messages": []}})
    }));
    let body = json!({ "requests": items }).to_string();
    let id = create_batch(&server, body.clone()).await;

    // While it runs: requests settle a few at a time, the queue drains, attempts count up.
    let mut seen_partial = false;
    let mut seen_queue = false;
    let mut last_attempts = 0.0;
    let mut attempts_moved = 0;
    wait_for("the batch to end", Duration::from_secs(60), async || {
        let scrape = Scrape::take(&metrics_url).await;
        let done = scrape.value("satchel_requests", &[("result", "succeeded")])
            + scrape.value("satchel_requests", &[("result", "errored")]);
        let depth = scrape.value("satchel_queue_depth", &[]);
        assert_eq!(done + depth, n as f64, "every request is done or queued");
        seen_partial |= done > 0.0 && done < n as f64;
        seen_queue |= depth > 0.0 && scrape.value("satchel_queue_oldest_age_seconds", &[]) > 0.0;
        let attempts = scrape.value(
            "satchel_backend_attempts_total",
            &[("backend", "emulator"), ("outcome", "success")],
        );
        assert!(attempts >= last_attempts, "a counter never goes down");
        if attempts > last_attempts {
            attempts_moved += 1;
        }
        last_attempts = attempts;
        assert!(scrape.value("satchel_backend_in_flight", &[("backend", "emulator")]) <= 4.0);
        scrape.value("satchel_batches", &[("status", "ended")]) == 1.0
    })
    .await;
    assert!(seen_partial, "a scrape saw the batch part done");
    assert!(seen_queue, "a scrape saw requests queued, and their age");
    assert!(
        attempts_moved >= 2,
        "attempts counted up over several scrapes"
    );

    // At the end the numbers agree with the batch's own request_counts.
    let batch = support::get_batch(&server, &id).await;
    let (status, results) =
        support::client_get(&server.url(&format!("/v1/messages/batches/{id}/results"))).await;
    assert_eq!(status, 200);
    let end = Scrape::take(&metrics_url).await;
    let counts = &batch["request_counts"];
    for result in ["processing", "succeeded", "errored", "canceled", "expired"] {
        assert_eq!(
            end.value("satchel_requests", &[("result", result)]),
            counts[result].as_f64().unwrap(),
            "{result}: {batch}"
        );
    }
    assert_eq!(counts["succeeded"], 40);
    assert_eq!(counts["errored"], 4);
    assert_eq!(end.value("satchel_queue_depth", &[]), 0.0);
    assert_eq!(end.value("satchel_queue_oldest_age_seconds", &[]), 0.0);
    let emulator = [("backend", "emulator")];
    assert_eq!(
        end.value(
            "satchel_backend_attempts_total",
            &[("backend", "emulator"), ("outcome", "success")]
        ),
        40.0
    );
    assert_eq!(
        end.value(
            "satchel_backend_failures_total",
            &[("backend", "emulator"), ("class", "invalid_request_error")]
        ),
        4.0
    );
    assert_eq!(end.value("satchel_backend_in_flight", &emulator), 0.0);
    assert!(end.value("satchel_backend_concurrency_limit", &emulator) >= 1.0);
    // The emulator never throttles, and its refusals are final: nothing was retried.
    assert_eq!(end.value("satchel_backend_throttles_total", &emulator), 0.0);
    assert_eq!(end.value("satchel_backend_retries_total", &emulator), 0.0);
    assert!(end.histogram_count("satchel_backend_attempt_duration_seconds", &emulator) >= 44.0);
    let create = [("route", "/v1/messages/batches"), ("method", "POST")];
    assert_eq!(
        end.value(
            "satchel_http_requests_total",
            &[create[0], create[1], ("status", "200")]
        ),
        1.0
    );
    assert_eq!(
        end.histogram_count("satchel_http_request_duration_seconds", &create),
        1.0
    );
    assert_eq!(
        end.histogram_count("satchel_batch_create_duration_seconds", &[]),
        1.0
    );
    assert_eq!(
        end.value("satchel_ingest_bytes_total", &[]),
        body.len() as f64
    );
    assert_eq!(end.value("satchel_ingest_requests_total", &[]), n as f64);
    assert_eq!(
        end.value("satchel_results_bytes_total", &[]),
        results.len() as f64
    );
    assert!(
        end.histogram_count(
            "satchel_store_operation_duration_seconds",
            &[("op", "settle")]
        ) >= 1.0
    );
    assert!(
        end.histogram_count(
            "satchel_store_operation_duration_seconds",
            &[("op", "claim")]
        ) >= 1.0
    );
    // Every series names the node it comes from.
    assert!(
        end.0
            .samples
            .iter()
            .all(|s| s.labels.get("node").is_some_and(|n| !n.is_empty()))
    );
}

#[tokio::test]
async fn the_dashboard_page_is_public_and_its_data_needs_a_key_of_the_workspace() {
    let dir = tempfile::tempdir().unwrap();
    let key = "sk-dashboard-key";
    let server = Server::start(&dir.path().join("s.db"), &["--api-keys", key]).await;
    for (path, kind) in [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/app.css", "text/css"),
    ] {
        let response = reqwest::get(server.url(path)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        assert!(
            response.headers()["content-security-policy"]
                .to_str()
                .unwrap()
                .contains("default-src 'self'"),
            "{path}: nothing from elsewhere"
        );
    }
    let client = reqwest::Client::new();
    let backends = server.url("/dashboard/api/backends");
    let anonymous = client
        .get(&backends)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401, "the backends' health needs a key");
    let reply = client
        .get(&backends)
        .header("x-api-key", key)
        .header("anthropic-version", "2023-06-01")
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let body: Value = serde_json::from_str(&reply.text().await.unwrap()).unwrap();
    let emulator = &body["backends"][0];
    assert_eq!(emulator["name"], "emulator", "{body}");
    assert_eq!(emulator["paused"], false, "{body}");
    assert!(emulator["max_concurrency"].as_u64().unwrap() >= 1, "{body}");
}
