//! The layer every request passes: request id, key, `anthropic-version`, error envelope.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use satchel_core::observe;
use satchel_wire::{ErrorResponse, ErrorType, ids};

use super::error::{ApiError, WireError};
use super::{AppState, convert};
use crate::auth::KeyProblem;
use crate::http::LocalAddr;

/// The caller, as handlers see it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub workspace: String,
    /// Where this caller reaches the server: the base of `results_url`.
    pub base_url: String,
}

/// The batch a response is about, when its path does not say (a create): for the log line.
#[derive(Debug, Clone)]
pub struct BatchId(pub String);

pub async fn layer(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let request_id = ids::new_request_id();
    let started = std::time::Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // The route's template (its `{id}` unfilled), so log lines and metrics group by route.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_owned();
    let mut response = match admit(&state, &request, &route) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(e) => axum::response::IntoResponse::into_response(e),
    };
    render_error(&mut response, &request_id);
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("request-id", value);
    }
    response
        .headers_mut()
        .insert("anthropic-organization-id", state.organization_id.clone());
    let batch_id = match response.extensions().get::<BatchId>() {
        Some(id) => Some(id.0.clone()),
        None if route.contains("{id}") => batch_id_in(&path).map(str::to_owned),
        None => None,
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics::counter!(observe::HTTP_REQUESTS, "route" => route.clone(), "method" => method.to_string(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!(observe::HTTP_DURATION, "route" => route.clone(), "method" => method.to_string())
        .record(elapsed.as_secs_f64());
    // Method, route, path and status only: never headers (keys) or bodies.
    tracing::info!(
        %request_id,
        %method,
        %route,
        %path,
        status,
        elapsed_ms = elapsed.as_millis() as u64,
        batch_id = batch_id.as_deref(),
        "request"
    );
    response
}

/// The prefix of the Message Batches routes' templates.
const BATCH_ROUTES: &str = "/v1/messages/batches";

/// The `{id}` of `/v1/messages/batches/{id}[/…]`.
fn batch_id_in(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/messages/batches/")?;
    rest.split('/').next().filter(|id| !id.is_empty())
}

fn admit(state: &AppState, request: &Request, route: &str) -> Result<Caller, ApiError> {
    let headers = request.headers();
    if !state.cors.admits(headers) {
        return Err(ApiError::CorsHeaderRequired);
    }
    let workspace = state
        .keys
        .workspace_of(headers)
        .map_err(|problem| match problem {
            KeyProblem::Missing => ApiError::MissingKey,
            KeyProblem::Unknown => ApiError::UnknownKey,
        })?;
    let version = headers
        .get("anthropic-version")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(ApiError::MissingVersion)?;
    if !looks_like_a_date(version) {
        return Err(ApiError::bad_version(version));
    }
    // The workspace's calls a minute count on the batch routes (the API's own), after
    // everything else passed.
    if route.starts_with(BATCH_ROUTES) {
        state.batches.admit_call(workspace)?;
    }
    let local = request
        .extensions()
        .get::<LocalAddr>()
        .map_or(state.listen_addr, |l| l.0);
    Ok(Caller {
        workspace: workspace.to_owned(),
        base_url: convert::base_url(state.public_base_url.as_deref(), headers, local),
    })
}

/// `YYYY-MM-DD`, the shape of every API version.
fn looks_like_a_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// Gives every error response the API's JSON envelope with this request's id, including
/// errors produced by the framework itself (such as a wrong method).
fn render_error(response: &mut Response, request_id: &str) {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return;
    }
    let wire = match response.extensions_mut().remove::<WireError>() {
        Some(wire) => wire,
        None if status == StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed.to_wire(),
        None if status == StatusCode::NOT_FOUND => ApiError::UnknownRoute.to_wire(),
        None if status.is_client_error() => WireError {
            status,
            kind: ErrorType::InvalidRequestError,
            message: status
                .canonical_reason()
                .unwrap_or("Invalid request")
                .to_owned(),
        },
        None => WireError {
            status,
            kind: ErrorType::ApiError,
            message: "Internal server error".into(),
        },
    };
    let bytes = envelope(&wire, request_id);
    *response.status_mut() = wire.status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().remove(header::CONTENT_LENGTH);
    *response.body_mut() = Body::from(bytes);
}

/// The error envelope's JSON for `wire`, carrying `request_id`: the one rendering, also
/// used by the serving loop for heads it refuses before routing.
pub fn envelope(wire: &WireError, request_id: &str) -> Vec<u8> {
    let body = ErrorResponse::new(wire.kind, wire.message.clone(), Some(request_id.to_owned()));
    serde_json::to_vec(&body).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_are_dates() {
        assert!(super::looks_like_a_date("2023-06-01"));
        assert!(super::looks_like_a_date("2026-10-21"));
        assert!(!super::looks_like_a_date("2023-6-1"));
        assert!(!super::looks_like_a_date("latest"));
    }

    #[test]
    fn batch_ids_come_from_paths() {
        assert_eq!(
            super::batch_id_in("/v1/messages/batches/msgbatch_1/results"),
            Some("msgbatch_1")
        );
        assert_eq!(
            super::batch_id_in("/v1/messages/batches/msgbatch_2"),
            Some("msgbatch_2")
        );
        assert_eq!(super::batch_id_in("/v1/messages/batches"), None);
    }
}
