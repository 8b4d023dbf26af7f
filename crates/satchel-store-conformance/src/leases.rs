//! Leases and settling: every request settles once, stale leases change nothing, claims are
//! fair and per model, renewals, recovery, tokens.

use super::*;

pub async fn every_request_settles_exactly_once(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 1_000, now).await;
    let first = store
        .claim(NODE, 400, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(first.len(), 400);
    // Leased requests are not claimed again while the lease holds.
    let second = store
        .claim(NODE, 1_000, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(second.len(), 600);
    store.settle(settle_ok(&first), now).await.unwrap();
    // Settling the same outcomes again changes nothing.
    store.settle(settle_ok(&first), now).await.unwrap();
    let mid = get(&store, "w", &id).await;
    assert_eq!((mid.counts.succeeded, mid.counts.processing), (400, 600));
    assert_eq!(mid.status, ProcessingStatus::InProgress);
    store.settle(settle_ok(&second), now).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(ended.status, ProcessingStatus::Ended);
    assert_eq!(ended.counts.succeeded, 1_000);
    assert!(ended.ended_at.is_some());
    let lines = lines(&store, "w", &id).await;
    assert_eq!(lines.len(), 1_000);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["custom_id"], format!("r{i}"), "submission order");
    }
    assert!(
        store
            .claim(NODE, 10, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_stale_lease_cannot_settle(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 1, now).await;
    let old = store
        .claim(
            NODE,
            1,
            &ModelFilter::Any,
            now,
            now.plus(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    // The lease runs out and another worker takes the request over.
    let later = now.plus(Duration::from_secs(2));
    let new = store
        .claim(NODE, 1, &ModelFilter::Any, later, later.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(new.len(), 1, "an expired lease is claimable again");
    assert_ne!(old[0].request.lease, new[0].request.lease);
    store.settle(settle_ok(&old), later).await.unwrap();
    assert_eq!(
        get(&store, "w", &id).await.counts.processing,
        1,
        "the stale outcome was ignored"
    );
    store.settle(settle_ok(&new), later).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!((ended.counts.succeeded, ended.counts.processing), (1, 0));
    assert_eq!(lines(&store, "w", &id).await.len(), 1);
}

pub async fn claims_are_fair_across_batches(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let first = create(&store, "w", 1_000, now).await;
    let second = create(&store, "w", 1_000, now).await;
    let other = create(&store, "x", 1_000, now).await;
    let claimed = store
        .claim(NODE, 40, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 40);
    let mut shares: Vec<u64> = Vec::new();
    for (id, workspace) in [(&first, "w"), (&second, "w"), (&other, "x")] {
        let batch = get(&store, workspace, id).await;
        shares.push(batch.counts.processing);
    }
    // Each workspace gets half the room; the two batches of w split theirs.
    let mut per_batch = std::collections::BTreeMap::<i64, u64>::new();
    for c in &claimed {
        *per_batch.entry(c.request.batch).or_default() += 1;
    }
    let mut per_batch: Vec<u64> = per_batch.into_values().collect();
    per_batch.sort_unstable();
    assert_eq!(
        per_batch,
        [10, 10, 20],
        "x gets half, w's half is split between its batches"
    );
    assert_eq!(shares, [1_000, 1_000, 1_000], "leasing moves no counts");
}

pub async fn a_node_recovers_only_its_own_leases(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 10, now).await;
    let lost = store
        .claim(NODE, 6, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let others = store
        .claim(OTHER_NODE, 4, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!((lost.len(), others.len()), (6, 4));
    // NODE restarts: its previous life's leases run again at once; OTHER_NODE's do not.
    assert_eq!(store.recover(NODE).await.unwrap(), 6);
    let again = store
        .claim(NODE, 10, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let mut again_ids: Vec<i64> = again.iter().map(|c| c.request.request).collect();
    let mut lost_ids: Vec<i64> = lost.iter().map(|c| c.request.request).collect();
    again_ids.sort_unstable();
    lost_ids.sort_unstable();
    assert_eq!(
        again_ids, lost_ids,
        "exactly the recovered requests run again"
    );
    // The previous life's outcomes are stale; the other node's still count.
    store.settle(settle_ok(&lost), now).await.unwrap();
    assert_eq!(get(&store, "w", &id).await.counts.succeeded, 0);
    store.settle(settle_ok(&others), now).await.unwrap();
    store.settle(settle_ok(&again), now).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(ended.counts.succeeded, 10);
    assert_eq!(lines(&store, "w", &id).await.len(), 10);
}

pub async fn renewals_keep_a_lease_and_report_lost_ones(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 3, now).await;
    let ttl = Duration::from_secs(60);
    let held = store
        .claim(NODE, 3, &ModelFilter::Any, now, now.plus(ttl))
        .await
        .unwrap();
    assert_eq!(held.len(), 3);
    let keys: Vec<_> = held.iter().map(|c| c.request).collect();
    // Renewed before running out: another node finds nothing to claim after the first end.
    let renewed_at = now.plus(Duration::from_secs(40));
    let lost = store
        .renew(keys.clone(), renewed_at.plus(ttl))
        .await
        .unwrap();
    assert!(lost.is_empty(), "all three are still held");
    let past_first_end = now.plus(Duration::from_secs(70));
    assert!(
        store
            .claim(
                OTHER_NODE,
                3,
                &ModelFilter::Any,
                past_first_end,
                past_first_end.plus(ttl)
            )
            .await
            .unwrap()
            .is_empty(),
        "a renewed lease is not claimable"
    );
    // One settles, one is released: renewing those reports them lost.
    store
        .settle(settle_ok(&held[..1]), past_first_end)
        .await
        .unwrap();
    store.release(vec![keys[1]]).await.unwrap();
    let lost = store
        .renew(keys.clone(), past_first_end.plus(ttl))
        .await
        .unwrap();
    assert_eq!(lost, vec![keys[0], keys[1]]);
    // The third runs out without renewal and is taken over: its old holder has lost it.
    let late = past_first_end.plus(2 * ttl);
    let taken = store
        .claim(OTHER_NODE, 3, &ModelFilter::Any, late, late.plus(ttl))
        .await
        .unwrap();
    assert_eq!(taken.len(), 2, "the released one and the one that ran out");
    let lost = store.renew(vec![keys[2]], late.plus(ttl)).await.unwrap();
    assert_eq!(lost, vec![keys[2]]);
    store.settle(settle_ok(&held[2..]), late).await.unwrap();
    store.settle(settle_ok(&taken), late).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(
        (ended.counts.succeeded, ended.status),
        (3, ProcessingStatus::Ended)
    );
    assert_eq!(lines(&store, "w", &id).await.len(), 3);
}

pub async fn lease_tokens_strictly_increase(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    create(&store, "w", 30, now).await;
    let mut last = 0;
    for i in 0..10 {
        // The same clock reading every time: tokens do not come from the clock.
        let node = if i % 2 == 0 { NODE } else { OTHER_NODE };
        let claimed = store
            .claim(node, 3, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 3);
        for c in &claimed {
            assert!(
                c.request.lease > last,
                "token {} after {last}",
                c.request.lease
            );
        }
        last = claimed[0].request.lease;
    }
}

pub async fn claims_take_only_the_models_asked_for(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let batch = new_batch("w", now);
    let (tx, rx) = mpsc::channel(4);
    let feed = async move {
        let requests = (0..30)
            .map(|i| {
                let model = ["alpha", "beta", "gamma"][i % 3];
                let params = format!(r#"{{"model":"{model}","max_tokens":5,"messages":[]}}"#);
                NewRequest {
                    custom_id: format!("r{i}"),
                    params: RawValue::from_string(params).unwrap().into(),
                }
            })
            .collect();
        tx.send(IngestChunk::Requests(requests)).await.unwrap();
        tx.send(IngestChunk::Commit).await.unwrap();
    };
    let (record, ()) = tokio::join!(store.create_batch(batch, rx), feed);
    record.unwrap();
    let models = store.models().await.unwrap();
    let id_of = |name: &str| models.iter().find(|(_, n)| n == name).unwrap().0;
    let only = ModelFilter::Only(vec![id_of("alpha"), id_of("gamma")]);
    let claimed = store
        .claim(NODE, 100, &only, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 20);
    for c in &claimed {
        let i: usize = c.custom_id[1..].parse().unwrap();
        assert_ne!(i % 3, 1, "{} is a beta request", c.custom_id);
    }
    let none = ModelFilter::Only(vec![satchel_core::model::NO_MODEL]);
    assert!(
        store
            .claim(NODE, 100, &none, now, now.plus(HOUR))
            .await
            .unwrap()
            .is_empty()
    );
    let rest = store
        .claim(NODE, 100, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(rest.len(), 10, "the beta requests");
}

/// The create call's headers kept with a batch come back, as given, with every request of it
/// that is claimed, whether its params sit in the row or (past one chunk) elsewhere; a batch
/// without them gives `None`.
pub async fn claims_carry_their_batch_upstream_headers(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let headers = r#"{"anthropic-version":"2023-06-01","anthropic-beta":"files-api-2025-04-14,context-1m-2025-08-07","anthropic-user-profile-id":"prof_é"}"#;
    let with = create_batch(
        &store,
        NewBatch {
            upstream_headers: Some(headers.to_owned()),
            ..new_batch("w", now)
        },
        700,
    )
    .await;
    let without = create(&store, "w", 5, now).await;
    let mut seen = std::collections::HashMap::<i64, Vec<Option<String>>>::new();
    loop {
        let claimed = store
            .claim(NODE, 200, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        for c in &claimed {
            seen.entry(c.request.batch)
                .or_default()
                .push(c.upstream_headers.clone());
        }
        store.settle(settle_ok(&claimed), now).await.unwrap();
    }
    assert_eq!(seen.len(), 2, "both batches were claimed");
    let mut sizes: Vec<usize> = seen.values().map(Vec::len).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [5, 700]);
    for claimed in seen.values() {
        let expected = if claimed.len() == 700 {
            Some(headers.to_owned())
        } else {
            None
        };
        assert!(
            claimed.iter().all(|h| *h == expected),
            "{:?}",
            &claimed[..3.min(claimed.len())]
        );
    }
    assert_eq!(get(&store, "w", &with).await.counts.succeeded, 700);
    assert_eq!(get(&store, "w", &without).await.counts.succeeded, 5);
}
