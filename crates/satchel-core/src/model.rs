//! The domain records that cross the [`Store`](crate::Store) seam.
//!
//! These are not wire types: the API converts them (see `satchel-server`'s `api::convert`).

use bytes::Bytes;
use satchel_wire::{ProcessingStatus, RequestCounts, Timestamp};
use serde_json::value::RawValue;

/// A batch as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRecord {
    pub id: String,
    pub workspace: String,
    pub status: ProcessingStatus,
    pub counts: RequestCounts,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub ended_at: Option<Timestamp>,
    pub cancel_initiated_at: Option<Timestamp>,
    pub archived_at: Option<Timestamp>,
}

/// The head of a batch being created; its requests follow through an [`IngestChunk`] stream.
#[derive(Debug, Clone)]
pub struct NewBatch {
    pub id: String,
    pub workspace: String,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    /// The create call's headers that go upstream with each of its requests, as a small
    /// JSON object ([`UpstreamHeaders::to_stored`](crate::UpstreamHeaders)); `None`: none.
    /// Stored as given, returned with each claimed request.
    pub upstream_headers: Option<String>,
    /// Claims take this batch's requests grouped by [`prefix_key`](crate::prefix::prefix_key)
    /// (those sharing a model, system prompt and tools together) rather than in submission
    /// order; the store computes the key of each request at ingest.
    pub group_by_prefix: bool,
}

/// One accepted request of a create body: a valid, unique `custom_id` and the `params` bytes
/// exactly as received.
#[derive(Debug)]
pub struct NewRequest {
    pub custom_id: String,
    pub params: Params,
}

/// A request's `params`: the bytes of a JSON object exactly as received (valid UTF-8 JSON,
/// checked when the body was parsed). At ingest they are a slice of the body's read buffer,
/// shared rather than copied (a copy and an allocation per request were a tenth of a
/// create's parse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params(Bytes);

impl Params {
    /// `bytes` must hold one JSON value in UTF-8 (as the ingest parse proved).
    pub(crate) fn from_checked(bytes: Bytes) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The text (checked again here: for tests and cold paths; hot paths read the bytes).
    pub fn get(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl From<Box<RawValue>> for Params {
    fn from(raw: Box<RawValue>) -> Self {
        let text: Box<str> = raw.into();
        Self(Bytes::from(text.into_boxed_bytes()))
    }
}

/// What the ingest parser sends to the store while a create body streams in.
#[derive(Debug)]
pub enum IngestChunk {
    /// The next requests, in submission order.
    Requests(Vec<NewRequest>),
    /// The body was read whole and is valid: make the batch visible. If the stream ends
    /// without this, the store discards everything it received.
    Commit,
}

/// Which page of a workspace's batches to list, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListCursor {
    /// The newest batches.
    Start,
    /// Batches older than this id.
    After(String),
    /// Batches newer than this id.
    Before(String),
    /// Batches strictly between: older than `after`, newer than `before` (newest first).
    Between { after: String, before: String },
}

/// A request leased to the dispatcher.
#[derive(Debug)]
pub struct ClaimedRequest {
    /// The store's handle of the request.
    pub request: RequestKey,
    pub custom_id: String,
    /// The `params` JSON text as received at create, where it was validated. Not parsed
    /// again on the way out: a full JSON pass per claimed request cost a twelfth of a
    /// request's run, and every backend reads the params anyway. Were stored bytes ever
    /// damaged, the backend refuses them and the request ends `errored`, as data.
    pub params: Box<str>,
    /// Its batch's [`NewBatch::upstream_headers`], as stored.
    pub upstream_headers: Option<String>,
}

/// A request's stored `params` bytes as [`ClaimedRequest::params`], or what is wrong with
/// them (both engines read them back through this one check: UTF-8, not JSON again).
pub fn claimed_params(bytes: Vec<u8>) -> Result<Box<str>, String> {
    String::from_utf8(bytes)
        .map(String::into_boxed_str)
        .map_err(|_| "the stored bytes are not UTF-8".to_owned())
}

/// The store's handle of a leased request: which row, and which lease (a fencing token, so an
/// outcome computed under a lease that has since been recovered is ignored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestKey {
    pub batch: i64,
    pub request: i64,
    pub lease: i64,
}

/// How a request ended, for the counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Succeeded,
    Errored,
}

/// A finished request, ready to be stored with its final result line.
#[derive(Debug)]
pub struct Settlement {
    pub request: RequestKey,
    pub kind: OutcomeKind,
    /// The whole JSONL line, without the trailing newline.
    pub line: Vec<u8>,
}

/// What a delete found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted,
    NotFound,
    NotEnded,
}

/// Which requests a claim may take, by the `model` recorded for each at ingest (see
/// [`crate::routing::model_of`]). Model ids come from [`crate::Store::models`];
/// [`NO_MODEL`] stands for requests without one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFilter {
    /// Whatever the model (one route serves them all).
    Any,
    /// Only requests whose model is one of these.
    Only(Vec<i64>),
}

/// What the store holds, summed over every workspace: the figures behind the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreStats {
    pub in_progress: u64,
    pub canceling: u64,
    pub ended: u64,
    /// The five counts summed over every visible batch.
    pub requests: RequestCounts,
    /// When the oldest batch that still has requests to run was created: its requests
    /// have waited that long.
    pub oldest_waiting: Option<Timestamp>,
}

impl StoreStats {
    /// Adds one group of batches in `status`: how many, their five counts summed, and when
    /// the oldest of them with requests still to run was created. (Each engine reads the
    /// groups its own way; the summing is the same.)
    pub fn add_group(
        &mut self,
        status: ProcessingStatus,
        batches: u64,
        counts: RequestCounts,
        oldest_waiting: Option<Timestamp>,
    ) {
        match status {
            ProcessingStatus::InProgress => self.in_progress += batches,
            ProcessingStatus::Canceling => self.canceling += batches,
            ProcessingStatus::Ended => self.ended += batches,
        }
        let sum = &mut self.requests;
        sum.processing += counts.processing;
        sum.succeeded += counts.succeeded;
        sum.errored += counts.errored;
        sum.canceled += counts.canceled;
        sum.expired += counts.expired;
        if let Some(at) = oldest_waiting {
            self.oldest_waiting = Some(self.oldest_waiting.map_or(at, |o| o.min(at)));
        }
    }
}

/// The model id of a request whose params name no model (they end errored when run).
pub const NO_MODEL: i64 = 0;

/// A position in a batch's settle order: the order in which its result lines were committed,
/// which the store defines as (`seq`, `index`). `seq` is the engine's commit-ordered sequence
/// of the transaction that wrote the line (lines of one transaction share it); `index` is the
/// request's position in its batch. Lines are read in that order, so a reader that resumes
/// after a cursor gets every later line once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SettleCursor {
    pub seq: i64,
    pub index: i64,
}

impl SettleCursor {
    /// Before every line.
    pub const START: SettleCursor = SettleCursor { seq: 0, index: -1 };
}

impl std::fmt::Display for SettleCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.seq, self.index)
    }
}

/// A cursor that is not one this server hands out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`after` must be a cursor from the `satchel-results-cursor` header, or 0 for the start")]
pub struct BadCursor;

impl std::str::FromStr for SettleCursor {
    type Err = BadCursor;

    /// `seq.index` as [`Display`](std::fmt::Display) writes it; `0` (or nothing) is the start.
    fn from_str(s: &str) -> Result<Self, BadCursor> {
        if s.is_empty() || s == "0" {
            return Ok(Self::START);
        }
        let (seq, index) = s.split_once('.').ok_or(BadCursor)?;
        let seq = seq.parse::<i64>().map_err(|_| BadCursor)?;
        let index = index.parse::<i64>().map_err(|_| BadCursor)?;
        if seq < 0 || index < -1 {
            return Err(BadCursor);
        }
        Ok(Self { seq, index })
    }
}

/// The result lines of a batch settled after a cursor, as far as one read goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledPage {
    /// JSONL: each line followed by `\n`, in settle order.
    pub lines: Vec<u8>,
    /// How many lines `lines` holds.
    pub count: usize,
    /// Where the next read goes on from (the cursor given if nothing was read).
    pub next: SettleCursor,
    /// The batch had ended when this was read, and this page holds every line after the
    /// cursor: nothing more will ever come.
    pub complete: bool,
    /// The batch's status when this was read.
    pub status: ProcessingStatus,
}

/// A request as stored: what a re-run of it needs.
#[derive(Debug)]
pub struct StoredRequest {
    pub custom_id: String,
    pub params: Box<RawValue>,
}
