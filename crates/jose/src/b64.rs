//! base64url without padding (RFC 7515 §2) and standard base64 helpers.

use crate::{JoseError, Result};
use data_encoding::{BASE64, BASE64URL_NOPAD};

pub fn encode(bytes: &[u8]) -> String {
    BASE64URL_NOPAD.encode(bytes)
}

pub fn decode(text: &str) -> Result<Vec<u8>> {
    BASE64URL_NOPAD
        .decode(text.as_bytes())
        .map_err(|_| JoseError::Malformed("invalid base64url"))
}

pub fn encode_std(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

pub fn decode_std(text: &str) -> Result<Vec<u8>> {
    BASE64
        .decode(text.trim().as_bytes())
        .map_err(|_| JoseError::Malformed("invalid base64"))
}
