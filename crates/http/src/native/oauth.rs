//! OAuth2 endpoints: token (RFC 6749 §4.4), introspection (RFC 7662), revocation (RFC 7009),
//! server metadata (RFC 8414) and the JWKS (RFC 7517).

use super::error::{OAuthErrorBody, BASIC};
use super::OAuthError;
use crate::wire::{self, Authorization};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{OriginalUri, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_app::access::IssueRequest;
use cardgate_app::directory::Credential;
use cardgate_app::{App, AppError, AuthFailure, Principal};
use cardgate_core::tokens::TokenKind;
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;
use utoipa::ToSchema;

/// The one grant type this server supports (RFC 6749 §4.4).
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "snake_case")]
pub enum GrantType {
    ClientCredentials,
}

/// `POST /oauth2/token` (RFC 6749 §4.4.2).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenForm {
    /// Any other grant type is `unsupported_grant_type`.
    grant_type: GrantType,
    /// Space-delimited scopes, each the client's; absent or empty: all of them.
    scope: Option<String>,
    /// `client_secret_post`: the client id (instead of HTTP Basic, never with it).
    client_id: Option<String>,
    /// `client_secret_post`: the client secret.
    client_secret: Option<String>,
}

/// `POST /oauth2/introspect` and `POST /oauth2/revoke` (RFC 7662 §2.1, RFC 7009 §2.1).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TokenParamForm {
    /// The token: a JWT or opaque access token, or a card token of any dialect.
    #[schema(min_length = 1)]
    token: String,
    /// Ignored (RFC 7662 §2.1, RFC 7009 §2.1).
    token_type_hint: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// An issued access token (RFC 6749 §5.1).
#[derive(Serialize, ToSchema)]
pub struct TokenResponse {
    /// An RFC 9068 `at+jwt` (ES256) or an opaque `cgat_…` token, per the client's format.
    access_token: String,
    /// `Bearer`, or `DPoP` when the request carried a `DPoP` proof: the token is then bound to
    /// its key (`cnf.jkt`, RFC 9449 §5) and used with `Authorization: DPoP` and a proof.
    token_type: &'static str,
    /// Seconds: 900.
    expires_in: u32,
    scope: String,
}

/// RFC 7662 §2.2: `{"active": false}`, or what the token says. A member the token has no
/// value for is left out, never `null` (except `max_uses`).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct IntrospectionResponse {
    active: bool,
    /// `Bearer` (access tokens), `card_token`, or `DPoP` for a token bound to a key.
    #[schema(nullable = false)]
    token_type: Option<String>,
    /// The key a DPoP-bound token is bound to (RFC 7800 §3.1, RFC 9449 §6.2).
    #[schema(nullable = false)]
    cnf: Option<Confirmation>,
    /// A person token's cardholder (Treasury Prime).
    #[schema(nullable = false, format = "uuid")]
    person_id: Option<String>,
    #[schema(nullable = false)]
    client_id: Option<String>,
    #[schema(nullable = false)]
    sub: Option<String>,
    #[schema(nullable = false)]
    scope: Option<String>,
    #[schema(nullable = false)]
    iat: Option<i64>,
    #[schema(nullable = false)]
    exp: Option<i64>,
    #[schema(nullable = false)]
    iss: Option<String>,
    #[schema(nullable = false)]
    aud: Option<String>,
    #[schema(nullable = false)]
    jti: Option<String>,
    /// Card tokens: the operations, the card, uses made and allowed.
    #[schema(nullable = false, value_type = Option<Vec<super::cards::OperationName>>)]
    operations: Option<Vec<String>>,
    #[schema(nullable = false, format = "uuid")]
    card_id: Option<String>,
    #[schema(nullable = false)]
    uses_made: Option<i64>,
    /// `null`: unlimited until expiry.
    max_uses: Option<i64>,
}

/// A token's key binding: the RFC 7638 thumbprint of its key.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct Confirmation {
    jkt: String,
}

/// RFC 8414 §2 authorization server metadata.
#[derive(Serialize, ToSchema)]
pub struct ServerMetadata {
    issuer: String,
    token_endpoint: String,
    introspection_endpoint: String,
    revocation_endpoint: String,
    jwks_uri: String,
    grant_types_supported: [&'static str; 1],
    /// Empty: there is no authorization endpoint.
    response_types_supported: [&'static str; 0],
    token_endpoint_auth_methods_supported: [&'static str; 2],
    introspection_endpoint_auth_methods_supported: [&'static str; 2],
    revocation_endpoint_auth_methods_supported: [&'static str; 2],
    scopes_supported: [&'static str; 5],
    /// The proof algorithms accepted (RFC 9449 §5.1).
    dpop_signing_alg_values_supported: [&'static str; 5],
    /// This server's OpenAPI document.
    service_documentation: String,
}

/// An RFC 7517 JWK set.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct JwkSet {
    keys: Vec<PublicJwk>,
}

/// A public ES256 signing key (RFC 7518 §6.2.1).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct PublicJwk {
    /// `EC`.
    kty: String,
    /// `P-256`.
    crv: String,
    x: String,
    y: String,
    #[schema(nullable = false)]
    kid: Option<String>,
    /// `sig`.
    #[schema(nullable = false, rename = "use")]
    use_: Option<String>,
    /// `ES256`.
    #[schema(nullable = false)]
    alg: Option<String>,
}

/// The parameters the token, introspection and revocation endpoints read; others are ignored.
const FORM_PARAMETERS: &[&str] = &[
    "grant_type",
    "scope",
    "client_id",
    "client_secret",
    "token",
    "token_type_hint",
];

/// Reads a form body (`application/x-www-form-urlencoded`, RFC 6749 §3.2).
fn form(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<HashMap<String, String>, OAuthError> {
    let body = wire::body(body).map_err(OAuthError::from_body)?;
    if wire::content_type(headers).as_deref() != Some("application/x-www-form-urlencoded") {
        return Err(OAuthError::bad_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    wire::params(&body, FORM_PARAMETERS).map_err(OAuthError::bad_request)
}

/// `client_secret_basic` or `client_secret_post` (RFC 6749 §2.3.1), never both; empty form
/// credentials count as absent. A header the client tried and that does not parse, or a
/// scheme this endpoint does not take, is `invalid_client` (§5.2).
pub async fn client_from(
    app: &Arc<App>,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    action: &str,
) -> Result<Principal, OAuthError> {
    let field = |k: &str| form.get(k).filter(|v| !v.is_empty());
    let in_body = (field("client_id"), field("client_secret"));
    let invalid = |f: AuthFailure| OAuthError::from(AppError::Auth(f));
    let (id, secret) = match (wire::authorization(headers), in_body) {
        (Authorization::Basic { .. }, (Some(_), _) | (_, Some(_))) => {
            return Err(OAuthError::bad_request(
                "use one client authentication method, not two",
            ))
        }
        (Authorization::Basic { id, secret }, _) => (id, secret),
        (Authorization::None, (Some(id), Some(secret))) => (id.clone(), secret.clone()),
        (Authorization::None, (Some(_), None)) => return Err(invalid(AuthFailure::InvalidClient)),
        (Authorization::None, _) => return Err(invalid(AuthFailure::Missing)),
        (Authorization::Malformed(m), _) => {
            return Err(
                OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", m).challenge(BASIC),
            )
        }
        _ => return Err(invalid(AuthFailure::InvalidClient)),
    };
    Ok(app
        .directory()
        .authenticate(
            Credential::Secret {
                id: &id,
                secret: &secret,
            },
            action,
            None,
        )
        .await?)
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

/// RFC 6749 §4.4 client credentials grant. The token lives 15 minutes and authenticates the
/// card API as `Authorization: Bearer`. Rate limited per client (tenant
/// `rate_limit_per_minute`).
#[utoipa::path(post, path = "/oauth2/token", tag = "oauth2", operation_id = "oauth2_token",
    request_body(content = TokenForm, content_type = "application/x-www-form-urlencoded"),
    security(("basic" = []), ()),
    responses(
        (status = 200, description = "Issued", body = TokenResponse),
        (status = 400, description = "`invalid_request`, `unsupported_grant_type`, `invalid_scope`", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String, description = "Basic"))),
        (status = 413, description = "Body over 64 KiB", body = OAuthErrorBody),
        (status = 429, description = "`rate_limited`", body = OAuthErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
        (status = 503, description = "`temporarily_unavailable`: the store cannot answer", body = OAuthErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn token(
    State(app): State<Arc<App>>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = form(&headers, body)?;
    let principal = client_from(&app, &headers, &form, "access_token.issue").await?;
    match form.get("grant_type").map(String::as_str) {
        Some("client_credentials") => {}
        Some(_) => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only client_credentials is supported",
            ))
        }
        None => return Err(OAuthError::bad_request("grant_type is required")),
    }
    let request = IssueRequest {
        scope: form.get("scope").map(String::as_str),
        kind: TokenKind::Access,
        financial_institution_id: None,
    };
    // RFC 9449 §5: a `DPoP` proof binds the token to its key.
    // Checked here; its `jti` is claimed in the issuance's own commit.
    let proof = if headers.contains_key("dpop") {
        let input = crate::auth::proof_input_of(&Method::POST, uri.path(), &headers);
        Some(
            app.dpop()
                .verify(&input, &principal.client.tenant_id, None, None)
                .map_err(AppError::from)?,
        )
    } else {
        None
    };
    let bound = proof.is_some();
    let issued = app
        .access_tokens()
        .issue_bound(&principal, request, proof)
        .await?;
    Ok(no_store(
        Json(TokenResponse {
            access_token: issued.token.expose().to_string(),
            token_type: if bound { "DPoP" } else { "Bearer" },
            expires_in: issued.expires_in,
            scope: issued.scopes.to_string_list(),
        })
        .into_response(),
    ))
}

/// RFC 7662 introspection of any token of the caller's tenant (JWT, opaque, card tokens of
/// every dialect). Another tenant's or environment's token, or one expired, revoked, used up
/// or of a disabled client, is `{"active": false}`.
#[utoipa::path(post, path = "/oauth2/introspect", tag = "oauth2",
    request_body(content = TokenParamForm, content_type = "application/x-www-form-urlencoded"),
    security(("basic" = []), ()),
    responses(
        (status = 200, description = "What the token says", body = IntrospectionResponse),
        (status = 400, description = "`invalid_request`", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String, description = "Basic"))),
        (status = 413, description = "Body over 64 KiB", body = OAuthErrorBody),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn introspect(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = form(&headers, body)?;
    let principal = client_from(&app, &headers, &form, "token.introspect").await?;
    let token = form
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::bad_request("token is required"))?;
    Ok(no_store(
        Json(app.access_tokens().introspect(&principal, token).await?).into_response(),
    ))
}

/// RFC 7009 revocation of any token of the caller's tenant; 200 whatever the token.
#[utoipa::path(post, path = "/oauth2/revoke", tag = "oauth2",
    request_body(content = TokenParamForm, content_type = "application/x-www-form-urlencoded"),
    security(("basic" = []), ()),
    responses(
        (status = 200, description = "Revoked, or nothing to revoke"),
        (status = 400, description = "`invalid_request`", body = OAuthErrorBody),
        (status = 401, description = "`invalid_client`", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String, description = "Basic"))),
        (status = 413, description = "Body over 64 KiB", body = OAuthErrorBody),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody,
            headers(("Retry-After" = u64, description = "seconds"))),
    ))]
pub async fn revoke(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = form(&headers, body)?;
    let principal = client_from(&app, &headers, &form, "token.revoke").await?;
    let token = form
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::bad_request("token is required"))?;
    app.access_tokens().revoke(&principal, token).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}

/// RFC 8414 authorization server metadata.
#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth2",
    responses((status = 200, description = "The metadata", body = ServerMetadata)))]
pub async fn metadata(State(app): State<Arc<App>>) -> Response {
    let base = &app.settings.public_url;
    let client_auth = ["client_secret_basic", "client_secret_post"];
    Json(ServerMetadata {
        issuer: base.clone(),
        token_endpoint: format!("{base}/oauth2/token"),
        introspection_endpoint: format!("{base}/oauth2/introspect"),
        revocation_endpoint: format!("{base}/oauth2/revoke"),
        jwks_uri: format!("{base}/.well-known/jwks.json"),
        grant_types_supported: ["client_credentials"],
        response_types_supported: [],
        token_endpoint_auth_methods_supported: client_auth,
        introspection_endpoint_auth_methods_supported: client_auth,
        revocation_endpoint_auth_methods_supported: client_auth,
        scopes_supported: cardgate_core::scope::KNOWN,
        dpop_signing_alg_values_supported: cardgate_jose::dpop::ALGS,
        service_documentation: format!("{base}/openapi.json"),
    })
    .into_response()
}

/// RFC 7517 JWK set: this environment's ES256 signing keys, rotated ones included while their
/// tokens may live.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "oauth2",
    responses((status = 200, description = "The key set", body = JwkSet)))]
pub async fn jwks(State(app): State<Arc<App>>) -> Response {
    let snap = app.snapshot();
    let mut res = Json(json!({"keys": snap.keys.published})).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    res
}
