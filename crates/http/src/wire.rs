//! Parsing of what arrives on the wire, shared by every surface: Authorization headers,
//! query strings and bodies, each refusing duplicates, bad encodings and oversize input.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use std::collections::HashMap;

/// Bodies larger than this get 413 (SPEC §7).
pub const MAX_BODY: usize = 64 * 1024;

/// A credential presented in `Authorization`.
#[derive(PartialEq, Eq)]
pub enum Authorization {
    None,
    Basic {
        id: String,
        secret: String,
    },
    Bearer(String),
    ApiKey(String),
    DPoP(String),
    /// A value without a scheme, kept for dialects that accept a raw key.
    Raw(String),
    /// `<scheme> <credentials>` with a scheme cardgate does not know (`Digest`, `Negotiate`…):
    /// an unsupported authentication method, answered like a missing one (RFC 6750 §3.1).
    Unsupported,
    Malformed(&'static str),
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Authorization(***)")
    }
}

fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes: Vec<u8> = form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned().into_bytes())?;
    String::from_utf8(bytes).ok()
}

/// Parses the `Authorization` header. Basic credentials are form-urlencoded before base64
/// (RFC 6749 §2.3.1), so they are percent-decoded after splitting on the first colon.
pub fn authorization(headers: &HeaderMap) -> Authorization {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Authorization::None;
    };
    if values.next().is_some() {
        return Authorization::Malformed("more than one Authorization header");
    }
    let Ok(value) = value.to_str() else {
        return Authorization::Malformed("Authorization is not ASCII");
    };
    let value = value.trim();
    let (scheme, rest) = value
        .split_once(' ')
        .map_or((value, ""), |(s, r)| (s, r.trim()));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => {
            let Ok(decoded) = cardgate_jose::b64::decode_std(rest) else {
                return Authorization::Malformed("Basic credentials are not base64");
            };
            let Ok(text) = String::from_utf8(decoded) else {
                return Authorization::Malformed("Basic credentials are not UTF-8");
            };
            let Some((id, secret)) = text.split_once(':') else {
                return Authorization::Malformed("Basic credentials need id:secret");
            };
            match (percent_decode(id), percent_decode(secret)) {
                (Some(id), Some(secret)) if !id.is_empty() => Authorization::Basic { id, secret },
                _ => Authorization::Malformed("Basic credentials are malformed"),
            }
        }
        "bearer" if !rest.is_empty() => Authorization::Bearer(rest.to_string()),
        "apikey" if !rest.is_empty() => Authorization::ApiKey(rest.to_string()),
        "dpop" if !rest.is_empty() => Authorization::DPoP(rest.to_string()),
        "bearer" | "apikey" | "dpop" => Authorization::Malformed("credentials are empty"),
        "" => Authorization::Malformed("Authorization is empty"),
        _ if rest.is_empty() => Authorization::Raw(value.to_string()),
        _ => Authorization::Unsupported,
    }
}

/// The `known` parameters of a query string or a form body. A known name given twice is
/// refused (RFC 6749 §3.1, §3.2); every other parameter is ignored, repeated or not (RFC 6749
/// §3.2: unrecognized parameters MUST be ignored), and never named in an error.
pub fn params(raw: &[u8], known: &[&str]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    let mut keep = |k: &str, v: String| {
        if !known.contains(&k) {
            return Ok(());
        }
        match out.insert(k.to_string(), v) {
            Some(_) => Err(format!("parameter {k} is repeated")),
            None => Ok(()),
        }
    };
    // Fast path: nothing to decode (tokens, ids and secrets are URL-safe), valid UTF-8.
    if !raw.iter().any(|b| matches!(b, b'%' | b'+')) {
        if let Ok(text) = std::str::from_utf8(raw) {
            for pair in text.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                keep(k, v.to_string())?;
            }
            return Ok(out);
        }
    }
    for (k, v) in form_urlencoded::parse(raw) {
        keep(&k, v.into_owned())?;
    }
    Ok(out)
}

/// Why a body could not be read.
pub enum BodyError {
    TooLarge,
    Unreadable,
}

pub fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, BodyError> {
    match body {
        Ok(b) if b.len() > MAX_BODY => Err(BodyError::TooLarge),
        Ok(b) => Ok(b),
        Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::Unreadable),
    }
}

/// The media type of `Content-Type`, lower-cased, without parameters.
pub fn content_type(headers: &HeaderMap) -> Option<String> {
    let v = headers
        .get(axum::http::header::CONTENT_TYPE)?
        .to_str()
        .ok()?;
    Some(
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase(),
    )
}

/// An optional whole number as JSON may write it: `3` or `3.0` (JSON Schema's `integer`
/// accepts both). Fractions, negatives and values past `u32` are refused without repeating
/// the value.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::de::Error;
    let Some(n) = <Option<serde_json::Number> as serde::Deserialize>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = match (n.as_u64(), n.as_f64()) {
        (Some(u), _) => u32::try_from(u).ok(),
        (None, Some(f)) if f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&f) => {
            Some(f as u32)
        }
        _ => None,
    };
    whole
        .map(Some)
        .ok_or_else(|| D::Error::custom("expected a whole number from 0 to 4294967295"))
}

pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::params;

    #[test]
    fn the_fast_path_and_the_decoding_path_agree() {
        let known = ["a", "b", "token", "x", "k"];
        for raw in [
            "a=1&b=x.y_z-",
            "a=1%2B2&b=c+d",
            "token=abc&&x=",
            "k",
            "a=1&z=2",
        ] {
            let fast = params(raw.as_bytes(), &known).unwrap();
            let slow: std::collections::HashMap<String, String> =
                form_urlencoded::parse(raw.as_bytes())
                    .filter(|(k, _)| known.contains(&k.as_ref()))
                    .map(|(k, v)| (k.into_owned(), v.into_owned()))
                    .collect();
            assert_eq!(fast, slow, "{raw}");
        }
    }

    #[test]
    fn a_known_parameter_may_not_repeat_and_an_unknown_one_is_ignored() {
        assert_eq!(
            params(b"a=1&a=2", &["a"]),
            Err("parameter a is repeated".into())
        );
        assert!(params(b"a=1&a=%32", &["a"]).is_err());
        for raw in ["a=1&z=2&z=3", "a=1&%E2%82%AC=2&%E2%82%AC=3", "z&z&a=1"] {
            let got = params(raw.as_bytes(), &["a"]).unwrap();
            assert_eq!(got.len(), 1, "{raw}");
            assert_eq!(got.get("a").map(String::as_str), Some("1"), "{raw}");
        }
    }
}
