//! Domain records to wire objects.

use std::net::SocketAddr;

use axum::http::HeaderMap;
use satchel_core::model::BatchRecord;
use satchel_wire::{MessageBatch, MessageBatchType, ProcessingStatus};

/// The base URL clients reach this server at: the configured one, else `http://<Host>`,
/// else (HTTP/1.0 without `Host`, or `Host` empty) the address the client connected to.
pub fn base_url(configured: Option<&str>, headers: &HeaderMap, local: SocketAddr) -> String {
    if let Some(base) = configured {
        return base.trim_end_matches('/').to_owned();
    }
    match headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|host| !host.is_empty())
    {
        Some(host) => format!("http://{host}"),
        None => format!("http://{local}"),
    }
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
