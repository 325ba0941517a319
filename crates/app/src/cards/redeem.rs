//! Redeeming a card token for one operation on one card: the use is counted by the store's
//! guard in the same commit as the operation (a new PIN, an activation) and its audit event,
//! exactly once across replicas.

use super::{refusal_code, CardTokens};
use crate::access::present_card_token;
use crate::access::token_ref;
use crate::dpop::{DpopError, Scheme};
use crate::{AppError, AuthFailure, Conflict, Entity, Invalid};
use cardgate_core::cards::{check_card_state, decide_redemption, CardSecrets, Pin, Redemption};
use cardgate_core::tokens::{CardTokenRecord, PresentedToken};
use cardgate_core::{Card, CardId, CardStatus, Operation};
use cardgate_store::{Guard, GuardKind, WriteOutcome, WriteSet};
use serde_json::json;
use std::sync::Arc;

/// What a redemption decides on.
struct RedemptionView {
    token: Arc<CardTokenRecord>,
    card: Option<Arc<Card>>,
    cardholder_name: Option<Arc<str>>,
    /// Whether it all came from the hot cache (then a refusal is re-checked on a fresh read).
    remembered: bool,
}

/// What a successful redemption yields.
pub enum Redeemed {
    Details {
        secrets: CardSecrets,
        cardholder_name: String,
    },
    Pin(Pin),
    PinSet,
    Activated,
    Wallet {
        eligible: bool,
        last4: String,
        status: CardStatus,
    },
}

impl CardTokens<'_> {
    /// The record of a presented card token, without using it.
    pub async fn peek_card_token(&self, token: &str) -> Result<CardTokenRecord, AppError> {
        self.access_tokens()
            .find_card_token(token)
            .await?
            .filter(|r| {
                r.environment == self.env()
                    && self.directory().issuer_allows(
                        r.client_id.as_str(),
                        r.tenant_id.as_str(),
                        r.issued_at_ms,
                    )
            })
            .ok_or(AppError::Auth(AuthFailure::InvalidToken))
    }

    /// What a redemption needs: the token, its card and the cardholder's name — remembered
    /// ones unless `fresh`, else read in one query (and remembered). `None`: no such token here.
    async fn redemption_context(
        &self,
        presented: &PresentedToken,
        fresh: bool,
    ) -> Result<Option<RedemptionView>, AppError> {
        let usable = |t: &CardTokenRecord| {
            t.environment == self.env()
                && presented.matches(&t.hash)
                && self.directory().issuer_allows(
                    t.client_id.as_str(),
                    t.tenant_id.as_str(),
                    t.issued_at_ms,
                )
        };
        if !fresh {
            if let Some(t) = self.hot.token(&presented.id) {
                if !usable(&t) {
                    return Ok(None);
                }
                let card = t.card_id.and_then(|c| self.hot.card(&t.tenant_id, &c));
                if let Some(card) = card {
                    if let Some(name) = self.hot.name(&t.tenant_id, &card.person_id) {
                        return Ok(Some(RedemptionView {
                            token: t,
                            card: Some(card),
                            cardholder_name: name,
                            remembered: true,
                        }));
                    }
                }
            }
        }
        let Some(ctx) = self
            .read(self.store.get_redemption(&presented.id, self.env()))
            .await?
        else {
            return Ok(None);
        };
        if !usable(&ctx.token) {
            return Ok(None);
        }
        let card = ctx.card.map(|c| {
            self.hot
                .put_name(&c.tenant_id, &c.person_id, ctx.cardholder_name.as_deref());
            self.hot.put_card(c)
        });
        self.hot.put_token(ctx.token.clone());
        Ok(Some(RedemptionView {
            token: Arc::new(ctx.token),
            card,
            cardholder_name: ctx.cardholder_name.map(Arc::from),
            remembered: false,
        }))
    }

    /// Audits a card token that is not one (malformed, unknown, or of the other environment).
    async fn unknown_card_token(&self, card_id: &CardId, op: Operation) -> AppError {
        self.audit_refusal(
            None,
            "anonymous",
            &format!("card_token.redeem.{}", op.as_str()),
            "unknown_token",
            format!("card:{card_id}"),
        )
        .await;
        AppError::Auth(AuthFailure::InvalidToken)
    }

    /// Audits a redemption refused for its input before the token was used (a malformed new
    /// PIN), under the token's tenant if the token is real.
    pub async fn audit_bad_redemption(
        &self,
        token: &str,
        card_id: &CardId,
        op: Operation,
        outcome: &str,
    ) {
        let Ok(record) = self.peek_card_token(token).await else {
            return;
        };
        self.audit_refusal(
            Some(&record.tenant_id),
            format!("token:{}", token_ref(&record.id)),
            &format!("card_token.redeem.{}", op.as_str()),
            outcome,
            format!("card:{card_id}"),
        )
        .await;
    }

    /// Redeems a card token presented as `Bearer` for `op` on `card_id`, doing the operation
    /// in the same commit. A DPoP-bound token is refused here (RFC 9449 §7.2).
    pub async fn redeem(
        &self,
        token: &str,
        card_id: &CardId,
        op: Operation,
        new_pin: Option<Pin>,
    ) -> Result<(CardTokenRecord, Redeemed), AppError> {
        self.redeem_presented(token, &Scheme::Bearer, card_id, op, new_pin)
            .await
    }

    /// A presented token's key binding (RFC 9449 §7.1): a bound token needs the `DPoP` scheme
    /// and a proof of its key with its `ath`; an unbound one needs `Bearer`. The proof's `jti`
    /// claim comes back, to be committed with the redemption itself (one commit). A refusal is
    /// audited without the token or the proof.
    async fn check_binding(
        &self,
        record: &CardTokenRecord,
        token: &str,
        scheme: &Scheme,
        subject: &str,
        op: Operation,
    ) -> Result<Option<Guard>, AppError> {
        let result: Result<Option<Guard>, DpopError> = match (scheme, &record.cnf_jkt) {
            (Scheme::Bearer, None) => return Ok(None),
            (Scheme::Bearer, Some(_)) => Err(DpopError::BoundAsBearer),
            (Scheme::DPoP(_), None) => Err(DpopError::NotBound),
            (Scheme::DPoP(input), Some(jkt)) => self
                .dpop()
                .verify(input, &record.tenant_id, Some(token), Some(jkt))
                .map(|checked| Some(checked.claim)),
        };
        if let Err(e) = &result {
            let outcome = match e {
                DpopError::UseNonce(_) => "dpop_nonce_required",
                _ => "dpop_refused",
            };
            self.audit_refusal(
                Some(&record.tenant_id),
                format!("token:{}", token_ref(&record.id)),
                &format!("card_token.redeem.{}", op.as_str()),
                outcome,
                subject.to_string(),
            )
            .await;
        }
        Ok(result?)
    }

    /// A person token's card: the one asked for, if it is that person's (else not covered).
    async fn persons_card(
        &self,
        record: &CardTokenRecord,
        card_id: &CardId,
        fresh: bool,
    ) -> Result<Option<(Arc<Card>, Option<Arc<str>>, bool)>, AppError> {
        let (card, remembered) = match self.card_of(&record.tenant_id, card_id, !fresh).await {
            Ok(c) => c,
            Err(AppError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        if Some(card.person_id) != record.person_id {
            return Ok(None);
        }
        let name = match self.hot.name(&card.tenant_id, &card.person_id) {
            Some(n) => n,
            None => {
                let name = self
                    .read(
                        self.store
                            .get_person(&card.tenant_id, self.env(), &card.person_id),
                    )
                    .await?
                    .map(|p| format!("{} {}", p.profile.first_name, p.profile.last_name));
                self.hot
                    .put_name(&card.tenant_id, &card.person_id, name.as_deref());
                name.map(Arc::from)
            }
        };
        Ok(Some((card, name, remembered)))
    }

    /// Redeems a token presented with `scheme` (`Bearer`, or `DPoP` with the request's proof)
    /// for `op` on `card_id`, doing the operation in the same commit: a card token, or a
    /// person token (Treasury Prime) on one of that person's cards.
    pub async fn redeem_presented(
        &self,
        token: &str,
        scheme: &Scheme,
        card_id: &CardId,
        op: Operation,
        new_pin: Option<Pin>,
    ) -> Result<(CardTokenRecord, Redeemed), AppError> {
        let Some(presented) = present_card_token(token) else {
            return Err(self.unknown_card_token(card_id, op).await);
        };
        let mut proved = false;
        let mut claim: Option<Guard> = None;
        // First on what is remembered; if the card changed meanwhile, once more on a fresh read.
        for fresh in [false, true] {
            let Some(RedemptionView {
                token: record,
                card,
                cardholder_name,
                remembered,
            }) = self.redemption_context(&presented, fresh).await?
            else {
                return Err(self.unknown_card_token(card_id, op).await);
            };
            let id = record.id;
            let actor = format!("token:{}", token_ref(&id));
            let subject = format!("card:{card_id}");
            let tenant_id = record.tenant_id.clone();
            if !proved {
                claim = self
                    .check_binding(&record, token, scheme, &subject, op)
                    .await?;
                proved = true;
            }
            let now = self.now_ms();
            let outcome = decide_redemption(&record, card_id, op, self.env(), now);
            if outcome != Redemption::Granted {
                self.audit_refusal(
                    Some(&tenant_id),
                    actor,
                    &format!("card_token.redeem.{}", op.as_str()),
                    super::redemption_code(&outcome),
                    subject,
                )
                .await;
                return Err(AppError::Redemption(outcome));
            }
            // A card token covers `card_id` (checked above), so the joined card is the one asked
            // for; a person token's card is loaded and must be that person's.
            let (card, cardholder_name, remembered) = if record.card_id.is_some() {
                let card = card.ok_or(AppError::NotFound(Entity::Card))?;
                (card, cardholder_name, remembered)
            } else if self.snapshot().tenant(&tenant_id)?.requires_mfa(op) {
                // A person token lives an hour and carries no step-up: an operation the
                // program asks step-up for now (perhaps not when it was minted) is not opened.
                self.audit_refusal(
                    Some(&tenant_id),
                    actor,
                    &format!("card_token.redeem.{}", op.as_str()),
                    "mfa_required",
                    subject,
                )
                .await;
                return Err(AppError::Redemption(Redemption::NotCovered));
            } else {
                match self.persons_card(&record, card_id, fresh).await? {
                    Some(found) => found,
                    None => {
                        self.audit_refusal(
                            Some(&tenant_id),
                            actor,
                            &format!("card_token.redeem.{}", op.as_str()),
                            "not_covered",
                            subject,
                        )
                        .await;
                        return Err(AppError::Redemption(Redemption::NotCovered));
                    }
                }
            };
            self.ensure_data_key(&tenant_id, card.key_version).await?;
            if let Err(refusal) = check_card_state(&card, &[op]) {
                if remembered {
                    // Never refuse on a remembered card: it may have changed since.
                    continue;
                }
                self.audit_refusal(
                    Some(&tenant_id),
                    actor,
                    &format!("card_token.redeem.{}", op.as_str()),
                    refusal_code(&refusal),
                    subject,
                )
                .await;
                return Err(refusal.into());
            }
            let mut guards = vec![Guard::RedeemCardToken { id, now_ms: now }];
            let result = match op {
                Operation::ViewCard => Redeemed::Details {
                    secrets: self.open_card(&card)?,
                    cardholder_name: cardholder_name.as_deref().unwrap_or_default().to_string(),
                },
                Operation::GetPin => match self.open_card(&card)?.pin.clone() {
                    Some(pin) => Redeemed::Pin(pin),
                    // A remembered card may have had its PIN set since.
                    None if remembered => continue,
                    None => return Err(AppError::NotFound(Entity::Pin)),
                },
                Operation::SetPin => {
                    let pin = new_pin
                        .clone()
                        .ok_or(AppError::Invalid(Invalid::PinRequired))?;
                    let mut secrets = self.open_card(&card)?;
                    secrets.pin = Some(pin);
                    let (version, vault) = self.seal_card(&tenant_id, card_id, &secrets)?;
                    guards.push(Guard::CardVault {
                        tenant: tenant_id.clone(),
                        card: *card_id,
                        expect_vault: card.vault.clone(),
                        vault,
                        key_version: version,
                        now_ms: now,
                    });
                    Redeemed::PinSet
                }
                Operation::Activate => {
                    guards.push(Guard::CardStatus {
                        tenant: tenant_id.clone(),
                        card: *card_id,
                        from: CardStatus::Inactive,
                        to: CardStatus::Active,
                        now_ms: now,
                    });
                    Redeemed::Activated
                }
                Operation::AddCardToWallet => Redeemed::Wallet {
                    eligible: card.wallet_eligible,
                    last4: card.last4.clone(),
                    status: card.status,
                },
            };
            let action = format!("card_token.redeemed.{}", op.as_str());
            let set = WriteSet::guarded(
                guards,
                vec![self.audit(
                    Some(&tenant_id),
                    actor.clone(),
                    &action,
                    "ok",
                    subject.clone(),
                    json!({"token_ref": token_ref(&id)}),
                )],
                vec![self.audit(
                    Some(&tenant_id),
                    actor,
                    &action,
                    "refused_concurrently",
                    subject,
                    json!({"token_ref": token_ref(&id)}),
                )],
            )
            .with_preconditions(
                std::iter::once(Self::card_is(&card))
                    .chain(claim.clone())
                    .collect(),
            );
            match self.commit(set).await? {
                WriteOutcome::Applied => {
                    let mut used = (*record).clone();
                    used.uses_made += 1;
                    self.hot.put_token(used.clone());
                    if matches!(op, Operation::SetPin | Operation::Activate) {
                        self.hot.forget_card(card_id);
                    }
                    return Ok((used, result));
                }
                // The card changed since it was read: decide again on a fresh read.
                WriteOutcome::Stale(_) => self.hot.forget_card(card_id),
                WriteOutcome::Refused {
                    by: GuardKind::RedeemCardToken,
                    ..
                } => {
                    // Lost a race: classify from the current state (another use, or a revocation).
                    self.hot.forget_token(&id);
                    let now_record = match self
                        .read(self.store.get_card_token(&id, self.env()))
                        .await?
                    {
                        Some(r) => r,
                        None => (*record).clone(),
                    };
                    let outcome =
                        decide_redemption(&now_record, card_id, op, self.env(), self.now_ms());
                    return Err(AppError::Redemption(if outcome == Redemption::Granted {
                        Redemption::AlreadyUsed
                    } else {
                        outcome
                    }));
                }
                // The proof's `jti` was claimed before, here or on another replica.
                WriteOutcome::Taken(_) => {
                    return Err(DpopError::InvalidProof(crate::dpop::REPLAYED).into())
                }
                WriteOutcome::Refused { .. } => {
                    self.hot.forget_card(card_id);
                    return Err(AppError::Conflict(match op {
                        Operation::Activate => Conflict::CardNotInactive,
                        _ => Conflict::CardChanged,
                    }));
                }
            }
        }
        Err(AppError::Conflict(Conflict::CardChanged))
    }
}
