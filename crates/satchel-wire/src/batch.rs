//! `MessageBatch`, its counts, the list page and the delete confirmation.

use serde::{Deserialize, Serialize};

use crate::Timestamp;

/// Where a batch is in its life: `in_progress` → (`canceling`) → `ended`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingStatus {
    InProgress,
    Canceling,
    Ended,
}

impl ProcessingStatus {
    /// The name the wire uses (`in_progress`, `canceling`, `ended`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "in_progress",
            Self::Canceling => "canceling",
            Self::Ended => "ended",
        }
    }
}

/// How many of a batch's requests are in each state; the five always sum to the request count.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestCounts {
    pub processing: u64,
    pub succeeded: u64,
    pub errored: u64,
    pub canceled: u64,
    pub expired: u64,
}

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.processing + self.succeeded + self.errored + self.canceled + self.expired
    }
}

/// A Message Batch as every route returns it: all ten keys, nullable ones as `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageBatch {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: MessageBatchType,
    pub processing_status: ProcessingStatus,
    pub request_counts: RequestCounts,
    pub ended_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
    pub cancel_initiated_at: Option<Timestamp>,
    pub archived_at: Option<Timestamp>,
    pub results_url: Option<String>,
}

/// The constant `"message_batch"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBatchType {
    #[default]
    #[serde(rename = "message_batch")]
    MessageBatch,
}

/// What `DELETE /v1/messages/batches/{id}` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedMessageBatch {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: DeletedMessageBatchType,
}

impl DeletedMessageBatch {
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            kind: DeletedMessageBatchType::MessageBatchDeleted,
        }
    }
}

/// The constant `"message_batch_deleted"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeletedMessageBatchType {
    #[serde(rename = "message_batch_deleted")]
    MessageBatchDeleted,
}

/// One page of a list: `{data, has_more, first_id, last_id}` (no `object` key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPage<T> {
    pub data: Vec<T>,
    pub has_more: bool,
    pub first_id: Option<String>,
    pub last_id: Option<String>,
}

#[cfg(test)]
mod tests {

    #[test]
    fn status_names_are_the_wire_names() {
        for status in [
            ProcessingStatus::InProgress,
            ProcessingStatus::Canceling,
            ProcessingStatus::Ended,
        ] {
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
    }
    use super::*;

    #[test]
    fn batch_serialises_all_ten_keys() {
        let batch = MessageBatch {
            id: "msgbatch_01".into(),
            kind: MessageBatchType::MessageBatch,
            processing_status: ProcessingStatus::InProgress,
            request_counts: RequestCounts {
                processing: 2,
                ..Default::default()
            },
            ended_at: None,
            created_at: Timestamp::from_micros(0),
            expires_at: Timestamp::from_micros(86_400_000_000),
            cancel_initiated_at: None,
            archived_at: None,
            results_url: None,
        };
        let value = serde_json::to_value(&batch).unwrap();
        let mut keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "archived_at",
                "cancel_initiated_at",
                "created_at",
                "ended_at",
                "expires_at",
                "id",
                "processing_status",
                "request_counts",
                "results_url",
                "type"
            ]
        );
        assert_eq!(value["type"], "message_batch");
        assert_eq!(value["processing_status"], "in_progress");
        assert_eq!(value["expires_at"], "1970-01-02T00:00:00.000000Z");
    }
}
