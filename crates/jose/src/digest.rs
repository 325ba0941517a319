//! Hashes, HMACs, constant-time comparison and randomness.

use crate::{JoseError, Result};
use ring::rand::{SecureRandom, SystemRandom};
use subtle::ConstantTimeEq;

/// SHA-256 of `data`. Right for high-entropy secrets and tokens (PERF-NOTES: 0.1 µs).
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&k, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

/// An HMAC-SHA256 key prepared once (its padded states computed) for many MACs.
#[derive(Clone)]
pub struct HmacKey(ring::hmac::Key);

impl HmacKey {
    pub fn new(key: &[u8]) -> Self {
        Self(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key))
    }

    /// HMAC-SHA256 of `data`.
    pub fn sign(&self, data: &[u8]) -> [u8; 32] {
        let tag = ring::hmac::sign(&self.0, data);
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }
}

impl std::fmt::Debug for HmacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HmacKey(..)")
    }
}

/// HMAC-SHA1, used only by TOTP (RFC 6238 mandates it for the common authenticator apps).
pub fn hmac_sha1(key: &[u8], data: &[u8]) -> [u8; 20] {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key);
    let tag = ring::hmac::sign(&k, data);
    let mut out = [0u8; 20];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Fills a fresh array with bytes from the OS generator.
pub fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| JoseError::Crypto)?;
    Ok(buf)
}

/// A random token body: 32 bytes, base64url.
pub fn random_token() -> Result<String> {
    Ok(crate::b64::encode(&random::<32>()?))
}

pub fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prepared_hmac_key_gives_rfc_4231_test_case_2() {
        let expected = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        let data = b"what do ya want for nothing?";
        assert_eq!(hex(&HmacKey::new(b"Jefe").sign(data)), expected);
        assert_eq!(hex(&hmac_sha256(b"Jefe", data)), expected);
    }
}
