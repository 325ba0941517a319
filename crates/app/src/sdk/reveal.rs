//! The SDK's calls: its SDK API key and its token (read afresh from the store on every call,
//! so an invalidation holds at once on every replica) open the token's account; the SDK lists
//! its cards (masked) and reveals one, the card data encrypted to the SDK's key as a compact
//! JWE (`ECDH-ES`, `A256GCM`) made with the tenant's static server key.

use super::{SdkError, SdkRefusal, SdkTokens};
use crate::access::token_ref;
use crate::AppError;
use cardgate_core::cards::check_card_state;
use cardgate_core::sdk::{SdkTokenRecord, SdkTokenUse, SDK_TOKEN_PREFIX};
use cardgate_core::secret::SecretHash;
use cardgate_core::tokens::PresentedToken;
use cardgate_core::{CardId, Client, Operation};
use cardgate_jose::ecdh::{encrypt_agreed, ValidPublicKey};
use cardgate_jose::jwk::EcPublicJwk;
use cardgate_store::WriteSet;
use serde::Serialize;
use serde_json::json;
use std::sync::Arc;

/// An SDK whose key and token were accepted.
pub struct SdkSession {
    pub client: Arc<Client>,
    pub token: SdkTokenRecord,
}

/// How many SDK tokens' agreements are kept at most; past it the expired ones go, and if none
/// has expired, all of them (each is run again on its token's next reveal).
const MAX_AGREEMENTS: usize = 10_000;

/// Each live SDK token's key agreement (its server key and its `sdkPublicKey` never change),
/// so a token's reveals cost one scalar multiplication in all, not one each. In memory only,
/// per replica; an entry goes when its token has expired.
#[derive(Default)]
pub struct Agreements(std::sync::Mutex<std::collections::HashMap<AgreementKey, Agreed>>);

type AgreementKey = (cardgate_core::tokens::TokenId, i64);
type Agreed = (i64, Arc<cardgate_jose::ecdh::Agreement>);

impl Agreements {
    fn map(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<AgreementKey, Agreed>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get(
        &self,
        t: &SdkTokenRecord,
        now_ms: i64,
    ) -> Option<Arc<cardgate_jose::ecdh::Agreement>> {
        self.map()
            .get(&(t.id, t.server_key_version))
            .filter(|(expires, _)| *expires > now_ms)
            .map(|(_, a)| a.clone())
    }

    pub(crate) fn put(
        &self,
        t: &SdkTokenRecord,
        agreement: Arc<cardgate_jose::ecdh::Agreement>,
        now_ms: i64,
    ) {
        let mut map = self.map();
        if map.len() >= MAX_AGREEMENTS {
            map.retain(|_, (expires, _)| *expires > now_ms);
            if map.len() >= MAX_AGREEMENTS {
                map.clear();
            }
        }
        map.insert((t.id, t.server_key_version), (t.expires_at_ms, agreement));
    }
}

/// A card as the SDK's list shows it: no card data but the last four digits.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MaskedCard {
    pub card_id: String,
    pub masked_pan: String,
    pub last4: String,
    pub status: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CardDetails<'a> {
    card_id: String,
    pan: &'a str,
    cvv: &'a str,
    expiry_month: u8,
    expiry_year: u16,
    cardholder_name: String,
}

impl SdkTokens<'_> {
    /// Accepts an SDK's `X-API-KEY` (the client's SDK API key) and `X-API-TOKEN`. A token of
    /// another client or environment, or none at all, is [`SdkRefusal::TokenUnknown`].
    pub async fn session(&self, sdk_api_key: &str, token: &str) -> Result<SdkSession, SdkError> {
        let snap = self.snapshot();
        let client = snap
            .by_sdk_api_key
            .get(&SecretHash::of(sdk_api_key.as_bytes()))
            .filter(|c| c.environment == self.env())
            .cloned();
        let Some(client) = client else {
            self.audit_refusal(None, "anonymous", "bankezy.sdk", "invalid_client", "sdk")
                .await;
            return Err(AppError::Auth(crate::AuthFailure::InvalidClient).into());
        };
        if client.disabled {
            return Err(AppError::Auth(crate::AuthFailure::Disabled).into());
        }
        let unknown = || SdkError::Refused(SdkRefusal::TokenUnknown);
        let presented = PresentedToken::parse(token, SDK_TOKEN_PREFIX).ok_or_else(unknown)?;
        let record = self
            .read(self.store.get_sdk_token(&presented.id, self.env()))
            .await?
            .filter(|t| {
                presented.matches(&t.hash)
                    && t.client_id == client.id
                    && t.environment == self.env()
                    && self.directory().issuer_allows(
                        t.client_id.as_str(),
                        t.tenant_id.as_str(),
                        t.issued_at_ms,
                    )
            });
        let Some(record) = record else {
            self.audit_refusal(
                Some(&client.tenant_id),
                format!("client:{}", client.id),
                "bankezy.sdk",
                "unknown_token",
                "sdk",
            )
            .await;
            return Err(unknown());
        };
        let refusal = match record.usable(self.now_ms()) {
            SdkTokenUse::Usable => None,
            SdkTokenUse::Expired => Some(SdkRefusal::TokenExpired),
            SdkTokenUse::Invalidated => Some(SdkRefusal::TokenInvalidated),
        };
        if let Some(r) = refusal {
            self.audit_refusal(
                Some(&record.tenant_id),
                format!("token:{}", token_ref(&record.id)),
                "bankezy.sdk",
                super::refusal_code(r),
                format!("account:{}", record.account_id),
            )
            .await;
            return Err(r.into());
        }
        Ok(SdkSession {
            client,
            token: record,
        })
    }

    /// The cards of the session's account, masked.
    pub async fn list_cards(&self, session: &SdkSession) -> Result<Vec<MaskedCard>, SdkError> {
        let t = &session.token;
        let cards = self
            .read(
                self.store
                    .list_account_cards(&t.tenant_id, self.env(), &t.account_id),
            )
            .await?;
        Ok(cards
            .into_iter()
            .map(|c| MaskedCard {
                card_id: c.id.to_string(),
                masked_pan: format!("************{}", c.last4),
                last4: c.last4.clone(),
                status: c.status.as_str(),
            })
            .collect())
    }

    /// One card of the session's account, its data as a compact JWE only the SDK's private
    /// key opens. The reveal is audited (durably) before the answer leaves.
    pub async fn reveal(&self, session: &SdkSession, card_id: &CardId) -> Result<String, SdkError> {
        let t = &session.token;
        let actor = format!("token:{}", token_ref(&t.id));
        let subject = format!("card:{card_id}");
        let card = self
            .read(self.store.get_card(&t.tenant_id, self.env(), card_id))
            .await?
            .filter(|c| c.account_id == t.account_id);
        let step_up = self
            .snapshot()
            .tenant(&t.tenant_id)?
            .requires_mfa(Operation::ViewCard);
        let refusal = match &card {
            _ if step_up => Some(SdkRefusal::MfaRequired),
            None => Some(SdkRefusal::CardNotInAccount),
            Some(c) if check_card_state(c, &[Operation::ViewCard]).is_err() => {
                Some(SdkRefusal::CardState)
            }
            Some(_) => None,
        };
        let (Some(card), None) = (card, refusal) else {
            let r = refusal.unwrap_or(SdkRefusal::CardNotInAccount);
            self.audit_refusal(
                Some(&t.tenant_id),
                actor,
                "bankezy.sdk.reveal",
                super::refusal_code(r),
                subject,
            )
            .await;
            return Err(r.into());
        };
        self.ensure_data_key(&t.tenant_id, card.key_version).await?;
        let secrets = self.open_card(&card)?;
        let holder = self
            .read(
                self.store
                    .get_person(&t.tenant_id, self.env(), &card.person_id),
            )
            .await?
            .map(|p| format!("{} {}", p.profile.first_name, p.profile.last_name))
            .unwrap_or_default();
        let details = zeroize::Zeroizing::new(
            serde_json::to_vec(&CardDetails {
                card_id: card.id.to_string(),
                pan: &secrets.pan,
                cvv: &secrets.cvv,
                expiry_month: secrets.expiry_month,
                expiry_year: secrets.expiry_year,
                cardholder_name: holder,
            })
            .map_err(|e| AppError::Internal(e.to_string()))?,
        );
        let server_key = self.server_key(&t.tenant_id, t.server_key_version).await?;
        let agreement = match self.sdk_agreements.get(t, self.now_ms()) {
            Some(a) => a,
            None => {
                let sdk_jwk: EcPublicJwk = serde_json::from_str(&t.sdk_public_jwk)
                    .map_err(|_| AppError::Internal("stored SDK key is corrupt".into()))?;
                let sdk_key = ValidPublicKey::from_jwk(&sdk_jwk)?;
                let a = Arc::new(server_key.key.agreement(&sdk_key));
                self.sdk_agreements.put(t, a.clone(), self.now_ms());
                a
            }
        };
        let jwe = encrypt_agreed(&agreement, &server_key.kid, &details)?;
        let audit = self.audit(
            Some(&t.tenant_id),
            actor,
            "bankezy.sdk.revealed",
            "ok",
            subject,
            json!({"token_ref": token_ref(&t.id), "server_key_version": t.server_key_version}),
        );
        self.commit(WriteSet::of(vec![audit])).await?;
        Ok(jwe)
    }
}
