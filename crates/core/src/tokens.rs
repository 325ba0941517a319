//! Token grants: OAuth2 access tokens (RFC 9068 JWT or opaque) and card tokens, and how
//! their uses are limited.

use crate::ids::{CardId, ClientId, Environment, PersonId, TenantId};
use crate::model::Operation;
use crate::scope::ScopeSet;
use crate::secret::SecretHash;

/// Lifetime of OAuth2 access tokens from `/oauth2/token` and Fiserv (15 minutes).
pub const ACCESS_TOKEN_TTL_SECONDS: u32 = 900;
/// The longest any signed token lives; rotated signing keys stay published this long.
pub const MAX_SIGNED_TOKEN_TTL_SECONDS: i64 = 3600;

/// Prefixes make leaked tokens recognisable (secret scanners) and say what they are.
pub const OPAQUE_ACCESS_TOKEN_PREFIX: &str = "cgat_";
pub const CARD_TOKEN_PREFIX: &str = "cgct_";

/// How often a card token may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UseLimit {
    Once,
    Count(u32),
    UntilExpiry,
}

impl UseLimit {
    /// The stored form: a maximum, or `None` for unlimited.
    pub fn max_uses(self) -> Option<i64> {
        match self {
            Self::Once => Some(1),
            Self::Count(n) => Some(i64::from(n)),
            Self::UntilExpiry => None,
        }
    }

    pub fn from_max_uses(max: Option<i64>) -> Self {
        match max {
            Some(1) => Self::Once,
            Some(n) => Self::Count(u32::try_from(n).unwrap_or(u32::MAX)),
            None => Self::UntilExpiry,
        }
    }

    pub fn exhausted(self, uses_made: i64) -> bool {
        self.max_uses().is_some_and(|max| uses_made >= max)
    }
}

/// Which API a token was issued through; kept for audit and introspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `/oauth2/token`
    Access,
    /// Fiserv `/v1/token`
    FiservAccess,
    /// Native `POST /v1/cards/{id}/tokens`
    Card,
    /// Equals Money access-token
    EqualsCard,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access_token",
            Self::FiservAccess => "fiserv_access_token",
            Self::Card => "card_token",
            Self::EqualsCard => "equals_card_token",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Access,
            Self::FiservAccess,
            Self::Card,
            Self::EqualsCard,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A stored opaque access token.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessTokenRecord {
    pub hash: SecretHash,
    pub kind: TokenKind,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub environment: Environment,
    pub scopes: ScopeSet,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked: bool,
}

/// A stored card token.
#[derive(Debug, Clone, PartialEq)]
pub struct CardTokenRecord {
    pub hash: SecretHash,
    pub kind: TokenKind,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub environment: Environment,
    pub card_id: Option<CardId>,
    pub person_id: Option<PersonId>,
    pub operations: Vec<Operation>,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub use_limit: UseLimit,
    pub uses_made: i64,
    pub revoked: bool,
}

/// The claims of an RFC 9068 JWT access token.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub client_id: String,
    pub scope: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The tenant the token belongs to.
    pub tid: String,
    /// The environment it was issued in.
    pub env: Environment,
    /// Which endpoint issued it.
    pub knd: String,
}
