//! DPoP proofs (RFC 9449 §4): the form of a proof JWT and its signature — `typ`, an
//! asymmetric `alg` matching a public `jwk` with no private members, the required claims — and
//! the key's RFC 7638 thumbprint. What a proof must say about its request (method, URL, time,
//! nonce, `ath`) and whether its `jti` was seen before is the caller's policy.

use crate::{b64, digest::sha256, JoseError, Result};
use ring::signature::{
    RsaPublicKeyComponents, UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED,
    ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
};
use serde_json::{Map, Value};

/// The `alg` values a proof may use (RFC 9449 §4.3 point 5: asymmetric only; never `none`
/// or a MAC), as server metadata lists them.
pub const ALGS: [&str; 5] = ["ES256", "ES384", "EdDSA", "RS256", "PS256"];

/// Proofs longer than this are refused before any parsing.
pub const MAX_PROOF_LEN: usize = 8 * 1024;

/// A proof whose form and signature hold; the request-bound claims are still to be checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The RFC 7638 thumbprint of the proof's `jwk` (what `cnf.jkt` binds).
    pub jkt: String,
    pub alg: &'static str,
    pub htm: String,
    pub htu: String,
    /// Seconds since the epoch.
    pub iat: i64,
    pub jti: String,
    pub ath: Option<String>,
    pub nonce: Option<String>,
}

/// `ath` for `token` (RFC 9449 §4.2): base64url of the SHA-256 of its ASCII.
pub fn ath(token: &str) -> String {
    b64::encode(&sha256(token.as_bytes()))
}

fn bad(reason: &'static str) -> JoseError {
    JoseError::Malformed(reason)
}

fn member<'a>(o: &'a Map<String, Value>, name: &str, missing: &'static str) -> Result<&'a str> {
    o.get(name).and_then(Value::as_str).ok_or(bad(missing))
}

fn bytes(o: &Map<String, Value>, name: &str, missing: &'static str) -> Result<Vec<u8>> {
    b64::decode(member(o, name, missing)?).map_err(|_| bad("a jwk member is not base64url"))
}

/// A JSON string as it appears in a thumbprint's canonical form.
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The public key a proof's `jwk` names, checked against `alg`.
enum PublicKey {
    Ec(
        &'static ring::signature::EcdsaVerificationAlgorithm,
        Vec<u8>,
    ),
    Ed(Vec<u8>),
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
        pss: bool,
    },
}

/// Reads `jwk` for `alg`: the key type and curve `alg` needs, no private member (RFC 9449
/// §4.3 point 7), and its RFC 7638 thumbprint (required members in lexicographic order).
fn public_key(jwk: &Map<String, Value>, alg: &str) -> Result<(PublicKey, String)> {
    const PRIVATE: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "oth"];
    if PRIVATE.iter().any(|m| jwk.contains_key(*m)) || jwk.contains_key("k") {
        return Err(bad("the jwk must be a public key (it has private members)"));
    }
    let kty = member(jwk, "kty", "the jwk has no kty")?;
    match (alg, kty) {
        ("ES256" | "ES384", "EC") => {
            let (crv, algo, len) = if alg == "ES256" {
                ("P-256", &ECDSA_P256_SHA256_FIXED, 32)
            } else {
                ("P-384", &ECDSA_P384_SHA384_FIXED, 48)
            };
            if member(jwk, "crv", "the jwk has no crv")? != crv {
                return Err(bad("the jwk's curve does not match alg"));
            }
            let (x, y) = (
                bytes(jwk, "x", "the jwk has no x")?,
                bytes(jwk, "y", "the jwk has no y")?,
            );
            if x.len() != len || y.len() != len {
                return Err(bad("the jwk's coordinates have the wrong length"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let canonical = format!(
                r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
                quoted(crv),
                quoted(member(jwk, "x", "")?),
                quoted(member(jwk, "y", "")?)
            );
            Ok((
                PublicKey::Ec(algo, point),
                b64::encode(&sha256(canonical.as_bytes())),
            ))
        }
        ("EdDSA", "OKP") => {
            if member(jwk, "crv", "the jwk has no crv")? != "Ed25519" {
                return Err(JoseError::Unsupported("EdDSA curve".into()));
            }
            let x = bytes(jwk, "x", "the jwk has no x")?;
            if x.len() != 32 {
                return Err(bad("the jwk's x has the wrong length"));
            }
            let canonical = format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":{}}}"#,
                quoted(member(jwk, "x", "")?)
            );
            Ok((PublicKey::Ed(x), b64::encode(&sha256(canonical.as_bytes()))))
        }
        ("RS256" | "PS256", "RSA") => {
            let n = bytes(jwk, "n", "the jwk has no n")?;
            let e = bytes(jwk, "e", "the jwk has no e")?;
            let canonical = format!(
                r#"{{"e":{},"kty":"RSA","n":{}}}"#,
                quoted(member(jwk, "e", "")?),
                quoted(member(jwk, "n", "")?)
            );
            Ok((
                PublicKey::Rsa {
                    n,
                    e,
                    pss: alg == "PS256",
                },
                b64::encode(&sha256(canonical.as_bytes())),
            ))
        }
        _ => Err(bad("the jwk's key type does not match alg")),
    }
}

impl PublicKey {
    fn verify(&self, message: &[u8], signature: &[u8]) -> Result<()> {
        let ok = match self {
            Self::Ec(algo, point) => {
                UnparsedPublicKey::new(*algo, point).verify(message, signature)
            }
            Self::Ed(x) => UnparsedPublicKey::new(&ED25519, x).verify(message, signature),
            Self::Rsa { n, e, pss } => {
                let params = if *pss {
                    &RSA_PSS_2048_8192_SHA256
                } else {
                    &RSA_PKCS1_2048_8192_SHA256
                };
                RsaPublicKeyComponents { n, e }.verify(params, message, signature)
            }
        };
        ok.map_err(|_| JoseError::BadSignature)
    }
}

/// Checks a proof's form and signature (RFC 9449 §4.3 points 2–7): one compact JWS; `typ`
/// `dpop+jwt`; an `alg` of [`ALGS`]; a `jwk` of that algorithm's key type with no private
/// member; the claims `jti`, `htm`, `htu` and `iat` present and typed; the signature valid
/// under `jwk`.
pub fn verify(proof: &str) -> Result<Proof> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(bad("the proof is too long"));
    }
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("the proof is not a compact JWS"));
    };
    let header: Value = serde_json::from_slice(&b64::decode(h).map_err(|_| bad("header"))?)
        .map_err(|_| bad("the proof's header is not JSON"))?;
    let claims: Value = serde_json::from_slice(&b64::decode(p).map_err(|_| bad("payload"))?)
        .map_err(|_| bad("the proof's payload is not JSON"))?;
    let (Some(header), Some(claims)) = (header.as_object(), claims.as_object()) else {
        return Err(bad("the proof's header and payload must be objects"));
    };
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(bad("typ must be dpop+jwt"));
    }
    let alg = member(header, "alg", "the proof has no alg")?;
    let Some(alg) = ALGS.iter().find(|a| **a == alg).copied() else {
        return Err(JoseError::Unsupported(
            "alg must be one of ES256, ES384, EdDSA, RS256, PS256".into(),
        ));
    };
    let jwk = header
        .get("jwk")
        .and_then(Value::as_object)
        .ok_or(bad("the proof has no jwk"))?;
    let (key, jkt) = public_key(jwk, alg)?;
    let signature = b64::decode(s).map_err(|_| bad("the signature is not base64url"))?;
    key.verify(&proof.as_bytes()[..h.len() + 1 + p.len()], &signature)?;
    let text = |name: &str, missing: &'static str| -> Result<String> {
        match claims.get(name) {
            Some(Value::String(v)) if !v.is_empty() => Ok(v.clone()),
            _ => Err(bad(missing)),
        }
    };
    let optional = |name: &str, wrong: &'static str| -> Result<Option<String>> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::String(v)) => Ok(Some(v.clone())),
            Some(_) => Err(bad(wrong)),
        }
    };
    let iat = match claims.get("iat") {
        Some(Value::Number(n)) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or(bad("iat must be a number of seconds"))?,
        _ => return Err(bad("the proof has no iat")),
    };
    let jti = text("jti", "the proof has no jti")?;
    if jti.len() > 256 {
        return Err(bad("jti is too long"));
    }
    Ok(Proof {
        jkt,
        alg,
        htm: text("htm", "the proof has no htm")?,
        htu: text("htu", "the proof has no htu")?,
        iat,
        jti,
        ath: optional("ath", "ath must be a string")?,
        nonce: optional("nonce", "nonce must be a string")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::es256::{sign_compact, SigningKey};
    use serde_json::json;

    fn proof(key: &SigningKey, header: Value, claims: Value) -> String {
        sign_compact(key, &header, claims.to_string().as_bytes()).unwrap_or_default()
    }

    #[test]
    fn an_es256_proof_verifies_and_its_thumbprint_is_the_jwks() -> Result<()> {
        let key = SigningKey::generate()?;
        let mut jwk = serde_json::to_value(key.public_jwk()?).unwrap_or_default();
        jwk.as_object_mut().map(|o| {
            o.remove("kid");
            o.remove("use");
            o.remove("alg")
        });
        let claims = json!({"jti":"j1","htm":"POST","htu":"https://x/oauth2/token","iat":1});
        let p = proof(
            &key,
            json!({"typ":"dpop+jwt","alg":"ES256","jwk":jwk}),
            claims.clone(),
        );
        let v = verify(&p)?;
        assert_eq!(v.jkt, key.public_jwk()?.thumbprint());
        assert_eq!((v.htm.as_str(), v.iat, v.ath), ("POST", 1, None));
        // Each rule of the form, broken in turn.
        let cases = [
            json!({"typ":"JWT","alg":"ES256","jwk":jwk}),
            json!({"alg":"ES256","jwk":jwk}),
            json!({"typ":"dpop+jwt","alg":"none","jwk":jwk}),
            json!({"typ":"dpop+jwt","alg":"HS256","jwk":jwk}),
            json!({"typ":"dpop+jwt","alg":"ES384","jwk":jwk}),
            json!({"typ":"dpop+jwt","alg":"ES256"}),
        ];
        for header in cases {
            assert!(
                verify(&proof(&key, header.clone(), claims.clone())).is_err(),
                "{header}"
            );
        }
        let mut private = jwk.clone();
        private["d"] = json!("AAAA");
        assert!(verify(&proof(
            &key,
            json!({"typ":"dpop+jwt","alg":"ES256","jwk":private}),
            claims.clone()
        ))
        .is_err());
        for missing in ["jti", "htm", "htu", "iat"] {
            let mut c = claims.clone();
            c.as_object_mut().map(|o| o.remove(missing));
            let p = proof(&key, json!({"typ":"dpop+jwt","alg":"ES256","jwk":jwk}), c);
            assert!(verify(&p).is_err(), "{missing}");
        }
        // Another key's signature.
        let other = SigningKey::generate()?;
        let p = proof(
            &other,
            json!({"typ":"dpop+jwt","alg":"ES256","jwk":jwk}),
            claims,
        );
        assert_eq!(verify(&p), Err(JoseError::BadSignature));
        Ok(())
    }

    #[test]
    fn rfc_7638s_rsa_example_has_its_published_thumbprint() -> Result<()> {
        let jwk = json!({"kty":"RSA","e":"AQAB","alg":"RS256","kid":"2011-04-29",
            "n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"});
        let (_, jkt) = public_key(jwk.as_object().unwrap_or(&Map::new()), "RS256")?;
        assert_eq!(jkt, "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
        Ok(())
    }
}
