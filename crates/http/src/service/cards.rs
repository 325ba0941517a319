//! Card tokens: minting (with MFA step-up), redemption for each operation, and the vault
//! that keeps PAN, CVV, expiry and PIN sealed under the tenant's data key.

use super::oauth::token_ref;
use super::{Principal, Service, ServiceError};
use cardgate_core::cards::{
    check_card_state, decide_mint, decide_redemption, CardSecrets, MintRequest, Minter, Pin,
    Redemption,
};
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::{self, Channel, CodeCheck, Lockout, MfaCheck, MfaSession};
use cardgate_core::scope;
use cardgate_core::secret::Secret;
use cardgate_core::tokens::{
    mint_token, CardTokenRecord, PresentedToken, TokenKind, UseLimit, CARD_TOKEN_PREFIX,
};
use cardgate_core::{Card, CardId, CardStatus, Operation, PersonId, TenantId};
use cardgate_store::{Guard, GuardKind, Write, WriteOutcome, WriteSet};
use serde_json::json;
use std::sync::Arc;
use zeroize::Zeroizing;

pub fn vault_aad(tenant: &TenantId, card: &CardId, version: i64) -> String {
    format!("cardgate:card:{tenant}:{card}:{version}")
}

pub fn totp_aad(tenant: &TenantId, person: &PersonId, version: i64) -> String {
    format!("cardgate:totp:{tenant}:{person}:{version}")
}

/// A mint request as the surfaces pass it in.
pub struct MintInput {
    pub operations: Vec<Operation>,
    pub use_limit: UseLimit,
    pub ttl_seconds: Option<u32>,
    pub mfa: Option<(String, String)>,
    pub kind: TokenKind,
    /// When set, only these of the principal's scopes count (a dialect's own scopes).
    pub scope_filter: Option<&'static [&'static str]>,
    /// When set, the cardholder the caller names; refused unless it is the card's.
    pub person_hint: Option<PersonId>,
    /// When set, the account the caller names; refused unless it holds the card.
    pub account_hint: Option<cardgate_core::AccountId>,
}

/// A presented MFA code, checked but not yet counted.
struct StepUp {
    session: MfaSession,
    check: CodeCheck,
    lockout: Lockout,
    actor: String,
}

/// A write outcome a use case's own write set cannot have.
fn unexpected(outcome: &WriteOutcome) -> ServiceError {
    ServiceError::Internal(format!("unexpected write outcome {outcome:?}"))
}

pub struct MintedCardToken {
    pub token: Secret,
    pub expires_at_ms: i64,
    pub record: CardTokenRecord,
}

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

impl Service {
    pub(crate) fn seal_card(
        &self,
        card_tenant: &TenantId,
        card: &CardId,
        secrets: &CardSecrets,
    ) -> Result<(i64, Vec<u8>), ServiceError> {
        let snap = self.snapshot();
        let (version, key) = snap.keys.current_data_key(card_tenant)?;
        let plain = Zeroizing::new(
            serde_json::to_vec(secrets).map_err(|e| ServiceError::Internal(e.to_string()))?,
        );
        let sealed = key
            .seal(vault_aad(card_tenant, card, version).as_bytes(), &plain)
            .map_err(ServiceError::crypto)?;
        Ok((version, sealed))
    }

    /// Makes sure the directory holds the data key a row was sealed with: a key created by
    /// another process (a rotation from the CLI) is loaded on first sight.
    pub(crate) async fn ensure_data_key(
        &self,
        tenant: &TenantId,
        version: i64,
    ) -> Result<(), ServiceError> {
        if self.snapshot().keys.data_key(tenant, version).is_err() {
            self.reload().await?;
        }
        Ok(())
    }

    pub(crate) fn open_card(&self, card: &Card) -> Result<CardSecrets, ServiceError> {
        let snap = self.snapshot();
        let key = snap.keys.data_key(&card.tenant_id, card.key_version)?;
        let plain = key
            .open(
                vault_aad(&card.tenant_id, &card.id, card.key_version).as_bytes(),
                &card.vault,
            )
            .map_err(ServiceError::crypto)?;
        serde_json::from_slice(&plain)
            .map_err(|_| ServiceError::Internal("vault entry is corrupt".into()))
    }

    /// Loads a card of the principal's tenant in this environment; another tenant's or
    /// environment's card is simply not found.
    /// `remembered` allows the hot cache's copy (then the answer says it came from there),
    /// which a decision may use only together with [`Service::card_is`] as a precondition of
    /// its commit, and which is never a reason to refuse: read it afresh first.
    pub async fn card_of(
        &self,
        tenant: &TenantId,
        card_id: &CardId,
        remembered: bool,
    ) -> Result<(Arc<Card>, bool), ServiceError> {
        if remembered {
            if let Some(c) = self.hot.card(tenant, card_id) {
                return Ok((c, true));
            }
        }
        let card = self
            .read(self.store.get_card(tenant, self.env(), card_id))
            .await?
            .ok_or(ServiceError::NotFound("card"))?;
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

    /// Mints a card token for `principal` on `card_id`.
    pub async fn mint_card_token(
        &self,
        principal: &Principal,
        card_id: &CardId,
        input: MintInput,
    ) -> Result<MintedCardToken, ServiceError> {
        let tenant_id = principal.client.tenant_id.clone();
        let actor = principal.actor();
        let subject = format!("card:{card_id}");
        let mut step_up: Option<StepUp> = None;
        // First on the remembered card; if it changed meanwhile, once more on a fresh read.
        for fresh in [false, true] {
            let (card, remembered) = match self.card_of(&tenant_id, card_id, !fresh).await {
                Ok(c) => c,
                Err(e @ ServiceError::NotFound(_)) => {
                    self.audit_refusal(
                        Some(&tenant_id),
                        actor,
                        "card_token.mint",
                        "card_not_found",
                        subject,
                    )
                    .await;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            let mismatch = input
                .account_hint
                .as_ref()
                .is_some_and(|a| a != &card.account_id)
                || input.person_hint.is_some_and(|p| p != card.person_id);
            if mismatch && remembered {
                // Never refuse on a remembered card: it may have changed since.
                continue;
            }
            if input
                .account_hint
                .as_ref()
                .is_some_and(|a| a != &card.account_id)
            {
                self.audit_refusal(
                    Some(&tenant_id),
                    actor,
                    "card_token.mint",
                    "account_mismatch",
                    subject,
                )
                .await;
                return Err(ServiceError::NotFound("card in this account"));
            }
            if input.person_hint.is_some_and(|p| p != card.person_id) {
                self.audit_refusal(
                    Some(&tenant_id),
                    actor,
                    "card_token.mint",
                    "person_mismatch",
                    subject,
                )
                .await;
                return Err(ServiceError::Forbidden(
                    "personId is not the card's cardholder".into(),
                ));
            }
            let snap = self.snapshot();
            let tenant = snap.tenant(&tenant_id)?.clone();
            let scopes = match input.scope_filter {
                Some(filter) => cardgate_core::scope::ScopeSet::of(
                    principal.scopes.iter().filter(|s| filter.contains(s)),
                ),
                None => principal.scopes.clone(),
            };
            let minter = Minter {
                client_id: principal.client.id.clone(),
                scopes,
                person_id: principal.client.settings.person_id,
            };
            // Decided as if a code that came with the request were right: a client that may not
            // have this token at all is refused before its code is looked at, so it can neither
            // test codes nor spend another cardholder's attempts.
            let request = MintRequest {
                operations: input.operations.clone(),
                use_limit: input.use_limit,
                ttl_seconds: input.ttl_seconds,
                mfa_verified: input.mfa.is_some(),
            };
            let (ttl, use_limit) = match decide_mint(&tenant, &minter, &card, &request) {
                Ok(v) => v,
                // Decided on a remembered card: decide again on a fresh read.
                Err(_) if remembered => continue,
                Err(refusal) => {
                    self.audit_refusal(
                        Some(&tenant_id),
                        actor,
                        "card_token.mint",
                        refusal_code(&refusal),
                        subject,
                    )
                    .await;
                    return Err(refusal.into());
                }
            };
            if let (None, Some((session_id, code))) = (&step_up, &input.mfa) {
                step_up = Some(
                    self.step_up(principal, &card.person_id, session_id, code)
                        .await?,
                );
            }
            let now = self.now_ms();
            let minted = mint_token(CARD_TOKEN_PREFIX, now).map_err(ServiceError::crypto)?;
            let record = CardTokenRecord {
                id: minted.id,
                hash: minted.hash,
                kind: input.kind,
                tenant_id: tenant_id.clone(),
                client_id: principal.client.id.clone(),
                environment: self.env(),
                card_id: Some(card.id),
                person_id: Some(card.person_id),
                operations: input.operations.clone(),
                issued_at_ms: now,
                expires_at_ms: now + i64::from(ttl) * 1000,
                use_limit,
                uses_made: 0,
                revoked: false,
                cnf_jkt: None,
            };
            let ops: Vec<&str> = record.operations.iter().map(|o| o.as_str()).collect();
            let details = json!({
                "kind": input.kind.as_str(), "operations": ops, "token_ref": token_ref(&record.id),
                "ttl_seconds": ttl, "max_uses": use_limit.max_uses(), "mfa": step_up.is_some(),
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
            let set = match &step_up {
                None => mint,
                Some(s) => self.stepped_up(s, mint, now),
            }
            .with_preconditions(vec![Self::card_is(&card)]);
            // With a wrong code the set only counts it: applied, it is still a refusal.
            let right_code = step_up
                .as_ref()
                .is_none_or(|s| matches!(s.check, CodeCheck::Right { .. }));
            match self.commit(set).await? {
                WriteOutcome::Applied if right_code => {
                    self.metrics.token_issued(input.kind.as_str());
                    self.hot.put_token(record.clone());
                    return Ok(MintedCardToken {
                        token: minted.token,
                        expires_at_ms: record.expires_at_ms,
                        record,
                    });
                }
                // The card changed since it was read: decide again on a fresh read.
                WriteOutcome::Stale(_) => self.hot.forget_card(card_id),
                refused => {
                    let check = match &step_up {
                        Some(s) => self.step_up_refused(s, refused).await?,
                        None => return Err(unexpected(&refused)),
                    };
                    return Err(ServiceError::Mfa(check));
                }
            }
        }
        Err(ServiceError::Conflict(
            "the card changed concurrently; try again".into(),
        ))
    }

    /// Reads the MFA session presented for `person` and checks the code, counting nothing yet:
    /// what the request may do is decided when its write set commits (see
    /// [`Service::stepped_up`]). A session that is not the cardholder's, or that its stored
    /// state already says cannot check a code, is refused without looking at the code.
    async fn step_up(
        &self,
        principal: &Principal,
        person: &PersonId,
        session_id: &str,
        code: &str,
    ) -> Result<StepUp, ServiceError> {
        let tenant_id = &principal.client.tenant_id;
        let actor = principal.actor();
        let refuse = |check: MfaCheck, subject: String| async move {
            self.audit_refusal(
                Some(tenant_id),
                actor,
                "mfa.verify",
                mfa_code(check),
                subject,
            )
            .await;
            ServiceError::Mfa(check)
        };
        let Ok(sid) = MfaSessionId::parse(session_id) else {
            return Err(ServiceError::Mfa(MfaCheck::NotApplicable));
        };
        let session = match self
            .read(self.store.get_mfa_session(&sid, self.env()))
            .await?
        {
            Some(s) if &s.tenant_id == tenant_id => s,
            _ => return Err(refuse(MfaCheck::NotApplicable, format!("person:{person}")).await),
        };
        let now = self.now_ms();
        if let Err(check) = mfa::usable(&session, person, self.env(), now) {
            return Err(refuse(check, format!("mfa_session:{sid}")).await);
        }
        let totp_secret = if session.channel == Channel::Totp {
            self.person_totp_secret(tenant_id, person).await?
        } else {
            None
        };
        let check = mfa::check_code(
            &session,
            code,
            totp_secret.as_deref().map(|v| &v[..]),
            &self.code_key,
            now,
        );
        let lockout = self.snapshot().tenant(tenant_id)?.settings.mfa_lockout;
        Ok(StepUp {
            session,
            check,
            lockout,
            actor: principal.actor(),
        })
    }

    /// What a wrong code does: it counts one attempt of the session and one failure of the
    /// cardholder, if both may still check a code, and nothing else.
    fn wrong_code(&self, s: &StepUp, now: i64) -> WriteSet {
        let session = &s.session;
        WriteSet::guarded(
            vec![
                Guard::MfaPersonAttempt {
                    tenant: session.tenant_id.clone(),
                    person: session.person_id,
                    now_ms: now,
                    lockout: s.lockout,
                },
                Guard::MfaAttempt {
                    id: session.id,
                    now_ms: now,
                    consume: false,
                },
            ],
            vec![self.audit(
                Some(&session.tenant_id),
                s.actor.clone(),
                "mfa.verify",
                "wrong_code",
                format!("mfa_session:{}", session.id),
                json!({}),
            )],
            vec![],
        )
    }

    /// `mint` as a stepped-up request: with a right code it applies only if the session and
    /// the cardholder may check a code, the TOTP step was not used before, and the session is
    /// consumed; otherwise — a wrong code, or a right one that lost a race — it does exactly
    /// what a wrong code does, so no answer tells a right code apart.
    fn stepped_up(&self, s: &StepUp, mint: WriteSet, now: i64) -> WriteSet {
        let wrong = self.wrong_code(s, now);
        let CodeCheck::Right { totp_step } = s.check else {
            return wrong;
        };
        let session = &s.session;
        let mut guards = vec![Guard::MfaPersonAttempt {
            tenant: session.tenant_id.clone(),
            person: session.person_id,
            now_ms: now,
            lockout: s.lockout,
        }];
        if let Some(step) = totp_step {
            guards.push(Guard::TotpStep {
                tenant: session.tenant_id.clone(),
                person: session.person_id,
                step,
            });
        }
        guards.push(Guard::MfaAttempt {
            id: session.id,
            now_ms: now,
            consume: true,
        });
        let mut writes = mint.writes;
        writes.push(Write::MfaPersonPassed {
            tenant: session.tenant_id.clone(),
            person: session.person_id,
        });
        WriteSet::guarded(guards, writes, vec![]).or_else(wrong)
    }

    /// Why a stepped-up request was refused: from what its wrong-code set did (the set itself,
    /// or the fallback of a right code), and the session's state read afterwards.
    async fn step_up_refused(
        &self,
        s: &StepUp,
        outcome: WriteOutcome,
    ) -> Result<MfaCheck, ServiceError> {
        let wrong = match (s.check, outcome) {
            (
                CodeCheck::Right { .. },
                WriteOutcome::Refused {
                    fallback: Some(f), ..
                },
            ) => *f,
            (CodeCheck::Wrong, o) => o,
            (_, o) => return Err(unexpected(&o)),
        };
        let session = &s.session;
        let now = self.now_ms();
        let check = match wrong {
            // The code was checked (and was wrong; its audit event went with the count): the
            // session may have checked its last.
            WriteOutcome::Applied => {
                self.note_lockout(s, now).await;
                return Ok(
                    match self.store.get_mfa_session(&session.id, self.env()).await? {
                        Some(fresh) if fresh.attempts >= mfa::MAX_ATTEMPTS => MfaCheck::Locked,
                        _ => MfaCheck::WrongCode,
                    },
                );
            }
            WriteOutcome::Refused {
                by: GuardKind::MfaPersonAttempt,
                ..
            } => MfaCheck::PersonLocked,
            WriteOutcome::Refused {
                by: GuardKind::MfaAttempt,
                ..
            } => match self.store.get_mfa_session(&session.id, self.env()).await? {
                Some(fresh) => mfa::state(&fresh, now).err().unwrap_or(MfaCheck::Locked),
                None => MfaCheck::NotApplicable,
            },
            other => return Err(unexpected(&other)),
        };
        self.audit_refusal(
            Some(&session.tenant_id),
            s.actor.clone(),
            "mfa.verify",
            mfa_code(check),
            format!("mfa_session:{}", session.id),
        )
        .await;
        Ok(check)
    }

    /// Audits the moment a cardholder's failures reach the tenant's threshold.
    async fn note_lockout(&self, s: &StepUp, now: i64) {
        let (tenant, person) = (&s.session.tenant_id, &s.session.person_id);
        match self.store.get_mfa_person(tenant, person).await {
            Ok(Some(state))
                if state.locked_until_ms > now
                    && state.failures == i64::from(s.lockout.max_failures) =>
            {
                let event = self.audit(
                    Some(tenant),
                    s.actor.clone(),
                    "mfa.person_locked_out",
                    "ok",
                    format!("person:{person}"),
                    json!({"failures": state.failures, "locked_until_ms": state.locked_until_ms}),
                );
                if let Err(e) = self.commit(WriteSet::of(vec![event])).await {
                    tracing::error!(error = %e, "could not record a lockout in the audit log");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not read a cardholder's step-up failures"),
        }
    }

    async fn person_totp_secret(
        &self,
        tenant: &TenantId,
        person: &PersonId,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ServiceError> {
        let Some(p) = self
            .read(self.store.get_person(tenant, self.env(), person))
            .await?
        else {
            return Ok(None);
        };
        self.ensure_data_key(tenant, p.key_version).await?;
        let Some(enc) = &p.totp_secret_enc else {
            return Ok(None);
        };
        let snap = self.snapshot();
        let key = snap.keys.data_key(tenant, p.key_version)?;
        Ok(Some(
            key.open(totp_aad(tenant, person, p.key_version).as_bytes(), enc)
                .map_err(ServiceError::crypto)?,
        ))
    }

    /// Starts an MFA session for a person: TOTP, or a code sent through the tenant's webhook.
    pub async fn start_mfa_session(
        self: &Arc<Self>,
        principal: &Principal,
        person_id: &PersonId,
        channel: Channel,
    ) -> Result<MfaSession, ServiceError> {
        let tenant_id = principal.client.tenant_id.clone();
        let actor = principal.actor();
        let subject = format!("person:{person_id}");
        let card_scopes = [
            scope::CARDS_READ_ANY,
            scope::CARDS_READ_OWN,
            scope::CARDS_WIDGETS,
        ];
        if !card_scopes.iter().any(|s| principal.scopes.contains(s)) {
            self.audit_refusal(
                Some(&tenant_id),
                actor,
                "mfa.start",
                "insufficient_scope",
                subject,
            )
            .await;
            return Err(ServiceError::Forbidden(
                "starting MFA needs a card scope".into(),
            ));
        }
        self.check_rate(principal.client.id.as_str(), &tenant_id)?;
        if principal
            .client
            .settings
            .person_id
            .is_some_and(|p| &p != person_id)
        {
            self.audit_refusal(
                Some(&tenant_id),
                actor,
                "mfa.start",
                "not_own_person",
                subject,
            )
            .await;
            return Err(ServiceError::NotFound("person"));
        }
        let Some(person) = self
            .read(self.store.get_person(&tenant_id, self.env(), person_id))
            .await?
        else {
            self.audit_refusal(
                Some(&tenant_id),
                actor,
                "mfa.start",
                "person_not_found",
                subject,
            )
            .await;
            return Err(ServiceError::NotFound("person"));
        };
        let snap = self.snapshot();
        let tenant = snap.tenant(&tenant_id)?.clone();
        let destination = match channel {
            Channel::Totp if person.totp_secret_enc.is_none() => {
                return Err(ServiceError::BadRequest(
                    "the person has no TOTP authenticator enrolled".into(),
                ))
            }
            Channel::Totp => None,
            Channel::Sms => match (&person.profile.isd_code, &person.profile.mobile_number) {
                (Some(i), Some(m)) => Some(format!("+{i}{m}")),
                _ => {
                    return Err(ServiceError::BadRequest(
                        "the person has no mobile number".into(),
                    ))
                }
            },
            Channel::Email => match &person.profile.email {
                Some(e) => Some(e.clone()),
                None => {
                    return Err(ServiceError::BadRequest(
                        "the person has no email address".into(),
                    ))
                }
            },
        };
        let webhook = match destination {
            Some(_) => Some(self.usable_webhook(&tenant, &actor, &subject).await?),
            None => None,
        };
        let now = self.now_ms();
        let id = MfaSessionId::new_random();
        let code = match channel {
            Channel::Totp => None,
            _ => Some(Zeroizing::new(
                mfa::new_code().map_err(ServiceError::crypto)?,
            )),
        };
        let session = MfaSession {
            id,
            tenant_id: tenant_id.clone(),
            person_id: *person_id,
            environment: self.env(),
            channel,
            code_hash: code
                .as_ref()
                .map(|c| mfa::code_hash(&self.code_key, &id, c)),
            attempts: 0,
            created_at_ms: now,
            expires_at_ms: now + mfa::SESSION_TTL_SECONDS * 1000,
            consumed: false,
        };
        let audit = self.audit(
            Some(&tenant_id),
            actor,
            "mfa.session_started",
            "ok",
            subject,
            json!({"channel": channel.as_str(), "session": id.to_string()}),
        );
        self.commit(WriteSet::of(vec![
            Write::InsertMfaSession(session.clone()),
            audit,
        ]))
        .await?;
        if let (Some(code), Some(destination), Some(webhook)) = (code, destination, webhook) {
            self.send_mfa_code(&tenant, &session, &destination, code, webhook);
        }
        Ok(session)
    }

    /// The record of a presented card token, without using it.
    pub async fn peek_card_token(&self, token: &str) -> Result<CardTokenRecord, ServiceError> {
        self.find_card_token(token)
            .await?
            .filter(|r| {
                r.environment == self.env()
                    && self.issuer_allows(
                        r.client_id.as_str(),
                        r.tenant_id.as_str(),
                        r.issued_at_ms,
                    )
            })
            .ok_or(ServiceError::Auth(super::AuthFailure::InvalidToken))
    }

    /// What a redemption needs: the token, its card and the cardholder's name — remembered
    /// ones unless `fresh`, else read in one query (and remembered). `None`: no such token here.
    async fn redemption_context(
        &self,
        presented: &PresentedToken,
        fresh: bool,
    ) -> Result<Option<RedemptionView>, ServiceError> {
        let usable = |t: &CardTokenRecord| {
            t.environment == self.env()
                && presented.matches(&t.hash)
                && self.issuer_allows(t.client_id.as_str(), t.tenant_id.as_str(), t.issued_at_ms)
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
    async fn unknown_card_token(&self, card_id: &CardId, op: Operation) -> ServiceError {
        self.audit_refusal(
            None,
            "anonymous",
            &format!("card_token.redeem.{}", op.as_str()),
            "unknown_token",
            format!("card:{card_id}"),
        )
        .await;
        ServiceError::Auth(super::AuthFailure::InvalidToken)
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

    /// Redeems a card token for `op` on `card_id`, doing the operation in the same commit.
    pub async fn redeem(
        &self,
        token: &str,
        card_id: &CardId,
        op: Operation,
        new_pin: Option<Pin>,
    ) -> Result<(CardTokenRecord, Redeemed), ServiceError> {
        let Some(presented) = PresentedToken::parse(token, CARD_TOKEN_PREFIX) else {
            return Err(self.unknown_card_token(card_id, op).await);
        };
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
            let now = self.now_ms();
            let outcome = decide_redemption(&record, card_id, op, self.env(), now);
            if outcome != Redemption::Granted {
                self.audit_refusal(
                    Some(&tenant_id),
                    actor,
                    &format!("card_token.redeem.{}", op.as_str()),
                    redemption_code(&outcome),
                    subject,
                )
                .await;
                return Err(ServiceError::Redemption(outcome));
            }
            // The token covers `card_id` (checked above), so the joined card is the one asked for.
            let card = card.ok_or(ServiceError::NotFound("card"))?;
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
                    None => return Err(ServiceError::NotFound("PIN")),
                },
                Operation::SetPin => {
                    let pin = new_pin
                        .clone()
                        .ok_or_else(|| ServiceError::BadRequest("pin is required".into()))?;
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
            .with_preconditions(vec![Self::card_is(&card)]);
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
                    return Err(ServiceError::Redemption(
                        if outcome == Redemption::Granted {
                            Redemption::AlreadyUsed
                        } else {
                            outcome
                        },
                    ));
                }
                taken @ WriteOutcome::Taken(_) => return Err(unexpected(&taken)),
                WriteOutcome::Refused { .. } => {
                    self.hot.forget_card(card_id);
                    return Err(ServiceError::Conflict(match op {
                        Operation::Activate => "the card is no longer inactive".into(),
                        _ => "the card changed concurrently; try again".into(),
                    }));
                }
            }
        }
        Err(ServiceError::Conflict(
            "the card changed concurrently; try again".into(),
        ))
    }
}

pub fn refusal_code(r: &cardgate_core::cards::MintRefusal) -> &'static str {
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

pub fn mfa_code(c: MfaCheck) -> &'static str {
    match c {
        MfaCheck::PersonLocked => "person_locked",
        MfaCheck::WrongCode => "wrong_code",
        MfaCheck::Expired => "session_expired",
        MfaCheck::Locked => "session_locked",
        MfaCheck::AlreadyUsed => "session_used",
        MfaCheck::NotApplicable => "session_invalid",
    }
}
