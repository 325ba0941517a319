//! Card tokens: minting ([`mint`]) and redemption for each operation ([`redeem`]), and the
//! vault that keeps PAN, CVV, expiry and PIN sealed under the tenant's data key.

mod mint;
mod person;
mod redeem;
mod widget;

pub use mint::CardTokenRequest;
pub use redeem::Redeemed;
pub use widget::{WidgetToken, WidgetTokenRequest, IDEMPOTENCY_WINDOW_MS};

use crate::{facade, AppError, Entity};
use cardgate_core::cards::{MintRefusal, Redemption};
use cardgate_core::secret::Secret;
use cardgate_core::tokens::CardTokenRecord;
use cardgate_core::{Card, CardId, TenantId};
use cardgate_store::{Guard, WriteOutcome};
use std::sync::Arc;

facade!(
    /// Card tokens: mint one for a card, redeem one for an operation.
    CardTokens,
    card_tokens
);

pub struct MintedCardToken {
    pub token: Secret,
    pub expires_at_ms: i64,
    pub record: CardTokenRecord,
}

/// A write outcome a use case's own write set cannot have.
pub(crate) fn unexpected(outcome: &WriteOutcome) -> AppError {
    AppError::Internal(format!("unexpected write outcome {outcome:?}"))
}

impl CardTokens<'_> {
    /// Loads a card of the principal's tenant in this environment; another tenant's or
    /// environment's card is simply not found.
    /// `remembered` allows the hot cache's copy (then the answer says it came from there),
    /// which a decision may use only together with [`CardTokens::card_is`] as a precondition of
    /// its commit, and which is never a reason to refuse: read it afresh first.
    pub async fn card_of(
        &self,
        tenant: &TenantId,
        card_id: &CardId,
        remembered: bool,
    ) -> Result<(Arc<Card>, bool), AppError> {
        if remembered {
            if let Some(c) = self.hot.card(tenant, card_id) {
                return Ok((c, true));
            }
        }
        let card = self
            .read(self.store.get_card(tenant, self.env(), card_id))
            .await?
            .ok_or(AppError::NotFound(Entity::Card))?;
        Ok((self.hot.put_card(card), false))
    }

    /// The precondition that `card` is still as it was read: a decision made on it commits
    /// only if it did not change meanwhile.
    pub(crate) fn card_is(card: &Card) -> Guard {
        Guard::CardIs {
            tenant: card.tenant_id.clone(),
            card: card.id,
            status: card.status,
            vault: card.vault.clone(),
        }
    }
}

pub fn refusal_code(r: &MintRefusal) -> &'static str {
    use cardgate_core::cards::MintRefusal::*;
    match r {
        NoOperation => "no_operation",
        ScopeMissing(_) => "insufficient_scope",
        NotOwnCard => "not_own_card",
        MfaRequired(_) => "mfa_required",
        TtlOutOfRange(_) => "ttl_out_of_range",
        UsesOutOfRange(_) => "uses_out_of_range",
        CardState(_) => "card_state",
        AlreadyActive => "already_active",
    }
}

pub fn redemption_code(r: &Redemption) -> &'static str {
    match r {
        Redemption::Granted => "ok",
        Redemption::Expired => "expired",
        Redemption::AlreadyUsed => "already_used",
        Redemption::Revoked => "revoked",
        Redemption::NotCovered => "not_covered",
    }
}
