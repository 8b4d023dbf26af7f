//! The dispatcher on its own: an in-memory store and a scripted backend, under tokio's paused
//! clock, so leases, renewals, retries, cancel and drain are checked without waiting.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod fakes;

use std::time::Duration;

use fakes::*;

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
