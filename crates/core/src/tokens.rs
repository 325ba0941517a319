//! Token grants: OAuth2 access tokens (RFC 9068 JWT or opaque) and card tokens, and how
//! their uses are limited.

use crate::ids::{CardId, ClientId, Environment, PersonId, TenantId};
use crate::model::Operation;
use crate::scope::ScopeSet;
use crate::secret::{Secret, SecretHash};
use cardgate_jose::digest::{ct_eq, hex, random};

/// Lifetime of Treasury Prime UX Toolkit tokens (SPEC §4.4: `expires_in: 3600`).
pub const UXT_TOKEN_TTL_SECONDS: u32 = 3600;
/// Lifetime of OAuth2 access tokens from `/oauth2/token` and Fiserv (15 minutes).
pub const ACCESS_TOKEN_TTL_SECONDS: u32 = 900;
/// The longest any signed token lives; rotated signing keys stay published this long.
pub const MAX_SIGNED_TOKEN_TTL_SECONDS: i64 = 3600;

/// Prefixes make leaked tokens recognisable (secret scanners) and say what they are.
pub const OPAQUE_ACCESS_TOKEN_PREFIX: &str = "cgat_";
pub const CARD_TOKEN_PREFIX: &str = "cgct_";

/// The public half of an opaque or card token, by which it is looked up: 16 bytes, the first
/// six the minting time in milliseconds (big-endian), the rest random. Being time-ordered,
/// new tokens land at the end of the store's index instead of on a random page of it, so a
/// commit of many tokens touches a few pages rather than one each. The token's secret half is
/// stored only as the digest of the whole token and compared in constant time (a "split
/// token": the database lookup never depends on the secret).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub [u8; 16]);

impl std::fmt::Debug for TokenId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenId({})", self.to_hex())
    }
}

impl TokenId {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The id in hex: how audit events and revocation lists refer to the token. It names the
    /// token without being able to use it.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

/// Bytes of a token after its prefix: the id, then 32 secret bytes.
const TOKEN_BYTES: usize = 16 + 32;

/// A newly minted opaque or card token: the token to show once, its id and its digest.
pub struct MintedToken {
    pub token: Secret,
    pub id: TokenId,
    pub hash: SecretHash,
}

/// Mints a token `prefix` + base64url(id ‖ 32 random bytes) at `now_ms`.
pub fn mint_token(prefix: &str, now_ms: i64) -> Result<MintedToken, cardgate_jose::JoseError> {
    let mut raw = random::<TOKEN_BYTES>()?;
    raw[..6].copy_from_slice(&now_ms.max(0).to_be_bytes()[2..]);
    let mut id = [0u8; 16];
    id.copy_from_slice(&raw[..16]);
    let token = Secret::new(format!("{prefix}{}", cardgate_jose::b64::encode(&raw)));
    let hash = token.hash();
    Ok(MintedToken {
        token,
        id: TokenId(id),
        hash,
    })
}

/// A presented token, split: the id to look it up by, and its digest to compare. `None` when
/// it is not a token of this kind at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedToken {
    pub id: TokenId,
    pub hash: SecretHash,
}

impl PresentedToken {
    pub fn parse(token: &str, prefix: &str) -> Option<Self> {
        let body = token.strip_prefix(prefix)?;
        let raw = cardgate_jose::b64::decode(body).ok()?;
        if raw.len() != TOKEN_BYTES {
            return None;
        }
        Some(Self {
            id: TokenId::from_slice(&raw[..16])?,
            hash: SecretHash::of(token.as_bytes()),
        })
    }

    /// Whether a stored digest is this token's, in constant time.
    pub fn matches(&self, stored: &SecretHash) -> bool {
        ct_eq(&self.hash.0, &stored.0)
    }
}

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
    /// Synctera widget token
    SyncteraWidget,
    /// Treasury Prime `uxt_access_token`: a DPoP-bound JWT whose subject is a person.
    TreasuryPrimeUxt,
}

impl TokenKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Access => "access_token",
            Self::FiservAccess => "fiserv_access_token",
            Self::Card => "card_token",
            Self::EqualsCard => "equals_card_token",
            Self::SyncteraWidget => "synctera_widget_token",
            Self::TreasuryPrimeUxt => "treasuryprime_uxt_token",
        }
    }

    /// For a card token kind, the scopes that count when minting it: a dialect's own (Equals
    /// serves `cards:read:any` and `cards:read:own` clients), or every scope the client holds.
    pub fn card_scopes(self) -> Option<&'static [&'static str]> {
        match self {
            Self::EqualsCard => Some(&[crate::scope::CARDS_READ_ANY, crate::scope::CARDS_READ_OWN]),
            Self::SyncteraWidget => Some(&[crate::scope::CARDS_WIDGETS]),
            _ => None,
        }
    }

    /// For a card token kind, the lifetime it has unless the caller asks for one (always
    /// within the tenant's ceiling): Equals issues five-minute tokens (SPEC §4.1).
    pub fn card_ttl_seconds(self) -> Option<u32> {
        match self {
            Self::EqualsCard => Some(300),
            _ => None,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Access,
            Self::FiservAccess,
            Self::Card,
            Self::EqualsCard,
            Self::SyncteraWidget,
            Self::TreasuryPrimeUxt,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A stored opaque access token.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessTokenRecord {
    pub id: TokenId,
    pub hash: SecretHash,
    pub kind: TokenKind,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub environment: Environment,
    pub scopes: ScopeSet,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked: bool,
    /// The key the token is bound to (`cnf.jkt`), if any.
    pub cnf_jkt: Option<String>,
}

/// A stored card token.
#[derive(Debug, Clone, PartialEq)]
pub struct CardTokenRecord {
    pub id: TokenId,
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
    /// The key the token is bound to (`cnf.jkt`), if any.
    pub cnf_jkt: Option<String>,
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
    /// The key the token is bound to (RFC 7800 `cnf`), absent when it is bound to none: tokens
    /// issued without a binding carry no `cnf` at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// A token's key binding (RFC 7800 §3.1): the RFC 7638 thumbprint of the public key a DPoP
/// proof must be signed with (RFC 9449 §6.1, `jkt`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minted_token_splits_into_its_id_and_digest_and_nothing_else_does() {
        let m = mint_token(CARD_TOKEN_PREFIX, 1_700_000_000_123).unwrap();
        let p = PresentedToken::parse(m.token.expose(), CARD_TOKEN_PREFIX).unwrap();
        assert_eq!(p.id, m.id);
        assert!(p.matches(&m.hash));
        // Another token with the same id (a forged secret half) does not match the digest.
        let mut forged = m.token.expose().to_string();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        if let Some(f) = PresentedToken::parse(&forged, CARD_TOKEN_PREFIX) {
            assert!(!f.matches(&m.hash));
        }
        assert_eq!(
            PresentedToken::parse(m.token.expose(), OPAQUE_ACCESS_TOKEN_PREFIX),
            None
        );
        assert_eq!(PresentedToken::parse("cgct_short", CARD_TOKEN_PREFIX), None);
        assert_eq!(PresentedToken::parse("cgct_!!!", CARD_TOKEN_PREFIX), None);
    }

    #[test]
    fn access_claims_carry_a_cnf_only_when_the_token_is_bound_to_a_key() {
        let mut claims = AccessClaims {
            iss: "https://cardgate.example".into(),
            sub: "c1".into(),
            aud: "https://cardgate.example".into(),
            client_id: "c1".into(),
            scope: "cards:read:any".into(),
            iat: 1,
            exp: 2,
            jti: "j".into(),
            tid: "t1".into(),
            env: Environment::Sandbox,
            knd: "access_token".into(),
            cnf: None,
        };
        let unbound = serde_json::to_value(&claims).unwrap();
        assert!(unbound.get("cnf").is_none(), "{unbound}");
        assert_eq!(
            serde_json::from_value::<AccessClaims>(unbound).unwrap(),
            claims,
            "a token issued before key binding reads as unbound"
        );
        // RFC 9449 §6.1: the thumbprint of RFC 7638 §3.1's example key.
        let jkt = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";
        claims.cnf = Some(Confirmation { jkt: jkt.into() });
        let bound = serde_json::to_value(&claims).unwrap();
        assert_eq!(bound["cnf"], serde_json::json!({ "jkt": jkt }));
        assert_eq!(
            serde_json::from_value::<AccessClaims>(bound).unwrap(),
            claims
        );
    }

    #[test]
    fn token_ids_sort_by_minting_time() {
        let a = mint_token(CARD_TOKEN_PREFIX, 1_000).unwrap();
        let b = mint_token(CARD_TOKEN_PREFIX, 1_001).unwrap();
        let c = mint_token(CARD_TOKEN_PREFIX, 70_000_000_000).unwrap();
        assert!(a.id.0 < b.id.0 && b.id.0 < c.id.0);
        assert_ne!(a.token, b.token);
    }
}
