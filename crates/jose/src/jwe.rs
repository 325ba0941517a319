//! Compact JWE (RFC 7516): `ECDH-ES+A256KW`/`A256GCM` to a recipient's P-256 key
//! (RFC 7518 §4.6), and `dir`/`A256GCM` under a shared 256-bit key (RFC 7518 §4.5).

use crate::aead::AeadKey;
use crate::digest::{random, sha256};
use crate::{b64, jwk::EcPublicJwk, JoseError, Result};
use aes_kw::KekAes256;
use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
use ring::rand::SystemRandom;
use serde_json::{json, Value};
use zeroize::Zeroizing;

/// Concat KDF of RFC 7518 §4.6.2 (NIST SP 800-56A) for a 256-bit output.
fn concat_kdf(z: &[u8], alg: &str) -> [u8; 32] {
    let mut input = Vec::with_capacity(4 + z.len() + 4 + alg.len() + 12);
    input.extend_from_slice(&1u32.to_be_bytes());
    input.extend_from_slice(z);
    input.extend_from_slice(&(alg.len() as u32).to_be_bytes());
    input.extend_from_slice(alg.as_bytes());
    input.extend_from_slice(&0u32.to_be_bytes()); // PartyUInfo: empty
    input.extend_from_slice(&0u32.to_be_bytes()); // PartyVInfo: empty
    input.extend_from_slice(&256u32.to_be_bytes()); // SuppPubInfo: key length in bits
    sha256(&input)
}

/// Encrypts `plaintext` so that only the holder of `recipient`'s private key can read it.
pub fn encrypt_ecdh_es_a256kw(recipient: &EcPublicJwk, plaintext: &[u8]) -> Result<String> {
    const ALG: &str = "ECDH-ES+A256KW";
    let rng = SystemRandom::new();
    let ephemeral =
        EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| JoseError::Crypto)?;
    let epk_point = ephemeral
        .compute_public_key()
        .map_err(|_| JoseError::Crypto)?;
    let epk = EcPublicJwk::from_point(epk_point.as_ref())?;
    let peer = UnparsedPublicKey::new(&ECDH_P256, recipient.point()?);
    let kek = agree_ephemeral(ephemeral, &peer, |z| Zeroizing::new(concat_kdf(z, ALG)))
        .map_err(|_| JoseError::Malformed("recipient key is not a valid P-256 point"))?;

    let cek = AeadKey::generate()?;
    let mut wrapped = [0u8; 40];
    KekAes256::from(*kek)
        .wrap(cek.bytes(), &mut wrapped)
        .map_err(|_| JoseError::Crypto)?;

    let mut header = json!({
        "alg": ALG,
        "enc": "A256GCM",
        "epk": {"kty": "EC", "crv": "P-256", "x": epk.x, "y": epk.y},
    });
    if let Some(kid) = &recipient.kid {
        header["kid"] = Value::String(kid.clone());
    }
    seal_compact(&header, &b64::encode(&wrapped), &cek, plaintext)
}

/// Encrypts `plaintext` under a shared key (`alg: dir`, `enc: A256GCM`).
pub fn encrypt_dir(key: &AeadKey, plaintext: &[u8]) -> Result<String> {
    seal_compact(&json!({"alg": "dir", "enc": "A256GCM"}), "", key, plaintext)
}

fn seal_compact(
    header: &Value,
    encrypted_key: &str,
    cek: &AeadKey,
    plaintext: &[u8],
) -> Result<String> {
    let protected = b64::encode(&serde_json::to_vec(header).map_err(|_| JoseError::Crypto)?);
    let iv = random::<12>()?;
    let (ciphertext, tag) = cek.seal_detached(iv, protected.as_bytes(), plaintext)?;
    Ok(format!(
        "{protected}.{encrypted_key}.{}.{}.{}",
        b64::encode(&iv),
        b64::encode(&ciphertext),
        b64::encode(&tag)
    ))
}

/// Decrypts a compact `dir`/`A256GCM` JWE under a shared key.
pub fn decrypt_dir(key: &AeadKey, compact: &str) -> Result<Zeroizing<Vec<u8>>> {
    let parts: Vec<&str> = compact.trim().split('.').collect();
    let [protected, encrypted_key, iv, ciphertext, tag] = parts[..] else {
        return Err(JoseError::Malformed("not a compact JWE"));
    };
    let header: Value = serde_json::from_slice(&b64::decode(protected)?)
        .map_err(|_| JoseError::Malformed("JWE header is not JSON"))?;
    if header.get("alg").and_then(Value::as_str) != Some("dir")
        || header.get("enc").and_then(Value::as_str) != Some("A256GCM")
        || header.get("zip").is_some()
        || !encrypted_key.is_empty()
    {
        return Err(JoseError::Unsupported(
            "only alg dir with enc A256GCM".into(),
        ));
    }
    key.open_detached(
        &b64::decode(iv)?,
        protected.as_bytes(),
        &b64::decode(ciphertext)?,
        &b64::decode(tag)?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_round_trips_and_rejects_a_foreign_key() -> Result<()> {
        let key = AeadKey::generate()?;
        let jwe = encrypt_dir(&key, b"{\"a\":1}")?;
        assert_eq!(&decrypt_dir(&key, &jwe)?[..], b"{\"a\":1}");
        assert_eq!(
            decrypt_dir(&AeadKey::generate()?, &jwe),
            Err(JoseError::Decrypt)
        );
        Ok(())
    }

    #[test]
    fn ecdh_es_output_has_five_parts_and_an_ephemeral_key() -> Result<()> {
        let recipient = crate::es256::SigningKey::generate()?.public_jwk()?;
        let jwe = encrypt_ecdh_es_a256kw(&recipient, b"secret")?;
        let parts: Vec<&str> = jwe.split('.').collect();
        assert_eq!(parts.len(), 5);
        let header: Value =
            serde_json::from_slice(&b64::decode(parts[0])?).map_err(|_| JoseError::Crypto)?;
        assert_eq!(header["alg"], "ECDH-ES+A256KW");
        assert_eq!(b64::decode(parts[1])?.len(), 40);
        Ok(())
    }
}
