//! BankEzy SDK tokens (SPEC §4.5): the fields a token request carries, each checked on its
//! own, the token as stored, and whether a presented one may still be used.

use crate::ids::{AccountId, ClientId, Environment, TenantId};
use crate::secret::SecretHash;
use crate::tokens::TokenId;
use std::collections::BTreeMap;

/// SDK tokens look like `cgsdk_…` (recognisable to secret scanners).
pub const SDK_TOKEN_PREFIX: &str = "cgsdk_";
/// How long an SDK token lives unless the tenant says otherwise (SPEC §4.5: 30 minutes).
pub const DEFAULT_SDK_TOKEN_TTL_SECONDS: u32 = 1800;
/// How long a `referenceId` stays claimed at least, whatever the token's lifetime.
pub const REFERENCE_ID_HOLD_MS: i64 = 24 * 3600 * 1000;

/// Which field of a token request is refused, and why (the message names no value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SdkFieldError {
    #[error("referenceId must be 1-128 visible ASCII characters")]
    ReferenceId,
    #[error("accountNumber must be 1-19 digits")]
    AccountNumber,
    #[error("dob must be a real date written yyyyMMdd")]
    Dob,
    #[error("isdCode must be 1-4 digits (a leading + is allowed)")]
    IsdCode,
    #[error("mobileNumber must be 4-15 digits")]
    MobileNumber,
    #[error("email must be an email address of at most 254 characters")]
    Email,
    #[error("firstName and lastName must be 1-100 characters without control characters")]
    Name,
    #[error("data must map at most 50 keys of 1-64 characters to strings of at most 1024")]
    Data,
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

pub fn reference_id(s: &str) -> Result<String, SdkFieldError> {
    let ok = (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
    ok.then(|| s.to_string()).ok_or(SdkFieldError::ReferenceId)
}

pub fn account_number(s: &str) -> Result<String, SdkFieldError> {
    digits(s, 1, 19)
        .then(|| s.to_string())
        .ok_or(SdkFieldError::AccountNumber)
}

/// Whether `year`-`month`-`day` is a day of the Gregorian calendar.
pub fn real_date(year: u32, month: u32, day: u32) -> bool {
    let leap = year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400));
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => 0,
    };
    (1..=days).contains(&day)
}

/// A date of birth written `yyyyMMdd` (years 1900-2099); kept as written.
pub fn dob(s: &str) -> Result<String, SdkFieldError> {
    if !digits(s, 8, 8) {
        return Err(SdkFieldError::Dob);
    }
    let n = |r: std::ops::Range<usize>| s[r].parse::<u32>().unwrap_or(0);
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    ((1900..=2099).contains(&y) && real_date(y, m, d))
        .then(|| s.to_string())
        .ok_or(SdkFieldError::Dob)
}

pub fn isd_code(s: &str) -> Result<String, SdkFieldError> {
    let bare = s.strip_prefix('+').unwrap_or(s);
    digits(bare, 1, 4)
        .then(|| bare.to_string())
        .ok_or(SdkFieldError::IsdCode)
}

pub fn mobile_number(s: &str) -> Result<String, SdkFieldError> {
    digits(s, 4, 15)
        .then(|| s.to_string())
        .ok_or(SdkFieldError::MobileNumber)
}

pub fn email(s: &str) -> Result<String, SdkFieldError> {
    let ok = s.len() <= 254
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
        && s.split_once('@').is_some_and(|(local, domain)| {
            (1..=64).contains(&local.len())
                && !domain.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        });
    ok.then(|| s.to_string()).ok_or(SdkFieldError::Email)
}

pub fn name(s: &str) -> Result<String, SdkFieldError> {
    let ok = !s.trim().is_empty() && s.chars().count() <= 100 && !s.chars().any(char::is_control);
    ok.then(|| s.to_string()).ok_or(SdkFieldError::Name)
}

pub fn data(map: &BTreeMap<String, String>) -> Result<(), SdkFieldError> {
    let ok = map.len() <= 50
        && map
            .iter()
            .all(|(k, v)| (1..=64).contains(&k.chars().count()) && v.chars().count() <= 1024);
    ok.then_some(()).ok_or(SdkFieldError::Data)
}

/// An SDK token as stored: the digest of the token, the account it reaches, and the keys its
/// card data is encrypted between.
#[derive(Debug, Clone, PartialEq)]
pub struct SdkTokenRecord {
    pub id: TokenId,
    pub hash: SecretHash,
    pub tenant_id: TenantId,
    pub client_id: ClientId,
    pub environment: Environment,
    /// The digest of the client and its `referenceId` (how invalidation finds the token).
    pub reference_key: [u8; 32],
    pub account_id: AccountId,
    /// The SDK's public key as a JWK (JSON): card data is encrypted to it.
    pub sdk_public_jwk: String,
    /// The version of the tenant's server key the token was issued with.
    pub server_key_version: i64,
    pub issued_at_ms: i64,
    pub expires_at_ms: i64,
    pub revoked: bool,
}

/// Whether a presented SDK token may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SdkTokenUse {
    Usable,
    Expired,
    Invalidated,
}

impl SdkTokenRecord {
    pub fn usable(&self, now_ms: i64) -> SdkTokenUse {
        if self.revoked {
            SdkTokenUse::Invalidated
        } else if self.expires_at_ms <= now_ms {
            SdkTokenUse::Expired
        } else {
            SdkTokenUse::Usable
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_field_takes_what_bankezy_sends_and_refuses_the_rest() {
        assert!(account_number("1234567890123456789").is_ok());
        assert_eq!(
            account_number("12345678901234567890"),
            Err(SdkFieldError::AccountNumber)
        );
        assert!(account_number("12a4").is_err() && account_number("").is_err());
        for ok in ["19880515", "20000229", "20241231"] {
            assert_eq!(dob(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "20241340",
            "19000229",
            "20230229",
            "1988051",
            "1988-05-15",
            "18991231",
        ] {
            assert_eq!(dob(bad), Err(SdkFieldError::Dob), "{bad}");
        }
        assert_eq!(isd_code("+91").as_deref(), Ok("91"));
        assert!(isd_code("12345").is_err() && isd_code("+").is_err());
        assert!(mobile_number("9642308308").is_ok() && mobile_number("96x").is_err());
        assert!(email("OperationalSupport@wibmo.com").is_ok());
        for bad in ["a@b", "@b.com", "a b@c.com", "a@@b.com", "a@.com"] {
            assert!(email(bad).is_err(), "{bad}");
        }
        assert!(name("David beckham").is_ok() && name(" ").is_err() && name("a\nb").is_err());
        assert!(reference_id("ASHAGSJHGASGAH").is_ok() && reference_id("a b").is_err());
    }
}
