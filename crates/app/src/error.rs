//! The one error of the use cases: every reason a request is not done, typed, so each API
//! surface maps it to its own wire shape in one place and no surface decides by text.

use crate::directory::AuthFailure;
use cardgate_core::audit::ChainBreak;
use cardgate_core::cards::{MintRefusal, Redemption};
use cardgate_core::mfa::MfaCheck;
use cardgate_core::scope::ScopeError;
use cardgate_core::webhook::WebhookRefusal;
use cardgate_store::StoreError;
use std::fmt;

/// Why a use case did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthFailure),
    /// The request names or carries something malformed or missing.
    #[error("{0}")]
    Invalid(#[from] Invalid),
    /// What the request names does not exist here (or is another tenant's or environment's).
    #[error("{0} not found")]
    NotFound(Entity),
    /// The caller may not do this, whatever else holds.
    #[error("{0}")]
    Denied(Denial),
    /// A scope asked for at a token endpoint is malformed or not the client's.
    #[error("{0}")]
    Scope(#[from] ScopeError),
    #[error("{0}")]
    Mint(#[from] MintRefusal),
    #[error("{0:?}")]
    Mfa(MfaCheck),
    /// A request's DPoP proof or key binding does not hold (RFC 9449).
    #[error("{0}")]
    Dpop(crate::dpop::DpopError),
    #[error("the token cannot be used: {0:?}")]
    Redemption(Redemption),
    #[error("{0}")]
    Conflict(Conflict),
    #[error("too many requests")]
    RateLimited { retry_after_seconds: u64 },
    /// The tenant's configuration cannot serve this (its step-up webhook is missing, or not
    /// usable in this environment): the program's problem, not the caller's.
    #[error("{0}")]
    Misconfigured(Misconfigured),
    /// The store cannot answer now (unreachable, too slow, or a commit's outcome unknown):
    /// the caller should retry after [`crate::RETRY_AFTER_SECONDS`]. Never a refusal of its own.
    #[error("the store is unavailable: {0}")]
    Unavailable(StoreError),
    /// Anything else: logged once by the surface, answered opaquely.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e)
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl From<cardgate_jose::JoseError> for AppError {
    fn from(e: cardgate_jose::JoseError) -> Self {
        Self::Internal(format!("crypto: {e}"))
    }
}

/// Things a request can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Tenant,
    Client,
    Person,
    Account,
    Card,
    /// The card is not in the account the request names.
    CardInAccount,
    /// The card has no PIN.
    Pin,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tenant => "tenant",
            Self::Client => "client",
            Self::Person => "person",
            Self::Account => "account",
            Self::Card => "card",
            Self::CardInAccount => "card in this account",
            Self::Pin => "PIN",
        })
    }
}

/// What a caller may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// The request names a cardholder other than the card's, or than the one an own-key
    /// client acts for.
    #[error("personId is not the card's cardholder, or not the one this key acts for")]
    PersonMismatch,
    /// Starting a step-up session needs one of the card scopes.
    #[error("starting MFA needs a card scope")]
    StepUpNeedsCardScope,
    /// Fiserv's `x-fapi-financial-id` is not the client's tenant's.
    #[error("the credentials are not valid for this x-fapi-financial-id")]
    FinancialInstitution,
    /// The client lacks the scope this endpoint needs.
    #[error("the client lacks the scope {0}")]
    ScopeMissing(&'static str),
}

/// Malformed or missing input a use case finds (the surfaces refuse what their wire format
/// alone shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("the person has no TOTP authenticator enrolled")]
    NoTotp,
    #[error("the person has no mobile number")]
    NoMobileNumber,
    #[error("the person has no email address")]
    NoEmail,
    #[error("pin is required")]
    PinRequired,
    #[error("card.account_id: no such account in this tenant")]
    UnknownAccount,
    #[error("card.person_id: the cardholder must be a holder of the card's account")]
    NotAHolder,
}

/// A request that conflicts with the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Conflict {
    /// The card changed while the request was decided; trying again decides afresh.
    CardChanged,
    /// An activation lost a race: the card is no longer inactive.
    CardNotInactive,
    /// Creating what already exists.
    Exists(Entity, String),
    /// What is being created exists in another environment (this instance's is named).
    OtherEnvironment(Entity, cardgate_core::Environment),
    /// The master key is not the one this database was created with.
    WrongMasterKey,
    /// The audit log predates keyed links and does not verify as it is.
    AuditLogBroken(ChainBreak),
    /// The audit log predates keyed links and was not re-linked (`cardgate audit relink`).
    AuditLogNotKeyed,
    /// An idempotency key came back with a request other than the one it was first used for.
    IdempotencyKeyReused,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::CardChanged => f.write_str("the card changed concurrently; try again"),
            Self::CardNotInactive => f.write_str("the card is no longer inactive"),
            Self::IdempotencyKeyReused => f.write_str(
                "this Idempotency-Key was used with a different request; use a new key",
            ),
            Self::Exists(e, id) => write!(f, "{e} {id} already exists"),
            Self::OtherEnvironment(e, env) => write!(
                f,
                "{e}.id: a {e} with this id exists in another environment (this instance creates {e}s in {env})"
            ),
            Self::WrongMasterKey => f.write_str(
                "the master key does not match the one this database was created with",
            ),
            Self::AuditLogNotKeyed => f.write_str(
                "the audit log predates keyed links: re-link it first with `cardgate audit relink` \
                 (or start the server, which does); nothing was changed",
            ),
            Self::AuditLogBroken(b) => write!(
                f,
                "the database records no keyed audit links, and its audit log does not verify \
                 under the old unkeyed rule: {b}. It was not re-linked, and cardgate writes \
                 nothing to this database until it is (see the README, Security model)"
            ),
        }
    }
}

/// Why a tenant's step-up delivery cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Misconfigured {
    #[error("the tenant has no webhook_url to deliver codes")]
    NoWebhook,
    #[error("{0}")]
    Webhook(WebhookRefusal),
}
