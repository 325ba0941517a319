//! The entities a tenant owns: its settings, clients, persons, accounts and cards. Every one
//! but the tenant's settings belongs to one environment.

use crate::ids::{AccountId, CardId, ClientId, Environment, PersonId, TenantId};
use crate::scope::ScopeSet;
use crate::secret::SecretHash;
use cardgate_jose::jwk::EcPublicJwk;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a card token allows. `VIEW_CARD` is Synctera's `REVEAL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    ViewCard,
    AddCardToWallet,
    Activate,
    GetPin,
    SetPin,
}

impl Operation {
    pub const ALL: [Operation; 5] = [
        Self::ViewCard,
        Self::AddCardToWallet,
        Self::Activate,
        Self::GetPin,
        Self::SetPin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ViewCard => "VIEW_CARD",
            Self::AddCardToWallet => "ADD_CARD_TO_WALLET",
            Self::Activate => "ACTIVATE",
            Self::GetPin => "GET_PIN",
            Self::SetPin => "SET_PIN",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.as_str() == s)
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CardStatus {
    Inactive,
    Active,
    Suspended,
    Terminated,
}

impl CardStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inactive => "INACTIVE",
            Self::Active => "ACTIVE",
            Self::Suspended => "SUSPENDED",
            Self::Terminated => "TERMINATED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Inactive,
            Self::Active,
            Self::Suspended,
            Self::Terminated,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccessTokenFormat {
    #[default]
    Jwt,
    Opaque,
}

/// A tenant's policy and settings (stored as one JSON document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantSettings {
    pub name: String,
    pub financial_institution_id: Option<String>,
    pub widget_origins: Vec<String>,
    pub mfa_required_for: Vec<Operation>,
    pub webhook_url: Option<String>,
    /// Token requests a client may make per minute (Fiserv 429 and the native token endpoint).
    pub rate_limit_per_minute: u32,
    /// Default lifetime of card tokens minted natively.
    pub card_token_ttl_seconds: u32,
    /// Upper bound on any card token's lifetime.
    pub card_token_max_ttl_seconds: u32,
    /// Upper bound on a multi-use card token's use count.
    pub card_token_max_uses: u32,
    /// The per-cardholder step-up lockout (see [`crate::mfa::Lockout`]).
    #[serde(default)]
    pub mfa_lockout: crate::mfa::Lockout,
    /// Lifetime of Synctera widget tokens (`None`: [`DEFAULT_WIDGET_TOKEN_TTL`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widget_token_ttl_seconds: Option<u32>,
    /// Whether every DPoP proof for this tenant must carry a fresh server nonce (RFC 9449 §8).
    #[serde(default)]
    pub dpop_nonce_required: bool,
    /// Lifetime of BankEzy SDK tokens (`None`: [`crate::sdk::DEFAULT_SDK_TOKEN_TTL_SECONDS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdk_token_ttl_seconds: Option<u32>,
}

pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u32 = 600;
pub const DEFAULT_CARD_TOKEN_TTL: u32 = 300;
pub const DEFAULT_CARD_TOKEN_MAX_TTL: u32 = 3600;
pub const DEFAULT_CARD_TOKEN_MAX_USES: u32 = 100;
/// Synctera widget tokens live five minutes unless the tenant says otherwise (SPEC §4.2).
pub const DEFAULT_WIDGET_TOKEN_TTL: u32 = 300;

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub settings: TenantSettings,
    /// HMAC key for webhook signatures, encrypted under the master key.
    pub webhook_secret_enc: Option<Vec<u8>>,
}

impl Tenant {
    pub fn requires_mfa(&self, op: Operation) -> bool {
        self.settings.mfa_required_for.contains(&op)
    }
}

/// Client settings that are not secrets (stored as one JSON document).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientSettings {
    pub scopes: ScopeSet,
    pub person_id: Option<PersonId>,
    pub encryption_jwk: Option<EcPublicJwk>,
    pub access_token_format: AccessTokenFormat,
}

/// An API credential of a tenant. Secrets exist here only as digests.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub id: ClientId,
    pub tenant_id: TenantId,
    pub environment: Environment,
    pub secret_hash: SecretHash,
    pub api_key_hash: Option<SecretHash>,
    pub sdk_api_key_hash: Option<SecretHash>,
    /// The BankEzy payload key, encrypted under the master key.
    pub payload_key_enc: Option<Vec<u8>>,
    pub disabled: bool,
    /// Tokens issued before this moment (ms) are refused: set when the client is disabled, so
    /// neither the disable nor a later enable lets a token it held before work again.
    pub tokens_not_before_ms: i64,
    pub settings: ClientSettings,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PersonProfile {
    pub first_name: String,
    pub last_name: String,
    pub email: Option<String>,
    pub isd_code: Option<String>,
    pub mobile_number: Option<String>,
    pub dob: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Person {
    pub id: PersonId,
    pub tenant_id: TenantId,
    /// The environment it was created in; it never changes.
    pub environment: Environment,
    pub profile: PersonProfile,
    /// TOTP secret, encrypted under the tenant's data key (`key_version`).
    pub totp_secret_enc: Option<Vec<u8>>,
    pub key_version: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub id: AccountId,
    pub tenant_id: TenantId,
    /// The environment it was created in; it never changes.
    pub environment: Environment,
    pub account_number: String,
    pub person_ids: Vec<PersonId>,
}

/// A card as stored: only last-4 and status in clear; the rest sealed in `vault`.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub id: CardId,
    pub tenant_id: TenantId,
    /// The environment it was created in; it never changes.
    pub environment: Environment,
    pub account_id: AccountId,
    pub person_id: PersonId,
    pub status: CardStatus,
    pub wallet_eligible: bool,
    pub last4: String,
    pub vault: Vec<u8>,
    pub key_version: i64,
}
