//! CORS: browser requests with the SDK's browser header (or from allowed origins) get
//! `Access-Control-*` headers; preflights are answered without a key; browser requests with
//! neither are refused as the hosted API refuses them.

use reqwest::Method;

use crate::helpers::{KEY_A, TestApp};

const ORIGIN: &str = "http://app.example.test";

async fn raw(app: &TestApp, method: Method, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut request = app
        .client
        .request(method, format!("{}/v1/messages/batches", app.base));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn a_preflight_announcing_the_browser_header_is_allowed_without_a_key() {
    let app = TestApp::spawn().await;
    let reply = raw(
        &app,
        Method::OPTIONS,
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            (
                "access-control-request-headers",
                "x-api-key,anthropic-version,content-type,anthropic-dangerous-direct-browser-access",
            ),
        ],
    )
    .await;
    assert_eq!(reply.status(), 204);
    let h = reply.headers();
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );
    assert!(
        h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .contains("anthropic-dangerous-direct-browser-access")
    );

    // Without the header announced (and no allowed origin): no CORS headers.
    let reply = raw(
        &app,
        Method::OPTIONS,
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "x-api-key"),
        ],
    )
    .await;
    assert_eq!(reply.status(), 204);
    assert!(!reply.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn browser_requests_need_the_header_or_an_allowed_origin() {
    let app = TestApp::spawn().await;
    let base = [
        ("x-api-key", KEY_A),
        ("anthropic-version", "2023-06-01"),
        ("origin", ORIGIN),
    ];
    // With the header: served, with CORS headers a script can use.
    let mut with = base.to_vec();
    with.push(("anthropic-dangerous-direct-browser-access", "true"));
    let reply = raw(&app, Method::GET, &with).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["access-control-allow-origin"], ORIGIN);
    assert!(
        reply.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("request-id")
    );
    // An error answer carries them too, so the script sees the API's error.
    let mut bad_key = with.clone();
    bad_key[0] = ("x-api-key", "sk-wrong");
    let reply = raw(&app, Method::GET, &bad_key).await;
    assert_eq!(reply.status(), 401);
    assert_eq!(reply.headers()["access-control-allow-origin"], ORIGIN);

    // Without it: the hosted API's refusal, in the envelope.
    let reply = raw(&app, Method::GET, &base).await;
    assert_eq!(reply.status(), 401);
    assert!(reply.headers().contains_key("request-id"));
    assert!(!reply.headers().contains_key("access-control-allow-origin"));
    let body: serde_json::Value = serde_json::from_slice(&reply.bytes().await.unwrap()).unwrap();
    assert_eq!(body["error"]["type"], "authentication_error");
    assert_eq!(
        body["error"]["message"],
        "CORS requests must set 'anthropic-dangerous-direct-browser-access' header"
    );

    // A page of this server calling home (the dashboard): same origin, not CORS.
    let own = format!("http://{}", app.addr);
    let reply = raw(
        &app,
        Method::POST,
        &[
            ("x-api-key", KEY_A),
            ("anthropic-version", "2023-06-01"),
            ("origin", &own),
            ("content-type", "application/json"),
        ],
    )
    .await;
    assert_ne!(reply.status(), 401, "a same-origin call is not refused");

    // No Origin at all (not a browser): served as always.
    let reply = raw(&app, Method::GET, &base[..2]).await;
    assert_eq!(reply.status(), 200);
    assert!(!reply.headers().contains_key("access-control-allow-origin"));
}

#[tokio::test]
async fn configured_origins_are_served_without_the_header() {
    let app = TestApp::spawn_with(|c| c.cors_allowed_origins = vec![ORIGIN.to_owned()]).await;
    let reply = raw(
        &app,
        Method::GET,
        &[
            ("x-api-key", KEY_A),
            ("anthropic-version", "2023-06-01"),
            ("origin", ORIGIN),
        ],
    )
    .await;
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.headers()["access-control-allow-origin"], ORIGIN);
    let reply = raw(
        &app,
        Method::GET,
        &[
            ("x-api-key", KEY_A),
            ("anthropic-version", "2023-06-01"),
            ("origin", "http://elsewhere.test"),
        ],
    )
    .await;
    assert_eq!(reply.status(), 401);
}
