//! Fiserv's error shape, `{"code", "message", "interactionId"}`, and the one map from
//! [`AppError`] to it. The interaction id is the request's, so the body is completed by the
//! surface's layer (`super::interaction`), which knows it.

use crate::auth::Surface;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cardgate_app::{AppError, AuthFailure, Denial, RETRY_AFTER_SECONDS};
use serde::Serialize;

/// A Fiserv error, before its interaction id is known.
#[derive(Clone)]
pub struct FiservError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) message: String,
    retry_after: Option<u64>,
}

/// The body of every Fiserv error.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FiservErrorBody {
    code: String,
    message: String,
    /// The request's `x-fapi-interaction-id`, or the one generated for it.
    interaction_id: String,
}

impl FiservError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// The response, with the request's interaction id in the body.
    pub(super) fn render(self, interaction_id: &str) -> Response {
        let body = FiservErrorBody {
            code: self.code.to_string(),
            message: self.message,
            interaction_id: interaction_id.to_string(),
        };
        let mut res = (self.status, axum::Json(body)).into_response();
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

/// Handlers answer the error itself; the surface's layer renders it with the interaction id.
impl IntoResponse for FiservError {
    fn into_response(self) -> Response {
        let mut res = self.status.into_response();
        res.extensions_mut().insert(self);
        res
    }
}

impl Surface for FiservError {
    fn refusal(_route: &str) -> (&'static str, String) {
        ("fiserv.token.issue", "fiserv".into())
    }

    fn unusable(failure: AuthFailure, _token: bool) -> Self {
        let message = match failure {
            AuthFailure::Missing => "Authorization: Basic base64(key:secret) is required",
            _ => "Authorization must be Basic base64(key:secret)",
        };
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }
}

impl From<AppError> for FiservError {
    fn from(e: AppError) -> Self {
        use StatusCode as S;
        match e {
            AppError::Auth(AuthFailure::Disabled) => {
                Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", "the API key is disabled")
            }
            AppError::Auth(AuthFailure::Malformed(m)) => {
                Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", m)
            }
            AppError::Auth(_) => {
                Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", "invalid API key or secret")
            }
            AppError::Denied(d @ Denial::FinancialInstitution) => {
                Self::new(S::UNAUTHORIZED, "UNAUTHORIZED", d.to_string())
            }
            AppError::Scope(e) => Self::new(S::BAD_REQUEST, "INVALID_SCOPE", e.to_string()),
            AppError::NotFound(w) => Self::new(S::NOT_FOUND, "NOT_FOUND", format!("{w} not found")),
            AppError::RateLimited {
                retry_after_seconds,
            } => Self {
                retry_after: Some(retry_after_seconds),
                ..Self::new(
                    S::TOO_MANY_REQUESTS,
                    "TOO_MANY_REQUESTS",
                    "rate limit exceeded; retry later",
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
            other => Self::bad(other.to_string()),
        }
    }
}
