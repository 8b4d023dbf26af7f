//! The batch lifecycle as a store carries it out: all-or-nothing creates, workspaces, listing,
//! cancel, expiry, delete, archive and the statistics.

use super::*;

pub async fn create_is_all_or_nothing(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let batch = new_batch("w", now);
    let id = batch.id.clone();
    let (tx, rx) = mpsc::channel(4);
    let feed = async move {
        tx.send(IngestChunk::Requests((0..500).map(request).collect()))
            .await
            .unwrap();
        // Dropped without Commit: the body turned out bad.
    };
    let (outcome, ()) = tokio::join!(store.create_batch(batch, rx), feed);
    assert!(outcome.is_err());
    assert!(store.get_batch("w", &id).await.unwrap().is_none());
    assert!(
        store
            .list_batches("w", &ListCursor::Start, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .claim(NODE, 100, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap()
            .is_empty(),
        "nothing runnable"
    );
}

pub async fn batches_are_scoped_to_their_workspace(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "a", 3, now).await;
    assert!(store.get_batch("b", &id).await.unwrap().is_none());
    assert!(store.cancel_batch("b", &id, now).await.unwrap().is_none());
    assert_eq!(
        store.delete_batch("b", &id).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert!(
        store
            .list_batches("b", &ListCursor::Start, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(get(&store, "a", &id).await.workspace, "a");
}

pub async fn list_pages_newest_first_both_ways(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(create(&store, "w", 1, now).await);
    }
    ids.reverse(); // newest first
    let page = |batches: Vec<satchel_core::model::BatchRecord>| {
        batches.into_iter().map(|b| b.id).collect::<Vec<_>>()
    };
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Start, 10)
                .await
                .unwrap()
        ),
        ids
    );
    // One extra when more exist.
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Start, 2)
                .await
                .unwrap()
        ),
        ids[..3]
    );
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::After(ids[1].clone()), 2)
                .await
                .unwrap()
        ),
        ids[2..5]
    );
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Before(ids[3].clone()), 2)
                .await
                .unwrap()
        )
        .len(),
        3
    );
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Before(ids[3].clone()), 2)
                .await
                .unwrap()
        )[..2],
        ids[1..3]
    );
    assert_eq!(
        page(
            store
                .list_batches("w", &ListCursor::Before(ids[1].clone()), 5)
                .await
                .unwrap()
        ),
        ids[..1]
    );
    // Both cursors: strictly between them, newest first, one extra when more exist.
    let between = |after: usize, before: usize| ListCursor::Between {
        after: ids[after].clone(),
        before: ids[before].clone(),
    };
    assert_eq!(
        page(store.list_batches("w", &between(0, 4), 10).await.unwrap()),
        ids[1..4]
    );
    assert_eq!(
        page(store.list_batches("w", &between(0, 4), 2).await.unwrap()),
        ids[1..4]
    );
    assert_eq!(
        page(store.list_batches("w", &between(1, 2), 10).await.unwrap()),
        Vec::<String>::new()
    );
}

pub async fn cancel_ends_unleased_requests_and_in_flight_ones_finish(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 100, now).await;
    let in_flight = store
        .claim(NODE, 10, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let canceled = store.cancel_batch("w", &id, now).await.unwrap().unwrap();
    assert_eq!(canceled.status, ProcessingStatus::Canceling);
    assert_eq!(
        (canceled.counts.canceled, canceled.counts.processing),
        (90, 10)
    );
    assert_eq!(canceled.cancel_initiated_at, Some(now));
    assert!(
        store
            .claim(NODE, 100, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap()
            .is_empty(),
        "a canceling batch runs nothing new"
    );
    // Cancel again: unchanged.
    let again = store
        .cancel_batch("w", &id, now.plus(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again, canceled);
    store.settle(settle_ok(&in_flight), now).await.unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(ended.status, ProcessingStatus::Ended);
    assert_eq!((ended.counts.succeeded, ended.counts.canceled), (10, 90));
    assert_eq!(lines(&store, "w", &id).await.len(), 100);
    assert_eq!(count_lines(&store, "w", &id, "canceled").await, 90);
}

pub async fn expiry_ends_what_has_not_started(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 50, now).await;
    let in_flight = store
        .claim(NODE, 5, &ModelFilter::Any, now, now.plus(48 * HOUR))
        .await
        .unwrap();
    let after_expiry = now.plus(25 * HOUR);
    assert!(
        store
            .claim(
                NODE,
                10,
                &ModelFilter::Any,
                after_expiry,
                after_expiry.plus(HOUR)
            )
            .await
            .unwrap()
            .is_empty(),
        "nothing starts after expires_at"
    );
    assert_eq!(store.sweep_unrunnable(after_expiry).await.unwrap(), 45);
    let batch = get(&store, "w", &id).await;
    assert_eq!((batch.counts.expired, batch.counts.processing), (45, 5));
    assert_eq!(
        batch.status,
        ProcessingStatus::InProgress,
        "in-flight requests still finish"
    );
    store
        .settle(settle_ok(&in_flight), after_expiry)
        .await
        .unwrap();
    let ended = get(&store, "w", &id).await;
    assert_eq!(ended.status, ProcessingStatus::Ended);
    assert_eq!(ended.ended_at, Some(after_expiry));
    assert_eq!(count_lines(&store, "w", &id, "expired").await, 45);
}

pub async fn released_requests_of_a_canceled_batch_end_canceled(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 20, now).await;
    let waiting = store
        .claim(NODE, 20, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(store.running_batches(now).await.unwrap().len(), 1);
    store.cancel_batch("w", &id, now).await.unwrap();
    assert!(store.running_batches(now).await.unwrap().is_empty());
    // The dispatcher gives back the ones that had not started.
    store
        .release(waiting.iter().map(|c| c.request).collect())
        .await
        .unwrap();
    assert_eq!(store.sweep_unrunnable(now).await.unwrap(), 20);
    let ended = get(&store, "w", &id).await;
    assert_eq!(
        (ended.status, ended.counts.canceled),
        (ProcessingStatus::Ended, 20)
    );
}

pub async fn delete_only_when_ended(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 5, now).await;
    assert_eq!(
        store.delete_batch("w", &id).await.unwrap(),
        DeleteOutcome::NotEnded
    );
    drain(&store, now).await;
    assert_eq!(
        store.delete_batch("w", &id).await.unwrap(),
        DeleteOutcome::Deleted
    );
    assert!(store.get_batch("w", &id).await.unwrap().is_none());
    assert_eq!(
        store.delete_batch("w", &id).await.unwrap(),
        DeleteOutcome::NotFound
    );
    assert!(lines(&store, "w", &id).await.is_empty());
}

pub async fn archive_purges_results_and_keeps_the_batch(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 5, now).await;
    drain(&store, now).await;
    let later = now.plus(30 * 24 * HOUR);
    assert_eq!(
        store
            .archive(now.minus(Duration::from_secs(1)), later)
            .await
            .unwrap(),
        0,
        "not yet due"
    );
    assert_eq!(store.archive(now, later).await.unwrap(), 1);
    let batch = get(&store, "w", &id).await;
    assert_eq!(batch.archived_at, Some(later));
    assert_eq!(batch.counts.succeeded, 5);
    assert!(lines(&store, "w", &id).await.is_empty());
    assert_eq!(store.archive(now, later).await.unwrap(), 0, "archived once");
}

/// The figures behind the metrics: batches by state and the five counts, over every
/// workspace, and when the oldest batch with requests still to run was created.
pub async fn stats_sum_batches_and_requests_over_workspaces(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let running = create(&store, "w", 4, now).await;
    let canceled = create(&store, "v", 3, now.plus(Duration::from_secs(1))).await;
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.in_progress, stats.canceling, stats.ended), (2, 0, 0));
    assert_eq!(stats.requests.processing, 7);
    assert_eq!(stats.oldest_waiting, Some(now));
    store.cancel_batch("v", &canceled, now).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.in_progress, stats.canceling, stats.ended), (1, 0, 1));
    assert_eq!(stats.requests.processing, 4);
    assert_eq!(stats.requests.canceled, 3);
    assert!(store.get_batch("w", &running).await.unwrap().is_some());
}
