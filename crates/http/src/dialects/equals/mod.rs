//! Equals Money card access tokens (seed `equals-money-card-access-token.md`, SPEC §4.1):
//! `GET /equals/v2/cards/{cardId}/access-token?accountId=…`, answered with a single-use,
//! five-minute token for one operation on one card. Errors: `{"code", "message"}`
//! ([`error`]). This module only reads the wire format; the mint decides.

mod error;

use crate::auth::{ApiKeyHeader, Caller};
use crate::wire;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Json;
use cardgate_app::cards::CardTokenRequest;
use cardgate_app::App;
use cardgate_core::tokens::{TokenKind, UseLimit};
use cardgate_core::{AccountId, CardId, Operation, PersonId};
pub use error::{EqualsError, EqualsErrorBody};
use serde::Serialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The Equals routes, and Equals-shaped answers for every other path under `/equals`.
pub fn router() -> OpenApiRouter<Arc<App>> {
    let (schemas, paths, methods) = routes!(access_token);
    OpenApiRouter::new()
        .routes((schemas, paths, methods.fallback(no_route)))
        .route("/equals/{*rest}", any(no_route))
}

/// A card access token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct AccessTokenBody {
    /// `cgct_…`: single use, five minutes, that operation on that card; redeem it at
    /// `/v1/cards/{id}/…`.
    token: String,
}

/// The operations an Equals token can be asked for.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EqualsOperation {
    ViewCard,
    AddCardToWallet,
}

/// Equals Money's card access token. `Authorization: ApiKey <api_key>` (the raw key alone
/// works too); scope `cards:read:any`, or `cards:read:own` for the key's own cardholder.
#[utoipa::path(get, path = "/equals/v2/cards/{cardId}/access-token", tag = "equals",
    operation_id = "getClientToken",
    params(
        ("cardId" = String, Path, format = "uuid", max_length = 36,
            example = "e9293471-5eb3-4dbc-916c-dbaf9e2deefd", description = "The ID of the card to work with."),
        ("accountId" = String, Query, pattern = "^[A-Za-z0-9_.:-]{1,64}$", example = "F50091", description = "The ID of the account to work with (it must hold the card)."),
        ("personId" = Option<String>, Query, nullable = false, format = "uuid", max_length = 36,
            example = "775596ae-2624-40af-a9dc-9756110a4a04",
            description = "The ID of the person to work with: the cardholder (and an own key's person)."),
        ("sessionId" = Option<String>, Query, nullable = false,
            description = "The MFA session id, with `token`, where the tenant asks step-up."),
        ("token" = Option<String>, Query, nullable = false, example = "123456",
            description = "The security token e.g. MFA code."),
        ("operationName" = inline(Option<EqualsOperation>), Query, nullable = false,
            description = "The operation for which a client token is requested (default `VIEW_CARD`)."),
    ),
    security(("equalsApiKey" = ["cards:read:own", "cards:read:any"])),
    responses(
        (status = 200, description = "OK", body = AccessTokenBody),
        (status = 400, description = "`INVALID_CARD_ID`, `MISSING_ACCOUNT_ID`, `INVALID_ACCOUNT_ID`, `INVALID_PERSON_ID`, `INVALID_OPERATION`, `BAD_REQUEST`", body = EqualsErrorBody),
        (status = 401, description = "`UNAUTHORIZED`: no Authorization header", body = EqualsErrorBody),
        (status = 403, description = "`FORBIDDEN`, `INSUFFICIENT_SCOPE`, `CARD_NOT_OWNED`, `PERSON_MISMATCH`, `MFA_*`", body = EqualsErrorBody),
        (status = 404, description = "`CARD_NOT_FOUND`, `NOT_FOUND`", body = EqualsErrorBody),
        (status = 405, description = "`METHOD_NOT_ALLOWED` (HEAD would mint and drop the token)", body = EqualsErrorBody),
        (status = 422, description = "`CARD_STATE`", body = EqualsErrorBody),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = EqualsErrorBody,
            headers(("Retry-After" = u64))),
    ))]
pub async fn access_token(
    State(app): State<Arc<App>>,
    method: Method,
    caller: Caller<EqualsError, ApiKeyHeader>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Response, EqualsError> {
    if method == Method::HEAD {
        return Err(no_route(method).await);
    }
    let principal = caller.principal;
    let request = match request(path, query) {
        Ok(r) => r,
        Err(e) => {
            app.audit_refusal(
                Some(&principal.client.tenant_id),
                principal.actor(),
                "equals.access_token",
                &e.code.to_ascii_lowercase(),
                "equals",
            )
            .await;
            return Err(e);
        }
    };
    let minted = app.card_tokens().mint(&principal, request).await?;
    let mut res = Json(AccessTokenBody {
        token: minted.token.expose().to_string(),
    })
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The query parameters Equals defines; others are ignored.
const QUERY_PARAMETERS: &[&str] = &[
    "accountId",
    "personId",
    "operationName",
    "sessionId",
    "token",
];

/// What an Equals request asks for, or why it is malformed.
fn request(
    path: Result<Path<String>, PathRejection>,
    query: Option<String>,
) -> Result<CardTokenRequest, EqualsError> {
    let bad = |code, message: &str| EqualsError::bad(code, message);
    let Ok(Path(raw_card)) = path else {
        return Err(bad("INVALID_CARD_ID", "cardId must be a UUID"));
    };
    let card = CardId::parse(&raw_card).map_err(|_| {
        bad(
            "INVALID_CARD_ID",
            "cardId must be a UUID of at most 36 characters",
        )
    })?;
    let params = wire::params(query.unwrap_or_default().as_bytes(), QUERY_PARAMETERS)
        .map_err(|m| bad("BAD_REQUEST", &m))?;
    let account = match params.get("accountId").map(String::as_str) {
        None | Some("") => return Err(bad("MISSING_ACCOUNT_ID", "accountId is required")),
        Some(a) => {
            AccountId::parse(a).map_err(|_| bad("INVALID_ACCOUNT_ID", "accountId is malformed"))?
        }
    };
    let person = match params.get("personId") {
        None => None,
        Some(p) => Some(PersonId::parse(p).map_err(|_| {
            bad(
                "INVALID_PERSON_ID",
                "personId must be a UUID of at most 36 characters",
            )
        })?),
    };
    let operation = match params.get("operationName").map(String::as_str) {
        None | Some("VIEW_CARD") => Operation::ViewCard,
        Some("ADD_CARD_TO_WALLET") => Operation::AddCardToWallet,
        Some(_) => {
            return Err(bad(
                "INVALID_OPERATION",
                "operationName must be VIEW_CARD or ADD_CARD_TO_WALLET",
            ))
        }
    };
    let mfa = match (params.get("sessionId"), params.get("token")) {
        (Some(s), Some(t)) => Some((s.clone(), t.clone())),
        (None, None) => None,
        _ => return Err(bad("BAD_REQUEST", "sessionId and token go together")),
    };
    Ok(CardTokenRequest {
        card,
        kind: TokenKind::EqualsCard,
        operations: vec![operation],
        use_limit: UseLimit::Once,
        ttl_seconds: None,
        mfa,
        account: Some(account),
        person,
    })
}

/// Unknown paths and methods under `/equals`, in Equals' shape.
pub async fn no_route(method: Method) -> EqualsError {
    if method == Method::GET {
        EqualsError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource")
    } else {
        EqualsError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "use GET",
        )
    }
}
