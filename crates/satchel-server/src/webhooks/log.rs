//! `GET /v1/satchel/webhooks/deliveries`: the caller's workspace's webhook deliveries,
//! newest first (an extension route; authenticated like every route). Query: `limit`
//! (1–1000, default 20), `batch_id`, `before_id` (a delivery id, to page on).

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Query, State};
use satchel_core::BatchError;
use satchel_core::webhooks::{DeliveryFilter, DeliveryRecord};
use satchel_wire::Timestamp;
use serde::Serialize;

use crate::api::context::Caller;
use crate::api::{ApiError, AppState};

const LIMIT_DEFAULT: u32 = 20;
const LIMIT_MAX: u32 = 1000;
const ID_PREFIX: &str = "whdlv_";

#[derive(Serialize)]
pub struct DeliveryPage {
    data: Vec<Delivery>,
    has_more: bool,
    first_id: Option<String>,
    last_id: Option<String>,
}

#[derive(Serialize)]
struct Delivery {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    /// The `webhook-id` every attempt of this delivery carries.
    event_id: String,
    event_type: String,
    batch_id: String,
    url: String,
    /// `pending`, `delivered` or `failed`.
    status: &'static str,
    attempts: i64,
    last_status_code: Option<u16>,
    last_error: Option<String>,
    created_at: Timestamp,
    last_attempt_at: Option<Timestamp>,
    next_attempt_at: Option<Timestamp>,
}

impl From<DeliveryRecord> for Delivery {
    fn from(d: DeliveryRecord) -> Self {
        Self {
            id: format!("{ID_PREFIX}{}", d.delivery),
            kind: "webhook_delivery",
            event_id: d.event.id,
            event_type: d.event.kind,
            batch_id: d.event.batch_id,
            url: d.url,
            status: d.state.as_str(),
            attempts: d.attempts,
            last_status_code: d.last_status,
            last_error: d.last_error,
            created_at: d.created_at,
            last_attempt_at: d.last_attempt_at,
            next_attempt_at: d.next_attempt_at,
        }
    }
}

pub async fn deliveries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let limit = match query.get("limit").map(String::as_str) {
        None | Some("") => LIMIT_DEFAULT,
        Some(text) => match text.parse::<u32>() {
            Ok(n) if (1..=LIMIT_MAX).contains(&n) => n,
            _ => {
                return Err(ApiError::InvalidRequest(format!(
                    "limit: must be an integer from 1 to {LIMIT_MAX}"
                )));
            }
        },
    };
    let before = match query.get("before_id").filter(|t| !t.is_empty()) {
        None => None,
        Some(text) => Some(
            text.strip_prefix(ID_PREFIX)
                .and_then(|n| n.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest(format!(
                        "before_id: expected a delivery id ({ID_PREFIX}…)"
                    ))
                })?,
        ),
    };
    let filter = DeliveryFilter {
        batch_id: query.get("batch_id").filter(|t| !t.is_empty()).cloned(),
        before,
    };
    let Some(outbox) = &state.webhooks else {
        return Ok(Json(page(Vec::new(), limit)));
    };
    let found = outbox
        .deliveries(&caller.workspace, &filter, limit)
        .await
        .map_err(|e| ApiError::Batch(BatchError::Store(e)))?;
    Ok(Json(page(found, limit)))
}

fn page(mut found: Vec<DeliveryRecord>, limit: u32) -> DeliveryPage {
    let has_more = found.len() > limit as usize;
    found.truncate(limit as usize);
    let data: Vec<Delivery> = found.into_iter().map(Delivery::from).collect();
    DeliveryPage {
        has_more,
        first_id: data.first().map(|d| d.id.clone()),
        last_id: data.last().map(|d| d.id.clone()),
        data,
    }
}
