//! The BankEzy SDK's own calls, with `X-API-KEY: <sdk_api_key>` and `X-API-TOKEN: <token>`:
//! list the token's account's cards (masked, plain JSON) and reveal one card's details as a
//! `text/plain` compact JWE (`ECDH-ES`, `A256GCM`) that only the SDK's private key opens.
//! Errors are plain JSON `{"resCode", "resDesc"}`: the SDK holds no payload key.

use super::error::BankEzyError;
use super::wrong_method;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_app::sdk::{MaskedCard, SdkSession};
use cardgate_app::{App, AppError, AuthFailure};
use cardgate_core::CardId;
use serde::Serialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<Arc<App>> {
    let (s1, p1, m1) = routes!(cards);
    let (s2, p2, m2) = routes!(card_details);
    OpenApiRouter::new()
        .routes((s1, p1, m1.fallback(wrong_method)))
        .routes((s2, p2, m2.fallback(wrong_method)))
}

/// One header, present once.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().ok().map(str::trim).filter(|v| !v.is_empty()),
        _ => None,
    }
}

async fn session(app: &Arc<App>, headers: &HeaderMap) -> Result<SdkSession, BankEzyError> {
    let Some(key) = single(headers, "x-api-key") else {
        return Err(AppError::Auth(AuthFailure::Missing).into());
    };
    let Some(token) = single(headers, "x-api-token") else {
        return Err(cardgate_app::sdk::SdkRefusal::TokenUnknown.into());
    };
    Ok(app.sdk_tokens().session(key, token).await?)
}

/// The account's cards.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CardList {
    /// `TOK200`
    res_code: &'static str,
    res_desc: &'static str,
    #[schema(value_type = Vec<Object>)]
    cards: Vec<MaskedCard>,
}

/// The SDK lists its account's cards: ids, masked PANs, statuses.
#[utoipa::path(get, path = "/bankezy/token-service/sdk/v1/cards", tag = "bankezy",
    operation_id = "bankezy_sdk_cards",
    params(
        ("X-API-KEY" = String, Header, description = "The client's SDK API key"),
        ("X-API-TOKEN" = String, Header, description = "The SDK token (`cgsdk_…`)"),
    ),
    responses(
        (status = 200, description = "TOK200", body = CardList),
        (status = 401, description = "TOK401 (key), TOK440 / TOK441 / TOK442 (token unknown, expired, invalidated)", body = super::BankEzyErrorBody),
        (status = 503, description = "TOK503", body = super::BankEzyErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn cards(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, BankEzyError> {
    let session = session(&app, &headers).await?;
    let cards = app.sdk_tokens().list_cards(&session).await?;
    let mut res = Json(CardList {
        res_code: "TOK200",
        res_desc: "SUCCESS",
        cards,
    })
    .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The SDK reveals one card: a compact JWE (`ECDH-ES` with the tenant's server key behind
/// `serverPubKey`, `A256GCM`) of `{cardId, pan, cvv, expiryMonth, expiryYear,
/// cardholderName}`, encrypted to the token's `sdkPublicKey`.
#[utoipa::path(get, path = "/bankezy/token-service/sdk/v1/cards/{cardId}/details", tag = "bankezy",
    operation_id = "bankezy_sdk_card_details",
    params(
        ("cardId" = String, Path, format = "uuid", max_length = 36, description = "A card of the token's account"),
        ("X-API-KEY" = String, Header, description = "The client's SDK API key"),
        ("X-API-TOKEN" = String, Header, description = "The SDK token (`cgsdk_…`)"),
    ),
    responses(
        (status = 200, description = "A compact JWE only the SDK's private key opens", body = String, content_type = "text/plain"),
        (status = 401, description = "TOK401, TOK440, TOK441, TOK442", body = super::BankEzyErrorBody),
        (status = 404, description = "TOK443: no such card in the token's account", body = super::BankEzyErrorBody),
        (status = 422, description = "TOK445: the card's state forbids it", body = super::BankEzyErrorBody),
        (status = 503, description = "TOK503", body = super::BankEzyErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn card_details(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, BankEzyError> {
    let session = session(&app, &headers).await?;
    let card = path
        .ok()
        .and_then(|Path(c)| CardId::parse(&c).ok())
        .ok_or(cardgate_app::sdk::SdkRefusal::CardNotInAccount)?;
    let jwe = app.sdk_tokens().reveal(&session, &card).await?;
    let mut res = (StatusCode::OK, jwe).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
