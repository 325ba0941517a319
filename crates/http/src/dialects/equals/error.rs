//! Equals Money's error shape, `{"code", "message"}`, and the one map from [`AppError`] to it.

use crate::auth::Surface;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_app::{AppError, AuthFailure, Denial, Entity, RETRY_AFTER_SECONDS};
use cardgate_core::cards::MintRefusal;
use cardgate_core::mfa::MfaCheck;
use serde::Serialize;

pub struct EqualsError {
    status: StatusCode,
    pub(super) code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

/// The body of every Equals error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct EqualsErrorBody {
    code: String,
    message: String,
}

impl EqualsError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for EqualsError {
    fn into_response(self) -> Response {
        let body = EqualsErrorBody {
            code: self.code.to_string(),
            message: self.message,
        };
        let mut res = (self.status, Json(body)).into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(r) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(r));
        }
        res
    }
}

impl Surface for EqualsError {
    fn refusal(_route: &str) -> (&'static str, String) {
        ("equals.access_token", "equals".into())
    }

    /// A missing header is 401; anything else this dialect cannot read is 403, as an unknown
    /// key is (SPEC §4.1).
    fn unusable(failure: AuthFailure, _token: bool) -> Self {
        match failure {
            AuthFailure::Missing => AppError::Auth(failure).into(),
            _ => Self::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "use Authorization: ApiKey <api key>",
            ),
        }
    }
}

impl From<AppError> for EqualsError {
    fn from(e: AppError) -> Self {
        use StatusCode as S;
        let mfa = |code, message| Self::new(S::FORBIDDEN, code, message);
        match e {
            AppError::Auth(AuthFailure::Missing) => Self::new(
                S::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the Authorization header is required",
            ),
            AppError::Auth(AuthFailure::Disabled) => {
                Self::new(S::FORBIDDEN, "FORBIDDEN", "the API key is disabled")
            }
            AppError::Auth(_) => Self::new(S::FORBIDDEN, "FORBIDDEN", "the API key is not valid"),
            AppError::NotFound(Entity::Card) => {
                Self::new(S::NOT_FOUND, "CARD_NOT_FOUND", "no such card")
            }
            AppError::NotFound(w) => Self::new(S::NOT_FOUND, "NOT_FOUND", format!("{w} not found")),
            AppError::Denied(d @ Denial::PersonMismatch) => {
                Self::new(S::FORBIDDEN, "PERSON_MISMATCH", d.to_string())
            }
            AppError::Denied(d) => Self::new(S::FORBIDDEN, "FORBIDDEN", d.to_string()),
            AppError::Invalid(i) => Self::bad("BAD_REQUEST", i.to_string()),
            AppError::Mint(r) => match r {
                MintRefusal::ScopeMissing(_) => Self::new(
                    S::FORBIDDEN,
                    "INSUFFICIENT_SCOPE",
                    "the API key needs cards:read:any or cards:read:own",
                ),
                MintRefusal::NotOwnCard => Self::new(
                    S::FORBIDDEN,
                    "CARD_NOT_OWNED",
                    "the card is not the API key's cardholder's",
                ),
                MintRefusal::MfaRequired(_) => Self::new(
                    S::FORBIDDEN,
                    "MFA_REQUIRED",
                    "sessionId and token (the MFA code) are required for this operation",
                ),
                MintRefusal::CardState(_) | MintRefusal::AlreadyActive => {
                    Self::new(S::UNPROCESSABLE_ENTITY, "CARD_STATE", r.to_string())
                }
                other => Self::bad("BAD_REQUEST", other.to_string()),
            },
            AppError::Mfa(c) => match c {
                MfaCheck::WrongCode => mfa("MFA_CODE_INVALID", "the MFA code is wrong"),
                MfaCheck::Locked => mfa(
                    "MFA_SESSION_LOCKED",
                    "the MFA session is locked after too many wrong codes",
                ),
                MfaCheck::Expired => mfa("MFA_SESSION_EXPIRED", "the MFA session has expired"),
                MfaCheck::PersonLocked => mfa(
                    "MFA_LOCKED_OUT",
                    "too many failed step-up attempts for this cardholder; try again later",
                ),
                MfaCheck::AlreadyUsed => mfa(
                    "MFA_SESSION_USED",
                    "the MFA session has already served a token",
                ),
                MfaCheck::NotApplicable => mfa(
                    "MFA_SESSION_INVALID",
                    "no such MFA session for this cardholder",
                ),
            },
            AppError::RateLimited {
                retry_after_seconds,
            } => Self {
                retry_after: Some(retry_after_seconds),
                ..Self::new(
                    S::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    "rate limit exceeded",
                )
            },
            AppError::Unavailable(cause) => {
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
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error")
            }
            other => Self::bad("BAD_REQUEST", other.to_string()),
        }
    }
}
