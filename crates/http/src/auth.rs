//! One family of authentication extractors, generic over the surface's error shape: each
//! reads the credential its surface accepts (the [`Schemes`] a handler names in its signature)
//! and asks the directory ([`cardgate_app::Directory::authenticate`]) who is calling, or hands
//! a presented token on. A surface's [`Surface`] impl says how a refusal is recorded and
//! answered; no handler authenticates by hand.

use crate::wire::{self, Authorization};
use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use cardgate_app::directory::Credential;
use cardgate_app::dpop::{ProofInput, Scheme};
use cardgate_app::{App, AppError, AuthFailure, Principal};
use std::marker::PhantomData;
use std::sync::Arc;

/// An API surface's error shape, as the extractors need it.
pub trait Surface: From<AppError> + axum::response::IntoResponse + Send + 'static {
    /// The audit action and subject a refused credential is recorded under on this surface,
    /// for a request to `route` (a route template).
    fn refusal(route: &str) -> (&'static str, String);

    /// The answer to a request whose credential is missing, malformed, or of a scheme this
    /// route does not take; `token` when the route expects a presented token, not a client.
    fn unusable(failure: AuthFailure, token: bool) -> Self {
        let _ = token;
        AppError::Auth(failure).into()
    }
}

/// A credential a request carried, as one of the [`Schemes`] read it.
pub enum Found {
    Credential(Owned),
    /// A card token (RFC 6750 `Bearer`), passed on to a redemption.
    Token(String),
    /// A token presented as `Authorization: DPoP` (RFC 9449 §7.1), passed on with the
    /// request's proof.
    DPoPToken(String),
}

/// An owned [`Credential`].
pub enum Owned {
    Secret {
        id: String,
        secret: String,
    },
    ApiKey(String),
    AccessToken(String),
    /// An access token presented as `Authorization: DPoP`.
    DPoPAccessToken(String),
}

impl Owned {
    fn borrow<'a>(&'a self, proof: &'a ProofInput) -> Credential<'a> {
        match self {
            Self::Secret { id, secret } => Credential::Secret { id, secret },
            Self::ApiKey(k) => Credential::ApiKey(k),
            Self::AccessToken(t) => Credential::AccessToken(t),
            Self::DPoPAccessToken(t) => Credential::DPoPAccessToken { token: t, proof },
        }
    }
}

/// Which credentials a route takes, and where it finds them.
pub trait Schemes: Send + Sync + 'static {
    fn read(parts: &Parts) -> Result<Found, AuthFailure>;
}

fn unusable_scheme(a: Authorization) -> AuthFailure {
    match a {
        Authorization::None => AuthFailure::Missing,
        Authorization::Malformed(m) => AuthFailure::Malformed(m),
        _ => AuthFailure::WrongScheme,
    }
}

/// HTTP Basic only (`id:secret`): Fiserv.
pub struct Basic;

impl Schemes for Basic {
    fn read(parts: &Parts) -> Result<Found, AuthFailure> {
        match wire::authorization(&parts.headers) {
            Authorization::Basic { id, secret } => {
                Ok(Found::Credential(Owned::Secret { id, secret }))
            }
            other => Err(unusable_scheme(other)),
        }
    }
}

/// What a request carries for DPoP (RFC 9449 §4.3): every `DPoP` header (more than one is
/// refused), its method and its path as received.
pub fn proof_input(parts: &Parts) -> ProofInput {
    let path = parts
        .extensions
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| parts.uri.path(), |u| u.0.path());
    proof_input_of(&parts.method, path, &parts.headers)
}

/// [`proof_input`] from a request's method, path and headers.
pub fn proof_input_of(
    method: &axum::http::Method,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> ProofInput {
    ProofInput {
        proofs: headers
            .get_all("dpop")
            .iter()
            .map(|v| v.to_str().unwrap_or("").trim().to_string())
            .collect(),
        method: method.as_str().to_string(),
        path: path.to_string(),
    }
}

/// The native card API's callers: Basic (`id:secret`), `ApiKey <key>`, or `Bearer <access
/// token>` from `/oauth2/token` or Fiserv (`DPoP <access token>` with a proof when it is
/// DPoP-bound).
pub struct ClientOrToken;

impl Schemes for ClientOrToken {
    fn read(parts: &Parts) -> Result<Found, AuthFailure> {
        match wire::authorization(&parts.headers) {
            Authorization::Basic { id, secret } => {
                Ok(Found::Credential(Owned::Secret { id, secret }))
            }
            Authorization::ApiKey(k) => Ok(Found::Credential(Owned::ApiKey(k))),
            Authorization::Bearer(t) => Ok(Found::Credential(Owned::AccessToken(t))),
            Authorization::DPoP(t) => Ok(Found::Credential(Owned::DPoPAccessToken(t))),
            other => Err(unusable_scheme(other)),
        }
    }
}

/// `Authorization: ApiKey <key>`, or the raw key alone (as Equals' cURL sample sends it).
pub struct ApiKeyHeader;

impl Schemes for ApiKeyHeader {
    fn read(parts: &Parts) -> Result<Found, AuthFailure> {
        match wire::authorization(&parts.headers) {
            Authorization::ApiKey(k) | Authorization::Raw(k) => {
                Ok(Found::Credential(Owned::ApiKey(k)))
            }
            other => Err(unusable_scheme(other)),
        }
    }
}

/// `Authorization: Bearer <api key>` (Synctera, Treasury Prime).
pub struct BearerApiKey;

impl Schemes for BearerApiKey {
    fn read(parts: &Parts) -> Result<Found, AuthFailure> {
        match wire::authorization(&parts.headers) {
            Authorization::Bearer(k) => Ok(Found::Credential(Owned::ApiKey(k))),
            other => Err(unusable_scheme(other)),
        }
    }
}

/// HTTP Basic (`id:secret`) or `Authorization: Bearer <api key>` (Treasury Prime).
pub struct BasicOrBearerApiKey;

impl Schemes for BasicOrBearerApiKey {
    fn read(parts: &Parts) -> Result<Found, AuthFailure> {
        match wire::authorization(&parts.headers) {
            Authorization::Basic { id, secret } => {
                Ok(Found::Credential(Owned::Secret { id, secret }))
            }
            Authorization::Bearer(k) => Ok(Found::Credential(Owned::ApiKey(k))),
            other => Err(unusable_scheme(other)),
        }
    }
}

/// `X-API-KEY: <api key>` (BankEzy).
pub struct XApiKey;

impl Schemes for XApiKey {
    fn read(parts: &Parts) -> Result<Found, AuthFailure> {
        let mut values = parts.headers.get_all("x-api-key").iter();
        match (values.next(), values.next()) {
            (None, _) => Err(AuthFailure::Missing),
            (Some(_), Some(_)) => Err(AuthFailure::Malformed("more than one X-API-KEY header")),
            (Some(v), None) => match v.to_str() {
                Ok(k) if !k.trim().is_empty() => {
                    Ok(Found::Credential(Owned::ApiKey(k.trim().to_string())))
                }
                _ => Err(AuthFailure::Malformed("X-API-KEY is empty or not ASCII")),
            },
        }
    }
}

/// A card token presented as `Authorization: Bearer <token>` (RFC 6750 §2.1), or as
/// `Authorization: DPoP <token>` with a `DPoP` proof when it is bound (RFC 9449 §7.1).
pub struct CardBearer;

impl Schemes for CardBearer {
    fn read(parts: &Parts) -> Result<Found, AuthFailure> {
        match wire::authorization(&parts.headers) {
            Authorization::Bearer(t) => Ok(Found::Token(t)),
            Authorization::DPoP(t) => Ok(Found::DPoPToken(t)),
            other => Err(unusable_scheme(other)),
        }
    }
}

/// An authenticated caller of a route that takes the credentials `S` reads; a refusal is
/// answered in the surface's shape `E`.
pub struct Caller<E, S> {
    pub principal: Principal,
    _shape: PhantomData<fn() -> (E, S)>,
}

fn route_of(parts: &Parts) -> &str {
    parts
        .extensions
        .get::<MatchedPath>()
        .map_or("unmatched", |m| m.as_str())
}

impl<E: Surface, S: Schemes> FromRequestParts<Arc<App>> for Caller<E, S> {
    type Rejection = E;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, E> {
        let credential = match S::read(parts) {
            Ok(Found::Credential(c)) => c,
            Ok(Found::Token(_) | Found::DPoPToken(_)) => {
                return Err(E::unusable(AuthFailure::InvalidClient, false))
            }
            Err(failure) => return Err(E::unusable(failure, false)),
        };
        let (action, subject) = E::refusal(route_of(parts));
        let proof = match credential {
            Owned::DPoPAccessToken(_) => proof_input(parts),
            _ => ProofInput::default(),
        };
        let principal = app
            .directory()
            .authenticate(credential.borrow(&proof), action, Some(&subject))
            .await?;
        Ok(Self {
            principal,
            _shape: PhantomData,
        })
    }
}

/// A token presented to a route that redeems it (never logged), with how it was presented.
pub struct Presented<E, S> {
    pub token: String,
    /// `Bearer`, or `DPoP` with the request's proof.
    pub scheme: Scheme,
    _shape: PhantomData<fn() -> (E, S)>,
}

impl<E, S> std::fmt::Debug for Presented<E, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Presented(***)")
    }
}

impl<E: Surface, S: Schemes, St: Send + Sync> FromRequestParts<St> for Presented<E, S> {
    type Rejection = E;

    async fn from_request_parts(parts: &mut Parts, _: &St) -> Result<Self, E> {
        match S::read(parts) {
            Ok(Found::Token(token)) => Ok(Self {
                token,
                scheme: Scheme::Bearer,
                _shape: PhantomData,
            }),
            Ok(Found::DPoPToken(token)) => Ok(Self {
                token,
                scheme: Scheme::DPoP(proof_input(parts)),
                _shape: PhantomData,
            }),
            Ok(Found::Credential(_)) => Err(E::unusable(AuthFailure::InvalidToken, true)),
            Err(failure) => Err(E::unusable(failure, true)),
        }
    }
}
