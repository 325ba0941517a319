//! Fiserv card API token endpoint (seed `fiserv-oauth-token.md`, SPEC §4.3):
//! `POST /fiserv/cs/oauth2/v1/token?scope=…` with Basic auth, `x-fapi-financial-id`, and
//! `x-fapi-interaction-id` echoed (or generated) on every response.

use cardgate_app::{AuthFailure, Service, ServiceError, RETRY_AFTER_SECONDS};
use crate::wire::{self, Authorization};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_core::tokens::TokenKind;
use serde_json::json;
use std::sync::Arc;

pub const INTERACTION_ID: &str = "x-fapi-interaction-id";
pub const FINANCIAL_ID: &str = "x-fapi-financial-id";

/// A Fiserv error: `{"code", "message", "interactionId"}`.
pub struct FiservError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl FiservError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn render(self, interaction_id: &str) -> Response {
        let mut res = (
            self.status,
            Json(json!({"code": self.code, "message": self.message, "interactionId": interaction_id})),
        )
            .into_response();
        if let Some(r) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(r));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cardgate\""),
            );
        }
        res
    }
}

impl From<ServiceError> for FiservError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        match e {
            ServiceError::Auth(AuthFailure::Disabled) => {
                Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", "the API key is disabled")
            }
            ServiceError::Auth(AuthFailure::Malformed(m)) => {
                Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", m)
            }
            ServiceError::Auth(_) => {
                Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", "invalid API key or secret")
            }
            ServiceError::InvalidScope(m) => Self::new(S::BAD_REQUEST, "INVALID_SCOPE", m),
            ServiceError::BadRequest(m) => Self::new(S::BAD_REQUEST, "BAD_REQUEST", m),
            ServiceError::NotFound(w) => {
                Self::new(S::NOT_FOUND, "NOT_FOUND", format!("{w} not found"))
            }
            ServiceError::RateLimited {
                retry_after_seconds,
            } => Self {
                retry_after: Some(retry_after_seconds),
                ..Self::new(
                    S::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    "rate limit exceeded; retry later",
                )
            },
            ServiceError::Unavailable(cause) => {
                tracing::error!(%cause, kind = cause.kind(), "store unavailable");
                Self {
                    retry_after: Some(RETRY_AFTER_SECONDS),
                    ..Self::new(
                        S::SERVICE_UNAVAILABLE,
                        "SERVICE_UNAVAILABLE",
                        "the service is temporarily unavailable; retry later",
                    )
                }
            }
            ServiceError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error")
            }
            other => Self::new(S::BAD_REQUEST, "BAD_REQUEST", other.to_string()),
        }
    }
}

/// The interaction id to echo: the caller's, if it is 1-128 visible ASCII characters.
fn interaction_id(headers: &HeaderMap) -> (String, Option<FiservError>) {
    if headers.get_all(INTERACTION_ID).iter().nth(1).is_some() {
        return (
            uuid::Uuid::new_v4().to_string(),
            Some(FiservError::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "x-fapi-interaction-id is repeated",
            )),
        );
    }
    match headers.get(INTERACTION_ID).map(|v| v.to_str()) {
        None => (uuid::Uuid::new_v4().to_string(), None),
        Some(Ok(v))
            if !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            (v.to_string(), None)
        }
        Some(_) => (
            uuid::Uuid::new_v4().to_string(),
            Some(FiservError::new(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                "x-fapi-interaction-id must be 1-128 visible ASCII characters",
            )),
        ),
    }
}

pub async fn token(
    State(svc): State<Arc<Service>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (iid, bad_iid) = interaction_id(&headers);
    let result = match bad_iid {
        Some(e) => Err(e),
        None => issue(&svc, query.as_deref(), &headers, body).await,
    };
    let mut res = match result {
        Ok(r) => r,
        Err(e) => e.render(&iid),
    };
    if let Ok(v) = HeaderValue::from_str(&iid) {
        res.headers_mut().insert(INTERACTION_ID, v);
    }
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

async fn issue(
    svc: &Service,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FiservError> {
    use StatusCode as S;
    let content_type = wire::content_type(headers);
    let is_json = match content_type.as_deref() {
        Some("application/x-www-form-urlencoded") => false,
        Some("application/json") => true,
        Some(_) => {
            return Err(FiservError::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Content-Type must be application/x-www-form-urlencoded or application/json",
            ))
        }
        None => {
            return Err(FiservError::new(
                S::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "Content-Type is required",
            ))
        }
    };
    let body = wire::body(body).map_err(|e| match e {
        wire::BodyError::TooLarge => FiservError::new(
            S::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            "the request body is larger than 64 KiB",
        ),
        wire::BodyError::Unreadable => FiservError::new(
            S::BAD_REQUEST,
            "BAD_REQUEST",
            "the request body could not be read",
        ),
    })?;
    if headers.get_all(FINANCIAL_ID).iter().nth(1).is_some() {
        return Err(FiservError::new(
            S::BAD_REQUEST,
            "BAD_REQUEST",
            "x-fapi-financial-id is repeated",
        ));
    }
    let fi = match headers.get(FINANCIAL_ID).map(|v| v.to_str()) {
        Some(Err(_)) => {
            return Err(FiservError::new(
                S::BAD_REQUEST,
                "BAD_REQUEST",
                "x-fapi-financial-id must be 8 digits",
            ))
        }
        Some(Ok(v)) if v.len() == 8 && v.bytes().all(|b| b.is_ascii_digit()) => v.to_string(),
        Some(Ok(_)) => {
            return Err(FiservError::new(
                S::BAD_REQUEST,
                "BAD_REQUEST",
                "x-fapi-financial-id must be 8 digits",
            ))
        }
        None => {
            return Err(FiservError::new(
                S::BAD_REQUEST,
                "BAD_REQUEST",
                "x-fapi-financial-id is required",
            ))
        }
    };
    let client = match wire::authorization(headers) {
        Authorization::Basic { id, secret } => match svc.authenticate_secret(&id, &secret) {
            Ok(c) => c,
            Err(e) => {
                let tenant = svc.snapshot().clients.get(&id).map(|c| c.tenant_id.clone());
                svc.audit_refusal(
                    tenant.as_ref(),
                    "anonymous",
                    "fiserv.token.issue",
                    "invalid_client",
                    "fiserv",
                )
                .await;
                return Err(ServiceError::Auth(e).into());
            }
        },
        Authorization::None => {
            return Err(FiservError::new(
                S::UNAUTHORIZED,
                "UNAUTHORIZED",
                "Authorization: Basic base64(key:secret) is required",
            ))
        }
        _ => {
            return Err(FiservError::new(
                S::UNAUTHORIZED,
                "UNAUTHORIZED",
                "Authorization must be Basic base64(key:secret)",
            ))
        }
    };
    let tenant_fi = svc
        .snapshot()
        .tenants
        .get(&client.tenant_id)
        .and_then(|t| t.settings.financial_institution_id.clone());
    if tenant_fi.as_deref() != Some(fi.as_str()) {
        svc.audit_refusal(
            Some(&client.tenant_id),
            format!("client:{}", client.id),
            "fiserv.token.issue",
            "financial_id_mismatch",
            format!("client:{}", client.id),
        )
        .await;
        return Err(FiservError::new(
            S::UNAUTHORIZED,
            "UNAUTHORIZED",
            "the credentials are not valid for this x-fapi-financial-id",
        ));
    }
    let grant_type = if is_json {
        if body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| {
                FiservError::new(S::BAD_REQUEST, "BAD_REQUEST", "the body is not valid JSON")
            })?;
            let obj = v.as_object().ok_or_else(|| {
                FiservError::new(
                    S::BAD_REQUEST,
                    "BAD_REQUEST",
                    "the body must be a JSON object",
                )
            })?;
            match obj.get("grant_type") {
                None | Some(serde_json::Value::Null) => None,
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(FiservError::new(
                        S::BAD_REQUEST,
                        "BAD_REQUEST",
                        "grant_type must be a string",
                    ))
                }
            }
        }
    } else {
        wire::params(&body)
            .map_err(|m| FiservError::new(S::BAD_REQUEST, "BAD_REQUEST", m))?
            .remove("grant_type")
    };
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
    let params = wire::params(query.unwrap_or("").as_bytes())
        .map_err(|m| FiservError::new(S::BAD_REQUEST, "BAD_REQUEST", m))?;
    let scope = params
        .get("scope")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            FiservError::new(
                S::BAD_REQUEST,
                "BAD_REQUEST",
                "the scope query parameter is required",
            )
        })?;
    svc.check_rate(client.id.as_str(), &client.tenant_id)?;
    let issued = svc
        .issue_access_token(&client, Some(scope), TokenKind::FiservAccess)
        .await?;
    Ok(Json(json!({
        "token_type": "Bearer",
        "issued_at": issued.issued_at_ms.to_string(),
        "api_key": client.id.as_str(),
        "access_token": issued.token.expose(),
        "expires_in": issued.expires_in.to_string(),
    }))
    .into_response())
}

/// Unknown paths and methods under `/fiserv`, in Fiserv's shape and with the interaction id.
pub async fn no_route(method: axum::http::Method, headers: HeaderMap) -> Response {
    let (iid, _) = interaction_id(&headers);
    let err = if method == axum::http::Method::POST {
        FiservError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource")
    } else {
        FiservError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "use POST",
        )
    };
    let mut res = err.render(&iid);
    if let Ok(v) = HeaderValue::from_str(&iid) {
        res.headers_mut().insert(INTERACTION_ID, v);
    }
    res
}
