//! The master key and what it wraps: per-tenant, per-environment data keys (the vault) and
//! the ES256 signing keys. Rotated signing keys stay published until every token they signed has expired.

use super::ServiceError;
use cardgate_core::audit::AuditKey;
use cardgate_core::tokens::MAX_SIGNED_TOKEN_TTL_SECONDS;
use cardgate_core::{Environment, TenantId};
use cardgate_jose::aead::AeadKey;
use cardgate_jose::digest::{hex, hmac_sha256};
use cardgate_jose::es256::{SigningKey, VerifyingKey};
use cardgate_jose::jwk::EcPublicJwk;
use cardgate_store::{DataKeyRow, SigningKeyRow};
use std::collections::HashMap;
use std::sync::Arc;

/// The root key. Never stored in the database; only its check value is.
#[derive(Clone, Debug)]
pub struct MasterKey(AeadKey);

impl MasterKey {
    /// Parses base64 (standard or url-safe) of exactly 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bytes = cardgate_jose::b64::decode_std(t)
            .or_else(|_| cardgate_jose::b64::decode(t.trim_end_matches('=')))
            .map_err(|_| "the master key must be base64 of 32 bytes".to_string())?;
        AeadKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| "the master key must be base64 of 32 bytes".to_string())
    }

    pub fn generate() -> Result<Self, ServiceError> {
        Ok(Self(AeadKey::generate().map_err(ServiceError::crypto)?))
    }

    pub fn to_base64(&self) -> String {
        cardgate_jose::b64::encode_std(self.0.bytes())
    }

    /// A value stored in the database to recognise a wrong master key at start.
    pub fn check_value(&self) -> String {
        hex(&hmac_sha256(
            self.0.bytes(),
            b"cardgate master key check v1",
        ))
    }

    /// A key derived for one purpose (HMAC-SHA256 as a PRF).
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        hmac_sha256(self.0.bytes(), purpose.as_bytes())
    }

    /// The key every audit link is made with: only a holder of the master key can write (or
    /// rewrite) a chain that `audit verify` accepts.
    pub fn audit_key(&self) -> AuditKey {
        AuditKey::new(&zeroize::Zeroizing::new(
            self.derive("cardgate audit chain key v1"),
        ))
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>, ServiceError> {
        self.0
            .seal(aad.as_bytes(), plaintext)
            .map_err(ServiceError::crypto)
    }

    pub fn open(
        &self,
        aad: &str,
        sealed: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ServiceError> {
        self.0
            .open(aad.as_bytes(), sealed)
            .map_err(ServiceError::crypto)
    }
}

pub fn data_key_aad(tenant: &TenantId, version: i64) -> String {
    format!("cardgate:data-key:{tenant}:{version}")
}

pub fn signing_key_aad(kid: &str) -> String {
    format!("cardgate:signing-key:{kid}")
}

/// Every key the running service holds, unwrapped, for one environment (its signing keys and
/// every tenant's data keys of that environment).
#[derive(Default)]
pub struct KeyRing {
    pub active: Option<Arc<SigningKey>>,
    /// Keys whose tokens may still be alive, by kid.
    pub verifying: HashMap<String, VerifyingKey>,
    pub published: Vec<EcPublicJwk>,
    pub data_keys: HashMap<(TenantId, i64), AeadKey>,
    pub current_data_key: HashMap<TenantId, i64>,
}

impl KeyRing {
    pub fn build(
        master: &MasterKey,
        env: Environment,
        signing: &[SigningKeyRow],
        data: &[DataKeyRow],
        now_ms: i64,
    ) -> Result<Self, ServiceError> {
        let mut ring = KeyRing::default();
        let mut newest: Option<(i64, &SigningKeyRow)> = None;
        for row in signing.iter().filter(|r| r.environment == env) {
            let alive = row
                .retired_at_ms
                .is_none_or(|r| r + MAX_SIGNED_TOKEN_TTL_SECONDS * 1000 > now_ms);
            if !alive {
                continue;
            }
            let jwk: EcPublicJwk = serde_json::from_str(&row.public_jwk)
                .map_err(|_| ServiceError::Internal("stored signing key is corrupt".into()))?;
            ring.verifying.insert(
                row.kid.clone(),
                VerifyingKey::from_jwk(&jwk).map_err(ServiceError::crypto)?,
            );
            ring.published.push(jwk);
            if row.retired_at_ms.is_none() && newest.is_none_or(|(t, _)| row.created_at_ms >= t) {
                newest = Some((row.created_at_ms, row));
            }
        }
        if let Some((_, row)) = newest {
            let pkcs8 = master.open(&signing_key_aad(&row.kid), &row.private_enc)?;
            ring.active = Some(Arc::new(
                SigningKey::from_pkcs8(&row.kid, &pkcs8).map_err(ServiceError::crypto)?,
            ));
        }
        for row in data.iter().filter(|r| r.environment == env) {
            let key = master.open(&data_key_aad(&row.tenant_id, row.version), &row.key_enc)?;
            ring.data_keys.insert(
                (row.tenant_id.clone(), row.version),
                AeadKey::from_bytes(&key).map_err(ServiceError::crypto)?,
            );
            let cur = ring
                .current_data_key
                .entry(row.tenant_id.clone())
                .or_insert(row.version);
            *cur = (*cur).max(row.version);
        }
        Ok(ring)
    }

    pub fn data_key(&self, tenant: &TenantId, version: i64) -> Result<&AeadKey, ServiceError> {
        self.data_keys
            .get(&(tenant.clone(), version))
            .ok_or_else(|| {
                ServiceError::Internal(format!("data key {version} of tenant {tenant} is missing"))
            })
    }

    pub fn current_data_key(&self, tenant: &TenantId) -> Result<(i64, &AeadKey), ServiceError> {
        let v = *self
            .current_data_key
            .get(tenant)
            .ok_or_else(|| ServiceError::Internal(format!("tenant {tenant} has no data key")))?;
        Ok((v, self.data_key(tenant, v)?))
    }
}

/// A fresh signing key, sealed for storage.
pub fn new_signing_key_row(
    master: &MasterKey,
    env: Environment,
    now_ms: i64,
) -> Result<SigningKeyRow, ServiceError> {
    let key = SigningKey::generate().map_err(ServiceError::crypto)?;
    let jwk = key.public_jwk().map_err(ServiceError::crypto)?;
    Ok(SigningKeyRow {
        kid: key.kid.clone(),
        environment: env,
        private_enc: master.seal(&signing_key_aad(&key.kid), key.pkcs8())?,
        public_jwk: serde_json::to_string(&jwk)
            .map_err(|e| ServiceError::Internal(e.to_string()))?,
        created_at_ms: now_ms,
        retired_at_ms: None,
    })
}

/// A fresh data key version for a tenant in one environment, sealed for storage. (Its
/// associated data names no environment: each environment's rows are unwrapped on their own.)
pub fn new_data_key_row(
    master: &MasterKey,
    tenant: &TenantId,
    env: Environment,
    version: i64,
    now_ms: i64,
) -> Result<DataKeyRow, ServiceError> {
    let key = AeadKey::generate().map_err(ServiceError::crypto)?;
    Ok(DataKeyRow {
        tenant_id: tenant.clone(),
        environment: env,
        version,
        key_enc: master.seal(&data_key_aad(tenant, version), key.bytes())?,
        created_at_ms: now_ms,
    })
}
