//! BankEzy SDK tokens (seed `bankezy-sdk-token.md`, SPEC §4.5): the partner's server asks for
//! a token (`…/new/v2/token`) or invalidates one (`…/invalidate/token`) with `X-API-KEY` and
//! a `text/plain` compact JWE body (`dir`, `A256GCM`, the client's payload key) and is answered
//! the same way; the SDK's own calls are in [`sdk`]. Answers `{"resCode", "resDesc", …}`
//! ([`error`]). This module only reads and writes the wire format; the use cases decide.

mod error;
mod request;
mod sdk;

use crate::auth::{Caller, XApiKey};
use crate::wire;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use cardgate_app::App;
use cardgate_jose::aead::AeadKey;
pub use error::{BankEzyError, BankEzyErrorBody};
use serde::Serialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The BankEzy routes, and BankEzy-shaped answers for every other path under `/bankezy`.
pub fn router() -> OpenApiRouter<Arc<App>> {
    let (s1, p1, m1) = routes!(token);
    let (s2, p2, m2) = routes!(invalidate);
    OpenApiRouter::new()
        .routes((s1, p1, m1.fallback(wrong_method)))
        .routes((s2, p2, m2.fallback(wrong_method)))
        .merge(sdk::router())
        .route("/bankezy/{*rest}", any(no_route))
}

/// A `text/plain` answer: `body` as a compact JWE under the caller's payload key.
pub(crate) fn sealed_answer(status: StatusCode, key: &AeadKey, body: &impl Serialize) -> Response {
    let sealed = serde_json::to_vec(body)
        .ok()
        .and_then(|json| cardgate_jose::jwe::encrypt_dir(key, &json).ok());
    let Some(jwe) = sealed else {
        tracing::error!("could not seal a BankEzy answer");
        return (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
    };
    let mut res = (status, jwe).into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The decrypted request of a client with payload key `key`: the body must be `text/plain`,
/// at most 64 KiB, and a compact JWE under `key` of a JSON object.
fn decrypt(
    key: &AeadKey,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<serde_json::Map<String, serde_json::Value>, BankEzyError> {
    let body = wire::body(body).map_err(|e| match e {
        wire::BodyError::TooLarge => BankEzyError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "TOK413",
            "the request body is larger than 64 KiB",
        ),
        wire::BodyError::Unreadable => BankEzyError::undecryptable(),
    })?;
    if wire::content_type(headers).as_deref() != Some("text/plain") {
        return Err(BankEzyError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "TOK415",
            "Content-Type must be text/plain (the body is a compact JWE)",
        ));
    }
    let text = std::str::from_utf8(&body).map_err(|_| BankEzyError::undecryptable())?;
    let plain = cardgate_jose::jwe::decrypt_dir(key, text.trim().trim_matches('"'))
        .map_err(|_| BankEzyError::undecryptable())?;
    request::object(&plain)
}

/// The decrypted token answer.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenAnswer {
    /// `TOK200`
    res_code: &'static str,
    /// `SUCCESS`
    res_desc: &'static str,
    reference_id: String,
    /// The tenant's server key: a P-256 public JWK as JSON, standard base64.
    server_pub_key: String,
    /// `cgsdk_…`: carries the SDK's calls until `expireAt` or invalidation.
    token: String,
    /// Epoch milliseconds.
    expire_at: i64,
}

/// BankEzy's token call: `X-API-KEY` (scope `sdk:token`) and a `text/plain` compact JWE
/// (`dir`, `A256GCM`, the client's payload key) of `{referenceId, sdkPublicKey, sdkApiKey,
/// accountNumber, firstName?, lastName?, email?, isdCode?, mobileNumber?, dob?, data?}`. The
/// answer is a compact JWE of `TokenAnswer` (or of `{resCode, resDesc}`); see the README for
/// every `resCode`.
#[utoipa::path(post, path = "/bankezy/token-service/client/server/new/v2/token", tag = "bankezy",
    operation_id = "bankezy_token",
    params(("X-API-KEY" = String, Header, description = "The client's API key")),
    request_body(content = String, content_type = "text/plain",
        description = "A compact JWE (alg dir, enc A256GCM) of the request JSON"),
    responses(
        (status = 200, description = "TOK200: a compact JWE of TokenAnswer", body = String, content_type = "text/plain"),
        (status = 400, description = "TOK400 (plain JSON: the payload does not decrypt), TOK410-TOK421 (sealed)", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 401, description = "TOK401: X-API-KEY missing or not valid (plain JSON)", body = BankEzyErrorBody),
        (status = 403, description = "TOK403, TOK406, TOK407", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "TOK404: no such account", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 409, description = "TOK409: referenceId used for another request", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 413, description = "TOK413", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 415, description = "TOK415", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 429, description = "TOK429", content((BankEzyErrorBody = "application/json"), (String = "text/plain")), headers(("Retry-After" = u64))),
        (status = 503, description = "TOK503", content((BankEzyErrorBody = "application/json"), (String = "text/plain")), headers(("Retry-After" = u64))),
    ))]
pub async fn token(
    State(app): State<Arc<App>>,
    caller: Caller<BankEzyError, XApiKey>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, BankEzyError> {
    let principal = caller.principal;
    let sdk = app.sdk_tokens();
    let key = sdk.payload_key(&principal)?;
    let answer = async {
        let fields = decrypt(&key, &headers, body)?;
        let request = request::token_request(&fields)?;
        let issued = sdk.issue(&principal, request).await?;
        Ok::<_, BankEzyError>(TokenAnswer {
            res_code: "TOK200",
            res_desc: "SUCCESS",
            reference_id: issued.reference_id.clone(),
            server_pub_key: issued.server_pub_key.clone(),
            token: issued.token.clone(),
            expire_at: issued.expire_at_ms,
        })
    }
    .await;
    match answer {
        Ok(a) => Ok(sealed_answer(StatusCode::OK, &key, &a)),
        Err(e) => Err(e.sealed(&key)),
    }
}

/// The decrypted invalidation answer.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidateAnswer {
    res_code: &'static str,
    res_desc: &'static str,
    token_reference_id: String,
}

/// Invalidates a token at once, on every replica: a `text/plain` compact JWE of
/// `{tokenReferenceId}` — the `referenceId` the token was asked for with.
#[utoipa::path(post, path = "/bankezy/token-service/client/server/invalidate/token", tag = "bankezy",
    operation_id = "bankezy_invalidate",
    params(("X-API-KEY" = String, Header, description = "The client's API key")),
    request_body(content = String, content_type = "text/plain",
        description = "A compact JWE (alg dir, enc A256GCM) of {\"tokenReferenceId\"}"),
    responses(
        (status = 200, description = "TOK200: a compact JWE of InvalidateAnswer", body = String, content_type = "text/plain"),
        (status = 400, description = "TOK400 (plain JSON), TOK422 (sealed)", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 401, description = "TOK401 (plain JSON)", body = BankEzyErrorBody),
        (status = 403, description = "TOK403, TOK407", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 404, description = "TOK423: no token of this client has that reference", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 413, description = "TOK413", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 415, description = "TOK415", content((BankEzyErrorBody = "application/json"), (String = "text/plain"))),
        (status = 503, description = "TOK503", content((BankEzyErrorBody = "application/json"), (String = "text/plain")), headers(("Retry-After" = u64))),
    ))]
pub async fn invalidate(
    State(app): State<Arc<App>>,
    caller: Caller<BankEzyError, XApiKey>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, BankEzyError> {
    let principal = caller.principal;
    let sdk = app.sdk_tokens();
    let key = sdk.payload_key(&principal)?;
    let answer = async {
        let fields = decrypt(&key, &headers, body)?;
        let reference = request::token_reference_id(&fields)?;
        sdk.invalidate(&principal, &reference).await?;
        Ok::<_, BankEzyError>(InvalidateAnswer {
            res_code: "TOK200",
            res_desc: "SUCCESS",
            token_reference_id: reference,
        })
    }
    .await;
    match answer {
        Ok(a) => Ok(sealed_answer(StatusCode::OK, &key, &a)),
        Err(e) => Err(e.sealed(&key)),
    }
}

/// Unknown paths under `/bankezy`, in BankEzy's shape.
pub async fn no_route() -> BankEzyError {
    BankEzyError::new(StatusCode::NOT_FOUND, "TOK444", "no such resource")
}

/// A known path asked with a method it does not take.
pub async fn wrong_method() -> BankEzyError {
    BankEzyError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "TOK405",
        "this route does not accept that method",
    )
}
