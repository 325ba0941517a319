//! The native API's one error shape, `{"error", "error_description"}` (RFC 6749 §5.2 at the
//! token endpoints, RFC 6750 §3 at protected resources), and the one map from [`AppError`]
//! to it. Every 401 carries a `WWW-Authenticate` challenge; so does every refusal at a
//! protected resource.

use crate::wire;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use cardgate_app::error::Misconfigured;
use cardgate_app::{AppError, AuthFailure, Denial, DpopError, RETRY_AFTER_SECONDS};
use cardgate_core::cards::{MintRefusal, Redemption};
use cardgate_core::mfa::MfaCheck;
use serde::Serialize;

/// The challenge of the client-authenticated endpoints (RFC 7617).
pub const BASIC: &str = "Basic realm=\"cardgate\"";

/// The DPoP challenge's `algs` (RFC 9449 §7.1).
pub const DPOP_ALGS: &str = "ES256 ES384 EdDSA RS256 PS256";

/// A DPoP challenge (RFC 9449 §7.1) naming `error`.
pub fn dpop_challenge(error: &str, description: &str) -> String {
    format!(
        "DPoP realm=\"cardgate\", error=\"{error}\", error_description=\"{description}\", algs=\"{DPOP_ALGS}\""
    )
}

/// An error of the native API.
#[derive(Debug)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
    pub www_authenticate: Option<String>,
    pub retry_after: Option<u64>,
    /// A fresh server nonce for the `DPoP-Nonce` header (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
}

/// The body of every native error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    /// An RFC 6749 §5.2 / RFC 6750 §3.1 error code, or cardgate's own (`mfa_required`, …).
    pub error: String,
    /// A human-readable explanation; never repeats a secret or a refused value.
    pub error_description: String,
}

impl OAuthError {
    pub fn new(status: StatusCode, error: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            error,
            description: description.into(),
            www_authenticate: None,
            retry_after: None,
            dpop_nonce: None,
        }
    }

    pub fn bad_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub fn challenge(mut self, value: impl Into<String>) -> Self {
        self.www_authenticate = Some(value.into());
        self
    }

    /// As answered at a protected resource (RFC 6750 §3): a refusal without a challenge of
    /// its own gets the Bearer one, naming its error.
    pub fn at_resource(mut self) -> Self {
        // RFC 9449 §7.1: a proof refused at a resource is a 401 with a DPoP challenge.
        if matches!(self.error, "invalid_dpop_proof" | "use_dpop_nonce") {
            self.status = StatusCode::UNAUTHORIZED;
            let challenge = dpop_challenge(self.error, &self.description);
            return self.challenge(challenge);
        }
        if self.www_authenticate.is_some() || !self.status.is_client_error() {
            return self;
        }
        let challenge = match self.error {
            "invalid_request" | "invalid_token" | "insufficient_scope" => {
                format!("Bearer realm=\"cardgate\", error=\"{}\"", self.error)
            }
            _ => "Bearer realm=\"cardgate\"".to_string(),
        };
        self.challenge(challenge)
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

    /// A failed token presentation (RFC 6750 §3.1).
    pub fn invalid_token(description: impl Into<String>) -> Self {
        let d = description.into();
        Self::new(StatusCode::UNAUTHORIZED, "invalid_token", d.clone()).challenge(format!(
            "Bearer realm=\"cardgate\", error=\"invalid_token\", error_description=\"{d}\""
        ))
    }

    fn client(description: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description).challenge(BASIC)
    }
}

impl From<AppError> for OAuthError {
    fn from(e: AppError) -> Self {
        use StatusCode as S;
        match e {
            AppError::Auth(a) => match a {
                AuthFailure::Missing => Self::client("client authentication is required"),
                AuthFailure::Malformed(m) => Self::bad_request(m),
                AuthFailure::WrongScheme => Self::client(&a.to_string()),
                AuthFailure::InvalidClient => Self::client("client authentication failed"),
                AuthFailure::Disabled => Self::client("the client is disabled"),
                AuthFailure::InvalidToken => Self::invalid_token("the token is not valid"),
            },
            AppError::Invalid(i) => Self::bad_request(i.to_string()),
            // RFC 9449 §5 at the token endpoint (400); `at_resource` makes proof errors 401s.
            AppError::Dpop(d) => match d {
                DpopError::InvalidProof(m) => Self::new(S::BAD_REQUEST, "invalid_dpop_proof", m),
                DpopError::UseNonce(nonce) => {
                    let mut e = Self::new(
                        S::BAD_REQUEST,
                        "use_dpop_nonce",
                        "the DPoP proof must carry the server nonce in DPoP-Nonce",
                    );
                    e.dpop_nonce = Some(nonce);
                    e
                }
                DpopError::KeyMismatch | DpopError::BoundAsBearer | DpopError::NotBound => {
                    let text = d.to_string();
                    Self::new(S::UNAUTHORIZED, "invalid_token", text.clone())
                        .challenge(dpop_challenge("invalid_token", &text))
                }
            },
            AppError::NotFound(what) => {
                Self::new(S::NOT_FOUND, "not_found", format!("{what} not found"))
            }
            AppError::Denied(d @ Denial::FinancialInstitution) => Self::client(&d.to_string()),
            AppError::Denied(d) => Self::new(S::FORBIDDEN, "access_denied", d.to_string()),
            AppError::Scope(e) => Self::new(S::BAD_REQUEST, "invalid_scope", e.to_string()),
            AppError::Mint(r) => match r {
                MintRefusal::ScopeMissing(_) => {
                    Self::new(S::FORBIDDEN, "insufficient_scope", r.to_string())
                        .challenge("Bearer realm=\"cardgate\", error=\"insufficient_scope\"")
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
            AppError::Mfa(c) => {
                let (error, description) = match c {
                    MfaCheck::WrongCode => ("mfa_invalid_code", "the MFA code is wrong"),
                    MfaCheck::Locked => (
                        "mfa_locked",
                        "the MFA session is locked after too many wrong codes",
                    ),
                    MfaCheck::Expired => ("mfa_expired", "the MFA session has expired"),
                    MfaCheck::PersonLocked => (
                        "mfa_locked_out",
                        "too many failed step-up attempts for this cardholder; try again later",
                    ),
                    MfaCheck::AlreadyUsed => {
                        ("mfa_used", "the MFA session has already served a token")
                    }
                    MfaCheck::NotApplicable => (
                        "mfa_invalid_session",
                        "no such MFA session for this cardholder",
                    ),
                };
                Self::new(S::FORBIDDEN, error, description)
            }
            AppError::Redemption(r) => match r {
                Redemption::Expired => Self::invalid_token("the token has expired"),
                Redemption::AlreadyUsed => Self::invalid_token("the token has been used up"),
                Redemption::Revoked => Self::invalid_token("the token has been revoked"),
                Redemption::NotCovered | Redemption::Granted => Self::new(
                    S::FORBIDDEN,
                    "insufficient_scope",
                    "the token does not allow this operation on this card",
                )
                .challenge("Bearer realm=\"cardgate\", error=\"insufficient_scope\""),
            },
            AppError::Conflict(c) => Self::new(S::CONFLICT, "conflict", c.to_string()),
            AppError::Misconfigured(m) => Self::new(
                S::CONFLICT,
                "unavailable_channel",
                match m {
                    Misconfigured::NoWebhook => m.to_string(),
                    Misconfigured::Webhook(r) => r.to_string(),
                },
            ),
            AppError::RateLimited {
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
            AppError::Unavailable(cause) => {
                tracing::error!(%cause, kind = cause.kind(), "store unavailable");
                let mut e = Self::new(
                    S::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "the service is temporarily unavailable; retry later",
                );
                e.retry_after = Some(RETRY_AFTER_SECONDS);
                e
            }
            AppError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "server_error", "internal error")
            }
        }
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody {
            error: self.error.to_string(),
            error_description: self.description,
        };
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
        if let Some(n) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            h.insert("dpop-nonce", n);
        }
        res
    }
}

/// An error at a protected resource (the card API): the native shape, with the challenge
/// RFC 6750 §3 asks of every refusal there.
#[derive(Debug)]
pub struct ResourceError(pub OAuthError);

impl From<AppError> for ResourceError {
    fn from(e: AppError) -> Self {
        Self(OAuthError::from(e).at_resource())
    }
}

impl From<OAuthError> for ResourceError {
    fn from(e: OAuthError) -> Self {
        Self(e.at_resource())
    }
}

impl IntoResponse for ResourceError {
    fn into_response(self) -> Response {
        self.0.into_response()
    }
}
