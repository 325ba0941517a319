//! BankEzy SDK tokens (SPEC §4.5): a partner's server asks for a token for one account and
//! the SDK's public key, or invalidates one ([`issue`]); the SDK then lists the account's
//! cards and reveals one, its data encrypted to the SDK's key with the tenant's static server
//! key ([`reveal`]). The payload and server keys live in the directory ([`keys`]).

mod issue;
mod keys;
mod reveal;

pub use issue::{IssuedSdkToken, SdkTokenRequest};
pub use keys::{SdkKeys, ServerKey};
pub use reveal::{Agreements, MaskedCard, SdkSession};

use crate::{facade, AppError};

facade!(
    /// BankEzy SDK tokens: issue, invalidate, and the SDK's card calls.
    SdkTokens,
    sdk_tokens
);

/// Why a BankEzy request is refused, beyond what every surface shares ([`AppError`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdkRefusal {
    #[error("the API key lacks the scope sdk:token")]
    ScopeMissing,
    #[error("the client has no payload key")]
    NoPayloadKey,
    #[error("sdkApiKey is not this client's")]
    SdkApiKeyMismatch,
    #[error("sdkPublicKey is not a P-256 public key on the curve")]
    BadPublicKey,
    #[error("no account of this program has that accountNumber")]
    UnknownAccount,
    #[error("referenceId was already used for a different request")]
    ReferenceIdReused,
    #[error("no token of this client has that tokenReferenceId")]
    UnknownReference,
    #[error("X-API-TOKEN is missing or not a token of this SDK key")]
    TokenUnknown,
    #[error("the token has expired")]
    TokenExpired,
    #[error("the token has been invalidated")]
    TokenInvalidated,
    #[error("no card of the token's account has that id")]
    CardNotInAccount,
    #[error("the card cannot be revealed in its state")]
    CardState,
    #[error("the program asks step-up for card details, which an SDK token cannot carry")]
    MfaRequired,
}

/// The outcome of a BankEzy use case that is not done.
#[derive(Debug, thiserror::Error)]
pub enum SdkError {
    #[error("{0}")]
    Refused(SdkRefusal),
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<SdkRefusal> for SdkError {
    fn from(r: SdkRefusal) -> Self {
        Self::Refused(r)
    }
}

impl From<cardgate_jose::JoseError> for SdkError {
    fn from(e: cardgate_jose::JoseError) -> Self {
        Self::App(e.into())
    }
}

/// The audit outcome of a refusal (a label, never a value).
pub fn refusal_code(r: SdkRefusal) -> &'static str {
    use SdkRefusal::*;
    match r {
        ScopeMissing => "insufficient_scope",
        NoPayloadKey => "no_payload_key",
        SdkApiKeyMismatch => "sdk_api_key_mismatch",
        BadPublicKey => "bad_public_key",
        UnknownAccount => "unknown_account",
        ReferenceIdReused => "reference_id_reused",
        UnknownReference => "unknown_reference",
        TokenUnknown => "unknown_token",
        TokenExpired => "expired",
        TokenInvalidated => "invalidated",
        CardNotInAccount => "card_not_in_account",
        CardState => "card_state",
        MfaRequired => "mfa_required",
    }
}
