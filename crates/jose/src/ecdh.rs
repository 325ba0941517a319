//! Static-key P-256 ECDH for JWE `ECDH-ES` (RFC 7518 §4.6) on RustCrypto's `p256`: ring
//! offers only ephemeral agreement, and BankEzy's `serverPubKey` is a long-lived key whose
//! private half must open every card-data JWE it made. Also the direct check that a presented
//! public key is a point of the curve (SEC 1 §3.2.2.1), without running an agreement.

use crate::aead::AeadKey;
use crate::digest::{random, sha256};
use crate::{b64, jwk::EcPublicJwk, JoseError, Result};
use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
use p256::{EncodedPoint, PublicKey, SecretKey};
use serde_json::json;
use zeroize::Zeroizing;

/// A P-256 key pair kept for agreements. Debug hides the private half.
#[derive(Clone)]
pub struct StaticKey {
    secret: SecretKey,
    public: EcPublicJwk,
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticKey")
            .field("x", &self.public.x)
            .finish_non_exhaustive()
    }
}

impl StaticKey {
    /// A fresh key from the OS generator (a scalar outside `1..n` is drawn again).
    pub fn generate() -> Result<Self> {
        for _ in 0..8 {
            let bytes = Zeroizing::new(random::<32>()?);
            if let Ok(k) = Self::from_bytes(&bytes[..]) {
                return Ok(k);
            }
        }
        Err(JoseError::Crypto)
    }

    /// The key whose private scalar is `bytes` (32 bytes, big-endian).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let secret = SecretKey::from_slice(bytes)
            .map_err(|_| JoseError::Malformed("not a P-256 private key"))?;
        let point = secret.public_key().to_encoded_point(false);
        let public = EcPublicJwk::from_point(point.as_bytes())?;
        Ok(Self { secret, public })
    }

    /// The private scalar, for sealing under the master key.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.secret.to_bytes().to_vec())
    }

    /// The public half as a JWK (`kty`, `crv`, `x`, `y` only).
    pub fn public_jwk(&self) -> &EcPublicJwk {
        &self.public
    }

    /// The shared secret `Z` with `peer` (RFC 7518 §4.6.2): one scalar multiplication.
    fn agree(&self, peer: &ValidPublicKey) -> Zeroizing<[u8; 32]> {
        let shared =
            p256::ecdh::diffie_hellman(self.secret.to_nonzero_scalar(), peer.0.as_affine());
        let mut z = Zeroizing::new([0u8; 32]);
        z.copy_from_slice(shared.raw_secret_bytes().as_slice());
        z
    }
}

/// A public key known to be a point of P-256 other than the identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidPublicKey(PublicKey);

impl ValidPublicKey {
    /// Checks a JWK's coordinates directly: each 32 bytes, below the field prime, and
    /// satisfying the curve equation (`p256` decodes the affine point and refuses it
    /// otherwise). No agreement is run.
    pub fn from_jwk(jwk: &EcPublicJwk) -> Result<Self> {
        if jwk.kty != "EC" || jwk.crv != "P-256" {
            return Err(JoseError::Unsupported(format!("{} {}", jwk.kty, jwk.crv)));
        }
        let point = jwk.point()?;
        let encoded = EncodedPoint::from_bytes(&point)
            .map_err(|_| JoseError::Malformed("not an uncompressed P-256 point"))?;
        Option::from(PublicKey::from_encoded_point(&encoded))
            .map(Self)
            .ok_or(JoseError::Malformed("not a point on the P-256 curve"))
    }
}

/// Concat KDF (RFC 7518 §4.6.2, NIST SP 800-56A §5.8.1) for direct key agreement: the
/// algorithm id is the `enc` value, the output 256 bits.
fn concat_kdf(z: &[u8], enc: &str, apu: &[u8], apv: &[u8]) -> Zeroizing<[u8; 32]> {
    let mut input = Zeroizing::new(Vec::with_capacity(
        4 + 32 + 4 + enc.len() + 8 + apu.len() + apv.len() + 4,
    ));
    input.extend_from_slice(&1u32.to_be_bytes());
    input.extend_from_slice(z);
    for part in [enc.as_bytes(), apu, apv] {
        input.extend_from_slice(&(part.len() as u32).to_be_bytes());
        input.extend_from_slice(part);
    }
    input.extend_from_slice(&256u32.to_be_bytes());
    Zeroizing::new(sha256(&input))
}

/// The shared secret `Z` of a static key and one peer, with the sender's public key: kept to
/// encrypt every message to that peer with one agreement for all (both keys are static, so
/// `Z` never changes; each message still gets its own content key from a fresh `apu`).
/// Debug shows nothing; `Z` is wiped when dropped.
pub struct Agreement {
    z: Zeroizing<[u8; 32]>,
    sender: EcPublicJwk,
}

impl std::fmt::Debug for Agreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agreement").finish_non_exhaustive()
    }
}

impl StaticKey {
    /// Runs the agreement with `peer` once, for [`encrypt_agreed`].
    pub fn agreement(&self, peer: &ValidPublicKey) -> Agreement {
        Agreement {
            z: self.agree(peer),
            sender: self.public.clone(),
        }
    }
}

/// Encrypts `plaintext` to `recipient` as a compact JWE with `alg: ECDH-ES` (direct key
/// agreement) and `enc: A256GCM`, agreeing with `sender`'s static key: the header's `epk` is
/// the sender's public key, so only the recipient's private key (with it) opens the JWE, and
/// the recipient can check that it came from the holder of `sender`. A fresh random `apu`
/// (PartyUInfo) makes every message's content key different although both keys are static.
pub fn encrypt_static(
    sender: &StaticKey,
    kid: &str,
    recipient: &ValidPublicKey,
    plaintext: &[u8],
) -> Result<String> {
    encrypt_agreed(&sender.agreement(recipient), kid, plaintext)
}

/// [`encrypt_static`] with an agreement already run (no scalar multiplication).
pub fn encrypt_agreed(agreement: &Agreement, kid: &str, plaintext: &[u8]) -> Result<String> {
    const ENC: &str = "A256GCM";
    let apu = random::<32>()?;
    let cek = AeadKey::from_bytes(&concat_kdf(&agreement.z[..], ENC, &apu, b"")[..])?;
    let p = &agreement.sender;
    let header = json!({
        "alg": "ECDH-ES",
        "enc": ENC,
        "kid": kid,
        "apu": b64::encode(&apu),
        "epk": {"kty": "EC", "crv": "P-256", "x": p.x, "y": p.y},
    });
    let protected = b64::encode(&serde_json::to_vec(&header).map_err(|_| JoseError::Crypto)?);
    let iv = random::<12>()?;
    let (ciphertext, tag) = cek.seal_detached(iv, protected.as_bytes(), plaintext)?;
    Ok(format!(
        "{protected}..{}.{}.{}",
        b64::encode(&iv),
        b64::encode(&ciphertext),
        b64::encode(&tag)
    ))
}

/// One agreement and nothing else, for the benchmark's primitive figure.
pub fn agree_once(sender: &StaticKey, peer: &ValidPublicKey) -> [u8; 1] {
    [sender.agree(peer)[0]]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Opens what [`encrypt_static`] made, as the recipient would: `Z` from its own private
    /// key and the header's `epk`.
    fn open(recipient: &StaticKey, jwe: &str) -> Result<Vec<u8>> {
        let parts: Vec<&str> = jwe.split('.').collect();
        let header: serde_json::Value =
            serde_json::from_slice(&b64::decode(parts[0])?).map_err(|_| JoseError::Crypto)?;
        let epk: EcPublicJwk =
            serde_json::from_value(header["epk"].clone()).map_err(|_| JoseError::Crypto)?;
        let apu = b64::decode(header["apu"].as_str().unwrap_or(""))?;
        let z = recipient.agree(&ValidPublicKey::from_jwk(&epk)?);
        let cek = AeadKey::from_bytes(&concat_kdf(&z[..], "A256GCM", &apu, b"")[..])?;
        let plain = cek.open_detached(
            &b64::decode(parts[2])?,
            parts[0].as_bytes(),
            &b64::decode(parts[3])?,
            &b64::decode(parts[4])?,
        )?;
        Ok(plain.to_vec())
    }

    #[test]
    fn a_static_key_jwe_opens_with_the_recipients_key_only() -> Result<()> {
        let server = StaticKey::generate()?;
        let sdk = StaticKey::generate()?;
        let sdk_public = ValidPublicKey::from_jwk(sdk.public_jwk())?;
        let a = encrypt_static(&server, "k1", &sdk_public, b"{\"pan\":\"4111\"}")?;
        let b = encrypt_static(&server, "k1", &sdk_public, b"{\"pan\":\"4111\"}")?;
        assert_ne!(a, b, "a fresh apu and IV every time");
        assert_eq!(open(&sdk, &a)?, b"{\"pan\":\"4111\"}");
        assert_eq!(open(&StaticKey::generate()?, &a), Err(JoseError::Decrypt));
        // The key survives sealing as its scalar.
        let again = StaticKey::from_bytes(&server.to_bytes())?;
        assert_eq!(again.public_jwk(), server.public_jwk());
        Ok(())
    }

    #[test]
    fn one_agreement_serves_many_messages_each_with_its_own_content_key() -> Result<()> {
        let server = StaticKey::generate()?;
        let sdk = StaticKey::generate()?;
        let agreement = server.agreement(&ValidPublicKey::from_jwk(sdk.public_jwk())?);
        let a = encrypt_agreed(&agreement, "k1", b"first")?;
        let b = encrypt_agreed(&agreement, "k1", b"second")?;
        let apu = |jwe: &str| -> Result<String> {
            let header: serde_json::Value =
                serde_json::from_slice(&b64::decode(jwe.split('.').next().unwrap_or(""))?)
                    .map_err(|_| JoseError::Crypto)?;
            Ok(header["apu"].as_str().unwrap_or("").to_string())
        };
        assert_ne!(apu(&a)?, apu(&b)?, "a fresh apu per message");
        assert_eq!(open(&sdk, &a)?, b"first");
        assert_eq!(open(&sdk, &b)?, b"second");
        assert_eq!(open(&StaticKey::generate()?, &b), Err(JoseError::Decrypt));
        Ok(())
    }

    #[test]
    fn a_point_off_the_curve_is_refused_without_an_agreement() -> Result<()> {
        let good = StaticKey::generate()?.public_jwk().clone();
        assert!(ValidPublicKey::from_jwk(&good).is_ok());
        let mut y = b64::decode(&good.y)?;
        y[31] ^= 1;
        let bad = EcPublicJwk {
            y: b64::encode(&y),
            ..good.clone()
        };
        assert_eq!(
            ValidPublicKey::from_jwk(&bad),
            Err(JoseError::Malformed("not a point on the P-256 curve"))
        );
        // Coordinates at or above the field prime are not field elements.
        let big = EcPublicJwk {
            x: b64::encode(&[0xff; 32]),
            ..good.clone()
        };
        assert!(ValidPublicKey::from_jwk(&big).is_err());
        let short = EcPublicJwk {
            x: b64::encode(&[1; 31]),
            ..good
        };
        assert!(ValidPublicKey::from_jwk(&short).is_err());
        Ok(())
    }
}
