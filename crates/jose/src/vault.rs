//! The vault's keys: the master key (never stored), the per-tenant data keys it wraps, which
//! seal card data and TOTP secrets, and the ES256 signing keys it wraps. Each sealed value is
//! an AES-256-GCM envelope whose associated data names what it is (see [`aad`]), so an
//! envelope copied onto another row does not open. Rotated signing keys stay in the ring (and
//! published) until every token they signed has expired.

use crate::aead::AeadKey;
use crate::digest::{hex, hmac_sha256};
use crate::es256::{SigningKey, VerifyingKey};
use crate::jwk::EcPublicJwk;
use crate::{JoseError, Result};
use std::collections::HashMap;
use std::sync::Arc;
use zeroize::Zeroizing;

/// The associated data of every sealed value: what it is and whose.
pub mod aad {
    pub fn data_key(tenant: &str, version: i64) -> String {
        format!("cardgate:data-key:{tenant}:{version}")
    }

    pub fn signing_key(kid: &str) -> String {
        format!("cardgate:signing-key:{kid}")
    }

    pub fn card(tenant: &str, card: &str, version: i64) -> String {
        format!("cardgate:card:{tenant}:{card}:{version}")
    }

    pub fn totp(tenant: &str, person: &str, version: i64) -> String {
        format!("cardgate:totp:{tenant}:{person}:{version}")
    }

    pub fn webhook_secret(tenant: &str) -> String {
        format!("cardgate:webhook-secret:{tenant}")
    }

    pub fn payload_key(client: &str) -> String {
        format!("cardgate:payload-key:{client}")
    }
}

/// The root key. Never stored in the database; only its check value is.
#[derive(Clone, Debug)]
pub struct MasterKey(AeadKey);

impl MasterKey {
    /// Parses base64 (standard or url-safe) of exactly 32 bytes.
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let t = text.trim();
        let bytes = crate::b64::decode_std(t)
            .or_else(|_| crate::b64::decode(t.trim_end_matches('=')))
            .map_err(|_| "the master key must be base64 of 32 bytes".to_string())?;
        AeadKey::from_bytes(&bytes)
            .map(Self)
            .map_err(|_| "the master key must be base64 of 32 bytes".to_string())
    }

    pub fn generate() -> Result<Self> {
        Ok(Self(AeadKey::generate()?))
    }

    pub fn to_base64(&self) -> String {
        crate::b64::encode_std(self.0.bytes())
    }

    /// A value stored in the database to recognise a wrong master key at start.
    pub fn check_value(&self) -> String {
        hex(&hmac_sha256(
            self.0.bytes(),
            b"cardgate master key check v1",
        ))
    }

    /// A key derived for one purpose (HMAC-SHA256 as a PRF).
    pub fn derive(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(hmac_sha256(self.0.bytes(), purpose.as_bytes()))
    }

    pub fn seal(&self, aad: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        self.0.seal(aad.as_bytes(), plaintext)
    }

    pub fn open(&self, aad: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        self.0.open(aad.as_bytes(), sealed)
    }
}

/// A signing key as stored: the private half sealed under the master key.
pub struct SealedSigningKey<'a> {
    pub kid: &'a str,
    pub private_enc: &'a [u8],
    pub public_jwk: &'a str,
    pub created_at_ms: i64,
    pub retired_at_ms: Option<i64>,
}

/// A tenant's data key version as stored, sealed under the master key.
pub struct SealedDataKey<'a> {
    pub tenant: &'a str,
    pub version: i64,
    pub key_enc: &'a [u8],
}

/// A fresh signing key, sealed for storage: `(kid, private_enc, public JWK as JSON)`.
pub fn new_signing_key(master: &MasterKey) -> Result<(String, Vec<u8>, String)> {
    let key = SigningKey::generate()?;
    let jwk = serde_json::to_string(&key.public_jwk()?)
        .map_err(|_| JoseError::Malformed("public JWK"))?;
    let sealed = master.seal(&aad::signing_key(&key.kid), key.pkcs8())?;
    Ok((key.kid.clone(), sealed, jwk))
}

/// A fresh data key version for `tenant`, sealed for storage.
pub fn new_data_key(master: &MasterKey, tenant: &str, version: i64) -> Result<Vec<u8>> {
    let key = AeadKey::generate()?;
    master.seal(&aad::data_key(tenant, version), key.bytes())
}

/// Every key a running instance holds, unwrapped: its environment's signing keys and every
/// tenant's data keys of that environment.
#[derive(Default)]
pub struct KeyRing {
    pub active: Option<Arc<SigningKey>>,
    /// Keys whose tokens may still be alive, by kid.
    pub verifying: HashMap<String, VerifyingKey>,
    pub published: Vec<EcPublicJwk>,
    data_keys: HashMap<(String, i64), AeadKey>,
    current_data_key: HashMap<String, i64>,
}

impl KeyRing {
    /// Unwraps the keys: signing keys retired more than `max_token_ttl_ms` ago are dropped
    /// (no token they signed is alive); the newest unretired one signs.
    pub fn build(
        master: &MasterKey,
        signing: &[SealedSigningKey<'_>],
        data: &[SealedDataKey<'_>],
        now_ms: i64,
        max_token_ttl_ms: i64,
    ) -> Result<Self> {
        let mut ring = KeyRing::default();
        let mut newest: Option<&SealedSigningKey<'_>> = None;
        for row in signing {
            if row
                .retired_at_ms
                .is_some_and(|r| r + max_token_ttl_ms <= now_ms)
            {
                continue;
            }
            let jwk: EcPublicJwk = serde_json::from_str(row.public_jwk)
                .map_err(|_| JoseError::Malformed("stored signing key"))?;
            ring.verifying
                .insert(row.kid.to_string(), VerifyingKey::from_jwk(&jwk)?);
            ring.published.push(jwk);
            if row.retired_at_ms.is_none()
                && newest.is_none_or(|n| row.created_at_ms >= n.created_at_ms)
            {
                newest = Some(row);
            }
        }
        if let Some(row) = newest {
            let pkcs8 = master.open(&aad::signing_key(row.kid), row.private_enc)?;
            ring.active = Some(Arc::new(SigningKey::from_pkcs8(row.kid, &pkcs8)?));
        }
        for row in data {
            let key = master.open(&aad::data_key(row.tenant, row.version), row.key_enc)?;
            ring.data_keys.insert(
                (row.tenant.to_string(), row.version),
                AeadKey::from_bytes(&key)?,
            );
            let cur = ring
                .current_data_key
                .entry(row.tenant.to_string())
                .or_insert(row.version);
            *cur = (*cur).max(row.version);
        }
        Ok(ring)
    }

    /// Data key `version` of `tenant`, if this ring holds it.
    pub fn data_key(&self, tenant: &str, version: i64) -> Option<&AeadKey> {
        self.data_keys.get(&(tenant.to_string(), version))
    }

    /// The version new values of `tenant` are sealed with, and its key.
    pub fn current_data_key(&self, tenant: &str) -> Option<(i64, &AeadKey)> {
        let v = *self.current_data_key.get(tenant)?;
        Some((v, self.data_key(tenant, v)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_unwraps_what_the_master_key_sealed_and_nothing_else() -> Result<()> {
        let master = MasterKey::generate()?;
        let (kid, private_enc, jwk) = new_signing_key(&master)?;
        let data_enc = new_data_key(&master, "acme", 1)?;
        let signing = [SealedSigningKey {
            kid: &kid,
            private_enc: &private_enc,
            public_jwk: &jwk,
            created_at_ms: 0,
            retired_at_ms: None,
        }];
        let data = [SealedDataKey {
            tenant: "acme",
            version: 1,
            key_enc: &data_enc,
        }];
        let ring = KeyRing::build(&master, &signing, &data, 10, 3_600_000)?;
        assert_eq!(
            ring.active.as_ref().map(|k| k.kid.clone()),
            Some(kid.clone())
        );
        assert_eq!(ring.current_data_key("acme").map(|(v, _)| v), Some(1));
        assert!(ring.data_key("other", 1).is_none());
        // A data key row moved onto another tenant does not open.
        let moved = [SealedDataKey {
            tenant: "other",
            version: 1,
            key_enc: &data_enc,
        }];
        assert!(KeyRing::build(&master, &[], &moved, 10, 3_600_000).is_err());
        // Nor does anything under another master key.
        assert!(KeyRing::build(&MasterKey::generate()?, &signing, &[], 10, 3_600_000).is_err());
        Ok(())
    }
}
