//! MFA step-up: sessions (TOTP, or a one-time code delivered by SMS or email through the
//! tenant's webhook, see [`webhook`]) and the step-up of a mint. How many codes are checked is
//! decided by the store's guards in the same commit as the outcome: at most five per session,
//! a TOTP step once per person, and a lockout per cardholder after repeated failures.

mod webhook;

pub use webhook::{Attempt, Courier, SIGNATURE_HEADER};

use crate::cards::unexpected;
use crate::{facade, App, AppError, Denial, Entity, Invalid, Principal};
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::{self, Channel, CodeCheck, Lockout, MfaCheck, MfaSession};
use cardgate_core::scope;
use cardgate_core::{PersonId, TenantId};
use cardgate_store::{ClaimKey, Guard, GuardKind, Write, WriteOutcome, WriteSet};
use serde_json::json;
use zeroize::Zeroizing;

facade!(
    /// MFA step-up: start a session for a cardholder; step a mint up with its code.
    Mfa,
    mfa
);

/// A presented MFA code, checked but not yet counted.
pub(crate) struct StepUp {
    session: MfaSession,
    pub(crate) check: CodeCheck,
    lockout: Lockout,
    actor: String,
}

impl Mfa<'_> {
    /// Starts an MFA session for a person: TOTP, or a code sent through the tenant's webhook.
    pub async fn start_session(
        &self,
        principal: &Principal,
        person_id: &PersonId,
        channel: Channel,
    ) -> Result<MfaSession, AppError> {
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
            return Err(AppError::Denied(Denial::StepUpNeedsCardScope));
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
            return Err(AppError::NotFound(Entity::Person));
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
            return Err(AppError::NotFound(Entity::Person));
        };
        let snap = self.snapshot();
        let tenant = snap.tenant(&tenant_id)?.clone();
        let destination = match channel {
            Channel::Totp if person.totp_secret_enc.is_none() => {
                return Err(AppError::Invalid(Invalid::NoTotp))
            }
            Channel::Totp => None,
            Channel::Sms => match (&person.profile.isd_code, &person.profile.mobile_number) {
                (Some(i), Some(m)) => Some(format!("+{i}{m}")),
                _ => return Err(AppError::Invalid(Invalid::NoMobileNumber)),
            },
            Channel::Email => match &person.profile.email {
                Some(e) => Some(e.clone()),
                None => return Err(AppError::Invalid(Invalid::NoEmail)),
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
            _ => Some(Zeroizing::new(mfa::new_code().map_err(AppError::from)?)),
        };
        let session = MfaSession {
            id,
            tenant_id: tenant_id.clone(),
            person_id: *person_id,
            environment: self.env(),
            channel,
            code_hash: code
                .as_ref()
                .map(|c| mfa::code_hash(&self.code_key[..], &id, c)),
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

    /// Reads the MFA session presented for `person` and checks the code, counting nothing yet:
    /// what the request may do is decided when its write set commits (see
    /// [`Service::stepped_up`]). A session that is not the cardholder's, or that its stored
    /// state already says cannot check a code, is refused without looking at the code.
    pub(crate) async fn step_up(
        &self,
        principal: &Principal,
        person: &PersonId,
        session_id: &str,
        code: &str,
    ) -> Result<StepUp, AppError> {
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
            AppError::Mfa(check)
        };
        let Ok(sid) = MfaSessionId::parse(session_id) else {
            return Err(AppError::Mfa(MfaCheck::NotApplicable));
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
            &self.code_key[..],
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
    pub(crate) fn stepped_up(&self, s: &StepUp, mint: WriteSet, now: i64) -> WriteSet {
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
    pub(crate) async fn step_up_refused(
        &self,
        s: &StepUp,
        outcome: WriteOutcome,
    ) -> Result<MfaCheck, AppError> {
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
                    match self
                        .read(self.store.get_mfa_session(&session.id, self.env()))
                        .await?
                    {
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
            } => match self
                .read(self.store.get_mfa_session(&session.id, self.env()))
                .await?
            {
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
        match self.read(self.store.get_mfa_person(tenant, person)).await {
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
                // Every request that sees the lockout tries; the claim of this lockout (the
                // cardholder and its end) lets exactly one record it, on any replica.
                let once = Guard::Claim {
                    namespace: "mfa.lockout",
                    key: ClaimKey::of(&[
                        tenant.as_str().as_bytes(),
                        person.to_string().as_bytes(),
                        &state.locked_until_ms.to_be_bytes(),
                    ]),
                    fingerprint: Vec::new(),
                    value: None,
                    now_ms: now,
                    expires_at_ms: state.locked_until_ms,
                };
                if let Err(e) = self
                    .commit(WriteSet::guarded(vec![once], vec![event], vec![]))
                    .await
                {
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
    ) -> Result<Option<Zeroizing<Vec<u8>>>, AppError> {
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
        let key = self.data_key(tenant, p.key_version)?;
        Ok(Some(App::open_totp(
            &key,
            p.key_version,
            tenant,
            person,
            enc,
        )?))
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
