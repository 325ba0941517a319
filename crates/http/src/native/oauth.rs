//! OAuth2 endpoints: token (RFC 6749 §4.4), introspection (RFC 7662), revocation (RFC 7009),
//! server metadata (RFC 8414) and the JWKS (RFC 7517).

use super::OAuthError;
use cardgate_app::{AuthFailure, Principal, Service, ServiceError};
use crate::wire::{self, Authorization};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_core::tokens::TokenKind;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

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
    wire::params(&body).map_err(OAuthError::bad_request)
}

/// `client_secret_basic` or `client_secret_post` (RFC 6749 §2.3.1), never both.
pub async fn client_from(
    svc: &Service,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
    action: &str,
) -> Result<Principal, OAuthError> {
    let in_body = (form.get("client_id"), form.get("client_secret"));
    let (id, secret) = match (wire::authorization(headers), in_body) {
        (Authorization::Basic { .. }, (Some(_), _) | (_, Some(_))) => {
            return Err(OAuthError::bad_request(
                "use one client authentication method, not two",
            ))
        }
        (Authorization::Basic { id, secret }, _) => (id, secret),
        (Authorization::None, (Some(id), Some(secret))) => (id.clone(), secret.clone()),
        (Authorization::None, (Some(_), None)) => {
            return Err(ServiceError::Auth(AuthFailure::InvalidClient).into());
        }
        (Authorization::None, _) => return Err(ServiceError::Auth(AuthFailure::Missing).into()),
        (Authorization::Malformed(m), _) => return Err(OAuthError::bad_request(m)),
        // A scheme this endpoint does not take (Bearer, ApiKey, DPoP…): RFC 6749 §5.2 calls an
        // unsupported authentication method `invalid_client`.
        _ => return Err(ServiceError::Auth(AuthFailure::InvalidClient).into()),
    };
    match svc.authenticate_secret(&id, &secret) {
        Ok(c) => Ok(Service::principal_of(c)),
        Err(e) => {
            let known = svc
                .snapshot()
                .clients
                .get(&id)
                .map(|c| (c.tenant_id.clone(), format!("client:{id}")));
            let (tenant, actor) =
                known.map_or((None, "anonymous".to_string()), |(t, a)| (Some(t), a));
            svc.audit_refusal(
                tenant.as_ref(),
                actor.clone(),
                action,
                "invalid_client",
                actor,
            )
            .await;
            Err(ServiceError::Auth(e).into())
        }
    }
}

fn no_store(mut res: Response) -> Response {
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res.headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    res
}

pub async fn token(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = form(&headers, body)?;
    let principal = client_from(&svc, &headers, &form, "access_token.issue").await?;
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
    let client = principal.client;
    svc.check_rate(client.id.as_str(), &client.tenant_id)?;
    let issued = svc
        .issue_access_token(
            &client,
            form.get("scope").map(String::as_str),
            TokenKind::Access,
        )
        .await?;
    Ok(no_store(
        Json(json!({
            "access_token": issued.token.expose(),
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.scopes.to_string_list(),
        }))
        .into_response(),
    ))
}

pub async fn introspect(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = form(&headers, body)?;
    let principal = client_from(&svc, &headers, &form, "token.introspect").await?;
    let token = form
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::bad_request("token is required"))?;
    Ok(no_store(
        Json(svc.introspect(&principal, token).await?).into_response(),
    ))
}

pub async fn revoke(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = form(&headers, body)?;
    let principal = client_from(&svc, &headers, &form, "token.revoke").await?;
    let token = form
        .get("token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::bad_request("token is required"))?;
    svc.revoke(&principal, token).await?;
    Ok(no_store(StatusCode::OK.into_response()))
}

pub async fn metadata(State(svc): State<Arc<Service>>) -> Response {
    let base = &svc.settings.public_url;
    Json(json!({
        "issuer": base,
        "token_endpoint": format!("{base}/oauth2/token"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": cardgate_core::scope::KNOWN,
        // No `dpop_signing_alg_values_supported` until DPoP-bound tokens exist: a DPoP
        // client must not believe its tokens are bound (RFC 9449 §5.1).
        "service_documentation": format!("{base}/openapi.json"),
    }))
    .into_response()
}

pub async fn jwks(State(svc): State<Arc<Service>>) -> Response {
    let snap = svc.snapshot();
    let mut res = Json(json!({"keys": snap.keys.published})).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    res
}
