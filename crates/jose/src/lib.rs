//! Cryptography for cardgate: JWS/JWT (ES256), JWE, JWK thumbprints, AES-256-GCM envelopes,
//! HMAC, hashing and randomness — all on `ring`, the fastest option measured on this machine.

#![forbid(unsafe_code)]

pub mod aead;
pub mod b64;
pub mod digest;
pub mod dpop;
pub mod ecdh;
pub mod es256;
pub mod jwe;
pub mod jwk;
pub mod jwt;
pub mod vault;

/// Errors of this crate. They never carry key material or plaintext.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoseError {
    #[error("malformed input: {0}")]
    Malformed(&'static str),
    #[error("signature does not verify")]
    BadSignature,
    #[error("decryption failed")]
    Decrypt,
    #[error("unsupported algorithm: {0}")]
    Unsupported(String),
    #[error("cryptographic operation failed")]
    Crypto,
}

pub type Result<T> = std::result::Result<T, JoseError>;
