//! The client side of the Message Batches API, as much as the bench needs: create, retrieve,
//! wait for `ended`, download results, list. Plain reqwest, one shared connection pool.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

/// A client of one server.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
}

/// What a results download received.
pub struct Download {
    pub chunks: Vec<Bytes>,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl Api {
    pub fn new(base: String) -> Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(1024)
            .timeout(Duration::from_secs(3_600))
            .build()?;
        Ok(Self { http, base })
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header("x-api-key", "satchel-bench")
            .header("anthropic-version", "2023-06-01")
    }

    async fn json(response: reqwest::Response) -> Result<Value> {
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!("HTTP {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Creates a batch from a whole body; returns the batch object.
    pub async fn create(&self, body: Bytes) -> Result<Value> {
        let response = self
            .request(reqwest::Method::POST, "/v1/messages/batches")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .context("create")?;
        Self::json(response).await.context("create")
    }

    pub async fn retrieve(&self, id: &str) -> Result<Value> {
        let response = self
            .request(reqwest::Method::GET, &format!("/v1/messages/batches/{id}"))
            .send()
            .await?;
        Self::json(response).await.context("retrieve")
    }

    /// Polls every `every` until the batch has ended; returns it and when it was first seen
    /// ended.
    pub async fn wait_ended(
        &self,
        id: &str,
        every: Duration,
        within: Duration,
    ) -> Result<(Value, Instant)> {
        let deadline = Instant::now() + within;
        loop {
            let batch = self.retrieve(id).await?;
            if batch["processing_status"] == "ended" {
                return Ok((batch, Instant::now()));
            }
            if Instant::now() > deadline {
                bail!("batch {id} did not end within {within:?}: {batch}");
            }
            tokio::time::sleep(every).await;
        }
    }

    /// Downloads a batch's results, keeping the chunks as received.
    pub async fn results(&self, id: &str) -> Result<Download> {
        let started = Instant::now();
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/messages/batches/{id}/results"),
            )
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("results: HTTP {}", response.status());
        }
        let mut stream = response.bytes_stream();
        let mut chunks = Vec::new();
        let mut bytes = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            bytes += chunk.len() as u64;
            chunks.push(chunk);
        }
        Ok(Download {
            chunks,
            bytes,
            elapsed: started.elapsed(),
        })
    }

    /// One list call; returns the page.
    pub async fn list(&self, limit: u32) -> Result<Value> {
        let response = self
            .request(
                reqwest::Method::GET,
                &format!("/v1/messages/batches?limit={limit}"),
            )
            .send()
            .await?;
        Self::json(response).await.context("list")
    }
}

/// A batch's id.
pub fn id_of(batch: &Value) -> Result<String> {
    batch["id"]
        .as_str()
        .map(str::to_owned)
        .context("the batch has no id")
}

/// A timestamp field of a batch object.
pub fn time_of(batch: &Value, field: &str) -> Result<SystemTime> {
    let text = batch[field]
        .as_str()
        .with_context(|| format!("the batch has no {field}"))?;
    humantime::parse_rfc3339(text).with_context(|| format!("{field}: {text:?}"))
}

/// `request_counts.<name>` of a batch.
pub fn count_of(batch: &Value, name: &str) -> u64 {
    batch["request_counts"][name].as_u64().unwrap_or(0)
}
