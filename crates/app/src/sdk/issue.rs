//! Issuing and invalidating SDK tokens. A `referenceId` is claimed once per client (the
//! store's claim-once guard) together with the token's insert: an exact retry is answered
//! with the first answer (kept sealed under the tenant's data key), another request with the
//! same `referenceId` is refused, and nothing partial is ever written.

use super::{SdkError, SdkRefusal, SdkTokens};
use crate::access::token_ref;
use crate::{AppError, Principal};
use cardgate_core::scope::SDK_TOKEN;
use cardgate_core::sdk::{
    SdkTokenRecord, DEFAULT_SDK_TOKEN_TTL_SECONDS, REFERENCE_ID_HOLD_MS, SDK_TOKEN_PREFIX,
};
use cardgate_core::secret::Secret;
use cardgate_core::tokens::mint_token;
use cardgate_core::TenantId;
use cardgate_jose::aead::AeadKey;
use cardgate_jose::ecdh::ValidPublicKey;
use cardgate_jose::jwk::EcPublicJwk;
use cardgate_store::{ClaimKey, Guard, StoredClaim, Write, WriteOutcome, WriteSet};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;

/// A token request as BankEzy's fields carry it, each field already well-formed
/// (`cardgate_core::sdk`); what it names is checked here.
#[derive(Serialize)]
pub struct SdkTokenRequest {
    pub reference_id: String,
    pub sdk_public_key: EcPublicJwk,
    #[serde(skip)]
    pub sdk_api_key: Secret,
    pub account_number: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub isd_code: Option<String>,
    pub mobile_number: Option<String>,
    pub dob: Option<String>,
    pub data: BTreeMap<String, String>,
}

/// A token issued (or the first answer to the same request, on a retry).
#[derive(Serialize, Deserialize)]
pub struct IssuedSdkToken {
    pub reference_id: String,
    pub server_pub_key: String,
    pub token: String,
    pub expire_at_ms: i64,
}

impl std::fmt::Debug for IssuedSdkToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IssuedSdkToken(***)")
    }
}

const CLAIMS: &str = "bankezy.reference_id";

/// The reference key of a client's `referenceId` in an environment: the claim's key, and how
/// invalidation finds the token.
fn reference_key(principal: &Principal, env: &str, reference_id: &str) -> ClaimKey {
    ClaimKey::of(&[
        principal.client.id.as_str().as_bytes(),
        env.as_bytes(),
        reference_id.as_bytes(),
    ])
}

fn answer_aad(tenant: &TenantId, key: &ClaimKey, version: i64) -> String {
    format!(
        "cardgate:bankezy-answer:{tenant}:{}:{version}",
        cardgate_jose::digest::hex(&key.0)
    )
}

impl SdkTokens<'_> {
    /// The payload key requests of `principal` are encrypted with.
    pub fn payload_key(&self, principal: &Principal) -> Result<AeadKey, SdkError> {
        self.snapshot()
            .sdk
            .payload_key(principal.client.id.as_str())
            .cloned()
            .ok_or(SdkError::Refused(SdkRefusal::NoPayloadKey))
    }

    /// Refuses (and audits) a BankEzy request of `principal`.
    pub(super) async fn refuse(
        &self,
        principal: &Principal,
        action: &str,
        refusal: SdkRefusal,
    ) -> SdkError {
        self.audit_refusal(
            Some(&principal.client.tenant_id),
            principal.actor(),
            action,
            super::refusal_code(refusal),
            principal.actor(),
        )
        .await;
        SdkError::Refused(refusal)
    }

    fn check_scope(&self, principal: &Principal) -> Result<(), SdkRefusal> {
        principal
            .scopes
            .contains(SDK_TOKEN)
            .then_some(())
            .ok_or(SdkRefusal::ScopeMissing)
    }

    /// Why `principal` may not have an SDK token for `account`, if it may not.
    fn account_refusal(
        &self,
        principal: &Principal,
        account: &cardgate_core::Account,
    ) -> Result<Option<SdkRefusal>, AppError> {
        let client = &principal.client;
        if let Some(person) = client.settings.person_id {
            if !account.person_ids.contains(&person) {
                return Ok(Some(SdkRefusal::UnknownAccount));
            }
        }
        let tenant = self.snapshot().tenant(&client.tenant_id)?.clone();
        Ok(tenant
            .requires_mfa(cardgate_core::Operation::ViewCard)
            .then_some(SdkRefusal::MfaRequired))
    }

    /// Issues an SDK token for the account `request` names.
    pub async fn issue(
        &self,
        principal: &Principal,
        request: SdkTokenRequest,
    ) -> Result<IssuedSdkToken, SdkError> {
        const ACTION: &str = "bankezy.sdk_token.issue";
        let client = &principal.client;
        let tenant = &client.tenant_id;
        let checks = self.check_scope(principal).and_then(|()| {
            client
                .sdk_api_key_hash
                .is_some_and(|h| h.matches(request.sdk_api_key.expose().as_bytes()))
                .then_some(())
                .ok_or(SdkRefusal::SdkApiKeyMismatch)
        });
        let sdk_key = checks.and_then(|()| {
            ValidPublicKey::from_jwk(&request.sdk_public_key).map_err(|_| SdkRefusal::BadPublicKey)
        });
        if let Err(r) = sdk_key {
            return Err(self.refuse(principal, ACTION, r).await);
        }
        self.check_rate(client.id.as_str(), tenant)?;
        let Some(account) = self
            .read(
                self.store
                    .get_account_by_number(tenant, self.env(), &request.account_number),
            )
            .await?
        else {
            return Err(self
                .refuse(principal, ACTION, SdkRefusal::UnknownAccount)
                .await);
        };
        // A client tied to one cardholder reaches that cardholder's accounts only (answered as
        // an unknown account, so another's is not even confirmed to exist), and no SDK token
        // is issued where the program asks step-up for card details.
        if let Some(refusal) = self.account_refusal(principal, &account)? {
            return Err(self.refuse(principal, ACTION, refusal).await);
        }
        let server_key = self.current_server_key(tenant).await?;
        let ttl = self
            .snapshot()
            .tenant(tenant)?
            .settings
            .sdk_token_ttl_seconds
            .unwrap_or(DEFAULT_SDK_TOKEN_TTL_SECONDS);
        let now = self.now_ms();
        let minted = mint_token(SDK_TOKEN_PREFIX, now)?;
        let key = reference_key(principal, self.env().as_str(), &request.reference_id);
        let sdk_public = EcPublicJwk {
            kid: None,
            use_: None,
            alg: None,
            ..request.sdk_public_key.clone()
        };
        let record = SdkTokenRecord {
            id: minted.id,
            hash: minted.hash,
            tenant_id: tenant.clone(),
            client_id: client.id.clone(),
            environment: self.env(),
            reference_key: key.0,
            account_id: account.id.clone(),
            sdk_public_jwk: serde_json::to_string(&sdk_public)
                .map_err(|e| AppError::Internal(e.to_string()))?,
            server_key_version: server_key.version,
            issued_at_ms: now,
            expires_at_ms: now + i64::from(ttl) * 1000,
            revoked: false,
        };
        let issued = IssuedSdkToken {
            reference_id: request.reference_id.clone(),
            server_pub_key: server_key.server_pub_key.clone(),
            token: minted.token.expose().to_string(),
            expire_at_ms: record.expires_at_ms,
        };
        // What makes a retry the same request: every field, the SDK API key as its digest.
        let mut fingerprint_doc =
            serde_json::to_value(&request).map_err(|e| AppError::Internal(e.to_string()))?;
        fingerprint_doc["sdk_api_key"] = json!(request.sdk_api_key.hash().to_hex());
        let fingerprint = cardgate_jose::digest::sha256(fingerprint_doc.to_string().as_bytes());
        let (version, data_key) = self.current_data_key(tenant)?;
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&issued).map_err(|e| AppError::Internal(e.to_string()))?,
        );
        let mut sealed = version.to_be_bytes().to_vec();
        sealed.extend(data_key.seal(answer_aad(tenant, &key, version).as_bytes(), &plain)?);
        let claim = Guard::Claim {
            namespace: CLAIMS,
            key,
            fingerprint: fingerprint.to_vec(),
            value: Some(sealed),
            now_ms: now,
            expires_at_ms: record.expires_at_ms.max(now + REFERENCE_ID_HOLD_MS),
        };
        let details = json!({
            "token_ref": token_ref(&record.id), "account": account.id.as_str(),
            "server_key_version": server_key.version, "ttl_seconds": ttl,
        });
        let audit = self.audit(
            Some(tenant),
            principal.actor(),
            "bankezy.sdk_token.issued",
            "ok",
            format!("account:{}", account.id),
            details,
        );
        let set = WriteSet::guarded(
            vec![claim],
            vec![Write::InsertSdkToken(record), audit],
            vec![],
        );
        match self.commit(set).await? {
            WriteOutcome::Applied => {
                self.metrics.token_issued("bankezy_sdk_token");
                Ok(issued)
            }
            WriteOutcome::Taken(first) if first.fingerprint == fingerprint => {
                Ok(self.first_answer(tenant, &key, &first).await?)
            }
            WriteOutcome::Taken(_) => Err(self
                .refuse(principal, ACTION, SdkRefusal::ReferenceIdReused)
                .await),
            other => Err(crate::cards::unexpected(&other).into()),
        }
    }

    /// The answer the first claimant of a `referenceId` stored, opened.
    async fn first_answer(
        &self,
        tenant: &TenantId,
        key: &ClaimKey,
        first: &StoredClaim,
    ) -> Result<IssuedSdkToken, AppError> {
        let corrupt = || AppError::Internal("stored BankEzy answer is corrupt".into());
        let value = first.value.as_deref().ok_or_else(corrupt)?;
        let (version, sealed) = value.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let version = i64::from_be_bytes(*version);
        self.ensure_data_key(tenant, version).await?;
        let data_key = self.data_key(tenant, version)?;
        let plain = data_key.open(answer_aad(tenant, key, version).as_bytes(), sealed)?;
        serde_json::from_slice(&plain).map_err(|_| corrupt())
    }

    /// Invalidates the token `principal` asked for with `reference_id`, at once for every
    /// replica (each reads the token on every use). Invalidating it again changes nothing.
    pub async fn invalidate(
        &self,
        principal: &Principal,
        reference_id: &str,
    ) -> Result<(), SdkError> {
        const ACTION: &str = "bankezy.sdk_token.invalidate";
        if let Err(r) = self.check_scope(principal) {
            return Err(self.refuse(principal, ACTION, r).await);
        }
        let key = reference_key(principal, self.env().as_str(), reference_id);
        let found = self
            .read(
                self.store
                    .find_sdk_token(&principal.client.id, self.env(), &key.0),
            )
            .await?;
        let Some(token) = found.filter(|t| t.client_id == principal.client.id) else {
            return Err(self
                .refuse(principal, ACTION, SdkRefusal::UnknownReference)
                .await);
        };
        if token.revoked {
            return Ok(());
        }
        let audit = self.audit(
            Some(&token.tenant_id),
            principal.actor(),
            "bankezy.sdk_token.invalidated",
            "ok",
            format!("account:{}", token.account_id),
            json!({"token_ref": token_ref(&token.id)}),
        );
        self.commit(WriteSet::of(vec![
            Write::RevokeSdkToken { id: token.id },
            audit,
        ]))
        .await?;
        Ok(())
    }
}
