//! Card data in the vault (validation of PAN, CVV, expiry, PIN) and the rules for minting
//! and redeeming card tokens.

use crate::ids::{ClientId, Environment, PersonId};
use crate::model::{Card, CardStatus, Operation, Tenant};
use crate::scope::{reach_for, Reach, ScopeSet};
use crate::tokens::{CardTokenRecord, UseLimit};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A PIN: 4 to 12 digits.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
#[serde(transparent)]
pub struct Pin(String);

impl std::fmt::Debug for Pin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pin(***)")
    }
}

impl Pin {
    pub fn parse(s: &str) -> Result<Self, &'static str> {
        if (4..=12).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(s.to_string()))
        } else {
            Err("a PIN must be 4 to 12 digits")
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// The sealed part of a card, in clear only inside a request that is allowed to see it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct CardSecrets {
    pub pan: String,
    pub cvv: String,
    pub expiry_month: u8,
    pub expiry_year: u16,
    pub pin: Option<Pin>,
}

impl std::fmt::Debug for CardSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardSecrets(***)")
    }
}

/// Luhn check (ISO/IEC 7812-1) over 12..=19 digits.
pub fn luhn_ok(pan: &str) -> bool {
    if !(12..=19).contains(&pan.len()) || !pan.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = pan
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if !i.is_multiple_of(2) {
                let dd = d * 2;
                if dd > 9 {
                    dd - 9
                } else {
                    dd
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// Field-level reasons a card's data is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CardDataError {
    #[error("pan must be 12-19 digits and pass the Luhn check")]
    Pan,
    #[error("cvv must be 3 or 4 digits")]
    Cvv,
    #[error("expiry must be YYYY-MM and not in the past")]
    Expiry,
    #[error("pin must be 4 to 12 digits")]
    Pin,
}

impl CardDataError {
    pub fn field(&self) -> &'static str {
        match self {
            Self::Pan => "pan",
            Self::Cvv => "cvv",
            Self::Expiry => "expiry",
            Self::Pin => "pin",
        }
    }
}

impl CardSecrets {
    /// Validates card data; `now_year_month` is `(year, month)` of today, for the expiry check.
    pub fn parse(
        pan: &str,
        cvv: &str,
        expiry: &str,
        pin: Option<&str>,
        now_year_month: (u16, u8),
    ) -> Result<Self, CardDataError> {
        if !luhn_ok(pan) {
            return Err(CardDataError::Pan);
        }
        if !(3..=4).contains(&cvv.len()) || !cvv.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CardDataError::Cvv);
        }
        let (y, m) = expiry.split_once('-').ok_or(CardDataError::Expiry)?;
        let year: u16 = (y.len() == 4)
            .then(|| y.parse().ok())
            .flatten()
            .ok_or(CardDataError::Expiry)?;
        let month: u8 = (m.len() == 2)
            .then(|| m.parse().ok())
            .flatten()
            .ok_or(CardDataError::Expiry)?;
        if !(1..=12).contains(&month) || (year, month) < now_year_month {
            return Err(CardDataError::Expiry);
        }
        let pin = pin
            .map(Pin::parse)
            .transpose()
            .map_err(|_| CardDataError::Pin)?;
        Ok(Self {
            pan: pan.to_string(),
            cvv: cvv.to_string(),
            expiry_month: month,
            expiry_year: year,
            pin,
        })
    }

    pub fn last4(&self) -> String {
        self.pan[self.pan.len().saturating_sub(4)..].to_string()
    }
}

/// Who is asking to mint a card token.
#[derive(Debug, Clone)]
pub struct Minter {
    pub client_id: ClientId,
    pub scopes: ScopeSet,
    /// Set when the client acts for one cardholder only.
    pub person_id: Option<PersonId>,
}

/// What the caller asked for.
#[derive(Debug, Clone)]
pub struct MintRequest {
    /// Which kind of card token (the surface that asks): its own lifetime, if it has one.
    pub kind: crate::tokens::TokenKind,
    pub operations: Vec<Operation>,
    pub use_limit: UseLimit,
    pub ttl_seconds: Option<u32>,
    /// The MFA session, when one was presented and has been verified by [`crate::mfa`].
    pub mfa_verified: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintRefusal {
    #[error("at least one operation is required")]
    NoOperation,
    #[error("the client's scopes do not allow {0}")]
    ScopeMissing(Operation),
    #[error("the card does not belong to the client's cardholder")]
    NotOwnCard,
    #[error("step-up authentication is required for {0}")]
    MfaRequired(Operation),
    #[error("ttl_seconds must be between 1 and {0}")]
    TtlOutOfRange(u32),
    #[error("max_uses must be between 1 and {0}")]
    UsesOutOfRange(u32),
    #[error("the card is {0} and cannot be used")]
    CardState(&'static str),
    #[error("the card is already active")]
    AlreadyActive,
}

/// Decides whether `minter` may have a token for `request` on `card`; returns the grant's
/// lifetime in seconds and its use limit.
pub fn decide_mint(
    tenant: &Tenant,
    minter: &Minter,
    card: &Card,
    request: &MintRequest,
) -> Result<(u32, UseLimit), MintRefusal> {
    if request.operations.is_empty() {
        return Err(MintRefusal::NoOperation);
    }
    for &op in &request.operations {
        match reach_for(&minter.scopes, op) {
            Reach::Any => {}
            Reach::Own if minter.person_id == Some(card.person_id) => {}
            Reach::Own => return Err(MintRefusal::NotOwnCard),
            Reach::None => return Err(MintRefusal::ScopeMissing(op)),
        }
    }
    // A client bound to one cardholder never reaches another's card, whatever its scopes.
    if minter.person_id.is_some_and(|p| p != card.person_id) {
        return Err(MintRefusal::NotOwnCard);
    }
    check_card_state(card, &request.operations)?;
    if let Some(&op) = request
        .operations
        .iter()
        .find(|op| tenant.requires_mfa(**op))
    {
        if !request.mfa_verified {
            return Err(MintRefusal::MfaRequired(op));
        }
    }
    let s = &tenant.settings;
    let kind_ttl = match request.kind {
        crate::tokens::TokenKind::SyncteraWidget => Some(
            s.widget_token_ttl_seconds
                .unwrap_or(crate::model::DEFAULT_WIDGET_TOKEN_TTL),
        ),
        kind => kind.card_ttl_seconds(),
    };
    let ttl = request.ttl_seconds.unwrap_or(
        kind_ttl
            .unwrap_or(s.card_token_ttl_seconds)
            .min(s.card_token_max_ttl_seconds),
    );
    if ttl == 0 || ttl > s.card_token_max_ttl_seconds {
        return Err(MintRefusal::TtlOutOfRange(s.card_token_max_ttl_seconds));
    }
    if let UseLimit::Count(n) = request.use_limit {
        if n == 0 || n > s.card_token_max_uses {
            return Err(MintRefusal::UsesOutOfRange(s.card_token_max_uses));
        }
    }
    Ok((ttl, request.use_limit))
}

/// Card states that forbid an operation: nothing on a terminated card, only activation on an
/// inactive one is meaningful for ACTIVATE, and a suspended card reveals nothing.
pub fn check_card_state(card: &Card, ops: &[Operation]) -> Result<(), MintRefusal> {
    match card.status {
        CardStatus::Terminated => Err(MintRefusal::CardState("TERMINATED")),
        CardStatus::Suspended => Err(MintRefusal::CardState("SUSPENDED")),
        CardStatus::Active if ops.contains(&Operation::Activate) => Err(MintRefusal::AlreadyActive),
        _ => Ok(()),
    }
}

/// The outcome of presenting a card token for one operation on one card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redemption {
    Granted,
    Expired,
    AlreadyUsed,
    Revoked,
    /// Wrong card, wrong operation or wrong environment: the token does not cover this.
    NotCovered,
}

pub fn decide_redemption(
    token: &CardTokenRecord,
    card_id: &crate::ids::CardId,
    op: Operation,
    env: Environment,
    now_ms: i64,
) -> Redemption {
    // A card token covers its card; a person's token (Treasury Prime) covers that person's
    // cards, which the caller checks against the card it loads.
    let covers = match &token.card_id {
        Some(c) => c == card_id,
        None => token.person_id.is_some(),
    };
    if token.environment != env || !covers || !token.operations.contains(&op) {
        Redemption::NotCovered
    } else if token.revoked {
        Redemption::Revoked
    } else if now_ms >= token.expires_at_ms {
        Redemption::Expired
    } else if token.use_limit.exhausted(token.uses_made) {
        Redemption::AlreadyUsed
    } else {
        Redemption::Granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn luhn_accepts_test_cards_and_refuses_typos() {
        assert!(luhn_ok("4012888888881881"));
        assert!(luhn_ok("6011111111111117"));
        assert!(!luhn_ok("4012888888881882"));
        assert!(!luhn_ok("40128888a8881881"));
    }

    #[test]
    fn card_data_is_refused_field_by_field() {
        let now = (2026, 11);
        assert_eq!(
            CardSecrets::parse("4242424242424243", "123", "2029-12", None, now),
            Err(CardDataError::Pan)
        );
        assert_eq!(
            CardSecrets::parse("4242424242424242", "12", "2029-12", None, now),
            Err(CardDataError::Cvv)
        );
        assert_eq!(
            CardSecrets::parse("4242424242424242", "123", "2026-10", None, now),
            Err(CardDataError::Expiry)
        );
        assert_eq!(
            CardSecrets::parse("4242424242424242", "123", "2029-13", None, now),
            Err(CardDataError::Expiry)
        );
        assert_eq!(
            CardSecrets::parse("4242424242424242", "123", "2029-12", Some("12a4"), now),
            Err(CardDataError::Pin)
        );
        assert!(
            CardSecrets::parse("4242424242424242", "1234", "2026-11", Some("2468"), now).is_ok()
        );
    }
}
