//! Fiserv card API token endpoint (seed `fiserv-oauth-token.md`, SPEC §4.3):
//! `POST /fiserv/cs/oauth2/v1/token?scope=…` with Basic auth and `x-fapi-financial-id`.
//! The surface's layer ([`interaction`]) echoes `x-fapi-interaction-id` (or a generated
//! UUID) on every response, errors included ([`error`]). This module only reads the wire
//! format; the issuance decides.

mod error;

use crate::auth::{Basic, Caller};
use crate::wire;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Json;
use cardgate_app::access::IssueRequest;
use cardgate_app::App;
use cardgate_core::tokens::TokenKind;
pub use error::{FiservError, FiservErrorBody};
use serde::Serialize;
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub const INTERACTION_ID: &str = "x-fapi-interaction-id";
pub const FINANCIAL_ID: &str = "x-fapi-financial-id";

/// The Fiserv routes, with Fiserv-shaped answers for every other path under `/fiserv`, all
/// behind the interaction-id layer.
pub fn router() -> OpenApiRouter<Arc<App>> {
    let (schemas, paths, methods) = routes!(token);
    OpenApiRouter::new()
        .routes((schemas, paths, methods.fallback(no_route)))
        .route("/fiserv/{*rest}", any(no_route))
        .layer(middleware::from_fn(interaction))
}

/// The interaction id to echo: the caller's, if it is 1-128 visible ASCII characters.
fn interaction_id(headers: &HeaderMap) -> (String, Option<FiservError>) {
    let generated = || uuid::Uuid::new_v4().to_string();
    if headers.get_all(INTERACTION_ID).iter().nth(1).is_some() {
        return (
            generated(),
            Some(FiservError::bad("x-fapi-interaction-id is repeated")),
        );
    }
    match headers.get(INTERACTION_ID).map(|v| v.to_str()) {
        None => (generated(), None),
        Some(Ok(v))
            if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            (v.to_string(), None)
        }
        Some(_) => (
            generated(),
            Some(FiservError::bad(
                "x-fapi-interaction-id must be 1-128 visible ASCII characters",
            )),
        ),
    }
}

/// The surface's layer: refuses a bad interaction id, renders errors with the request's id,
/// and echoes it on every response.
async fn interaction(req: Request, next: Next) -> Response {
    let (iid, bad) = interaction_id(req.headers());
    let mut res = match bad {
        Some(e) => e.render(&iid),
        None => next.run(req).await,
    };
    if let Some(e) = res.extensions_mut().remove::<FiservError>() {
        res = e.render(&iid);
    }
    if let Ok(v) = HeaderValue::from_str(&iid) {
        res.headers_mut().insert(INTERACTION_ID, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// An issued token, as Fiserv shapes it.
#[derive(Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct FiservTokenBody {
    /// `Bearer`.
    token_type: &'static str,
    /// Epoch milliseconds, as a string.
    #[schema(pattern = "^[0-9]+$")]
    issued_at: String,
    /// The client id.
    api_key: String,
    /// Authenticates the native API with the scope asked for.
    access_token: String,
    /// Seconds, as a string: 900.
    #[schema(pattern = "^[0-9]+$")]
    expires_in: String,
}

/// The seed's `tokenRequest`, as a form or as JSON.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct FiservTokenRequest {
    /// `client_credentials`, the default when absent.
    #[schema(nullable = false)]
    grant_type: Option<crate::native::oauth::GrantType>,
}

/// Fiserv's client-credentials token: Basic `id:secret`, the tenant's 8-digit
/// `x-fapi-financial-id`, a form or JSON body with `grant_type=client_credentials` (the
/// default when absent), and the `scope` query parameter. Every answer carries
/// `x-fapi-interaction-id`.
#[utoipa::path(post, path = "/fiserv/cs/oauth2/v1/token", tag = "fiserv", operation_id = "fiserv_token",
    params(
        ("scope" = String, Query, pattern = "^[!#-\\[\\]-~]+( [!#-\\[\\]-~]+)*$",
            description = "Space-delimited scopes (RFC 6749 §3.3), each the client's"),
        ("x-fapi-financial-id" = String, Header, pattern = "^[0-9]{8}$",
            description = "The tenant's financial_institution_id (8 digits)"),
        ("x-fapi-interaction-id" = Option<String>, Header, nullable = false, min_length = 1, max_length = 128,
            pattern = "^[!-~]+$", description = "Echoed (1-128 visible ASCII); a UUID when absent"),
    ),
    request_body(description = "`grant_type=client_credentials` (or absent)",
        content((FiservTokenRequest = "application/x-www-form-urlencoded"), (FiservTokenRequest = "application/json"))),
    security(("basic" = [])),
    responses(
        (status = 200, description = "Issued", body = FiservTokenBody,
            headers(("x-fapi-interaction-id" = String))),
        (status = 400, description = "`BAD_REQUEST`, `INVALID_SCOPE`, `UNSUPPORTED_GRANT_TYPE`", body = FiservErrorBody,
            headers(("x-fapi-interaction-id" = String))),
        (status = 401, description = "`UNAUTHORIZED`", body = FiservErrorBody,
            headers(("x-fapi-interaction-id" = String), ("WWW-Authenticate" = String))),
        (status = 404, description = "`NOT_FOUND`", body = FiservErrorBody,
            headers(("x-fapi-interaction-id" = String))),
        (status = 405, description = "`METHOD_NOT_ALLOWED`", body = FiservErrorBody,
            headers(("x-fapi-interaction-id" = String))),
        (status = 413, description = "`PAYLOAD_TOO_LARGE`", body = FiservErrorBody,
            headers(("x-fapi-interaction-id" = String))),
        (status = 415, description = "`UNSUPPORTED_MEDIA_TYPE`", body = FiservErrorBody,
            headers(("x-fapi-interaction-id" = String))),
        (status = 429, description = "`TOO_MANY_REQUESTS`", body = FiservErrorBody,
            headers(("x-fapi-interaction-id" = String), ("Retry-After" = u64))),
        (status = 503, description = "`SERVICE_UNAVAILABLE`", body = FiservErrorBody,
            headers(("x-fapi-interaction-id" = String), ("Retry-After" = u64))),
    ))]
pub async fn token(
    State(app): State<Arc<App>>,
    caller: Caller<FiservError, Basic>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FiservError> {
    use StatusCode as S;
    let is_json =
        match wire::content_type(&headers).as_deref() {
            Some("application/x-www-form-urlencoded") => false,
            Some("application/json") => true,
            other => return Err(FiservError::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                match other {
                    Some(_) => {
                        "Content-Type must be application/x-www-form-urlencoded or application/json"
                    }
                    None => "Content-Type is required",
                },
            )),
        };
    let body = wire::body(body).map_err(|e| match e {
        wire::BodyError::TooLarge => FiservError::new(
            S::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "the request body is larger than 64 KiB",
        ),
        wire::BodyError::Unreadable => FiservError::bad("the request body could not be read"),
    })?;
    let financial_id = financial_id(&headers)?;
    let grant_type = grant_type(&body, is_json)?;
    if grant_type
        .as_deref()
        .is_some_and(|g| g != "client_credentials")
    {
        return Err(FiservError::new(
            S::BAD_REQUEST,
            "UNSUPPORTED_GRANT_TYPE",
            "grant_type must be client_credentials",
        ));
    }
    let params =
        wire::params(query.unwrap_or_default().as_bytes(), &["scope"]).map_err(FiservError::bad)?;
    let scope = params
        .get("scope")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| FiservError::bad("the scope query parameter is required"))?;
    let request = IssueRequest {
        scope: Some(scope),
        kind: TokenKind::FiservAccess,
        financial_institution_id: Some(&financial_id),
    };
    let issued = app
        .access_tokens()
        .issue(&caller.principal, request)
        .await?;
    Ok(Json(FiservTokenBody {
        token_type: "Bearer",
        issued_at: issued.issued_at_ms.to_string(),
        api_key: caller.principal.client.id.to_string(),
        access_token: issued.token.expose().to_string(),
        expires_in: issued.expires_in.to_string(),
    })
    .into_response())
}

/// `x-fapi-financial-id`: exactly once, 8 digits.
fn financial_id(headers: &HeaderMap) -> Result<String, FiservError> {
    let mut values = headers.get_all(FINANCIAL_ID).iter();
    match (values.next(), values.next()) {
        (_, Some(_)) => Err(FiservError::bad("x-fapi-financial-id is repeated")),
        (None, _) => Err(FiservError::bad("x-fapi-financial-id is required")),
        (Some(v), None) => match v.to_str() {
            Ok(v) if v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()) => Ok(v.to_string()),
            _ => Err(FiservError::bad("x-fapi-financial-id must be 8 digits")),
        },
    }
}

/// The body's `grant_type`, if any (RFC 6749 §3.2: other parameters are ignored).
fn grant_type(body: &[u8], is_json: bool) -> Result<Option<String>, FiservError> {
    if !is_json {
        return Ok(wire::params(body, &["grant_type"])
            .map_err(FiservError::bad)?
            .remove("grant_type"));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| FiservError::bad("the body is not valid JSON"))?;
    let obj = v
        .as_object()
        .ok_or_else(|| FiservError::bad("the body must be a JSON object"))?;
    match obj.get("grant_type") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FiservError::bad("grant_type must be a string")),
    }
}

/// Unknown paths and methods under `/fiserv`, in Fiserv's shape.
pub async fn no_route(method: Method) -> FiservError {
    if method == Method::POST {
        FiservError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource")
    } else {
        FiservError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "use POST",
        )
    }
}
