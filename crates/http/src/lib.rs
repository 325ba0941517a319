//! cardgate's HTTP surface: the axum router over the application [`service::Service`], with
//! the native API, the dialects, health, metrics and the OpenAPI document.

#![forbid(unsafe_code)]

pub mod dialects;
pub mod metrics;
pub mod native;
pub mod server;
pub mod service;
pub mod wire;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use service::Service;
use std::sync::Arc;
use std::time::Instant;

pub use server::{serve, Timeouts};

/// The OpenAPI 3.1 document of every route, dialects included.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Every route the router serves, as (method, path template). The OpenAPI test checks both
/// lists agree.
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
    ("post", "/oauth2/token"),
    ("post", "/oauth2/introspect"),
    ("post", "/oauth2/revoke"),
    ("get", "/.well-known/oauth-authorization-server"),
    ("get", "/.well-known/jwks.json"),
    ("post", "/v1/cards/{card_id}/tokens"),
    ("get", "/v1/cards/{card_id}/details"),
    ("get", "/v1/cards/{card_id}/pin"),
    ("put", "/v1/cards/{card_id}/pin"),
    ("post", "/v1/cards/{card_id}/activate"),
    ("get", "/v1/cards/{card_id}/wallet-eligibility"),
    ("post", "/v1/persons/{person_id}/mfa/sessions"),
    ("post", "/fiserv/cs/oauth2/v1/token"),
    ("get", "/equals/v2/cards/{cardId}/access-token"),
];

pub fn router(svc: Arc<Service>) -> Router {
    use native::{cards, oauth};
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/oauth2/token", post(oauth::token))
        .route("/oauth2/introspect", post(oauth::introspect))
        .route("/oauth2/revoke", post(oauth::revoke))
        .route(
            "/.well-known/oauth-authorization-server",
            get(oauth::metadata),
        )
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route("/v1/cards/{card_id}/tokens", post(cards::mint))
        // A HEAD would spend a use (or mint a token) and drop the answer: refused, not
        // treated as a GET, wherever a GET redeems or mints.
        .route(
            "/v1/cards/{card_id}/details",
            get(cards::details).head(method_not_allowed),
        )
        .route(
            "/v1/cards/{card_id}/pin",
            get(cards::get_pin)
                .put(cards::set_pin)
                .head(method_not_allowed),
        )
        .route("/v1/cards/{card_id}/activate", post(cards::activate))
        .route(
            "/v1/cards/{card_id}/wallet-eligibility",
            get(cards::wallet).head(method_not_allowed),
        )
        .route(
            "/v1/persons/{person_id}/mfa/sessions",
            post(cards::start_mfa),
        )
        .route(
            "/fiserv/cs/oauth2/v1/token",
            post(dialects::fiserv::token).fallback(dialects::fiserv::no_route),
        )
        .route("/fiserv/{*rest}", any(dialects::fiserv::no_route))
        .route(
            "/equals/v2/cards/{cardId}/access-token",
            get(dialects::equals::access_token)
                .head(dialects::equals::no_route)
                .fallback(dialects::equals::no_route),
        )
        .route("/equals/{*rest}", any(dialects::equals::no_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(wire::MAX_BODY))
        .layer(middleware::from_fn_with_state(svc.clone(), track))
        .with_state(svc)
}

/// Records every request in the metrics and a debug log line (route template, method,
/// status, duration — never the path, query or headers, which may carry ids and secrets).
async fn track(State(svc): State<Arc<Service>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
        .to_string();
    let method = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "OTHER",
    };
    let mut res = next.run(req).await;
    let micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
    let status = res.status().as_u16();
    svc.metrics.observe(&route, method, status, micros);
    tracing::debug!(route, method, status, micros, "request");
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
}

/// Liveness: the process answers. It never looks at the store.
async fn healthz() -> Response {
    Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Readiness: the store answers a cheap read within the store wait; otherwise 503, so a load
/// balancer stops sending traffic to a replica that cannot serve.
async fn readyz(State(svc): State<Arc<Service>>) -> Response {
    match svc.ready().await {
        Ok(()) => Json(serde_json::json!({"status": "ok"})).into_response(),
        Err(e) => {
            tracing::warn!(cause = %e, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(
                    header::RETRY_AFTER,
                    HeaderValue::from(service::RETRY_AFTER_SECONDS),
                )],
                Json(serde_json::json!({"status": "unavailable"})),
            )
                .into_response()
        }
    }
}

async fn metrics_text(State(svc): State<Arc<Service>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        svc.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(serde_json::json!({"error": "not_found", "error_description": "no such route"})),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        Json(serde_json::json!({"error": "method_not_allowed", "error_description": "this route does not accept that method"})),
    )
        .into_response()
}
