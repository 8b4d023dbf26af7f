//! The route handlers: parse the HTTP request, call the lifecycle, shape the reply.

use std::collections::HashMap;
use std::io;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use satchel_core::ingest::IngestError;
use satchel_core::model::ListCursor;
use satchel_core::{BatchError, UpstreamHeaders, observe};
use satchel_wire::{
    DeletedMessageBatch, LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX, ListPage, MAX_CREATE_BODY_BYTES,
    MessageBatch, quote_short,
};

use super::context::{BatchId, Caller};
use super::{ApiError, AppState, body, convert};

type ApiResult<T> = Result<T, ApiError>;

/// Longer than any id this server mints: such an id cannot exist, so it is answered
/// without asking the store, quoted cut short (a 5 MB id made a 5 MB error body).
const MAX_BATCH_ID_LEN: usize = 100;

pub(super) fn known_shape(id: &str) -> Result<&str, ApiError> {
    if id.len() > MAX_BATCH_ID_LEN {
        return Err(BatchError::NotFound(quote_short(id)).into());
    }
    Ok(id)
}

/// The call's headers that go upstream with each request of the batch it creates.
pub(super) fn forwarded_headers(headers: &axum::http::HeaderMap) -> UpstreamHeaders {
    UpstreamHeaders::from_request(|name| {
        headers
            .get_all(name)
            .into_iter()
            .filter_map(|v| v.to_str().ok())
    })
}

pub async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> ApiResult<(Extension<BatchId>, Json<MessageBatch>)> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_CREATE_BODY_BYTES) {
        return Err(ApiError::TooLarge);
    }
    // They apply to every request of the batch: kept with it, sent upstream with each.
    let forwarded = forwarded_headers(request.headers());
    let encoding = body::Encoding::from_header(request.headers().get(header::CONTENT_ENCODING))
        .map_err(ApiError::UnsupportedEncoding)?;
    let (reader, overflow) = body::body_reader(
        request.into_body(),
        encoding,
        MAX_CREATE_BODY_BYTES,
        state.body_idle_timeout,
    );
    let started = std::time::Instant::now();
    let created = state
        .batches
        .create(&caller.workspace, &forwarded, reader)
        .await;
    metrics::histogram!(observe::CREATE_DURATION).record(started.elapsed().as_secs_f64());
    match created {
        Ok(record) => Ok((
            {
                metrics::counter!(observe::INGEST_REQUESTS).increment(record.counts.total());
                Extension(BatchId(record.id.clone()))
            },
            Json(convert::batch(record, &caller.base_url)),
        )),
        Err(BatchError::Ingest(IngestError::Read(_))) if overflow.happened() => {
            Err(ApiError::TooLarge)
        }
        Err(BatchError::Ingest(IngestError::Read(e))) if e.kind() == io::ErrorKind::TimedOut => {
            Err(ApiError::BodyStalled(state.body_idle_timeout))
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn retrieve(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<MessageBatch>> {
    let record = state
        .batches
        .get(&caller.workspace, known_shape(&id)?)
        .await?;
    Ok(Json(convert::batch(record, &caller.base_url)))
}

pub async fn list(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<ListPage<MessageBatch>>> {
    let limit = match query.get("limit").map(String::as_str) {
        None | Some("") => LIST_LIMIT_DEFAULT,
        Some(text) => {
            let limit: i64 = text.parse().map_err(|_| {
                ApiError::InvalidRequest(
                    "limit: Input should be a valid integer, unable to parse string as an integer"
                        .into(),
                )
            })?;
            if limit < 1 {
                return Err(ApiError::InvalidRequest(
                    "limit: Input should be greater than or equal to 1".into(),
                ));
            }
            if limit > i64::from(LIST_LIMIT_MAX) {
                return Err(ApiError::InvalidRequest(format!(
                    "limit: Input should be less than or equal to {LIST_LIMIT_MAX}"
                )));
            }
            limit as u32
        }
    };
    let cursor_of = |name: &str| query.get(name).filter(|v| !v.is_empty()).cloned();
    let cursor = match (cursor_of("after_id"), cursor_of("before_id")) {
        (Some(after), Some(before)) => ListCursor::Between { after, before },
        (Some(after), None) => ListCursor::After(after),
        (None, Some(before)) => ListCursor::Before(before),
        (None, None) => ListCursor::Start,
    };
    let page = state
        .batches
        .list(&caller.workspace, &cursor, limit)
        .await?;
    let data: Vec<MessageBatch> = page
        .batches
        .into_iter()
        .map(|b| convert::batch(b, &caller.base_url))
        .collect();
    Ok(Json(ListPage {
        first_id: data.first().map(|b| b.id.clone()),
        last_id: data.last().map(|b| b.id.clone()),
        has_more: page.has_more,
        data,
    }))
}

pub async fn cancel(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<MessageBatch>> {
    let record = state
        .batches
        .cancel(&caller.workspace, known_shape(&id)?)
        .await?;
    Ok(Json(convert::batch(record, &caller.base_url)))
}

pub async fn delete(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<Json<DeletedMessageBatch>> {
    state
        .batches
        .delete(&caller.workspace, known_shape(&id)?)
        .await?;
    Ok(Json(DeletedMessageBatch::new(id)))
}

pub async fn results(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    if super::extensions::wants_settled(&query) {
        return super::extensions::settled(&state, &caller, known_shape(&id)?, &query).await;
    }
    let lines = state
        .batches
        .results(&caller.workspace, known_shape(&id)?)
        .await?;
    let sent = metrics::counter!(observe::RESULTS_BYTES);
    // Fused: a body may be polled again after its end (the compression layer's reader does),
    // and a store's stream need not allow that.
    let lines = lines
        .fuse()
        .inspect_ok(move |page| sent.increment(page.len() as u64));
    let body = Body::from_stream(lines.map_err(|e| {
        // Mid-stream the status is already sent: the connection is cut, the client sees a
        // truncated body rather than a wrong one.
        tracing::error!(error = %e, "results stream failed");
        std::io::Error::other(e)
    }));
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-jsonl"),
    );
    Ok(response)
}

pub async fn unknown_route() -> ApiError {
    ApiError::UnknownRoute
}
