//! Treasury Prime's error shape, `{"error": "<message>"}`, and the one map from [`AppError`]
//! to it. A refused DPoP proof keeps RFC 9449's code at the head of the message
//! (`invalid_dpop_proof: …`, `use_dpop_nonce: …`, the latter with a `DPoP-Nonce` header).

use crate::auth::Surface;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_app::{AppError, AuthFailure, DpopError, RETRY_AFTER_SECONDS};
use serde::Serialize;

pub struct TreasuryPrimeError {
    status: StatusCode,
    message: String,
    retry_after: Option<u64>,
    dpop_nonce: Option<String>,
}

/// The body of every Treasury Prime error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TreasuryPrimeErrorBody {
    error: String,
}

impl TreasuryPrimeError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: None,
            dpop_nonce: None,
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for TreasuryPrimeError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(TreasuryPrimeErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if self.status == StatusCode::UNAUTHORIZED {
            h.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"cardgate\""),
            );
        }
        if let Some(r) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(r));
        }
        if let Some(n) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            h.insert("dpop-nonce", n);
        }
        res
    }
}

impl Surface for TreasuryPrimeError {
    fn refusal(_route: &str) -> (&'static str, String) {
        ("treasuryprime.uxt_token.mint", "treasuryprime".into())
    }

    fn unusable(failure: AuthFailure, _token: bool) -> Self {
        let message = match failure {
            AuthFailure::Missing => {
                "authentication is required: Basic id:secret or Bearer <api key>"
            }
            _ => "use Authorization: Basic base64(id:secret) or Bearer <api key>",
        };
        Self::new(StatusCode::UNAUTHORIZED, message)
    }
}

impl From<AppError> for TreasuryPrimeError {
    fn from(e: AppError) -> Self {
        use StatusCode as S;
        match e {
            AppError::Auth(AuthFailure::Disabled) => {
                Self::new(S::UNAUTHORIZED, "the credentials are disabled")
            }
            AppError::Auth(AuthFailure::Malformed(m)) => Self::new(S::UNAUTHORIZED, m),
            AppError::Auth(_) => Self::new(S::UNAUTHORIZED, "invalid credentials"),
            AppError::Dpop(DpopError::UseNonce(nonce)) => Self {
                dpop_nonce: Some(nonce),
                ..Self::bad(
                    "use_dpop_nonce: the DPoP proof must carry the server nonce in DPoP-Nonce",
                )
            },
            AppError::Dpop(d) => Self::bad(format!("invalid_dpop_proof: {d}")),
            AppError::Denied(d) => Self::new(S::FORBIDDEN, d.to_string()),
            AppError::NotFound(w) => Self::new(S::NOT_FOUND, format!("{w} not found")),
            AppError::RateLimited {
                retry_after_seconds,
            } => Self {
                retry_after: Some(retry_after_seconds),
                ..Self::new(S::TOO_MANY_REQUESTS, "too many requests; retry later")
            },
            AppError::Unavailable(cause) => {
                tracing::error!(%cause, kind = cause.kind(), "store unavailable");
                Self {
                    retry_after: Some(RETRY_AFTER_SECONDS),
                    ..Self::new(
                        S::SERVICE_UNAVAILABLE,
                        "the service is temporarily unavailable; retry later",
                    )
                }
            }
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "internal error")
            }
            other => Self::bad(other.to_string()),
        }
    }
}
