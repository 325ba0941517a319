//! Compact JWTs (RFC 7519) signed with ES256: parsing without trust, then verification.

use crate::{b64, es256::VerifyingKey, JoseError, Result};
use serde_json::Value;

/// A compact JWS split into its parts, header and claims parsed but not yet trusted.
#[derive(Debug)]
pub struct UnverifiedJwt<'a> {
    pub header: Value,
    pub claims: Value,
    signing_input: &'a str,
    signature: Vec<u8>,
}

impl<'a> UnverifiedJwt<'a> {
    pub fn parse(token: &'a str) -> Result<Self> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JoseError::Malformed("not a compact JWS"));
        };
        let header: Value = serde_json::from_slice(&b64::decode(h)?)
            .map_err(|_| JoseError::Malformed("header is not JSON"))?;
        let claims: Value = serde_json::from_slice(&b64::decode(p)?)
            .map_err(|_| JoseError::Malformed("payload is not JSON"))?;
        if !header.is_object() || !claims.is_object() {
            return Err(JoseError::Malformed("header and payload must be objects"));
        }
        let signing_input = &token[..h.len() + 1 + p.len()];
        Ok(Self {
            header,
            claims,
            signing_input,
            signature: b64::decode(s)?,
        })
    }

    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    pub fn kid(&self) -> Option<&str> {
        self.header.get("kid").and_then(Value::as_str)
    }

    /// Verifies the ES256 signature; refuses any other `alg`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<()> {
        if self.alg() != Some("ES256") {
            return Err(JoseError::Unsupported(
                self.alg().unwrap_or("none").to_string(),
            ));
        }
        key.verify(self.signing_input.as_bytes(), &self.signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::es256::{sign_compact, SigningKey};

    #[test]
    fn a_signed_token_verifies_and_a_tampered_one_does_not() -> Result<()> {
        let key = SigningKey::generate()?;
        let token = sign_compact(
            &key,
            &serde_json::json!({"alg":"ES256","kid":key.kid}),
            br#"{"sub":"a"}"#,
        )?;
        let jwt = UnverifiedJwt::parse(&token)?;
        jwt.verify(&key.verifying_key())?;
        assert_eq!(jwt.claims["sub"], "a");
        let forged = format!(
            "{}.{}.{}",
            token.split('.').next().unwrap_or(""),
            b64::encode(br#"{"sub":"b"}"#),
            token.rsplit('.').next().unwrap_or("")
        );
        assert_eq!(
            UnverifiedJwt::parse(&forged)?.verify(&key.verifying_key()),
            Err(JoseError::BadSignature)
        );
        Ok(())
    }
}
