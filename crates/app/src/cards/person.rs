//! Person tokens (Treasury Prime's UX Toolkit token, SPEC §4.4): a DPoP-bound JWT whose
//! subject is a cardholder. It opens that person's own cards — and no one else's — for every
//! operation the tenant does not ask step-up for (`mfa_required_for` still applies: those
//! operations need a card token minted with step-up), until it expires, each use with a fresh
//! proof of its key. It is stored like a card token (no card, the person), so revocation,
//! introspection and the single redemption path serve it; the JWT's `jti` is its id.

use super::{CardTokens, MintedCardToken};
use crate::access::token_ref;
use crate::{AppError, Denial, Entity, Principal};
use cardgate_core::scope::PERSONS_UXT;
use cardgate_core::secret::Secret;
use cardgate_core::tokens::{
    mint_token, AccessClaims, CardTokenRecord, Confirmation, TokenKind, UseLimit,
    CARD_TOKEN_PREFIX, UXT_TOKEN_TTL_SECONDS,
};
use cardgate_core::{Operation, PersonId};
use cardgate_jose::es256::sign_compact;
use cardgate_store::{Write, WriteSet};
use serde_json::json;

impl CardTokens<'_> {
    /// Mints a person token for `person`, bound to the key of thumbprint `cnf_jkt` (whose
    /// proof the caller checked and claimed). The client needs `persons:uxt`; an own-key client
    /// names only its own person; the person must be the tenant's, in this environment.
    pub async fn mint_for_person(
        &self,
        principal: &Principal,
        person: &PersonId,
        cnf_jkt: String,
    ) -> Result<MintedCardToken, AppError> {
        let tenant_id = principal.client.tenant_id.clone();
        let actor = principal.actor();
        let subject = format!("person:{person}");
        let action = "treasuryprime.uxt_token.mint";
        if !principal.scopes.contains(PERSONS_UXT) {
            self.audit_refusal(
                Some(&tenant_id),
                actor,
                action,
                "insufficient_scope",
                subject,
            )
            .await;
            return Err(AppError::Denied(Denial::ScopeMissing(PERSONS_UXT)));
        }
        self.check_rate(principal.client.id.as_str(), &tenant_id)?;
        if principal
            .client
            .settings
            .person_id
            .is_some_and(|own| own != *person)
        {
            self.audit_refusal(Some(&tenant_id), actor, action, "person_mismatch", subject)
                .await;
            return Err(AppError::Denied(Denial::PersonMismatch));
        }
        if self
            .read(self.store.get_person(&tenant_id, self.env(), person))
            .await?
            .is_none()
        {
            self.audit_refusal(Some(&tenant_id), actor, action, "person_not_found", subject)
                .await;
            return Err(AppError::NotFound(Entity::Person));
        }
        let tenant = self.snapshot().tenant(&tenant_id)?.clone();
        let operations: Vec<Operation> = Operation::ALL
            .into_iter()
            .filter(|op| !tenant.requires_mfa(*op))
            .collect();
        let now = self.now_ms();
        let iat = now / 1000;
        let exp = iat + i64::from(UXT_TOKEN_TTL_SECONDS);
        let id = mint_token(CARD_TOKEN_PREFIX, now)?.id;
        let key = self
            .snapshot()
            .keys
            .active
            .clone()
            .ok_or_else(|| AppError::Internal("no signing key".into()))?;
        let ops: Vec<&str> = operations.iter().map(|o| o.as_str()).collect();
        let claims = AccessClaims {
            iss: self.settings.public_url.clone(),
            sub: person.to_string(),
            aud: self.settings.public_url.clone(),
            client_id: principal.client.id.to_string(),
            scope: ops.join(" "),
            iat,
            exp,
            jti: id.to_hex(),
            tid: tenant_id.to_string(),
            env: self.env(),
            knd: TokenKind::TreasuryPrimeUxt.as_str().to_string(),
            cnf: Some(Confirmation {
                jkt: cnf_jkt.clone(),
            }),
        };
        let payload = serde_json::to_vec(&claims).map_err(|e| AppError::Internal(e.to_string()))?;
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid});
        let token = Secret::new(sign_compact(&key, &header, &payload)?);
        let record = CardTokenRecord {
            id,
            hash: token.hash(),
            kind: TokenKind::TreasuryPrimeUxt,
            tenant_id: tenant_id.clone(),
            client_id: principal.client.id.clone(),
            environment: self.env(),
            card_id: None,
            person_id: Some(*person),
            operations,
            issued_at_ms: iat * 1000,
            expires_at_ms: exp * 1000,
            use_limit: UseLimit::UntilExpiry,
            uses_made: 0,
            revoked: false,
            cnf_jkt: Some(cnf_jkt),
        };
        let details = json!({
            "kind": TokenKind::TreasuryPrimeUxt.as_str(), "operations": ops,
            "token_ref": token_ref(&record.id), "ttl_seconds": UXT_TOKEN_TTL_SECONDS, "dpop": true,
        });
        self.commit(WriteSet::of(vec![
            Write::InsertCardToken(record.clone()),
            self.audit(
                Some(&tenant_id),
                actor,
                "card_token.minted",
                "ok",
                subject,
                details,
            ),
        ]))
        .await?;
        self.metrics
            .token_issued(TokenKind::TreasuryPrimeUxt.as_str());
        Ok(MintedCardToken {
            token,
            expires_at_ms: record.expires_at_ms,
            record,
        })
    }
}
