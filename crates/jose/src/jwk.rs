//! Public EC P-256 JWKs (RFC 7517 / RFC 7518 §6.2) and their thumbprints (RFC 7638).

use crate::{b64, digest::sha256, JoseError, Result};
use serde::{Deserialize, Serialize};

/// A public P-256 key as a JWK. Private members (`d`) are rejected on parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EcPublicJwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub y: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
}

impl EcPublicJwk {
    /// Builds a JWK from an uncompressed SEC1 point (`04 || x || y`).
    pub fn from_point(point: &[u8]) -> Result<Self> {
        if point.len() != 65 || point[0] != 4 {
            return Err(JoseError::Malformed("not an uncompressed P-256 point"));
        }
        Ok(Self {
            kty: "EC".into(),
            crv: "P-256".into(),
            x: b64::encode(&point[1..33]),
            y: b64::encode(&point[33..65]),
            kid: None,
            use_: None,
            alg: None,
        })
    }

    /// Parses a JSON value as a public P-256 JWK; refuses private keys and other curves.
    pub fn from_json(value: &serde_json::Value) -> Result<Self> {
        if value.get("d").is_some() {
            return Err(JoseError::Malformed("JWK must not contain a private key"));
        }
        let jwk: Self = serde_json::from_value(value.clone())
            .map_err(|_| JoseError::Malformed("not an EC public JWK"))?;
        if jwk.kty != "EC" || jwk.crv != "P-256" {
            return Err(JoseError::Unsupported(format!("{} {}", jwk.kty, jwk.crv)));
        }
        on_curve(&jwk.point()?)?;
        Ok(jwk)
    }

    /// The uncompressed SEC1 point of this key.
    pub fn point(&self) -> Result<Vec<u8>> {
        let x = b64::decode(&self.x)?;
        let y = b64::decode(&self.y)?;
        if x.len() != 32 || y.len() != 32 {
            return Err(JoseError::Malformed("P-256 coordinates must be 32 bytes"));
        }
        let mut p = Vec::with_capacity(65);
        p.push(4);
        p.extend_from_slice(&x);
        p.extend_from_slice(&y);
        Ok(p)
    }

    /// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
    pub fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
            self.crv, self.kty, self.x, self.y
        );
        b64::encode(&sha256(canonical.as_bytes()))
    }
}

/// Refuses a point that is not on P-256 (ring checks it when agreeing on a secret with it), so
/// a bad key is refused when it is presented, not later when something is encrypted to it.
fn on_curve(point: &[u8]) -> Result<()> {
    use ring::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, ECDH_P256};
    let rng = ring::rand::SystemRandom::new();
    let probe = EphemeralPrivateKey::generate(&ECDH_P256, &rng).map_err(|_| JoseError::Crypto)?;
    agree_ephemeral(probe, &UnparsedPublicKey::new(&ECDH_P256, point), |_| ())
        .map_err(|_| JoseError::Malformed("not a point on the P-256 curve"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc7638_member_order() -> Result<()> {
        // Example key from RFC 7517 appendix A.1 (public part).
        let jwk = EcPublicJwk::from_json(&serde_json::json!({
            "kty":"EC","crv":"P-256",
            "x":"MKBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
            "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"}))?;
        assert_eq!(jwk.thumbprint().len(), 43);
        // The same key with one bit of x flipped is no longer on the curve.
        assert_eq!(
            EcPublicJwk::from_json(&serde_json::json!({
                "kty":"EC","crv":"P-256",
                "x":"MaBCTNIcKUSDii11ySs3526iDZ8AiTo7Tu6KPAqv7D4",
                "y":"4Etl6SRW2YiLUrN5vfvVHuhp7x8PxltmWWlbbM4IFyM"})),
            Err(JoseError::Malformed("not a point on the P-256 curve"))
        );
        assert!(EcPublicJwk::from_json(
            &serde_json::json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA"})
        )
        .is_err());
        Ok(())
    }
}
