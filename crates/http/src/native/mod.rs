//! The native API: OAuth2 (RFC 6749/7662/7009/8414, JWKS) and the card API. Errors take the
//! RFC 6749 §5.2 / RFC 6750 §3 shape `{"error", "error_description"}`.

pub mod cards;
pub mod oauth;

use cardgate_app::{AuthFailure, Principal, Service, ServiceError, RETRY_AFTER_SECONDS};
use crate::wire::{self, Authorization};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cardgate_core::cards::{MintRefusal, Redemption};
use cardgate_core::mfa::MfaCheck;
use std::sync::Arc;

/// An error of the native API.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u64>,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            www_authenticate: None,
            retry_after: None,
        }
    }

    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn challenge(mut self, value: String) -> Self {
        self.www_authenticate = Some(value);
        self
    }

    pub fn too_large() -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request",
            "the request body is larger than 64 KiB",
        )
    }

    pub fn from_body(e: wire::BodyError) -> Self {
        match e {
            wire::BodyError::TooLarge => Self::too_large(),
            wire::BodyError::Unreadable => Self::bad_request("the request body could not be read"),
        }
    }

    /// A failed card-token presentation (RFC 6750 §3.1).
    pub fn invalid_token(description: impl Into<String>) -> Self {
        let d = description.into();
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", d.clone()).challenge(format!(
            "Bearer realm=\"cardgate\", error=\"invalid_token\", error_description=\"{d}\""
        ))
    }
}

impl From<ServiceError> for OAuthError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        match e {
            ServiceError::Auth(a) => match a {
                AuthFailure::Missing => Self::new(
                    S::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication is required",
                )
                .challenge("Basic realm=\"cardgate\"".into()),
                AuthFailure::Malformed(m) => Self::bad_request(m),
                AuthFailure::InvalidClient => Self::new(
                    S::UNAUTHORIZED,
                    "invalid_client",
                    "client authentication failed",
                )
                .challenge("Basic realm=\"cardgate\"".into()),
                AuthFailure::Disabled => {
                    Self::new(S::UNAUTHORIZED, "invalid_client", "the client is disabled")
                        .challenge("Basic realm=\"cardgate\"".into())
                }
                AuthFailure::InvalidToken => Self::invalid_token("the token is not valid"),
            },
            ServiceError::BadRequest(m) => Self::bad_request(m),
            ServiceError::Forbidden(m) => Self::new(S::FORBIDDEN, "access_denied", m),
            ServiceError::NotFound(what) => {
                Self::new(S::NOT_FOUND, "not_found", format!("{what} not found"))
            }
            ServiceError::InvalidScope(m) => Self::new(S::BAD_REQUEST, "invalid_scope", m),
            ServiceError::Mint(r) => match r {
                MintRefusal::ScopeMissing(_) => {
                    Self::new(S::FORBIDDEN, "insufficient_scope", r.to_string())
                        .challenge("Bearer realm=\"cardgate\", error=\"insufficient_scope\"".into())
                }
                MintRefusal::NotOwnCard => Self::new(S::FORBIDDEN, "access_denied", r.to_string()),
                MintRefusal::MfaRequired(_) => {
                    Self::new(S::FORBIDDEN, "mfa_required", r.to_string())
                }
                MintRefusal::NoOperation
                | MintRefusal::TtlOutOfRange(_)
                | MintRefusal::UsesOutOfRange(_) => Self::bad_request(r.to_string()),
                MintRefusal::CardState(_) | MintRefusal::AlreadyActive => {
                    Self::new(S::CONFLICT, "card_state", r.to_string())
                }
            },
            ServiceError::Mfa(c) => match c {
                MfaCheck::WrongCode => {
                    Self::new(S::FORBIDDEN, "mfa_invalid_code", "the MFA code is wrong")
                }
                MfaCheck::Locked => Self::new(
                    S::FORBIDDEN,
                    "mfa_locked",
                    "the MFA session is locked after too many wrong codes",
                ),
                MfaCheck::Expired => {
                    Self::new(S::FORBIDDEN, "mfa_expired", "the MFA session has expired")
                }
                MfaCheck::PersonLocked => Self::new(
                    S::FORBIDDEN,
                    "mfa_locked_out",
                    "too many failed step-up attempts for this cardholder; try again later",
                ),
                MfaCheck::AlreadyUsed => Self::new(
                    S::FORBIDDEN,
                    "mfa_used",
                    "the MFA session has already served a token",
                ),
                MfaCheck::NotApplicable => Self::new(
                    S::FORBIDDEN,
                    "mfa_invalid_session",
                    "no such MFA session for this cardholder",
                ),
            },
            ServiceError::Redemption(r) => match r {
                Redemption::Expired => Self::invalid_token("the token has expired"),
                Redemption::AlreadyUsed => Self::invalid_token("the token has been used up"),
                Redemption::Revoked => Self::invalid_token("the token has been revoked"),
                Redemption::NotCovered | Redemption::Granted => Self::new(
                    S::FORBIDDEN,
                    "insufficient_scope",
                    "the token does not allow this operation on this card",
                )
                .challenge("Bearer realm=\"cardgate\", error=\"insufficient_scope\"".into()),
            },
            ServiceError::Conflict(m) => Self::new(S::CONFLICT, "conflict", m),
            ServiceError::RateLimited {
                retry_after_seconds,
            } => {
                let mut e = Self::new(
                    S::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests; retry later",
                );
                e.retry_after = Some(retry_after_seconds);
                e
            }
            ServiceError::Unavailable(cause) => {
                tracing::error!(%cause, kind = cause.kind(), "store unavailable");
                let mut e = Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the service is temporarily unavailable; retry later",
                );
                e.retry_after = Some(RETRY_AFTER_SECONDS);
                e
            }
            ServiceError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            }
        }
    }
}

impl From<AuthFailure> for OAuthError {
    fn from(e: AuthFailure) -> Self {
        ServiceError::Auth(e).into()
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": self.error, "error_description": self.description});
        let mut res = (self.status, axum::Json(body)).into_response();
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(w) = self
            .www_authenticate
            .and_then(|w| HeaderValue::from_str(&w).ok())
        {
            h.insert(header::WWW_AUTHENTICATE, w);
        }
        if let Some(r) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(r));
        }
        res
    }
}

/// A client authenticated by Basic (id:secret), API key, or a Bearer access token.
pub struct ClientAuth(pub Principal);

impl FromRequestParts<Arc<Service>> for ClientAuth {
    type Rejection = OAuthError;

    async fn from_request_parts(
        parts: &mut Parts,
        svc: &Arc<Service>,
    ) -> Result<Self, Self::Rejection> {
        let principal = match wire::authorization(&parts.headers) {
            Authorization::Basic { id, secret } => match svc.authenticate_secret(&id, &secret) {
                Ok(c) => Service::principal_of(c),
                Err(e) => return Err(refused(svc, parts, Some(&id), e).await),
            },
            Authorization::ApiKey(key) => match svc.authenticate_api_key(&key) {
                Ok(c) => Service::principal_of(c),
                Err(e) => return Err(refused(svc, parts, None, e).await),
            },
            Authorization::Bearer(token) => match svc.authenticate_access_token(&token).await {
                Ok(p) => p,
                Err(ServiceError::Auth(e)) => return Err(refused(svc, parts, None, e).await),
                Err(e) => return Err(e.into()),
            },
            Authorization::None => return Err(ServiceError::Auth(AuthFailure::Missing).into()),
            Authorization::Malformed(m) => return Err(OAuthError::bad_request(m)),
            Authorization::DPoP(_) | Authorization::Raw(_) => {
                return Err(OAuthError::bad_request(
                    "use Basic, ApiKey or Bearer authorization",
                ))
            }
        };
        Ok(ClientAuth(principal))
    }
}

/// Audits a failed client authentication (naming the client only if it exists, never the
/// credential) and turns it into the error to answer.
async fn refused(
    svc: &Service,
    parts: &Parts,
    client_id: Option<&str>,
    failure: AuthFailure,
) -> OAuthError {
    let known = client_id.and_then(|id| {
        svc.snapshot()
            .clients
            .get(id)
            .map(|c| (c.tenant_id.clone(), format!("client:{id}")))
    });
    let (tenant, actor) = known.map_or((None, "anonymous".to_string()), |(t, a)| (Some(t), a));
    let route = parts
        .extensions
        .get::<axum::extract::MatchedPath>()
        .map_or("unmatched", |m| m.as_str());
    svc.audit_refusal(
        tenant.as_ref(),
        actor,
        "client.authenticate",
        "invalid_client",
        format!("route:{route}"),
    )
    .await;
    ServiceError::Auth(failure).into()
}

/// A card token presented as `Authorization: Bearer <token>` (RFC 6750 §2.1).
pub struct CardTokenBearer(pub String);

impl std::fmt::Debug for CardTokenBearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardTokenBearer(***)")
    }
}

impl<S: Send + Sync> FromRequestParts<S> for CardTokenBearer {
    type Rejection = OAuthError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match wire::authorization(&parts.headers) {
            Authorization::Bearer(t) => Ok(Self(t)),
            Authorization::None => Err(OAuthError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "a card token is required",
            )
            .challenge("Bearer realm=\"cardgate\"".into())),
            Authorization::DPoP(_) => Err(OAuthError::invalid_token(
                "DPoP-bound card tokens are not supported on this endpoint",
            )),
            Authorization::Malformed(m) => Err(OAuthError::bad_request(m)),
            _ => Err(OAuthError::invalid_token(
                "use Authorization: Bearer <card token>",
            )),
        }
    }
}
