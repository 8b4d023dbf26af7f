//! The behaviours of two nodes sharing one store: `a` claims as [`NODE`], `b` as
//! [`OTHER_NODE`]; where it matters, both act at the same time. Run through
//! [`store_conformance_two_nodes!`](crate::store_conformance_two_nodes).

use std::collections::HashSet;

use super::*;

/// Claims from both nodes at once, in small bites, until nothing is left: no request is
/// handed to both, and every one is handed out.
pub async fn two_nodes_never_claim_the_same_request(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&a, "w", 2_000, now).await;
    let take_all = |store: Arc<dyn Store>, node: &'static str| async move {
        let mut taken = Vec::new();
        loop {
            let claimed = store
                .claim(node, 37, &ModelFilter::Any, now, now.plus(HOUR))
                .await
                .unwrap();
            if claimed.is_empty() {
                return taken;
            }
            taken.extend(claimed);
        }
    };
    let (from_a, from_b) = tokio::join!(
        tokio::spawn(take_all(a.clone(), NODE)),
        tokio::spawn(take_all(b.clone(), OTHER_NODE))
    );
    let (from_a, from_b) = (from_a.unwrap(), from_b.unwrap());
    let mut seen = HashSet::new();
    for c in from_a.iter().chain(&from_b) {
        assert!(
            seen.insert(c.request.request),
            "request {} was claimed twice",
            c.custom_id
        );
    }
    assert_eq!(seen.len(), 2_000);
    // Each settles its own: the batch ends with every request once.
    let (sa, sb) = tokio::join!(
        a.settle(settle_ok(&from_a), now),
        b.settle(settle_ok(&from_b), now)
    );
    sa.unwrap();
    sb.unwrap();
    let ended = get(&b, "w", &id).await;
    assert_eq!(
        (ended.status, ended.counts.succeeded),
        (ProcessingStatus::Ended, 2_000)
    );
}

/// Node a's lease runs out, node b takes the request over; a's late outcome changes nothing.
pub async fn two_nodes_a_stale_settle_from_the_other_is_ignored(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    let now = Timestamp::now();
    let id = create(&a, "w", 1, now).await;
    let old = a
        .claim(
            NODE,
            1,
            &ModelFilter::Any,
            now,
            now.plus(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    let later = now.plus(Duration::from_secs(2));
    let new = b
        .claim(OTHER_NODE, 1, &ModelFilter::Any, later, later.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(new.len(), 1, "the lease that ran out is taken over");
    a.settle(settle_ok(&old), later).await.unwrap();
    assert_eq!(
        get(&b, "w", &id).await.counts.processing,
        1,
        "stale: ignored"
    );
    assert_eq!(
        a.renew(vec![old[0].request], later.plus(HOUR))
            .await
            .unwrap()
            .len(),
        1,
        "and reported lost to its old holder"
    );
    b.settle(settle_ok(&new), later).await.unwrap();
    let ended = get(&a, "w", &id).await;
    assert_eq!(
        (ended.counts.succeeded, ended.status),
        (1, ProcessingStatus::Ended)
    );
    assert_eq!(lines(&a, "w", &id).await.len(), 1);
}

/// Node a restarts and recovers its leases; b's stay b's (renewable, not claimable).
pub async fn two_nodes_recovery_leaves_the_others_leases_alone(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    let now = Timestamp::now();
    let id = create(&a, "w", 10, now).await;
    let mine = a
        .claim(NODE, 6, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let theirs = b
        .claim(OTHER_NODE, 4, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(a.recover(NODE).await.unwrap(), 6);
    let keys: Vec<_> = theirs.iter().map(|c| c.request).collect();
    assert!(
        b.renew(keys, now.plus(HOUR)).await.unwrap().is_empty(),
        "b still holds all of its leases"
    );
    let again = a
        .claim(NODE, 10, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let again: HashSet<i64> = again.iter().map(|c| c.request.request).collect();
    let mine: HashSet<i64> = mine.iter().map(|c| c.request.request).collect();
    assert_eq!(again, mine, "exactly a's previous leases run again");
    b.settle(settle_ok(&theirs), now).await.unwrap();
    assert_eq!(get(&a, "w", &id).await.counts.succeeded, 4);
}

/// Both nodes settle the last requests of several batches at the same moment: each batch
/// ends once, with every count right.
pub async fn two_nodes_concurrent_final_settles_end_the_batch_once(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(create(&a, "w", 100, now).await);
    }
    let from_a = a
        .claim(NODE, 200, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let from_b = b
        .claim(OTHER_NODE, 200, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(from_a.len() + from_b.len(), 400);
    let (sa, sb) = tokio::join!(
        tokio::spawn({
            let a = a.clone();
            let s = settle_ok(&from_a);
            async move { a.settle(s, now).await }
        }),
        tokio::spawn({
            let b = b.clone();
            let s = settle_ok(&from_b);
            async move { b.settle(s, now).await }
        })
    );
    sa.unwrap().unwrap();
    sb.unwrap().unwrap();
    for id in &ids {
        let ended = get(&a, "w", id).await;
        assert_eq!(ended.status, ProcessingStatus::Ended);
        assert_eq!((ended.counts.succeeded, ended.counts.processing), (100, 0));
        assert_eq!(ended.ended_at, Some(now));
        assert_eq!(lines(&b, "w", id).await.len(), 100);
    }
}

/// A lease renewed by its holder is not claimable by the other node past its first end;
/// once it runs out unrenewed and the other takes it, the holder's renewal reports it lost.
pub async fn two_nodes_renewals_hold_against_the_other(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let now = Timestamp::now();
    create(&a, "w", 2, now).await;
    let ttl = Duration::from_secs(60);
    let held = a
        .claim(NODE, 2, &ModelFilter::Any, now, now.plus(ttl))
        .await
        .unwrap();
    let keys: Vec<_> = held.iter().map(|c| c.request).collect();
    let at = now.plus(Duration::from_secs(40));
    assert!(
        a.renew(keys.clone(), at.plus(ttl))
            .await
            .unwrap()
            .is_empty()
    );
    let past_first_end = now.plus(Duration::from_secs(70));
    assert!(
        b.claim(
            OTHER_NODE,
            2,
            &ModelFilter::Any,
            past_first_end,
            past_first_end.plus(ttl)
        )
        .await
        .unwrap()
        .is_empty(),
        "renewed leases are not claimable"
    );
    let late = past_first_end.plus(2 * ttl);
    let taken = b
        .claim(OTHER_NODE, 2, &ModelFilter::Any, late, late.plus(ttl))
        .await
        .unwrap();
    assert_eq!(taken.len(), 2, "leases that ran out are taken over");
    let mut lost = a.renew(keys.clone(), late.plus(ttl)).await.unwrap();
    lost.sort_by_key(|k| k.request);
    let mut keys = keys;
    keys.sort_by_key(|k| k.request);
    assert_eq!(lost, keys, "the old holder learns it lost them");
}

/// Both nodes sweep expired and canceling batches at once: every request ends once.
pub async fn two_nodes_concurrent_sweeps_end_each_request_once(
    a: Arc<dyn Store>,
    b: Arc<dyn Store>,
) {
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&a, "w", 300, now).await);
    }
    let after_expiry = now.plus(25 * HOUR);
    let mut ended = 0;
    // Rounds until nothing is left: a node that finds the other sweeping skips its round.
    for _ in 0..20 {
        let (ea, eb) = tokio::join!(
            tokio::spawn({
                let a = a.clone();
                async move { a.sweep_unrunnable(after_expiry).await }
            }),
            tokio::spawn({
                let b = b.clone();
                async move { b.sweep_unrunnable(after_expiry).await }
            })
        );
        ended += ea.unwrap().unwrap() + eb.unwrap().unwrap();
        if ended >= 900 {
            break;
        }
    }
    assert_eq!(ended, 900, "each request ended once");
    for id in &ids {
        let batch = get(&b, "w", id).await;
        assert_eq!(
            (batch.status, batch.counts.expired, batch.counts.processing),
            (ProcessingStatus::Ended, 300, 0)
        );
        assert_eq!(count_lines(&a, "w", id, "expired").await, 300);
    }
}
