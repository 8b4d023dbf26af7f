//! The dispatcher's test doubles: an in-memory store (the queue part: leases, tokens,
//! renewals) and a backend that answers from a script, counting and timing what it is sent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use satchel_wire::{ErrorType, Timestamp};
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};

use super::super::{DispatchConfig, Dispatcher};
use crate::backend::{Attempt, Backend, Failure, RequestContext};
use crate::limits::{LimitsConfig, RetryPolicy};
use crate::model::{
    BatchRecord, ClaimedRequest, DeleteOutcome, IngestChunk, ListCursor, ModelFilter, NewBatch,
    RequestKey, SettleCursor, SettledPage, Settlement, StoredRequest,
};
use crate::routing::{Route, Routes};
use crate::store::{ResultStream, Store, StoreError};

pub(super) const BATCH: i64 = 1;

/// The queue part of a store, in memory. Time is the store's own (paused tokio time), so the
/// lease ends it records are compared with the dispatcher's `Timestamp::now()` readings.
#[derive(Default)]
pub(super) struct Memory {
    /// request id → (lease token, lease end in µs); token 0: not leased.
    pub(super) queue: HashMap<i64, (i64, i64)>,
    pub(super) next_token: i64,
    pub(super) settled: Vec<Settlement>,
    pub(super) released: Vec<RequestKey>,
    pub(super) renewals: usize,
    pub(super) running: bool,
    /// Requests whose next renewal reports them lost.
    pub(super) lose: HashSet<i64>,
    /// The most requests leased at once, seen at the end of a claim.
    pub(super) most_leased: usize,
}

pub(super) struct FakeStore(Mutex<Memory>);

impl FakeStore {
    pub(super) fn with_requests(n: i64) -> Arc<Self> {
        let memory = Memory {
            queue: (0..n).map(|id| (id, (0, 0))).collect(),
            running: true,
            ..Memory::default()
        };
        Arc::new(Self(Mutex::new(memory)))
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap()
    }
}

pub(super) fn unused() -> StoreError {
    StoreError::Task("not used by the dispatcher".into())
}

#[async_trait]
impl Store for FakeStore {
    async fn create_batch(
        &self,
        _: NewBatch,
        _: mpsc::Receiver<IngestChunk>,
    ) -> Result<BatchRecord, StoreError> {
        Err(unused())
    }
    async fn get_batch(&self, _: &str, _: &str) -> Result<Option<BatchRecord>, StoreError> {
        Err(unused())
    }
    async fn list_batches(
        &self,
        _: &str,
        _: &ListCursor,
        _: u32,
    ) -> Result<Vec<BatchRecord>, StoreError> {
        Err(unused())
    }
    async fn cancel_batch(
        &self,
        _: &str,
        _: &str,
        _: Timestamp,
    ) -> Result<Option<BatchRecord>, StoreError> {
        Err(unused())
    }
    async fn delete_batch(&self, _: &str, _: &str) -> Result<DeleteOutcome, StoreError> {
        Err(unused())
    }
    async fn queued_requests(&self, _: &str) -> Result<u64, StoreError> {
        Err(unused())
    }
    fn results(&self, _: &str, _: &str) -> ResultStream {
        Box::pin(futures::stream::empty())
    }
    async fn settled_since(
        &self,
        _: &str,
        _: &str,
        _: SettleCursor,
        _: usize,
        _: usize,
    ) -> Result<Option<SettledPage>, StoreError> {
        Err(unused())
    }
    async fn stored_requests(
        &self,
        _: &str,
        _: &str,
        _: i64,
        _: usize,
    ) -> Result<Vec<StoredRequest>, StoreError> {
        Err(unused())
    }

    async fn claim(
        &self,
        _owner: &str,
        max: usize,
        _models: &ModelFilter,
        now: Timestamp,
        until: Timestamp,
    ) -> Result<Vec<ClaimedRequest>, StoreError> {
        let mut m = self.lock();
        if !m.running {
            return Ok(Vec::new());
        }
        m.next_token += 1;
        let token = m.next_token;
        let mut ids: Vec<i64> = m
            .queue
            .iter()
            .filter(|(_, (_, end))| *end <= now.as_micros())
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids.truncate(max);
        for id in &ids {
            m.queue.insert(*id, (token, until.as_micros()));
        }
        let leased = m
            .queue
            .values()
            .filter(|(token, end)| *token != 0 && *end > now.as_micros())
            .count();
        m.most_leased = m.most_leased.max(leased);
        Ok(ids
            .into_iter()
            .map(|id| ClaimedRequest {
                request: RequestKey {
                    batch: BATCH,
                    request: id,
                    lease: token,
                },
                custom_id: format!("r{id}"),
                params: format!(r#"{{"model":"m","n":{id}}}"#).into(),
                upstream_headers: None,
            })
            .collect())
    }

    async fn models(&self) -> Result<Vec<(i64, String)>, StoreError> {
        Ok(vec![(1, "m".into())])
    }

    async fn renew(
        &self,
        leases: Vec<RequestKey>,
        until: Timestamp,
    ) -> Result<Vec<RequestKey>, StoreError> {
        let mut m = self.lock();
        m.renewals += 1;
        let mut lost = Vec::new();
        for key in leases {
            let lose = m.lose.remove(&key.request);
            match m.queue.get_mut(&key.request) {
                // Taken over by another node: a token this one never had, a lease far ahead.
                Some(entry) if lose => {
                    *entry = (-1, i64::MAX);
                    lost.push(key);
                }
                Some((token, end)) if *token == key.lease => *end = until.as_micros(),
                _ => lost.push(key),
            }
        }
        Ok(lost)
    }

    async fn settle(&self, settlements: Arc<[Settlement]>, _: Timestamp) -> Result<(), StoreError> {
        let mut m = self.lock();
        for s in settlements.iter() {
            if m.queue.get(&s.request.request).map(|(t, _)| *t) == Some(s.request.lease) {
                m.queue.remove(&s.request.request);
                m.settled.push(Settlement {
                    request: s.request,
                    kind: s.kind,
                    line: s.line.clone(),
                });
            }
        }
        Ok(())
    }

    async fn release(&self, requests: Vec<RequestKey>) -> Result<(), StoreError> {
        let mut m = self.lock();
        for key in requests {
            if let Some(entry) = m.queue.get_mut(&key.request)
                && entry.0 == key.lease
            {
                *entry = (0, 0);
                m.released.push(key);
            }
        }
        Ok(())
    }

    async fn running_batches(&self, _: Timestamp) -> Result<Vec<i64>, StoreError> {
        Ok(if self.lock().running {
            vec![BATCH]
        } else {
            Vec::new()
        })
    }
    async fn sweep_unrunnable(&self, _: Timestamp) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn archive(&self, _: Timestamp, _: Timestamp) -> Result<u64, StoreError> {
        Ok(0)
    }
    async fn recover(&self, _: &str) -> Result<u64, StoreError> {
        Ok(0)
    }
}

/// One scripted reply: after `took`, this attempt's outcome.
#[derive(Clone)]
pub(super) enum Reply {
    Ok,
    Transient,
    Unreachable,
    /// A 429 asking for this wait.
    Throttled(Duration),
}

/// Answers each request (by its `n`) from its script, the last reply repeating; counts sends.
pub(super) struct Scripted {
    pub(super) took: Duration,
    pub(super) scripts: Mutex<HashMap<i64, VecDeque<Reply>>>,
    pub(super) default: Vec<Reply>,
    pub(super) sends: Mutex<HashMap<i64, usize>>,
    /// When each request's attempts were sent (tokio's clock).
    pub(super) sent_at: Mutex<HashMap<i64, Vec<tokio::time::Instant>>>,
    /// Attempts running now, and the most at once.
    pub(super) running: Mutex<(usize, usize)>,
    pub(super) started: Notify,
}

impl Scripted {
    pub(super) fn new(took: Duration, default: Vec<Reply>) -> Arc<Self> {
        Arc::new(Self {
            took,
            scripts: Mutex::new(HashMap::new()),
            default,
            sends: Mutex::new(HashMap::new()),
            sent_at: Mutex::new(HashMap::new()),
            running: Mutex::new((0, 0)),
            started: Notify::new(),
        })
    }

    pub(super) fn sends(&self, n: i64) -> usize {
        self.sends.lock().unwrap().get(&n).copied().unwrap_or(0)
    }

    pub(super) fn total_sends(&self) -> usize {
        self.sends.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl Backend for Scripted {
    async fn send(&self, params: &str, _request: &RequestContext<'_>) -> Attempt {
        let n: i64 = serde_json::from_str::<serde_json::Value>(params).unwrap()["n"]
            .as_i64()
            .unwrap();
        *self.sends.lock().unwrap().entry(n).or_default() += 1;
        self.sent_at
            .lock()
            .unwrap()
            .entry(n)
            .or_default()
            .push(tokio::time::Instant::now());
        {
            let mut running = self.running.lock().unwrap();
            running.0 += 1;
            running.1 = running.1.max(running.0);
        }
        self.started.notify_waiters();
        let reply = {
            let mut scripts = self.scripts.lock().unwrap();
            let script = scripts
                .entry(n)
                .or_insert_with(|| self.default.iter().cloned().collect());
            if script.len() > 1 {
                script.pop_front().unwrap()
            } else {
                script.front().cloned().unwrap_or(Reply::Ok)
            }
        };
        tokio::time::sleep(self.took).await;
        self.running.lock().unwrap().0 -= 1;
        match reply {
            Reply::Ok => Attempt::Message(RawValue::from_string("{}".into()).unwrap()),
            Reply::Transient => Attempt::Failed(Failure::transient(
                ErrorType::ApiError,
                "boom",
                Some(Duration::from_millis(10)),
            )),
            Reply::Unreachable => Attempt::Failed(Failure::unreachable(
                ErrorType::ApiError,
                "could not connect",
                None,
            )),
            Reply::Throttled(after) => Attempt::Failed(Failure::throttled(
                ErrorType::RateLimitError,
                "slow down",
                Some(after),
            )),
        }
    }
}

pub(super) struct Setup {
    pub(super) concurrency: usize,
    pub(super) max_retries: u32,
    pub(super) ttl: Duration,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            concurrency: 4,
            max_retries: 2,
            ttl: Duration::from_secs(6),
        }
    }
}

pub(super) fn dispatcher(
    store: Arc<FakeStore>,
    backend: Arc<Scripted>,
    setup: Setup,
) -> Dispatcher {
    let retry = RetryPolicy {
        max_retries: setup.max_retries,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        ..RetryPolicy::default()
    };
    let limits = LimitsConfig {
        max_concurrency: setup.concurrency,
        ..LimitsConfig::default()
    };
    let routes = Routes::single(Route::new("scripted", backend, &limits, retry));
    let config = DispatchConfig {
        max_in_flight: setup.concurrency * 2,
        lease_ttl: setup.ttl,
        idle_poll: Duration::from_millis(20),
        ..DispatchConfig::default()
    };
    Dispatcher::new(store, Arc::new(routes), config, Arc::new(Notify::new()))
}

/// Lets paused time run until `done` holds (at most `limit` of virtual time).
pub(super) async fn run_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not done within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub(super) fn kinds(store: &FakeStore) -> (usize, usize) {
    let m = store.lock();
    let ok = m
        .settled
        .iter()
        .filter(|s| s.kind == crate::model::OutcomeKind::Succeeded)
        .count();
    (ok, m.settled.len() - ok)
}
