//! The dispatcher on its own: an in-memory store and a scripted backend, under tokio's paused
//! clock, so leases, renewals, retries, cancel and drain are checked without waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use satchel_wire::{ErrorType, Timestamp};
use serde_json::value::RawValue;
use tokio::sync::{Notify, mpsc};

use super::{DispatchConfig, Dispatcher};
use crate::backend::{Attempt, Backend, Failure};
use crate::forward::UpstreamHeaders;
use crate::limits::{LimitsConfig, RetryPolicy};
use crate::model::{
    BatchRecord, ClaimedRequest, DeleteOutcome, IngestChunk, ListCursor, ModelFilter, NewBatch,
    RequestKey, Settlement,
};
use crate::routing::{Route, Routes};
use crate::store::{ResultStream, Store, StoreError};

const BATCH: i64 = 1;

/// The queue part of a store, in memory. Time is the store's own (paused tokio time), so the
/// lease ends it records are compared with the dispatcher's `Timestamp::now()` readings.
#[derive(Default)]
struct Memory {
    /// request id → (lease token, lease end in µs); token 0: not leased.
    queue: HashMap<i64, (i64, i64)>,
    next_token: i64,
    settled: Vec<Settlement>,
    released: Vec<RequestKey>,
    renewals: usize,
    running: bool,
    /// Requests whose next renewal reports them lost.
    lose: HashSet<i64>,
    /// The most requests leased at once, seen at the end of a claim.
    most_leased: usize,
}

struct FakeStore(Mutex<Memory>);

impl FakeStore {
    fn with_requests(n: i64) -> Arc<Self> {
        let memory = Memory {
            queue: (0..n).map(|id| (id, (0, 0))).collect(),
            running: true,
            ..Memory::default()
        };
        Arc::new(Self(Mutex::new(memory)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.0.lock().unwrap()
    }
}

fn unused() -> StoreError {
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
    fn results(&self, _: &str, _: &str) -> ResultStream {
        Box::pin(futures::stream::empty())
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
                params: RawValue::from_string(format!(r#"{{"model":"m","n":{id}}}"#)).unwrap(),
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
enum Reply {
    Ok,
    Transient,
    Unreachable,
    /// A 429 asking for this wait.
    Throttled(Duration),
}

/// Answers each request (by its `n`) from its script, the last reply repeating; counts sends.
struct Scripted {
    took: Duration,
    scripts: Mutex<HashMap<i64, VecDeque<Reply>>>,
    default: Vec<Reply>,
    sends: Mutex<HashMap<i64, usize>>,
    /// When each request's attempts were sent (tokio's clock).
    sent_at: Mutex<HashMap<i64, Vec<tokio::time::Instant>>>,
    /// Attempts running now, and the most at once.
    running: Mutex<(usize, usize)>,
    started: Notify,
}

impl Scripted {
    fn new(took: Duration, default: Vec<Reply>) -> Arc<Self> {
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

    fn sends(&self, n: i64) -> usize {
        self.sends.lock().unwrap().get(&n).copied().unwrap_or(0)
    }

    fn total_sends(&self) -> usize {
        self.sends.lock().unwrap().values().sum()
    }
}

#[async_trait]
impl Backend for Scripted {
    async fn send(&self, params: &RawValue, _headers: &UpstreamHeaders) -> Attempt {
        let n: i64 = serde_json::from_str::<serde_json::Value>(params.get()).unwrap()["n"]
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

struct Setup {
    concurrency: usize,
    max_retries: u32,
    ttl: Duration,
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

fn dispatcher(store: Arc<FakeStore>, backend: Arc<Scripted>, setup: Setup) -> Dispatcher {
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
async fn run_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not done within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn kinds(store: &FakeStore) -> (usize, usize) {
    let m = store.lock();
    let ok = m
        .settled
        .iter()
        .filter(|s| s.kind == crate::model::OutcomeKind::Succeeded)
        .count();
    (ok, m.settled.len() - ok)
}

// `Timestamp::now()` reads the wall clock while tokio's is paused: leases are granted for the
// TTL from the real time, so these tests advance virtual time far beyond the TTL while real
// time barely moves. The renewal count and the book's safety margin run on tokio's clock.

#[tokio::test(start_paused = true)]
async fn an_attempt_longer_than_many_ttls_keeps_its_lease_and_is_sent_once() {
    let store = FakeStore::with_requests(8);
    let backend = Scripted::new(Duration::from_secs(60), vec![Reply::Ok]);
    let handle = dispatcher(store.clone(), backend.clone(), Setup::default()).spawn();
    run_until(Duration::from_secs(600), || store.lock().settled.len() == 8).await;
    // 8 requests on 4 slots: two waves of 60 s, ten TTLs each, renewed every 2 s.
    assert!(store.lock().renewals >= 50, "{}", store.lock().renewals);
    for n in 0..8 {
        assert_eq!(backend.sends(n), 1, "request {n}");
    }
    assert_eq!(kinds(&store), (8, 0));
    handle.abort();
}

#[tokio::test(start_paused = true)]
async fn transient_failures_spend_retries_then_end_errored() {
    let store = FakeStore::with_requests(2);
    let backend = Scripted::new(Duration::from_millis(5), vec![Reply::Transient]);
    backend
        .scripts
        .lock()
        .unwrap()
        .insert(0, [Reply::Transient, Reply::Transient, Reply::Ok].into());
    let handle = dispatcher(store.clone(), backend.clone(), Setup::default()).spawn();
    run_until(Duration::from_secs(60), || store.lock().settled.len() == 2).await;
    assert_eq!(backend.sends(0), 3, "two retries, then success");
    assert_eq!(
        backend.sends(1),
        3,
        "the first attempt and max_retries = 2 more"
    );
    assert_eq!(kinds(&store), (1, 1));
    handle.abort();
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_upstream_costs_no_retries() {
    let store = FakeStore::with_requests(3);
    let mut outage = vec![Reply::Unreachable; 12];
    outage.push(Reply::Ok);
    let backend = Scripted::new(Duration::from_millis(5), outage);
    let setup = Setup {
        max_retries: 1,
        ..Setup::default()
    };
    let handle = dispatcher(store.clone(), backend.clone(), setup).spawn();
    // Probes go one at a time, waiting up to 30 s each: 36 failed attempts take a while.
    run_until(Duration::from_secs(3600), || {
        store.lock().settled.len() == 3
    })
    .await;
    assert_eq!(
        kinds(&store),
        (3, 0),
        "all succeed once the upstream is back"
    );
    handle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_lost_lease_starts_no_further_attempt() {
    let store = FakeStore::with_requests(1);
    let backend = Scripted::new(Duration::from_secs(3), vec![Reply::Transient]);
    store.lock().lose.insert(0);
    let handle = dispatcher(store.clone(), backend.clone(), Setup::default()).spawn();
    // Virtual time: the first attempt fails at 3 s; a retry would follow at once.
    tokio::time::sleep(Duration::from_secs(60)).await;
    // The first renewal (at 2 s, during the first attempt) lost it: no retry was sent, and
    // nothing was stored or given back under the old token (the other node's is current).
    assert_eq!(backend.sends(0), 1);
    assert!(store.lock().settled.is_empty());
    assert!(store.lock().released.is_empty());
    handle.abort();
}

#[tokio::test(start_paused = true)]
async fn a_stopped_batch_gives_back_what_waits_and_finishes_what_runs() {
    let store = FakeStore::with_requests(6);
    let backend = Scripted::new(Duration::from_secs(5), vec![Reply::Ok]);
    let setup = Setup {
        concurrency: 2,
        ..Setup::default()
    };
    let handle = dispatcher(store.clone(), backend.clone(), setup).spawn();
    run_until(Duration::from_secs(10), || backend.total_sends() == 2).await;
    store.lock().running = false; // canceled: four leased requests wait for a slot
    run_until(Duration::from_secs(30), || {
        let m = store.lock();
        m.settled.len() == 2 && m.released.len() == 2
    })
    .await;
    // Slots were 2 × concurrency = 4: two ran, two waited and were given back; two were never
    // claimed.
    assert_eq!(backend.total_sends(), 2);
    handle.abort();
}

#[tokio::test(start_paused = true)]
async fn drain_stores_attempts_in_flight_and_gives_back_the_rest() {
    let store = FakeStore::with_requests(10);
    let backend = Scripted::new(Duration::from_secs(4), vec![Reply::Ok]);
    let setup = Setup {
        concurrency: 3,
        ..Setup::default()
    };
    let handle = dispatcher(store.clone(), backend.clone(), setup).spawn();
    run_until(Duration::from_secs(10), || backend.total_sends() == 3).await;
    let report = handle.drain(Duration::from_secs(30)).await;
    assert_eq!(report.settled, 3, "{report:?}");
    assert_eq!(
        report.released, 3,
        "the three waiting for a slot: {report:?}"
    );
    assert_eq!(report.cut, 0);
    assert_eq!(
        backend.total_sends(),
        3,
        "nothing new started while draining"
    );
}

#[tokio::test(start_paused = true)]
async fn drain_cuts_what_outlasts_the_window() {
    let store = FakeStore::with_requests(2);
    let backend = Scripted::new(Duration::from_secs(600), vec![Reply::Ok]);
    let handle = dispatcher(store.clone(), backend.clone(), Setup::default()).spawn();
    run_until(Duration::from_secs(10), || backend.total_sends() == 2).await;
    let report = handle.drain(Duration::from_secs(5)).await;
    assert_eq!(
        (report.settled, report.released, report.cut),
        (0, 2, 2),
        "{report:?}"
    );
    assert!(
        store.lock().queue.values().all(|(token, _)| *token == 0),
        "given back"
    );
}

#[tokio::test(start_paused = true)]
async fn a_throttled_attempt_waits_what_the_upstream_asked_up_to_a_minute() {
    let store = FakeStore::with_requests(2);
    let backend = Scripted::new(Duration::from_millis(5), vec![Reply::Ok]);
    {
        let mut scripts = backend.scripts.lock().unwrap();
        scripts.insert(
            0,
            [Reply::Throttled(Duration::from_secs(2)), Reply::Ok].into(),
        );
        // Asked for 90 s: waited as 60 s, the one rule's cap (satchel_wire::retry).
        scripts.insert(
            1,
            [Reply::Throttled(Duration::from_secs(90)), Reply::Ok].into(),
        );
    }
    let handle = dispatcher(store.clone(), backend.clone(), Setup::default()).spawn();
    run_until(Duration::from_secs(600), || store.lock().settled.len() == 2).await;
    let gap = |n: i64| {
        let sent = backend.sent_at.lock().unwrap()[&n].clone();
        assert_eq!(sent.len(), 2, "request {n}: one retry");
        sent[1] - sent[0]
    };
    // The attempt took 5 ms, then the wait; paused time makes the gaps exact to the tick.
    let (asked, capped) = (gap(0), gap(1));
    assert!(
        asked >= Duration::from_secs(2) && asked < Duration::from_millis(2_100),
        "{asked:?}"
    );
    assert!(
        capped >= Duration::from_secs(60) && capped < Duration::from_millis(60_100),
        "{capped:?}"
    );
    assert_eq!(kinds(&store), (2, 0));
    handle.abort();
}

#[tokio::test(start_paused = true)]
async fn requests_wait_in_the_store_not_in_the_route() {
    let store = FakeStore::with_requests(40);
    let backend = Scripted::new(Duration::from_secs(1), vec![Reply::Ok]);
    let setup = Setup {
        concurrency: 3,
        ..Setup::default()
    };
    let handle = dispatcher(store.clone(), backend.clone(), setup).spawn();
    run_until(Duration::from_secs(600), || {
        store.lock().settled.len() == 40
    })
    .await;
    // The route runs at most its concurrency at once, and uses all of it.
    assert_eq!(backend.running.lock().unwrap().1, 3);
    // At most the run slots (twice the concurrency) are leased at once: the rest stay in
    // the store, where claims are fair across batches and workspaces.
    let most = store.lock().most_leased;
    assert!((3..=6).contains(&most), "{most} leased at once");
    assert_eq!(backend.total_sends(), 40, "each sent once");
    handle.abort();
}
