//! ES256 (RFC 7518 §3.4) signing and verification keys.

use crate::{b64, jwk::EcPublicJwk, JoseError, Result};
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, KeyPair, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED,
    ECDSA_P256_SHA256_FIXED_SIGNING,
};
use zeroize::Zeroizing;

/// An ES256 private key with its key id. Debug hides the key.
pub struct SigningKey {
    pub kid: String,
    pair: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new random key; its kid is its JWK thumbprint.
    pub fn generate() -> Result<Self> {
        let rng = SystemRandom::new();
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| JoseError::Crypto)?;
        let mut key = Self::from_pkcs8("", doc.as_ref())?;
        key.kid = key.public_jwk()?.thumbprint();
        Ok(key)
    }

    pub fn from_pkcs8(kid: &str, pkcs8: &[u8]) -> Result<Self> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &rng)
            .map_err(|_| JoseError::Malformed("not a P-256 PKCS#8 key"))?;
        Ok(Self {
            kid: kid.to_string(),
            pair,
            pkcs8: Zeroizing::new(pkcs8.to_vec()),
            rng,
        })
    }

    pub fn pkcs8(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half as a JWK carrying `kid`, `use: sig` and `alg: ES256`.
    pub fn public_jwk(&self) -> Result<EcPublicJwk> {
        let mut jwk = EcPublicJwk::from_point(self.pair.public_key().as_ref())?;
        if !self.kid.is_empty() {
            jwk.kid = Some(self.kid.clone());
        }
        jwk.use_ = Some("sig".into());
        jwk.alg = Some("ES256".into());
        Ok(jwk)
    }

    /// Signs `message`, returning the 64-byte `r || s` signature.
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>> {
        let sig = self
            .pair
            .sign(&self.rng, message)
            .map_err(|_| JoseError::Crypto)?;
        Ok(sig.as_ref().to_vec())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            kid: self.kid.clone(),
            point: self.pair.public_key().as_ref().to_vec(),
        }
    }
}

/// An ES256 public key.
#[derive(Debug, Clone)]
pub struct VerifyingKey {
    pub kid: String,
    point: Vec<u8>,
}

impl VerifyingKey {
    pub fn from_jwk(jwk: &EcPublicJwk) -> Result<Self> {
        Ok(Self {
            kid: jwk.kid.clone().unwrap_or_default(),
            point: jwk.point()?,
        })
    }

    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point)
            .verify(message, signature)
            .map_err(|_| JoseError::BadSignature)
    }

    pub fn jwk(&self) -> Result<EcPublicJwk> {
        let mut jwk = EcPublicJwk::from_point(&self.point)?;
        jwk.kid = Some(self.kid.clone());
        jwk.use_ = Some("sig".into());
        jwk.alg = Some("ES256".into());
        Ok(jwk)
    }
}

/// Signs a compact JWS (RFC 7515 §7.1) over `header` and `payload` JSON.
pub fn sign_compact(
    key: &SigningKey,
    header: &serde_json::Value,
    payload: &[u8],
) -> Result<String> {
    let header = serde_json::to_vec(header).map_err(|_| JoseError::Malformed("header"))?;
    let mut out = String::with_capacity(64 + payload.len() * 4 / 3 + 100);
    out.push_str(&b64::encode(&header));
    out.push('.');
    out.push_str(&b64::encode(payload));
    let sig = key.sign(out.as_bytes())?;
    out.push('.');
    out.push_str(&b64::encode(&sig));
    Ok(out)
}
