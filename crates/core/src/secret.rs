//! Secrets (client secrets, API keys, tokens) and their stored form: a SHA-256 digest,
//! compared in constant time. They are high-entropy, so no password KDF is needed.

use cardgate_jose::digest::{ct_eq, hex, random_token, sha256};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A secret in clear, held only for the moment it is checked or printed once.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(Zeroizing::new(s.into()))
    }

    /// A fresh random secret with a readable prefix, e.g. `cgs_…`.
    pub fn generate(prefix: &str) -> Result<Self, cardgate_jose::JoseError> {
        Ok(Self::new(format!("{prefix}{}", random_token()?)))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> SecretHash {
        SecretHash::of(self.0.as_bytes())
    }
}

/// SHA-256 of a secret: the only form in which secrets and tokens are stored.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SecretHash(pub [u8; 32]);

impl std::fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretHash({}…)", &self.to_hex()[..8])
    }
}

impl SecretHash {
    pub fn of(bytes: &[u8]) -> Self {
        Self(sha256(bytes))
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// Constant-time check of a presented secret against this digest.
    pub fn matches(&self, presented: &[u8]) -> bool {
        ct_eq(&sha256(presented), &self.0)
    }

    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}
