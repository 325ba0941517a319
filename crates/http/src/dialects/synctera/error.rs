//! Synctera's error shape, `{"code", "detail", "status"}` (the seed's `error` schema), and the
//! one map from [`AppError`] to it, with the statuses of SPEC §4.2.

use crate::auth::Surface;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_app::{AppError, AuthFailure, Conflict, Entity, RETRY_AFTER_SECONDS};
use cardgate_core::cards::MintRefusal;
use serde::Serialize;

pub struct SyncteraError {
    status: StatusCode,
    pub(super) code: &'static str,
    detail: String,
    retry_after: Option<u64>,
}

/// The body of every Synctera error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SyncteraErrorBody {
    /// A machine-readable string that identifies the error.
    code: String,
    /// A human-readable explanation.
    detail: String,
    /// The HTTP status code of the response.
    status: u16,
}

impl SyncteraError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn bad(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
}

impl IntoResponse for SyncteraError {
    fn into_response(self) -> Response {
        let body = SyncteraErrorBody {
            code: self.code.to_string(),
            detail: self.detail,
            status: self.status.as_u16(),
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

impl Surface for SyncteraError {
    fn refusal(_route: &str) -> (&'static str, String) {
        ("synctera.widget_token", "synctera".into())
    }

    /// A missing, malformed or non-Bearer credential is 401, as a bad key is (SPEC §4.2).
    fn unusable(failure: AuthFailure, _token: bool) -> Self {
        match failure {
            AuthFailure::Missing => AppError::Auth(failure).into(),
            _ => Self::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "use Authorization: Bearer <api key>",
            ),
        }
    }
}

impl From<AppError> for SyncteraError {
    fn from(e: AppError) -> Self {
        use StatusCode as S;
        match e {
            AppError::Auth(AuthFailure::Missing) => Self::new(
                S::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the Authorization header is required: Bearer <api key>",
            ),
            AppError::Auth(AuthFailure::Disabled) => {
                Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", "the API key is disabled")
            }
            AppError::Auth(_) => Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", "the API key is not valid"),
            AppError::NotFound(Entity::Card) => {
                Self::new(S::NOT_FOUND, "CARD_NOT_FOUND", "no such card")
            }
            AppError::NotFound(w) => Self::new(S::NOT_FOUND, "NOT_FOUND", format!("{w} not found")),
            AppError::Denied(d) => Self::new(S::FORBIDDEN, "FORBIDDEN", d.to_string()),
            AppError::Invalid(i) => Self::bad("BAD_REQUEST", i.to_string()),
            AppError::Mint(r) => match r {
                MintRefusal::ScopeMissing(_) | MintRefusal::NotOwnCard => Self::new(
                    S::FORBIDDEN,
                    "FORBIDDEN",
                    "the API key needs the cards:widgets scope for this card",
                ),
                MintRefusal::MfaRequired(_) => Self::new(
                    S::FORBIDDEN,
                    "FORBIDDEN",
                    "the program requires step-up for this widget; it cannot be opened with a widget token",
                ),
                MintRefusal::CardState(_) | MintRefusal::AlreadyActive => Self::new(
                    S::UNPROCESSABLE_ENTITY,
                    "INVALID_CARD_STATE",
                    format!("{r}: the widget cannot be opened for it"),
                ),
                other => Self::bad("BAD_REQUEST", other.to_string()),
            },
            AppError::Conflict(c @ Conflict::IdempotencyKeyReused) => {
                Self::new(S::UNPROCESSABLE_ENTITY, "IDEMPOTENCY_KEY_REUSED", c.to_string())
            }
            AppError::Conflict(c) => Self::new(S::UNPROCESSABLE_ENTITY, "CONFLICT", c.to_string()),
            AppError::RateLimited {
                retry_after_seconds,
            } => Self {
                retry_after: Some(retry_after_seconds),
                ..Self::new(S::TOO_MANY_REQUESTS, "TOO_MANY_REQUESTS", "rate limit exceeded")
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
