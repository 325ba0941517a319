//! cardgate's HTTP surface. Each surface — [`operations`], the [`native`] OAuth2 and card
//! API, each of the [`dialects`] — declares its own router (with its own layers) from
//! handlers that document themselves; [`router`] merges them and splits the result into the
//! axum router and the OpenAPI 3.1 document, so the two cannot drift. Authentication is one
//! family of extractors ([`auth`]); outbound webhooks go through the [`courier`].
#![forbid(unsafe_code)]

pub mod auth;
pub mod courier;
pub mod dialects;
pub mod native;
pub mod operations;
pub mod server;
pub mod widgets;
pub mod wire;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cardgate_app::App;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use server::{serve, Timeouts};

/// Every surface's routes, merged, with the document's metadata and security schemes.
fn surfaces() -> OpenApiRouter<Arc<App>> {
    let mut doc = OpenApi::builder()
        .info(
            utoipa::openapi::InfoBuilder::new()
                .title("cardgate")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "A self-hosted, multi-tenant card access token service: the native OAuth2 \
                     and card API, and the dialects of other card platforms' token endpoints.",
                ))
                .build(),
        )
        .build();
    let components = doc.components.get_or_insert_with(Default::default);
    let http = |scheme| SecurityScheme::Http(HttpBuilder::new().scheme(scheme).build());
    components.add_security_scheme("basic", http(HttpAuthScheme::Basic));
    components.add_security_scheme("bearer", http(HttpAuthScheme::Bearer));
    components.add_security_scheme(
        "cardToken",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A card token (`cgct_…`)"))
                .build(),
        ),
    );
    components.add_security_scheme(
        "apiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "`ApiKey <api_key>`",
        ))),
    );
    components.add_security_scheme(
        "equalsApiKey",
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "Authorization",
            "`ApiKey <api_key>`, or the raw key alone",
        ))),
    );
    components.add_security_scheme(
        "syncteraApiKey",
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("api_key")
                .description(Some("Synctera: `Bearer <api_key>`"))
                .build(),
        ),
    );
    OpenApiRouter::with_openapi(doc)
        .merge(operations::router())
        .merge(native::router())
        .merge(dialects::fiserv::router())
        .merge(dialects::equals::router())
        .merge(dialects::synctera::router())
        .merge(widgets::router())
        .merge(dialects::treasuryprime::router())
        .merge(dialects::bankezy::router())
}

/// The OpenAPI 3.1 document of every route, generated from the handlers' declarations.
pub fn openapi() -> OpenApi {
    let mut doc = surfaces().into_openapi();
    let openapi_json = utoipa::openapi::path::PathItem::new(
        utoipa::openapi::HttpMethod::Get,
        utoipa::openapi::path::OperationBuilder::new()
            .tag("operations")
            .operation_id(Some("openapi"))
            .summary(Some("This document"))
            .response(
                "200",
                utoipa::openapi::ResponseBuilder::new()
                    .description("The OpenAPI 3.1 document")
                    .content(
                        "application/json",
                        utoipa::openapi::ContentBuilder::new()
                            .schema(Some(utoipa::openapi::ObjectBuilder::new()))
                            .build(),
                    )
                    .build(),
            )
            .build(),
    );
    doc.paths.paths.insert("/openapi.json".into(), openapi_json);
    doc
}

/// Every route served, as `(method, path template)`, from the document: what the metrics
/// label requests with (anything else is `unmatched`).
pub fn routes(doc: &OpenApi) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in &doc.paths.paths {
        let methods = [
            ("get", item.get.is_some()),
            ("put", item.put.is_some()),
            ("post", item.post.is_some()),
            ("delete", item.delete.is_some()),
            ("patch", item.patch.is_some()),
        ];
        for (m, present) in methods {
            if present {
                out.insert((m.to_string(), path.clone()));
            }
        }
    }
    out
}

pub fn router(app: Arc<App>) -> Router {
    let (router, _) = surfaces().split_for_parts();
    let doc = serde_json::to_string(&openapi()).unwrap_or_else(|_| "{}".into());
    let documented: Arc<BTreeSet<String>> =
        Arc::new(routes(&openapi()).into_iter().map(|(_, p)| p).collect());
    router
        .route(
            "/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], doc).into_response() }
            }),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(wire::MAX_BODY))
        .layer(middleware::from_fn_with_state(
            (app.clone(), documented),
            track,
        ))
        .with_state(app)
}

/// Records every request in the metrics and a debug log line (route template, method,
/// status, duration — never the path, query or headers, which may carry ids and secrets).
/// Only documented routes are labelled by name; a catch-all or fallback is `unmatched`.
async fn track(
    State((app, documented)): State<(Arc<App>, Arc<BTreeSet<String>>)>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str())
        .filter(|m| documented.contains(*m))
        .unwrap_or("unmatched")
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
    app.metrics.observe(&route, method, status, micros);
    tracing::debug!(route, method, status, micros, "request");
    res.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    res
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
