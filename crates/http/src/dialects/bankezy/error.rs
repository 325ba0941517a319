//! BankEzy's answer shape, `{"resCode", "resDesc"}`, and the one map from the use cases'
//! errors to it. Once the caller's payload key is known an answer is sealed with it (a
//! `text/plain` compact JWE, SPEC §4.5.1); before that — and for a payload that does not
//! decrypt, which the caller could not read sealed either — it is plain JSON.

use crate::auth::Surface;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_app::sdk::{SdkError, SdkRefusal};
use cardgate_app::{AppError, AuthFailure, RETRY_AFTER_SECONDS};
use cardgate_jose::aead::AeadKey;
use serde::Serialize;

/// A BankEzy answer that is not a success.
pub struct BankEzyError {
    status: StatusCode,
    pub(super) code: &'static str,
    message: String,
    retry_after: Option<u64>,
    /// Sealed with this key when set.
    key: Option<AeadKey>,
    /// Never sealed (a payload that did not decrypt).
    plain: bool,
}

/// The body of every BankEzy answer but a success's (sealed, once the key is known).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BankEzyErrorBody {
    /// `TOK4xx` / `TOK5xx` (see the README's table).
    res_code: String,
    res_desc: String,
}

impl BankEzyError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            key: None,
            plain: false,
        }
    }

    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A payload that does not decrypt under the client's key, or not to the request JSON:
    /// answered in plain JSON, its content never repeated or logged.
    pub fn undecryptable() -> Self {
        Self {
            plain: true,
            ..Self::bad(
                "TOK400",
                "the payload is not a compact JWE (dir, A256GCM) of the request JSON under this client's payload key",
            )
        }
    }

    /// Seals the answer with the caller's payload key (unless it must stay plain).
    pub fn sealed(mut self, key: &AeadKey) -> Self {
        if !self.plain {
            self.key = Some(key.clone());
        }
        self
    }
}

impl IntoResponse for BankEzyError {
    fn into_response(self) -> Response {
        let body = BankEzyErrorBody {
            res_code: self.code.to_string(),
            res_desc: self.message,
        };
        let mut res = match &self.key {
            Some(key) => super::sealed_answer(self.status, key, &body),
            None => (self.status, Json(body)).into_response(),
        };
        let h = res.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(r) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(r));
        }
        res
    }
}

impl Surface for BankEzyError {
    fn refusal(_route: &str) -> (&'static str, String) {
        ("bankezy.token", "bankezy".into())
    }

    fn unusable(failure: AuthFailure, _token: bool) -> Self {
        AppError::Auth(failure).into()
    }
}

impl From<SdkRefusal> for BankEzyError {
    fn from(r: SdkRefusal) -> Self {
        use SdkRefusal::*;
        use StatusCode as S;
        let (status, code) = match r {
            ScopeMissing => (S::FORBIDDEN, "TOK403"),
            NoPayloadKey => (S::FORBIDDEN, "TOK407"),
            SdkApiKeyMismatch => (S::FORBIDDEN, "TOK406"),
            BadPublicKey => (S::BAD_REQUEST, "TOK412"),
            UnknownAccount => (S::NOT_FOUND, "TOK404"),
            ReferenceIdReused => (S::CONFLICT, "TOK409"),
            UnknownReference => (S::NOT_FOUND, "TOK423"),
            TokenUnknown => (S::UNAUTHORIZED, "TOK440"),
            TokenExpired => (S::UNAUTHORIZED, "TOK441"),
            TokenInvalidated => (S::UNAUTHORIZED, "TOK442"),
            CardNotInAccount => (S::NOT_FOUND, "TOK443"),
            CardState => (S::UNPROCESSABLE_ENTITY, "TOK445"),
            MfaRequired => (S::FORBIDDEN, "TOK446"),
        };
        let e = Self::new(status, code, r.to_string());
        // Without a payload key nothing can be sealed for the caller.
        if r == NoPayloadKey {
            Self { plain: true, ..e }
        } else {
            e
        }
    }
}

impl From<SdkError> for BankEzyError {
    fn from(e: SdkError) -> Self {
        match e {
            SdkError::Refused(r) => r.into(),
            SdkError::App(a) => a.into(),
        }
    }
}

impl From<AppError> for BankEzyError {
    fn from(e: AppError) -> Self {
        use StatusCode as S;
        match e {
            AppError::Auth(AuthFailure::Disabled) => {
                Self::new(S::UNAUTHORIZED, "TOK401", "the API key is disabled")
            }
            AppError::Auth(_) => Self::new(
                S::UNAUTHORIZED,
                "TOK401",
                "X-API-KEY is missing or not a valid key",
            ),
            AppError::RateLimited {
                retry_after_seconds,
            } => Self {
                retry_after: Some(retry_after_seconds),
                ..Self::new(S::TOO_MANY_REQUESTS, "TOK429", "rate limit exceeded")
            },
            AppError::Unavailable(cause) => {
                tracing::error!(%cause, kind = cause.kind(), "store unavailable");
                Self {
                    retry_after: Some(RETRY_AFTER_SECONDS),
                    ..Self::new(
                        S::SERVICE_UNAVAILABLE,
                        "TOK503",
                        "the service is temporarily unavailable; retry later",
                    )
                }
            }
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "TOK500", "internal error")
            }
            other => {
                tracing::error!(error = %other, "unexpected BankEzy outcome");
                Self::new(S::INTERNAL_SERVER_ERROR, "TOK500", "internal error")
            }
        }
    }
}
