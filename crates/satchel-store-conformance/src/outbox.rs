//! The webhook outbox's rules (see `satchel_core::webhooks::outbox`), for every engine:
//! one event per ended batch whatever ended it, recorded with the end; fan-out once, to the
//! subscriptions that want it; leases fenced by the attempt number; the log scoped by
//! workspace; and, between two nodes, each event fanned out once and each delivery held by
//! one node at a time.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use satchel_core::Store;
use satchel_core::model::ModelFilter;
use satchel_core::webhooks::{
    AttemptRecord, DeliveryFilter, DeliveryState, MESSAGE_BATCH_ENDED, Outbox, Subscription,
};
use satchel_wire::{ProcessingStatus, Timestamp};

use crate::{HOUR, NODE, OTHER_NODE, create, drain, get, settle_ok};

/// Expands to one test per outbox behaviour; `$open` as for [`crate::store_conformance!`].
#[macro_export]
macro_rules! outbox_conformance {
    ($open:expr) => {
        $crate::outbox_conformance!(@tests $open;
            outbox_records_one_event_for_every_way_a_batch_ends,
            outbox_fans_out_once_to_the_subscriptions_that_want_it,
            outbox_leases_are_fenced_by_the_attempt,
            outbox_purge_keeps_what_is_pending,
            outbox_a_node_releases_only_its_own_deliveries,
        );
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let (store, _guard) = $open;
                $crate::outbox::$name(store).await;
            }
        )*
    };
}

/// Expands to one test per outbox behaviour of two nodes sharing one store; `$open` as for
/// [`crate::store_conformance_two_nodes!`].
#[macro_export]
macro_rules! outbox_conformance_two_nodes {
    ($open:expr) => {
        $crate::outbox_conformance_two_nodes!(@tests $open;
            outbox_two_nodes_fan_out_and_claim_each_once,
        );
    };
    (@tests $open:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (a, b, _guard) = $open;
                $crate::outbox::$name(a, b).await;
            }
        )*
    };
}

fn outbox(store: &Arc<dyn Store>) -> Arc<dyn Outbox> {
    store
        .webhook_outbox()
        .expect("the engine keeps a webhook outbox")
}

fn subscription(workspace: &str, url: &str, events: &[&str]) -> Subscription {
    Subscription {
        workspace: workspace.into(),
        url: url.into(),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
    }
}

fn ended() -> Vec<Subscription> {
    vec![subscription(
        "w",
        "https://hooks.example/a",
        &[MESSAGE_BATCH_ENDED],
    )]
}

fn delivered(status: u16) -> AttemptRecord {
    AttemptRecord {
        status: Some(status),
        error: None,
        state: DeliveryState::Delivered,
        next_attempt_at: None,
    }
}

fn retry_at(at: Timestamp) -> AttemptRecord {
    AttemptRecord {
        status: Some(503),
        error: Some("the endpoint answered 503".into()),
        state: DeliveryState::Pending,
        next_attempt_at: Some(at),
    }
}

async fn log(
    outbox: &Arc<dyn Outbox>,
    workspace: &str,
) -> Vec<satchel_core::webhooks::DeliveryRecord> {
    outbox
        .deliveries(workspace, &DeliveryFilter::default(), 1000)
        .await
        .unwrap()
}

pub async fn outbox_records_one_event_for_every_way_a_batch_ends(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let outbox = outbox(&store);
    // Settled to the end.
    let settled = create(&store, "w", 30, now).await;
    drain(&store, now).await;
    // Canceled with nothing in flight: ends at once.
    let canceled_at_once = create(&store, "w", 5, now).await;
    store
        .cancel_batch("w", &canceled_at_once, now)
        .await
        .unwrap();
    // Canceled with requests in flight: ends with their settle.
    let canceled_later = create(&store, "w", 5, now).await;
    let in_flight = store
        .claim(NODE, 2, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    store.cancel_batch("w", &canceled_later, now).await.unwrap();
    assert_eq!(
        get(&store, "w", &canceled_later).await.status,
        ProcessingStatus::Canceling
    );
    store.settle(settle_ok(&in_flight), now).await.unwrap();
    // Expired, by the sweep.
    let expired = create(&store, "w", 7, now).await;
    let after_expiry = now.plus(25 * HOUR);
    store.sweep_unrunnable(after_expiry).await.unwrap();
    // Still running: no event.
    let running = create(&store, "w", 3, after_expiry).await;

    assert_eq!(outbox.fan_out(&ended(), 100, now).await.unwrap(), 4);
    assert_eq!(
        outbox.fan_out(&ended(), 100, now).await.unwrap(),
        0,
        "fanned out once"
    );
    let log = log(&outbox, "w").await;
    let ids: HashSet<&str> = log.iter().map(|d| d.event.batch_id.as_str()).collect();
    let expected: HashSet<&str> = [&settled, &canceled_at_once, &canceled_later, &expired]
        .map(String::as_str)
        .into();
    assert_eq!(ids, expected);
    assert!(!ids.contains(running.as_str()));
    for d in &log {
        let batch = get(&store, "w", &d.event.batch_id).await;
        assert_eq!(batch.status, ProcessingStatus::Ended);
        assert_eq!(d.event.kind, MESSAGE_BATCH_ENDED);
        assert_eq!(d.event.workspace, "w");
        assert_eq!(
            Some(d.event.created_at),
            batch.ended_at,
            "the event is the end's"
        );
        assert_eq!((d.state, d.attempts), (DeliveryState::Pending, 0));
        assert!(d.event.id.starts_with("wevt_"));
    }
    let event_ids: HashSet<&str> = log.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(event_ids.len(), 4, "each event has its own id");
}

pub async fn outbox_fans_out_once_to_the_subscriptions_that_want_it(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let outbox = outbox(&store);
    let id = create(&store, "w", 3, now).await;
    create(&store, "other", 3, now).await;
    drain(&store, now).await;
    let subscriptions = [
        subscription("w", "https://a.example/hook", &[MESSAGE_BATCH_ENDED]),
        subscription(
            "w",
            "https://b.example/hook",
            &["message_batch.other", MESSAGE_BATCH_ENDED],
        ),
        subscription("w", "https://c.example/hook", &["message_batch.other"]),
        subscription("nobody", "https://d.example/hook", &[MESSAGE_BATCH_ENDED]),
    ];
    assert_eq!(outbox.fan_out(&subscriptions, 100, now).await.unwrap(), 2);
    let log = log(&outbox, "w").await;
    let urls: HashSet<&str> = log.iter().map(|d| d.url.as_str()).collect();
    assert_eq!(
        urls,
        ["https://a.example/hook", "https://b.example/hook"].into()
    );
    assert!(log.iter().all(|d| d.event.batch_id == id));
    assert_eq!(
        log[0].event.id, log[1].event.id,
        "one event, two deliveries"
    );
    assert!(
        outbox
            .deliveries("other", &DeliveryFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        outbox
            .deliveries("nobody", &DeliveryFilter::default(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let filtered = outbox
        .deliveries(
            "w",
            &DeliveryFilter {
                batch_id: Some("msgbatch_none".into()),
                before: None,
            },
            10,
        )
        .await
        .unwrap();
    assert!(filtered.is_empty());
}

pub async fn outbox_leases_are_fenced_by_the_attempt(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let outbox = outbox(&store);
    let id = create(&store, "w", 2, now).await;
    drain(&store, now).await;
    outbox.fan_out(&ended(), 100, now).await.unwrap();
    let lease = Duration::from_secs(60);

    let first = outbox
        .claim_deliveries(NODE, 10, now, now.plus(lease))
        .await
        .unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].key.attempt, 1);
    assert_eq!(first[0].event.batch_id, id);
    assert!(
        outbox
            .claim_deliveries(OTHER_NODE, 10, now, now.plus(lease))
            .await
            .unwrap()
            .is_empty(),
        "a leased delivery is not claimed again"
    );
    let retry = now.plus(Duration::from_secs(10));
    assert!(
        outbox
            .record_attempt(first[0].key, retry_at(retry), now)
            .await
            .unwrap()
    );
    assert!(
        outbox
            .claim_deliveries(NODE, 10, now, now.plus(lease))
            .await
            .unwrap()
            .is_empty(),
        "not due before its next attempt"
    );
    let second = outbox
        .claim_deliveries(NODE, 10, retry, retry.plus(lease))
        .await
        .unwrap();
    assert_eq!(second[0].key.attempt, 2);
    assert_eq!(
        second[0].event, first[0].event,
        "the same event at every attempt"
    );
    assert!(
        !outbox
            .record_attempt(first[0].key, delivered(200), retry)
            .await
            .unwrap(),
        "a stale attempt records nothing"
    );
    // The holder died: its lease runs out and another node takes it.
    let later = retry.plus(lease).plus(Duration::from_secs(1));
    let third = outbox
        .claim_deliveries(OTHER_NODE, 10, later, later.plus(lease))
        .await
        .unwrap();
    assert_eq!(third[0].key.attempt, 3);
    assert!(
        !outbox
            .record_attempt(second[0].key, delivered(200), later)
            .await
            .unwrap()
    );
    assert!(
        outbox
            .record_attempt(third[0].key, delivered(204), later)
            .await
            .unwrap()
    );
    assert!(
        !outbox
            .record_attempt(third[0].key, retry_at(later), later)
            .await
            .unwrap(),
        "final"
    );
    let far = later.plus(HOUR);
    assert!(
        outbox
            .claim_deliveries(NODE, 10, far, far.plus(lease))
            .await
            .unwrap()
            .is_empty()
    );
    let log = log(&outbox, "w").await;
    assert_eq!(log.len(), 1);
    assert_eq!(
        (
            log[0].state,
            log[0].attempts,
            log[0].last_status,
            log[0].next_attempt_at
        ),
        (DeliveryState::Delivered, 3, Some(204), None)
    );
    assert_eq!(log[0].last_attempt_at, Some(later));
}

pub async fn outbox_purge_keeps_what_is_pending(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let outbox = outbox(&store);
    create(&store, "w", 1, now).await;
    create(&store, "w", 1, now).await;
    drain(&store, now).await;
    outbox.fan_out(&ended(), 100, now).await.unwrap();
    let claimed = outbox
        .claim_deliveries(NODE, 1, now, now.plus(HOUR))
        .await
        .unwrap();
    outbox
        .record_attempt(claimed[0].key, delivered(200), now)
        .await
        .unwrap();
    assert_eq!(
        outbox.purge_webhooks(now).await.unwrap(),
        0,
        "nothing older than now"
    );
    assert_eq!(outbox.purge_webhooks(now.plus(HOUR)).await.unwrap(), 1);
    let log = log(&outbox, "w").await;
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].state, DeliveryState::Pending);
}

pub async fn outbox_a_node_releases_only_its_own_deliveries(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let outbox = outbox(&store);
    create(&store, "w", 1, now).await;
    create(&store, "w", 1, now).await;
    drain(&store, now).await;
    outbox.fan_out(&ended(), 100, now).await.unwrap();
    let until = now.plus(HOUR);
    let mine = outbox.claim_deliveries(NODE, 1, now, until).await.unwrap();
    let theirs = outbox
        .claim_deliveries(OTHER_NODE, 1, now, until)
        .await
        .unwrap();
    assert_eq!((mine.len(), theirs.len()), (1, 1));
    assert_eq!(outbox.release_deliveries(NODE).await.unwrap(), 1);
    let again = outbox.claim_deliveries(NODE, 10, now, until).await.unwrap();
    assert_eq!(
        again.len(),
        1,
        "mine is due again at once; theirs stays leased"
    );
    assert_eq!(again[0].key.delivery, mine[0].key.delivery);
    assert_eq!(again[0].key.attempt, 2);
    assert!(
        !outbox
            .record_attempt(mine[0].key, delivered(200), now)
            .await
            .unwrap()
    );
}

pub async fn outbox_two_nodes_fan_out_and_claim_each_once(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let now = Timestamp::now();
    for _ in 0..40 {
        create(&a, "w", 1, now).await;
    }
    drain(&a, now).await;
    let (oa, ob) = (outbox(&a), outbox(&b));
    let subs = ended();
    let (fa, fb) = tokio::join!(
        async {
            let mut n = 0;
            for _ in 0..10 {
                n += oa.fan_out(&subs, 3, now).await.unwrap();
            }
            n
        },
        async {
            let mut n = 0;
            for _ in 0..10 {
                n += ob.fan_out(&subs, 3, now).await.unwrap();
            }
            n
        }
    );
    assert_eq!(fa + fb, 40, "each event fanned out by one node");
    let until = now.plus(HOUR);
    let (ca, cb) = tokio::join!(
        async {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.extend(oa.claim_deliveries("node-1", 3, now, until).await.unwrap());
            }
            got
        },
        async {
            let mut got = Vec::new();
            for _ in 0..10 {
                got.extend(ob.claim_deliveries("node-2", 3, now, until).await.unwrap());
            }
            got
        }
    );
    let all: Vec<i64> = ca.iter().chain(&cb).map(|d| d.key.delivery).collect();
    let distinct: HashSet<i64> = all.iter().copied().collect();
    assert_eq!(
        (all.len(), distinct.len()),
        (40, 40),
        "each delivery held by one node"
    );
    assert_eq!(log(&oa, "w").await.len(), 40);
}
