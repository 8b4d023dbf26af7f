//! Satchel's extensions of the hosted API, under names the official SDKs never send:
//!
//! - results while a batch runs: `GET /v1/messages/batches/{id}/results?after=CURSOR`
//!   (`&wait=SECONDS`, `&limit=N`) answers the lines settled after the cursor, in settle
//!   order, with the cursor to go on from in `satchel-results-cursor` and whether that was
//!   all in `satchel-results-complete`;
//! - re-running what failed: `POST /v1/messages/batches/{id}/retry`.

use std::collections::HashMap;
use std::time::Duration;

use axum::Extension;
use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use satchel_core::model::SettleCursor;
use satchel_core::observe;
use satchel_core::partial::{MAX_PAGE_LINES, MAX_WAIT};
use satchel_core::rerun::{ErroredSelection, RetrySelection};
use satchel_wire::MessageBatch;
use serde::{Deserialize, Serialize};

use super::context::{BatchId, Caller};
use super::{ApiError, AppState, convert};

/// The cursor to pass as `after` next.
pub const CURSOR_HEADER: HeaderName = HeaderName::from_static("satchel-results-cursor");
/// `true` once the batch has ended and this answer held every line after `after`.
pub const COMPLETE_HEADER: HeaderName = HeaderName::from_static("satchel-results-complete");
/// The batch's status when the lines were read.
pub const STATUS_HEADER: HeaderName = HeaderName::from_static("satchel-batch-status");

/// Lines in one answer unless `limit` says otherwise.
const DEFAULT_LINES: usize = 1_000;

/// Whether a results call asks for the extension (the hosted API's call has no query).
pub fn wants_settled(query: &HashMap<String, String>) -> bool {
    ["after", "wait", "limit"]
        .iter()
        .any(|k| query.contains_key(*k))
}

fn invalid(message: String) -> ApiError {
    ApiError::InvalidRequest(message)
}

/// The lines settled after `after`: results while the batch runs (and after it ended).
pub async fn settled(
    state: &AppState,
    caller: &Caller,
    id: &str,
    query: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    if let Some(unknown) = query
        .keys()
        .find(|k| !matches!(k.as_str(), "after" | "wait" | "limit"))
    {
        return Err(invalid(format!(
            "{unknown}: not a parameter of results; use after, wait and limit"
        )));
    }
    let after: SettleCursor = query
        .get("after")
        .map(|a| a.parse())
        .transpose()
        .map_err(|e: satchel_core::model::BadCursor| invalid(format!("after: {e}")))?
        .unwrap_or(SettleCursor::START);
    let wait = match query.get("wait") {
        None => Duration::ZERO,
        Some(text) => {
            let seconds: f64 = text
                .parse()
                .ok()
                .filter(|s: &f64| s.is_finite())
                .ok_or_else(|| invalid("wait: Input should be a number of seconds".into()))?;
            if !(0.0..=MAX_WAIT.as_secs_f64()).contains(&seconds) {
                return Err(invalid(format!(
                    "wait: Input should be between 0 and {} seconds",
                    MAX_WAIT.as_secs()
                )));
            }
            Duration::from_secs_f64(seconds)
        }
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LINES,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_PAGE_LINES).contains(n))
            .ok_or_else(|| {
                invalid(format!(
                    "limit: Input should be an integer from 1 to {MAX_PAGE_LINES}"
                ))
            })?,
    };
    let page = state
        .batches
        .settled(&caller.workspace, id, after, limit, wait)
        .await?;
    metrics::counter!(observe::RESULTS_BYTES).increment(page.lines.len() as u64);
    let mut response = Body::from(page.lines).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-jsonl"),
    );
    // Digits and a dot: always a valid header value.
    if let Ok(cursor) = HeaderValue::from_str(&page.next.to_string()) {
        headers.insert(CURSOR_HEADER, cursor);
    }
    headers.insert(
        COMPLETE_HEADER,
        HeaderValue::from_static(if page.complete { "true" } else { "false" }),
    );
    headers.insert(
        STATUS_HEADER,
        HeaderValue::from_static(page.status.as_str()),
    );
    Ok(response)
}

/// What `POST …/retry` may say; every field is optional.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RetryBody {
    /// `retryable` (the default), `all` or `none`.
    errored: Option<ErroredChoice>,
    /// Take the expired requests (default true).
    expired: Option<bool>,
    /// Take the canceled requests (default false).
    canceled: Option<bool>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ErroredChoice {
    Retryable,
    All,
    None,
}

/// The answer to a retry: the new batch, and what it re-runs. (The batch itself is the
/// official `MessageBatch` shape, untouched.)
#[derive(Debug, Serialize)]
pub struct RetryResponse {
    #[serde(rename = "type")]
    kind: &'static str,
    source_batch_id: String,
    request_count: usize,
    batch: MessageBatch,
}

pub async fn retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    request: axum::extract::Request,
) -> Result<(Extension<BatchId>, Json<RetryResponse>), ApiError> {
    let forwarded = super::batches::forwarded_headers(request.headers());
    let body: Bytes = axum::body::to_bytes(request.into_body(), 64 << 10)
        .await
        .map_err(|_| invalid("The retry body must be a small JSON object".into()))?;
    let body: RetryBody = if body.iter().all(u8::is_ascii_whitespace) {
        RetryBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| invalid(format!("retry body: {e}")))?
    };
    let defaults = RetrySelection::default();
    let selection = RetrySelection {
        errored: match body.errored {
            None => defaults.errored,
            Some(ErroredChoice::Retryable) => ErroredSelection::Retryable,
            Some(ErroredChoice::All) => ErroredSelection::All,
            Some(ErroredChoice::None) => ErroredSelection::None,
        },
        expired: body.expired.unwrap_or(defaults.expired),
        canceled: body.canceled.unwrap_or(defaults.canceled),
    };
    let id = super::batches::known_shape(&id)?;
    let rerun = state
        .batches
        .retry(&caller.workspace, id, selection, &forwarded)
        .await?;
    let new_id = rerun.batch.id.clone();
    Ok((
        Extension(BatchId(new_id)),
        Json(RetryResponse {
            kind: "message_batch_retry",
            source_batch_id: rerun.source,
            request_count: rerun.requests,
            batch: convert::batch(rerun.batch, &caller.base_url),
        }),
    ))
}
