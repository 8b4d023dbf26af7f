//! Domain records to wire objects.

use axum::http::HeaderMap;
use satchel_core::model::BatchRecord;
use satchel_wire::{MessageBatch, MessageBatchType, ProcessingStatus};

/// The base URL clients reach this server at: the configured one, else `http://<Host>`.
pub fn base_url(configured: Option<&str>, headers: &HeaderMap) -> String {
    if let Some(base) = configured {
        return base.trim_end_matches('/').to_owned();
    }
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    format!("http://{host}")
}

pub fn batch(record: BatchRecord, base_url: &str) -> MessageBatch {
    let results_url = (record.status == ProcessingStatus::Ended)
        .then(|| format!("{base_url}/v1/messages/batches/{}/results", record.id));
    MessageBatch {
        id: record.id,
        kind: MessageBatchType::MessageBatch,
        processing_status: record.status,
        request_counts: record.counts,
        ended_at: record.ended_at,
        created_at: record.created_at,
        expires_at: record.expires_at,
        cancel_initiated_at: record.cancel_initiated_at,
        archived_at: record.archived_at,
        results_url,
    }
}
