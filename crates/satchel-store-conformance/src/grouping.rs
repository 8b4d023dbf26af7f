//! Claims of a batch ordered by prompt prefix ([`NewBatch::group_by_prefix`]): the first
//! request of every prefix group, then the second of every group, and so on (see
//! `satchel_core::prefix`).

use super::*;

/// Request `i` of `n`, submitted in runs: the first third with one system prompt, the next
/// third with another, the last with a third.
fn prompted(i: usize, n: usize) -> NewRequest {
    let params = format!(
        r#"{{"model":"m","max_tokens":5,"system":"shared prompt {}","messages":[{{"role":"user","content":"question {i}"}}]}}"#,
        i * 3 / n
    );
    NewRequest {
        custom_id: format!("r{i}"),
        params: RawValue::from_string(params).unwrap().into(),
    }
}

async fn create_prompted(store: &Arc<dyn Store>, group_by_prefix: bool, n: usize) -> String {
    let batch = NewBatch {
        group_by_prefix,
        ..new_batch("w", Timestamp::now())
    };
    let id = batch.id.clone();
    let (tx, rx) = mpsc::channel(4);
    let feed = async move {
        // Two chunks, so both the first write and a later one are exercised.
        let requests: Vec<NewRequest> = (0..n).map(|i| prompted(i, n)).collect();
        let mut requests = requests.into_iter();
        for size in [n / 2, n - n / 2] {
            let chunk: Vec<NewRequest> = requests.by_ref().take(size).collect();
            tx.send(IngestChunk::Requests(chunk)).await.unwrap();
        }
        tx.send(IngestChunk::Commit).await.unwrap();
    };
    let (record, ()) = tokio::join!(store.create_batch(batch, rx), feed);
    assert_eq!(record.unwrap().counts.processing, n as u64);
    id
}

/// The system prompt number of a claimed request.
fn group_of(claimed: &ClaimedRequest) -> String {
    let params: serde_json::Value = serde_json::from_str(&claimed.params).unwrap();
    params["system"].as_str().unwrap().to_owned()
}

pub async fn claims_take_an_ordered_batch_prefix_group_by_group_in_turn(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    create_prompted(&store, true, 90).await;
    let mut order = Vec::new();
    loop {
        let claimed = store
            .claim(NODE, 10, &ModelFilter::Any, now, now.plus(HOUR))
            .await
            .unwrap();
        if claimed.is_empty() {
            break;
        }
        order.extend(claimed.iter().map(|c| (group_of(c), c.custom_id.clone())));
        store.settle(settle_ok(&claimed), now).await.unwrap();
    }
    assert_eq!(order.len(), 90);
    // Submitted in three runs of 30, claimed in turns: every three in a row hold the three
    // prompts, and each prompt's requests keep their submission order.
    for turn in order.chunks(3) {
        let prompts: std::collections::HashSet<&String> = turn.iter().map(|(g, _)| g).collect();
        assert_eq!(prompts.len(), 3, "{turn:?}");
    }
    for prompt in 0..3 {
        let ids: Vec<usize> = order
            .iter()
            .filter(|(g, _)| *g == format!("shared prompt {prompt}"))
            .map(|(_, id)| id[1..].parse().unwrap())
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids, sorted);
        assert_eq!(ids.len(), 30);
    }
}

pub async fn claims_take_an_ungrouped_batch_in_submission_order(store: Arc<dyn Store>) {
    let now = Timestamp::now();
    create_prompted(&store, false, 30).await;
    let claimed = store
        .claim(NODE, 30, &ModelFilter::Any, now, now.plus(HOUR))
        .await
        .unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.custom_id.as_str()).collect();
    let expected: Vec<String> = (0..30).map(|i| format!("r{i}")).collect();
    assert_eq!(ids, expected.iter().map(String::as_str).collect::<Vec<_>>());
}
