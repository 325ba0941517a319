//! Minting a card token: every rule a surface's request is held to — the client's scopes for
//! that kind of token, the own-cardholder rule, the account and cardholder the request names,
//! the card's state, step-up, lifetime and use ceilings — decided here, so a surface only says
//! what it was asked.

use super::{refusal_code, unexpected, CardTokens, MintedCardToken};
use crate::access::token_ref;
use crate::mfa::StepUp;
use crate::{AppError, Denial, Entity, Principal};
use cardgate_core::cards::{decide_mint, MintRefusal, MintRequest, Minter};
use cardgate_core::mfa::CodeCheck;
use cardgate_core::scope::{reach_for, Reach, ScopeSet};
use cardgate_core::tokens::{mint_token, CardTokenRecord, TokenKind, UseLimit, CARD_TOKEN_PREFIX};
use cardgate_core::{AccountId, CardId, Operation, PersonId};
use cardgate_store::{ClaimKey, Guard, StoredClaim, Write, WriteOutcome, WriteSet};
use serde_json::json;

/// What a surface asks a card token for, with the constraints its request carries.
pub struct CardTokenRequest {
    pub card: CardId,
    /// Which surface asks: picks the scopes that count and the default lifetime.
    pub kind: TokenKind,
    pub operations: Vec<Operation>,
    pub use_limit: UseLimit,
    /// The lifetime asked for (`None`: the kind's, else the tenant's default), within the
    /// tenant's ceiling.
    pub ttl_seconds: Option<u32>,
    /// A step-up proof: the MFA session's id and the code.
    pub mfa: Option<(String, String)>,
    /// The account the caller names: it must hold the card.
    pub account: Option<AccountId>,
    /// The cardholder the caller names: it must be the card's, and the one an own-key client
    /// acts for.
    pub person: Option<PersonId>,
}

/// A request's claim of an idempotency key: minted together with the token, or found taken.
pub(crate) struct Once {
    pub namespace: &'static str,
    pub key: ClaimKey,
    pub fingerprint: Vec<u8>,
    pub ttl_ms: i64,
}

/// What a mint with a claim did.
pub(crate) enum MintOutcome {
    Minted(MintedCardToken),
    /// The key was claimed before: nothing was minted; here is what the first claimant stored.
    Taken(StoredClaim),
}

impl CardTokens<'_> {
    /// Mints a card token for `principal`.
    pub async fn mint(
        &self,
        principal: &Principal,
        request: CardTokenRequest,
    ) -> Result<MintedCardToken, AppError> {
        match self.mint_with(principal, request, None, None, None).await? {
            MintOutcome::Minted(m) => Ok(m),
            MintOutcome::Taken(_) => Err(AppError::Internal(
                "a mint without a claim was taken".into(),
            )),
        }
    }

    /// Mints a card token for `principal`; with `once`, only if its key is free, the token
    /// sealed as the key's stored value in the same commit.
    pub(crate) async fn mint_once(
        &self,
        principal: &Principal,
        request: CardTokenRequest,
        once: Option<&Once>,
    ) -> Result<MintOutcome, AppError> {
        self.mint_with(principal, request, None, None, once).await
    }

    /// [`CardTokens::mint`], the token bound to the key of thumbprint `cnf_jkt` (RFC 9449) when
    /// one is given: its proof was checked and claimed by the caller.
    pub async fn mint_bound(
        &self,
        principal: &Principal,
        request: CardTokenRequest,
        cnf_jkt: Option<String>,
    ) -> Result<MintedCardToken, AppError> {
        Self::minted(
            self.mint_with(principal, request, cnf_jkt, None, None)
                .await?,
        )
    }

    /// [`CardTokens::mint`], the token bound to the key of a checked DPoP proof whose `jti` is
    /// claimed in the mint's own commit (a replay mints nothing).
    pub async fn mint_proven(
        &self,
        principal: &Principal,
        request: CardTokenRequest,
        proof: crate::dpop::CheckedProof,
    ) -> Result<MintedCardToken, AppError> {
        let out = self
            .mint_with(principal, request, Some(proof.jkt), Some(proof.claim), None)
            .await?;
        Self::minted(out)
    }

    fn minted(out: MintOutcome) -> Result<MintedCardToken, AppError> {
        match out {
            MintOutcome::Minted(m) => Ok(m),
            MintOutcome::Taken(_) => Err(AppError::Internal(
                "a mint without an idempotency key was taken".into(),
            )),
        }
    }

    /// The mint itself: `cnf_jkt` binds the token, `claim` (a DPoP proof's `jti`) is a
    /// precondition of its commit, and `once` (an idempotency key) a claim storing the sealed
    /// answer. A taken `claim` is a replayed proof; a taken `once` is the stored answer.
    async fn mint_with(
        &self,
        principal: &Principal,
        request: CardTokenRequest,
        cnf_jkt: Option<String>,
        claim: Option<cardgate_store::Guard>,
        once: Option<&Once>,
    ) -> Result<MintOutcome, AppError> {
        let tenant_id = principal.client.tenant_id.clone();
        let actor = principal.actor();
        let card_id = request.card;
        let subject = format!("card:{card_id}");
        let refuse = |outcome: &'static str, error: AppError| {
            let (tenant_id, actor, subject) = (&tenant_id, &actor, &subject);
            async move {
                self.audit_refusal(
                    Some(tenant_id),
                    actor.clone(),
                    "card_token.mint",
                    outcome,
                    subject.clone(),
                )
                .await;
                error
            }
        };
        // An own-key client names no other cardholder, whatever the card.
        let acts_for = principal.client.settings.person_id;
        if let (Some(asked), Some(own)) = (request.person, acts_for) {
            if asked != own {
                return Err(
                    refuse("person_mismatch", AppError::Denied(Denial::PersonMismatch)).await,
                );
            }
        }
        let scopes = match request.kind.card_scopes() {
            Some(counted) => ScopeSet::of(principal.scopes.iter().filter(|s| counted.contains(s))),
            None => principal.scopes.clone(),
        };
        let minter = Minter {
            client_id: principal.client.id.clone(),
            scopes,
            person_id: acts_for,
        };
        // No scope for an operation at all: refused before the card is looked up, so such a
        // client learns nothing about which cards exist.
        if let Some(op) = request
            .operations
            .iter()
            .find(|op| reach_for(&minter.scopes, **op) == Reach::None)
        {
            let refusal = MintRefusal::ScopeMissing(*op);
            return Err(refuse(refusal_code(&refusal), refusal.into()).await);
        }
        let mut step_up: Option<StepUp> = None;
        // First on the remembered card; if it changed meanwhile, once more on a fresh read.
        for fresh in [false, true] {
            let (card, remembered) = match self.card_of(&tenant_id, &card_id, !fresh).await {
                Ok(c) => c,
                Err(e @ AppError::NotFound(_)) => return Err(refuse("card_not_found", e).await),
                Err(e) => return Err(e),
            };
            let wrong_account = request
                .account
                .as_ref()
                .is_some_and(|a| a != &card.account_id);
            let wrong_person = request.person.is_some_and(|p| p != card.person_id);
            if (wrong_account || wrong_person) && remembered {
                // Never refuse on a remembered card: it may have changed since.
                continue;
            }
            if wrong_account {
                return Err(refuse(
                    "account_mismatch",
                    AppError::NotFound(Entity::CardInAccount),
                )
                .await);
            }
            if wrong_person {
                return Err(
                    refuse("person_mismatch", AppError::Denied(Denial::PersonMismatch)).await,
                );
            }
            let tenant = self.snapshot().tenant(&tenant_id)?.clone();
            // Decided as if a code that came with the request were right: a client that may not
            // have this token at all is refused before its code is looked at, so it can neither
            // test codes nor spend another cardholder's attempts.
            let decision = MintRequest {
                kind: request.kind,
                operations: request.operations.clone(),
                use_limit: request.use_limit,
                ttl_seconds: request.ttl_seconds,
                mfa_verified: request.mfa.is_some(),
            };
            let (ttl, use_limit) = match decide_mint(&tenant, &minter, &card, &decision) {
                Ok(v) => v,
                // Decided on a remembered card: decide again on a fresh read.
                Err(_) if remembered => continue,
                Err(refusal) => return Err(refuse(refusal_code(&refusal), refusal.into()).await),
            };
            if let (None, Some((session_id, code))) = (&step_up, &request.mfa) {
                step_up = Some(
                    self.mfa()
                        .step_up(principal, &card.person_id, session_id, code)
                        .await?,
                );
            }
            let now = self.now_ms();
            let minted = mint_token(CARD_TOKEN_PREFIX, now)?;
            let record = CardTokenRecord {
                id: minted.id,
                hash: minted.hash,
                kind: request.kind,
                tenant_id: tenant_id.clone(),
                client_id: principal.client.id.clone(),
                environment: self.env(),
                card_id: Some(card.id),
                person_id: Some(card.person_id),
                operations: request.operations.clone(),
                issued_at_ms: now,
                expires_at_ms: now + i64::from(ttl) * 1000,
                use_limit,
                uses_made: 0,
                revoked: false,
                cnf_jkt: cnf_jkt.clone(),
            };
            let ops: Vec<&str> = record.operations.iter().map(|o| o.as_str()).collect();
            let details = json!({
                "kind": request.kind.as_str(), "operations": ops, "token_ref": token_ref(&record.id),
                "ttl_seconds": ttl, "max_uses": use_limit.max_uses(), "mfa": step_up.is_some(),
                "dpop": cnf_jkt.is_some(),
            });
            let mint = WriteSet::of(vec![
                Write::InsertCardToken(record.clone()),
                self.audit(
                    Some(&tenant_id),
                    actor.clone(),
                    "card_token.minted",
                    "ok",
                    subject.clone(),
                    details,
                ),
            ]);
            let mut set = match &step_up {
                None => mint,
                Some(s) => self.mfa().stepped_up(s, mint, now),
            }
            .with_preconditions(
                std::iter::once(Self::card_is(&card))
                    .chain(claim.clone())
                    .collect(),
            );
            if let Some(once) = once {
                let value =
                    self.seal_replay(&tenant_id, &once.key, &minted.token, record.expires_at_ms)?;
                let claim = Guard::Claim {
                    namespace: once.namespace,
                    key: once.key,
                    fingerprint: once.fingerprint.clone(),
                    value: Some(value),
                    now_ms: now,
                    expires_at_ms: now + once.ttl_ms,
                };
                set.guards.insert(set.preconditions, claim);
            }
            // With a wrong code the set only counts it: applied, it is still a refusal.
            let right_code = step_up
                .as_ref()
                .is_none_or(|s| matches!(s.check, CodeCheck::Right { .. }));
            match self.commit(set).await? {
                WriteOutcome::Applied if right_code => {
                    self.metrics.token_issued(request.kind.as_str());
                    self.hot.put_token(record.clone());
                    return Ok(MintOutcome::Minted(MintedCardToken {
                        token: minted.token,
                        expires_at_ms: record.expires_at_ms,
                        record,
                    }));
                }
                // The proof's `jti` was claimed before, here or on another replica.
                WriteOutcome::Taken(_) if claim.is_some() => {
                    return Err(crate::DpopError::InvalidProof(crate::dpop::REPLAYED).into())
                }
                WriteOutcome::Taken(stored) => return Ok(MintOutcome::Taken(stored)),
                // The card changed since it was read: decide again on a fresh read.
                WriteOutcome::Stale(_) => self.hot.forget_card(&card_id),
                refused => {
                    let check = match &step_up {
                        Some(s) => self.mfa().step_up_refused(s, refused).await?,
                        None => return Err(unexpected(&refused)),
                    };
                    return Err(AppError::Mfa(check));
                }
            }
        }
        Err(AppError::Conflict(crate::Conflict::CardChanged))
    }
}
