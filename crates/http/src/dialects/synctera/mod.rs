//! Synctera widget tokens (seed `synctera-widget-token.md`, SPEC §4.2):
//! `GET`/`POST /synctera/v1/cards/{card_id}/widget_token?widget_type=…`, answered with a
//! one-time token that opens one widget on one card, with an optional `Idempotency-Key`.
//! Errors: `{"code", "detail", "status"}` ([`error`]). This module only reads the wire
//! format; the widget-token use case decides.

mod error;

use crate::auth::{BearerApiKey, Caller};
use crate::wire;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Json;
use cardgate_app::cards::WidgetTokenRequest;
use cardgate_app::App;
use cardgate_core::{CardId, Operation};
pub use error::{SyncteraError, SyncteraErrorBody};
use serde::Serialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The Synctera routes, and Synctera-shaped answers for every other path under `/synctera`.
pub fn router() -> OpenApiRouter<Arc<App>> {
    let (schemas, paths, methods) = routes!(widget_token_get, widget_token_post);
    OpenApiRouter::new()
        .routes((schemas, paths, methods.fallback(no_route)))
        .route("/synctera/{*rest}", any(no_route))
}

/// A widget token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct WidgetTokenBody {
    /// The id of the tenant the card belongs to (the widget page's `tenant` parameter).
    tenant: String,
    /// `cgct_…`: one-time, five minutes unless the tenant says otherwise; opens that widget
    /// for that card (`/widgets/v1/…#token=…&card=…`).
    widget_token: String,
}

/// The widgets a token can be asked for.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WidgetType {
    Activate,
    GetPin,
    Reveal,
    SetPin,
}

/// Get a widget access token: an ephemeral, one-time token for one Synctera widget on one
/// card. `Authorization: Bearer <api_key>`; scope `cards:widgets`.
#[utoipa::path(get, path = "/synctera/v1/cards/{card_id}/widget_token", tag = "synctera",
    operation_id = "getWidgetAccessToken",
    params(
        ("card_id" = String, Path, format = "uuid", max_length = 36,
            example = "e9293471-5eb3-4dbc-916c-dbaf9e2deefd", description = "The unique identifier of a card"),
        ("widget_type" = inline(WidgetType), Query, description = "The widget the token opens"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255,
            example = "7d943c51-e4ff-4e57-9558-08cab6b963c7",
            description = "A retry with the same key within 24 h gets the same answer; the same key with another request is 422 `IDEMPOTENCY_KEY_REUSED`"),
    ),
    security(("syncteraApiKey" = ["cards:widgets"])),
    responses(
        (status = 200, description = "Client token", body = WidgetTokenBody),
        (status = 400, description = "`INVALID_CARD_ID`, `INVALID_WIDGET_TYPE`, `INVALID_IDEMPOTENCY_KEY`, `BAD_REQUEST`", body = SyncteraErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: no, unknown or disabled API key", body = SyncteraErrorBody),
        (status = 403, description = "`FORBIDDEN`: the key lacks `cards:widgets`", body = SyncteraErrorBody),
        (status = 404, description = "`CARD_NOT_FOUND`, `NOT_FOUND`", body = SyncteraErrorBody),
        (status = 405, description = "`METHOD_NOT_ALLOWED`", body = SyncteraErrorBody),
        (status = 422, description = "`INVALID_CARD_STATE` (`ACTIVATE` on an active card, anything on a suspended or terminated one), `IDEMPOTENCY_KEY_REUSED`", body = SyncteraErrorBody),
        (status = 429, description = "`TOO_MANY_REQUESTS`", body = SyncteraErrorBody, headers(("Retry-After" = u64))),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = SyncteraErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn widget_token_get(
    State(app): State<Arc<App>>,
    method: Method,
    caller: Caller<SyncteraError, BearerApiKey>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, SyncteraError> {
    if method == Method::HEAD {
        return Err(no_route(method).await);
    }
    widget_token(app, caller, path, query, headers).await
}

/// The same as `GET` (Synctera's own pages use both).
#[utoipa::path(post, path = "/synctera/v1/cards/{card_id}/widget_token", tag = "synctera",
    operation_id = "postWidgetAccessToken",
    params(
        ("card_id" = String, Path, format = "uuid", max_length = 36,
            example = "e9293471-5eb3-4dbc-916c-dbaf9e2deefd", description = "The unique identifier of a card"),
        ("widget_type" = inline(WidgetType), Query, description = "The widget the token opens"),
        ("Idempotency-Key" = Option<String>, Header, nullable = false, max_length = 255,
            description = "As for `GET`"),
    ),
    security(("syncteraApiKey" = ["cards:widgets"])),
    responses(
        (status = 200, description = "Client token", body = WidgetTokenBody),
        (status = 400, description = "`INVALID_CARD_ID`, `INVALID_WIDGET_TYPE`, `INVALID_IDEMPOTENCY_KEY`, `BAD_REQUEST`", body = SyncteraErrorBody),
        (status = 401, description = "`UNAUTHORIZED`", body = SyncteraErrorBody),
        (status = 403, description = "`FORBIDDEN`", body = SyncteraErrorBody),
        (status = 404, description = "`CARD_NOT_FOUND`, `NOT_FOUND`", body = SyncteraErrorBody),
        (status = 422, description = "`INVALID_CARD_STATE`, `IDEMPOTENCY_KEY_REUSED`", body = SyncteraErrorBody),
        (status = 429, description = "`TOO_MANY_REQUESTS`", body = SyncteraErrorBody, headers(("Retry-After" = u64))),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = SyncteraErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn widget_token_post(
    State(app): State<Arc<App>>,
    caller: Caller<SyncteraError, BearerApiKey>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, SyncteraError> {
    widget_token(app, caller, path, query, headers).await
}

async fn widget_token(
    app: Arc<App>,
    caller: Caller<SyncteraError, BearerApiKey>,
    path: Result<Path<String>, PathRejection>,
    query: Option<String>,
    headers: HeaderMap,
) -> Result<Response, SyncteraError> {
    let principal = caller.principal;
    let request = match request(path, query, &headers) {
        Ok(r) => r,
        Err(e) => {
            app.audit_refusal(
                Some(&principal.client.tenant_id),
                principal.actor(),
                "synctera.widget_token",
                &e.code.to_ascii_lowercase(),
                "synctera",
            )
            .await;
            return Err(e);
        }
    };
    let granted = app.card_tokens().widget_token(&principal, request).await?;
    let mut res = Json(WidgetTokenBody {
        tenant: granted.tenant.as_str().to_string(),
        widget_token: granted.token.expose().to_string(),
    })
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// What a widget token request asks for, or why it is malformed.
fn request(
    path: Result<Path<String>, PathRejection>,
    query: Option<String>,
    headers: &HeaderMap,
) -> Result<WidgetTokenRequest, SyncteraError> {
    let bad = |code, detail: &str| SyncteraError::bad(code, detail);
    let Ok(Path(raw_card)) = path else {
        return Err(bad("INVALID_CARD_ID", "card_id must be a UUID"));
    };
    let card = CardId::parse(&raw_card).map_err(|_| {
        bad(
            "INVALID_CARD_ID",
            "card_id must be a UUID of at most 36 characters",
        )
    })?;
    let params = wire::params(query.unwrap_or_default().as_bytes(), &["widget_type"])
        .map_err(|m| bad("BAD_REQUEST", &m))?;
    let operation = match params.get("widget_type").map(String::as_str) {
        None | Some("") => return Err(bad("INVALID_WIDGET_TYPE", "widget_type is required")),
        Some("ACTIVATE") => Operation::Activate,
        Some("GET_PIN") => Operation::GetPin,
        Some("REVEAL") => Operation::ViewCard,
        Some("SET_PIN") => Operation::SetPin,
        Some(_) => {
            return Err(bad(
                "INVALID_WIDGET_TYPE",
                "widget_type must be ACTIVATE, GET_PIN, REVEAL or SET_PIN",
            ))
        }
    };
    let mut keys = headers.get_all("idempotency-key").iter();
    let idempotency_key = match (keys.next(), keys.next()) {
        (None, _) => None,
        (Some(_), Some(_)) => {
            return Err(bad(
                "INVALID_IDEMPOTENCY_KEY",
                "send one Idempotency-Key header",
            ))
        }
        (Some(v), None) => match v.to_str() {
            Ok(k) if (1..=255).contains(&k.trim().len()) => Some(k.trim().to_string()),
            _ => {
                return Err(bad(
                    "INVALID_IDEMPOTENCY_KEY",
                    "Idempotency-Key must be 1 to 255 visible ASCII characters",
                ))
            }
        },
    };
    Ok(WidgetTokenRequest {
        card,
        operation,
        idempotency_key,
    })
}

/// Unknown paths and methods under `/synctera`, in Synctera's shape.
pub async fn no_route(method: Method) -> SyncteraError {
    if method == Method::GET || method == Method::POST {
        SyncteraError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource")
    } else {
        SyncteraError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "use GET or POST",
        )
    }
}
