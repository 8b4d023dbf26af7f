//! CORS, for browser clients, as the hosted API serves it.
//!
//! The TypeScript SDK in a browser (`dangerouslyAllowBrowser: true`) sends
//! `anthropic-dangerous-direct-browser-access: true` with every request; such requests, and
//! those from origins the operator allowed (`--cors-allow-origin`), get `Access-Control-*`
//! headers. A request from a browser (it names an `Origin` other than this server's own, as
//! the dashboard's calls do) that has neither is refused with
//! the API's 401 ("CORS requests must set 'anthropic-dangerous-direct-browser-access'
//! header", see [`super::ApiError::CorsHeaderRequired`]). Preflights (`OPTIONS` with
//! `Access-Control-Request-Method`) carry no key and are answered here, before any check:
//! allowed when the origin is, or when the headers they announce include that header.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The header the SDKs send from a browser.
pub const BROWSER_ACCESS_HEADER: &str = "anthropic-dangerous-direct-browser-access";

/// Response headers a browser script may read (the SDKs read `request-id` and `retry-after`).
const EXPOSED: &str = "request-id, retry-after, retry-after-ms, x-should-retry, content-type";

/// How long a browser may cache a preflight's answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "86400";

/// Which origins get CORS headers beyond the header's own rule.
#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    /// Exact origins (`https://app.example.com`), or `*` for any.
    allowed_origins: Vec<String>,
}

impl CorsPolicy {
    pub fn new(allowed_origins: Vec<String>) -> Self {
        Self { allowed_origins }
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.allowed_origins
            .iter()
            .any(|allowed| allowed == "*" || allowed.eq_ignore_ascii_case(origin))
    }

    /// Whether a request with these headers may be served: it names no `Origin` (not a
    /// browser), comes from a page this server served (same origin: the dashboard), carries
    /// the SDK's browser header, or comes from an allowed origin.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
            return true;
        };
        same_origin(origin, headers) || has_browser_header(headers) || self.origin_allowed(origin)
    }

    /// Whether a preflight with these headers is allowed.
    fn admits_preflight(&self, origin: &str, headers: &HeaderMap) -> bool {
        let announced = headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let announces_browser_header = announced
            .split(',')
            .any(|h| h.trim().eq_ignore_ascii_case(BROWSER_ACCESS_HEADER));
        announces_browser_header || self.origin_allowed(origin)
    }
}

/// Whether `origin` is this server as the request addressed it (its `Host`): a page of
/// ours calling home, which is no cross-origin request at all.
fn same_origin(origin: &str, headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    origin
        .split_once("://")
        .is_some_and(|(_, authority)| authority.eq_ignore_ascii_case(host))
}

fn has_browser_header(headers: &HeaderMap) -> bool {
    headers
        .get(BROWSER_ACCESS_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// The outermost layer: answers preflights, and adds CORS headers to every answer (errors
/// included, so a browser script sees the API's error rather than a CORS failure).
pub async fn layer(
    State(policy): State<Arc<CorsPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let origin_text = origin.to_str().unwrap_or_default().to_owned();
    if request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut response = StatusCode::NO_CONTENT.into_response();
        if policy.admits_preflight(&origin_text, request.headers()) {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
            );
            if let Some(asked) = request
                .headers()
                .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            {
                headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE),
            );
        }
        response
            .headers_mut()
            .insert(header::VARY, HeaderValue::from_static("Origin"));
        return response;
    }
    let cors = has_browser_header(request.headers()) || policy.origin_allowed(&origin_text);
    let mut response = next.run(request).await;
    if cors {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static(EXPOSED),
        );
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    response
}
