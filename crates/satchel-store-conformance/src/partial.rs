//! Results while a batch runs ([`Store::settled_since`]) and the stored requests a re-run
//! reads ([`Store::stored_requests`]).

use std::collections::HashSet;

use satchel_core::model::{SettleCursor, SettledPage};

use super::*;

/// Reads pages after `after`, `max_lines` at a time, until `n` lines came: the lines'
/// `custom_id`s in the order read, and the last page. A page may come back empty while a
/// line is withheld for a moment (an engine hands a line out only once every line before it
/// in settle order is visible), so an empty page is read again, up to a generous deadline.
async fn read_n(
    store: &Arc<dyn Store>,
    id: &str,
    mut after: SettleCursor,
    max_lines: usize,
    n: usize,
) -> (Vec<String>, SettledPage) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut ids = Vec::new();
    loop {
        let page = store
            .settled_since("w", id, after, max_lines, usize::MAX)
            .await
            .unwrap()
            .expect("batch exists");
        assert!(page.count <= max_lines);
        ids.extend(custom_ids(&page));
        if page.count > 0 {
            assert!(page.next > after, "a page moves its cursor on");
            after = page.next;
        }
        assert!(ids.len() <= n, "more lines than settled: {ids:?}");
        if ids.len() == n {
            return (ids, page);
        }
        assert!(!page.complete, "complete after {} of {n} lines", ids.len());
        assert!(std::time::Instant::now() < deadline, "lines never came");
        if page.count == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Reads after `after` until the store says the batch's lines are complete, which must
/// come with no further line.
async fn read_to_the_end(store: &Arc<dyn Store>, id: &str, after: SettleCursor) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page = store
            .settled_since("w", id, after, 1_000, usize::MAX)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(page.count, 0, "a line after the last one");
        assert_eq!(page.next, after);
        if page.complete {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "never complete");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn custom_ids(page: &SettledPage) -> Vec<String> {
    let text = std::str::from_utf8(&page.lines).unwrap();
    let ids: Vec<String> = text
        .lines()
        .map(|l| {
            let line: serde_json::Value = serde_json::from_str(l).unwrap();
            line["custom_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), page.count);
    ids
}

fn assert_once(ids: &[String], n: usize) {
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "a line was read twice: {ids:?}");
    assert_eq!(ids.len(), n);
}

/// Lines are read as they settle, each once, however the reads are cut; the page that ends
/// the batch's lines says so, and no earlier one does.
pub async fn settled_lines_are_read_once_while_the_batch_runs(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 50, now).await;
    let other = create(&store, "w", 20, now).await;

    let first = store
        .settled_since("w", &id, SettleCursor::START, 100, usize::MAX)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((first.count, first.complete), (0, false));
    assert_eq!(first.next, SettleCursor::START);
    assert_eq!(first.status, ProcessingStatus::InProgress);

    // Claims serve both batches; settle this batch's in two groups.
    let claimed: Vec<ClaimedRequest> = store
        .claim(NODE, 40, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let mut batches: Vec<i64> = claimed.iter().map(|c| c.request.batch).collect();
    batches.sort_unstable();
    batches.dedup();
    assert_eq!(batches.len(), 2, "claims serve both batches");
    let (early, late) = claimed.split_at(claimed.len() / 2);
    store.settle(settle_ok(early), now).await.unwrap();
    // How many of them were this batch's: its counts say.
    let settled_here = get(&store, "w", &id).await.counts.succeeded as usize;
    let (seen, page) = read_n(&store, &id, SettleCursor::START, 7, settled_here).await;
    assert!(!page.complete);
    let cursor = page.next;
    store.settle(settle_ok(late), now).await.unwrap();
    let settled_now = get(&store, "w", &id).await.counts.succeeded as usize;
    let (more, page) = read_n(&store, &id, cursor, 7, settled_now - settled_here).await;
    assert!(!page.complete);
    let mut all = seen.clone();
    all.extend(more.iter().cloned());

    // The same cursor read again gives the same lines: a reader may resume from it.
    let (again, _) = read_n(&store, &id, cursor, 1_000, more.len()).await;
    assert_eq!(again, more);

    drain(&store, now).await;
    let (rest, page) = read_n(&store, &id, page.next, 7, 50 - settled_now).await;
    assert_eq!(page.status, ProcessingStatus::Ended);
    read_to_the_end(&store, &id, page.next).await;
    all.extend(rest);
    assert_once(&all, 50);

    // From the start in one go: every line once. (Both batches use the same custom_ids, so
    // a line of the other batch would show as a repeat.)
    let (whole, _) = read_n(&store, &id, SettleCursor::START, 10_000, 50).await;
    assert_once(&whole, 50);
    let (theirs, _) = read_n(&store, &other, SettleCursor::START, 10_000, 20).await;
    assert_once(&theirs, 20);

    // Another workspace's batch does not exist.
    assert!(
        store
            .settled_since("other", &id, SettleCursor::START, 10, usize::MAX)
            .await
            .unwrap()
            .is_none()
    );
}

/// The lines of a cancel come in settle order too, and the in-flight ones after them; the
/// batch is complete only once those have settled.
pub async fn canceled_lines_are_read_as_they_settle(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 10, now).await;
    let claimed = store
        .claim(NODE, 3, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 3);
    store.cancel_batch("w", &id, now).await.unwrap();
    let (canceled, page) = read_n(&store, &id, SettleCursor::START, 100, 7).await;
    assert_eq!(page.status, ProcessingStatus::Canceling);
    assert!(!page.complete);
    store.settle(settle_ok(&claimed), now).await.unwrap();
    let (finished, page) = read_n(&store, &id, page.next, 100, 3).await;
    read_to_the_end(&store, &id, page.next).await;
    let mut all = canceled;
    all.extend(finished);
    assert_once(&all, 10);
}

/// A page stops at its byte budget (after at least one line), and says it is not the end.
pub async fn settled_pages_stop_at_their_byte_budget(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    let id = create(&store, "w", 30, now).await;
    drain(&store, now).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut after, mut read) = (SettleCursor::START, 0);
    loop {
        let page = store
            .settled_since("w", &id, after, 1_000, 1)
            .await
            .unwrap()
            .unwrap();
        assert!(page.count <= 1, "one line, then the byte budget is spent");
        read += page.count;
        after = page.next;
        if page.complete {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never complete");
    }
    assert_eq!(read, 30);
}

/// The stored requests come back in submission order with their params as received, a page
/// at a time, from the row or from a params file alike (large batches).
pub async fn stored_requests_come_back_as_received(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    for n in [25, 650] {
        let id = create(&store, "w", n, now).await;
        let mut read = Vec::new();
        loop {
            let page = store
                .stored_requests("w", &id, read.len() as i64, 100)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 100);
            read.extend(page);
        }
        assert_eq!(read.len(), n);
        for (i, r) in read.iter().enumerate() {
            let expected = request(i);
            assert_eq!(r.custom_id, expected.custom_id);
            assert_eq!(r.params.get(), expected.params.get());
        }
        assert!(
            store
                .stored_requests("other", &id, 0, 10)
                .await
                .unwrap()
                .is_empty()
        );
    }
}
