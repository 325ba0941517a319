//! AES-256-GCM envelopes: `nonce(12) || ciphertext || tag(16)`, bound to associated data.
//! Used to wrap data keys and signing keys under the master key, and card data under data keys.

use crate::{digest::random, JoseError, Result};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use zeroize::Zeroizing;

/// A 256-bit AES-GCM key. Its bytes are zeroized on drop and never printed.
#[derive(Clone)]
pub struct AeadKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for AeadKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AeadKey(..)")
    }
}

impl AeadKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; 32] = bytes
            .try_into()
            .map_err(|_| JoseError::Malformed("key must be 32 bytes"))?;
        Ok(Self(Zeroizing::new(arr)))
    }

    pub fn generate() -> Result<Self> {
        Ok(Self(Zeroizing::new(random::<32>()?)))
    }

    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn key(&self) -> Result<LessSafeKey> {
        let unbound = UnboundKey::new(&AES_256_GCM, &self.0[..]).map_err(|_| JoseError::Crypto)?;
        Ok(LessSafeKey::new(unbound))
    }

    /// Encrypts with a fresh random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
        let nonce_bytes = random::<NONCE_LEN>()?;
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + 16);
        out.extend_from_slice(&nonce_bytes);
        let mut body = plaintext.to_vec();
        self.key()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad),
                &mut body,
            )
            .map_err(|_| JoseError::Crypto)?;
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts an envelope made by [`AeadKey::seal`] with the same associated data.
    pub fn open(&self, aad: &[u8], envelope: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
        if envelope.len() < NONCE_LEN + 16 {
            return Err(JoseError::Decrypt);
        }
        let (nonce, body) = envelope.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| JoseError::Decrypt)?;
        let mut buf = Zeroizing::new(body.to_vec());
        let len = self
            .key()?
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| JoseError::Decrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }

    /// AES-GCM with a caller-chosen IV, as JWE needs (RFC 7516 §5.1): returns (ciphertext, tag).
    pub fn seal_detached(
        &self,
        iv: [u8; 12],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>)> {
        let mut body = plaintext.to_vec();
        let tag = self
            .key()?
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(aad), &mut body)
            .map_err(|_| JoseError::Crypto)?;
        Ok((body, tag.as_ref().to_vec()))
    }

    /// Inverse of [`AeadKey::seal_detached`].
    pub fn open_detached(
        &self,
        iv: &[u8],
        aad: &[u8],
        ciphertext: &[u8],
        tag: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>> {
        let nonce = Nonce::try_assume_unique_for_key(iv).map_err(|_| JoseError::Decrypt)?;
        let mut buf = Zeroizing::new(Vec::with_capacity(ciphertext.len() + tag.len()));
        buf.extend_from_slice(ciphertext);
        buf.extend_from_slice(tag);
        let len = self
            .key()?
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| JoseError::Decrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_opens_only_with_its_key_and_associated_data() -> Result<()> {
        let key = AeadKey::generate()?;
        let sealed = key.seal(b"card:1", b"4111")?;
        assert_eq!(&key.open(b"card:1", &sealed)?[..], b"4111");
        assert_eq!(key.open(b"card:2", &sealed), Err(JoseError::Decrypt));
        assert_eq!(
            AeadKey::generate()?.open(b"card:1", &sealed),
            Err(JoseError::Decrypt)
        );
        Ok(())
    }
}
