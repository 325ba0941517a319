//! The native API: OAuth2 (RFC 6749/7662/7009/8414, JWKS) and the card API. Errors take the
//! RFC 6749 §5.2 / RFC 6750 §3 shape `{"error", "error_description"}` ([`error`]).

pub mod cards;
pub mod error;
pub mod oauth;

use crate::auth::Surface;
use cardgate_app::{App, AppError, AuthFailure};
pub use error::{OAuthError, ResourceError};
use std::sync::Arc;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The native OAuth2 endpoints and the card API.
pub fn router() -> OpenApiRouter<Arc<App>> {
    OpenApiRouter::new()
        .routes(routes!(oauth::token))
        .routes(routes!(oauth::introspect))
        .routes(routes!(oauth::revoke))
        .routes(routes!(oauth::metadata))
        .routes(routes!(oauth::jwks))
        .routes(routes!(cards::mint))
        .routes(routes!(cards::start_mfa))
        .routes(routes!(cards::details))
        .routes(routes!(cards::get_pin, cards::set_pin))
        .routes(routes!(cards::activate))
        .routes(routes!(cards::wallet))
}

/// The card API is a protected resource (RFC 6750): every refusal carries a challenge, and a
/// refused client credential is audited as `client.authenticate` on the route.
impl Surface for ResourceError {
    fn refusal(route: &str) -> (&'static str, String) {
        ("client.authenticate", format!("route:{route}"))
    }

    fn unusable(failure: AuthFailure, token: bool) -> Self {
        ResourceError(
            match (failure, token) {
                (AuthFailure::Malformed(m), _) => OAuthError::bad_request(m),
                // An unsupported authentication method is a missing one (RFC 6750 §3.1,
                // RFC 6749 §5.2): 401 with a challenge.
                (AuthFailure::WrongScheme, false) => OAuthError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "invalid_client",
                    "use Basic, ApiKey or Bearer authorization",
                )
                .challenge(error::BASIC),
                (AuthFailure::Missing, true) => OAuthError::new(
                    axum::http::StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    "a card token is required",
                )
                .challenge("Bearer realm=\"cardgate\""),
                (_, true) => OAuthError::invalid_token("use Authorization: Bearer <card token>"),
                (other, false) => OAuthError::from(AppError::Auth(other)),
            }
            .at_resource(),
        )
    }
}
