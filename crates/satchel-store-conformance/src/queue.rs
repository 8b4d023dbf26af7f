//! The processing queue as the per-workspace limits read it.

use std::sync::Arc;

use satchel_core::Store;
use satchel_core::model::ModelFilter;
use satchel_wire::Timestamp;

use crate::{HOUR, NODE, create, drain, settle_ok};

/// `queued_requests` counts a workspace's requests that have not ended, nothing else.
pub async fn queued_requests_count_what_has_not_ended(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let first = create(&store, "w", 3, now).await;
    create(&store, "w", 2, now).await;
    create(&store, "other", 4, now).await;
    assert_eq!(store.queued_requests("w").await.unwrap(), 5);
    assert_eq!(store.queued_requests("other").await.unwrap(), 4);
    assert_eq!(store.queued_requests("nobody").await.unwrap(), 0);

    // A settled request leaves the queue.
    let claimed = store
        .claim(NODE, 1, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    store.settle(settle_ok(&claimed), now).await.unwrap();
    let total =
        store.queued_requests("w").await.unwrap() + store.queued_requests("other").await.unwrap();
    assert_eq!(total, 8);

    // Canceled requests leave it too.
    store.cancel_batch("w", &first, now).await.unwrap().unwrap();
    assert_eq!(store.queued_requests("w").await.unwrap(), 2);

    drain(&store, now).await;
    assert_eq!(store.queued_requests("w").await.unwrap(), 0);
    assert_eq!(store.queued_requests("other").await.unwrap(), 0);
}
