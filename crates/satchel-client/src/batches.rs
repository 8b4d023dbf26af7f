//! `client.messages().batches()`: the six operations of the Message Batches API, shaped like
//! the official SDKs' `client.messages.batches`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::Stream;
use futures::stream::BoxStream;
use reqwest::{Method, Url};
use satchel_wire::{DeletedMessageBatch, ListPage, MessageBatch, MessageBatchRequest};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::results::{ResultLines, Results};
use crate::transport::{Call, Transport};

const BATCHES: [&str; 3] = ["v1", "messages", "batches"];

/// The Messages API, from [`crate::Client::messages`]. Only its batches are here.
#[derive(Debug, Clone, Copy)]
pub struct Messages<'a> {
    client: &'a Arc<Transport>,
}

impl<'a> Messages<'a> {
    pub(crate) fn new(client: &'a Arc<Transport>) -> Self {
        Self { client }
    }

    /// Message Batches: create, retrieve, list, cancel, delete, results.
    pub fn batches(&self) -> Batches<'a> {
        Batches {
            client: self.client,
        }
    }
}

/// The Message Batches operations, from `client.messages().batches()`.
#[derive(Debug, Clone, Copy)]
pub struct Batches<'a> {
    pub(crate) client: &'a Arc<Transport>,
}

impl Batches<'_> {
    fn url(&self, tail: &[&str]) -> Result<Url> {
        let segments: Vec<&str> = BATCHES.iter().chain(tail).copied().collect();
        self.client.url(&segments)
    }

    /// Creates a batch of `requests` (1 to 100,000, each `custom_id` unique).
    ///
    /// ```no_run
    /// # async fn run(client: satchel_client::Client) -> Result<(), satchel_client::Error> {
    /// use satchel_client::MessageBatchRequest;
    /// use serde_json::json;
    ///
    /// let requests = vec![MessageBatchRequest::new("greeting", json!({
    ///     "model": "claude-sonnet-4-5",
    ///     "max_tokens": 64,
    ///     "messages": [{"role": "user", "content": "Hello, world"}],
    /// }))];
    /// let batch = client.messages().batches().create(&requests).await?;
    /// println!("{} is {:?}", batch.id, batch.processing_status);
    /// # Ok(()) }
    /// ```
    pub async fn create<P: Serialize>(
        &self,
        requests: &[MessageBatchRequest<P>],
    ) -> Result<MessageBatch> {
        let mut body = CreateBody::new();
        for request in requests {
            body.push(request)?;
        }
        self.create_body(body).await
    }

    /// Creates a batch from a body built beforehand, request by request (see [`CreateBody`]):
    /// the way to send a large batch without holding its requests twice.
    pub async fn create_body(&self, body: CreateBody) -> Result<MessageBatch> {
        let mut call = Call::new("create", Method::POST, self.url(&[])?);
        call.body = Some(body.finish());
        self.client.json(call).await
    }

    /// The batch with this id, as it is now (counts move while it runs).
    ///
    /// ```no_run
    /// # async fn run(client: satchel_client::Client) -> Result<(), satchel_client::Error> {
    /// use satchel_client::ProcessingStatus;
    ///
    /// let batches = client.messages().batches();
    /// let batch = loop {
    ///     let batch = batches.retrieve("msgbatch_…").await?;
    ///     if batch.processing_status == ProcessingStatus::Ended {
    ///         break batch;
    ///     }
    ///     tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    /// };
    /// println!("{} succeeded", batch.request_counts.succeeded);
    /// # Ok(()) }
    /// ```
    pub async fn retrieve(&self, id: &str) -> Result<MessageBatch> {
        let call = Call::new("retrieve", Method::GET, self.url(&[id])?);
        self.client.json(call).await
    }

    /// Every batch, newest first, fetching pages as the stream is read (with
    /// `before_id`, pages go the other way, towards newer batches).
    ///
    /// ```no_run
    /// # async fn run(client: satchel_client::Client) -> Result<(), satchel_client::Error> {
    /// use futures::TryStreamExt;
    /// use satchel_client::ListParams;
    ///
    /// let mut batches = client.messages().batches().list(ListParams::default().limit(100));
    /// while let Some(batch) = batches.try_next().await? {
    ///     println!("{} {:?}", batch.id, batch.processing_status);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn list(&self, params: ListParams) -> BatchList {
        let client = self.client.clone();
        let state = ListState {
            client,
            next: Some(params),
            buffer: VecDeque::new(),
        };
        let stream = futures::stream::try_unfold(state, |mut state| async move {
            loop {
                if let Some(batch) = state.buffer.pop_front() {
                    return Ok(Some((batch, state)));
                }
                let Some(params) = state.next.take() else {
                    return Ok(None);
                };
                let page = Batches {
                    client: &state.client,
                }
                .list_page(&params)
                .await?;
                state.next = params.next_page(&page);
                state.buffer.extend(page.data);
            }
        });
        BatchList {
            inner: Box::pin(stream),
        }
    }

    /// One page of batches: `data` plus the cursors to ask for the next.
    pub async fn list_page(&self, params: &ListParams) -> Result<ListPage<MessageBatch>> {
        let mut url = self.url(&[])?;
        {
            let mut query = url.query_pairs_mut();
            if let Some(limit) = params.limit {
                query.append_pair("limit", &limit.to_string());
            }
            if let Some(after) = &params.after_id {
                query.append_pair("after_id", after);
            }
            if let Some(before) = &params.before_id {
                query.append_pair("before_id", before);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        self.client.json(Call::new("list", Method::GET, url)).await
    }

    /// Cancels the batch: requests not yet started end `canceled`, those running finish.
    /// Returns the batch, `canceling` until the last running request settles.
    pub async fn cancel(&self, id: &str) -> Result<MessageBatch> {
        let call = Call::new("cancel", Method::POST, self.url(&[id, "cancel"])?);
        self.client.json(call).await
    }

    /// Deletes an ended batch and its results for good. A batch still `in_progress` or
    /// `canceling` cannot be deleted (400: cancel it first and wait for it to end).
    pub async fn delete(&self, id: &str) -> Result<DeletedMessageBatch> {
        let call = Call::new("delete", Method::DELETE, self.url(&[id])?);
        self.client.json(call).await
    }

    /// The results of an ended batch, one parsed line per request, read from the network as
    /// the stream is polled (memory stays flat however large the file).
    ///
    /// Like the SDKs, this retrieves the batch and follows its `results_url` verbatim; a
    /// batch that has not ended has none ([`Error::ResultsNotReady`]). See [`Results`].
    pub async fn results(&self, id: &str) -> Result<Results> {
        self.results_lines(id).await.map(Results::new)
    }

    /// [`Batches::results`] for a batch already retrieved, saving the round trip.
    pub async fn results_of(&self, batch: &MessageBatch) -> Result<Results> {
        self.results_lines_of(batch).await.map(Results::new)
    }

    /// The results as raw lines, not parsed: for passing them on byte for byte.
    pub async fn results_lines(&self, id: &str) -> Result<ResultLines> {
        let batch = self.retrieve(id).await?;
        self.results_lines_of(&batch).await
    }

    /// [`Batches::results_lines`] for a batch already retrieved.
    pub async fn results_lines_of(&self, batch: &MessageBatch) -> Result<ResultLines> {
        let Some(results_url) = &batch.results_url else {
            return Err(Error::ResultsNotReady {
                id: batch.id.clone(),
                processing_status: batch.processing_status,
            });
        };
        let url = Url::parse(results_url).map_err(|e| {
            Error::Protocol(format!(
                "the results_url of {} is not a URL ({e}): {results_url:?}",
                batch.id
            ))
        })?;
        let mut call = Call::new("results", Method::GET, url);
        call.accept = "application/binary";
        let response = self.client.streaming(call).await?;
        Ok(ResultLines::new(response))
    }
}

struct ListState {
    client: Arc<Transport>,
    next: Option<ListParams>,
    buffer: VecDeque<MessageBatch>,
}

/// The stream of [`Batches::list`]: `Result<MessageBatch>` items, pages fetched as needed.
/// It ends after the first error.
pub struct BatchList {
    inner: BoxStream<'static, Result<MessageBatch>>,
}

impl Stream for BatchList {
    type Item = Result<MessageBatch>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().inner.as_mut().poll_next(cx)
    }
}

/// Query of a list: page size and cursor.
///
/// ```
/// use satchel_client::ListParams;
/// let params = ListParams::default().limit(100).after_id("msgbatch_…");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListParams {
    limit: Option<u32>,
    after_id: Option<String>,
    before_id: Option<String>,
}

impl ListParams {
    /// Batches per page, 1 to 1,000 (the API's default is 20).
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Start after this batch (older ones).
    pub fn after_id(mut self, id: impl Into<String>) -> Self {
        self.after_id = Some(id.into());
        self
    }

    /// Start before this batch (newer ones); pages then go towards newer batches.
    pub fn before_id(mut self, id: impl Into<String>) -> Self {
        self.before_id = Some(id.into());
        self
    }

    /// The query of the page after `page`, as the SDKs page: by `first_id` when going back
    /// with `before_id`, else by `last_id`; none when `has_more` is false.
    fn next_page(&self, page: &ListPage<MessageBatch>) -> Option<Self> {
        if !page.has_more || page.data.is_empty() {
            return None;
        }
        let mut next = Self {
            limit: self.limit,
            after_id: None,
            before_id: None,
        };
        if self.before_id.is_some() {
            next.before_id = Some(page.first_id.clone()?);
        } else {
            next.after_id = Some(page.last_id.clone()?);
        }
        Some(next)
    }
}

/// A create body, built one request at a time: `{"requests":[…]}` as compact JSON.
///
/// Each request is serialised as it is pushed, so a large batch (up to 256 MB, 100,000
/// requests) is held once, as bytes, and can be sent again on a retry without being
/// rebuilt.
///
/// ```
/// use satchel_client::{CreateBody, MessageBatchRequest};
/// use serde_json::json;
///
/// let mut body = CreateBody::new();
/// body.push(&MessageBatchRequest::new("a", json!({"model": "m", "max_tokens": 1, "messages": []})))?;
/// assert_eq!(body.len(), 1);
/// # Ok::<(), satchel_client::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct CreateBody {
    bytes: Vec<u8>,
    count: usize,
}

impl Default for CreateBody {
    fn default() -> Self {
        Self::new()
    }
}

impl CreateBody {
    const HEAD: &'static [u8] = br#"{"requests":["#;
    const TAIL: &'static [u8] = b"]}";

    /// An empty body (which the API refuses: push at least one request).
    pub fn new() -> Self {
        Self {
            bytes: Self::HEAD.to_vec(),
            count: 0,
        }
    }

    /// Appends one request. On error the body is unchanged.
    pub fn push<P: Serialize>(&mut self, request: &MessageBatchRequest<P>) -> Result<()> {
        let before = self.bytes.len();
        if self.count > 0 {
            self.bytes.push(b',');
        }
        if let Err(e) = serde_json::to_writer(&mut self.bytes, request) {
            self.bytes.truncate(before);
            return Err(Error::Encode(e));
        }
        self.count += 1;
        Ok(())
    }

    /// Requests pushed so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether no request was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the finished body in bytes (the API takes at most 256 MiB).
    pub fn byte_len(&self) -> usize {
        self.bytes.len() + Self::TAIL.len()
    }

    fn finish(mut self) -> Bytes {
        self.bytes.extend_from_slice(Self::TAIL);
        Bytes::from(self.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use satchel_wire::{ProcessingStatus, RequestCounts, Timestamp};
    use serde_json::json;
    use serde_json::value::RawValue;

    #[test]
    fn create_body_is_the_api_envelope() {
        let mut body = CreateBody::new();
        assert_eq!(body.byte_len(), br#"{"requests":[]}"#.len());
        body.push(&MessageBatchRequest::new("a", json!({"max_tokens": 1})))
            .unwrap();
        let raw = RawValue::from_string(r#"{ "model" : "m" }"#.into()).unwrap();
        body.push(&MessageBatchRequest::new("b", raw)).unwrap();
        assert_eq!(body.len(), 2);
        let len = body.byte_len();
        let bytes = body.finish();
        assert_eq!(bytes.len(), len);
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"requests":[{"custom_id":"a","params":{"max_tokens":1}},{"custom_id":"b","params":{ "model" : "m" }}]}"#
        );
    }

    fn page(ids: &[&str], has_more: bool) -> ListPage<MessageBatch> {
        let batch = |id: &str| MessageBatch {
            id: id.into(),
            kind: Default::default(),
            processing_status: ProcessingStatus::Ended,
            request_counts: RequestCounts::default(),
            ended_at: None,
            created_at: Timestamp::from_micros(0),
            expires_at: Timestamp::from_micros(0),
            cancel_initiated_at: None,
            archived_at: None,
            results_url: None,
        };
        ListPage {
            data: ids.iter().map(|id| batch(id)).collect(),
            has_more,
            first_id: ids.first().map(|s| s.to_string()),
            last_id: ids.last().map(|s| s.to_string()),
        }
    }

    #[test]
    fn pages_like_the_sdks() {
        let forward = ListParams::default().limit(2);
        assert_eq!(
            forward.next_page(&page(&["c", "b"], true)),
            Some(ListParams::default().limit(2).after_id("b"))
        );
        assert_eq!(forward.next_page(&page(&["a"], false)), None);
        assert_eq!(forward.next_page(&page(&[], true)), None);
        let back = ListParams::default().before_id("a");
        assert_eq!(
            back.next_page(&page(&["c", "b"], true)),
            Some(ListParams::default().before_id("c"))
        );
    }
}
