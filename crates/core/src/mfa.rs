//! MFA step-up: TOTP (RFC 6238) and one-time codes sent by SMS or email, held in sessions
//! that expire, lock after too many wrong codes and serve one token each. How many codes are
//! checked is decided by the store's guards, never here: this module only says whether a code
//! is right (and for TOTP, at which time step), and what a cardholder's lockout is.

use crate::ids::{Environment, MfaSessionId, PersonId, TenantId};
use cardgate_jose::digest::{ct_eq, hmac_sha1, hmac_sha256, random};
use serde::{Deserialize, Serialize};

pub const SESSION_TTL_SECONDS: i64 = 300;
pub const MAX_ATTEMPTS: i64 = 5;
const TOTP_STEP_SECONDS: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Totp,
    Sms,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Totp => "totp",
            Self::Sms => "sms",
            Self::Email => "email",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Totp, Self::Sms, Self::Email]
            .into_iter()
            .find(|c| c.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct MfaSession {
    pub id: MfaSessionId,
    pub tenant_id: TenantId,
    pub person_id: PersonId,
    pub environment: Environment,
    pub channel: Channel,
    /// HMAC of the code under the server's code key (SMS/email); `None` for TOTP.
    pub code_hash: Option<[u8; 32]>,
    pub attempts: i64,
    pub created_at_ms: i64,
    pub expires_at_ms: i64,
    pub consumed: bool,
}

/// Why a presented code did not step up a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaCheck {
    WrongCode,
    Expired,
    /// The session has checked its last code.
    Locked,
    AlreadyUsed,
    /// The session is not the cardholder's, or not of this environment.
    NotApplicable,
    /// The cardholder failed too often across sessions and is locked out for a while.
    PersonLocked,
}

/// A tenant's per-cardholder lockout: `max_failures` wrong codes (across all sessions) within
/// `window_seconds` lock the cardholder's step-up for `lockout_seconds`. The defaults allow
/// ten guesses an hour: a 6-digit code (three TOTP steps accepted) is then guessed online
/// with a chance of about 7 in 10,000 a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lockout {
    pub max_failures: u32,
    pub window_seconds: u32,
    pub lockout_seconds: u32,
}

impl Default for Lockout {
    fn default() -> Self {
        Self {
            max_failures: 10,
            window_seconds: 3600,
            lockout_seconds: 3600,
        }
    }
}

/// Whether a presented code is right; for TOTP, the time step it matched, which the store
/// then accepts once per person (RFC 6238 §5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeCheck {
    Right { totp_step: Option<i64> },
    Wrong,
}

/// HOTP value (RFC 4226 §5.3) for `counter`, 6 digits.
fn hotp(secret: &[u8], counter: u64) -> u32 {
    let mac = hmac_sha1(secret, &counter.to_be_bytes());
    let offset = usize::from(mac[19] & 0x0f);
    let bin = (u32::from(mac[offset]) & 0x7f) << 24
        | u32::from(mac[offset + 1]) << 16
        | u32::from(mac[offset + 2]) << 8
        | u32::from(mac[offset + 3]);
    bin % 1_000_000
}

/// The TOTP code for a moment (RFC 6238, SHA-1, 30 s, 6 digits).
pub fn totp_at(secret: &[u8], now_ms: i64) -> String {
    let counter = u64::try_from(now_ms / 1000 / TOTP_STEP_SECONDS).unwrap_or(0);
    format!("{:06}", hotp(secret, counter))
}

/// The time step a TOTP code is right for, allowing one step of clock drift either way
/// (every candidate is compared, in constant time).
pub fn totp_step(secret: &[u8], code: &str, now_ms: i64) -> Option<i64> {
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let step = now_ms / 1000 / TOTP_STEP_SECONDS;
    [step - 1, step, step + 1]
        .into_iter()
        .fold(None, |found, s| {
            let expected = format!("{:06}", hotp(secret, u64::try_from(s).unwrap_or(0)));
            if ct_eq(expected.as_bytes(), code.as_bytes()) {
                Some(s)
            } else {
                found
            }
        })
}

/// A fresh 6-digit code for SMS or email.
pub fn new_code() -> Result<String, cardgate_jose::JoseError> {
    let n = u32::from_be_bytes(random::<4>()?);
    Ok(format!("{:06}", n % 1_000_000))
}

/// The stored form of a one-time code: HMAC under a server key, so a leaked database does
/// not give the 10^6 codes away to a brute-force search.
pub fn code_hash(code_key: &[u8], session: &MfaSessionId, code: &str) -> [u8; 32] {
    hmac_sha256(code_key, format!("{session}:{code}").as_bytes())
}

/// What a session's stored state already says, whatever the code: it is not this cardholder's
/// (or environment's), or it cannot check another code. The store decides again atomically
/// when the attempt is counted; this spares the work for sessions already spent.
pub fn usable(
    session: &MfaSession,
    person: &PersonId,
    env: Environment,
    now_ms: i64,
) -> Result<(), MfaCheck> {
    if session.person_id != *person || session.environment != env {
        return Err(MfaCheck::NotApplicable);
    }
    state(session, now_ms)
}

/// Why a session can check no more codes, from its state alone.
pub fn state(session: &MfaSession, now_ms: i64) -> Result<(), MfaCheck> {
    if session.consumed {
        Err(MfaCheck::AlreadyUsed)
    } else if session.attempts >= MAX_ATTEMPTS {
        Err(MfaCheck::Locked)
    } else if now_ms >= session.expires_at_ms {
        Err(MfaCheck::Expired)
    } else {
        Ok(())
    }
}

/// Whether `code` is right for `session`. `totp_secret` is the person's decrypted TOTP
/// secret, when the session is a TOTP one.
pub fn check_code(
    session: &MfaSession,
    code: &str,
    totp_secret: Option<&[u8]>,
    code_key: &[u8],
    now_ms: i64,
) -> CodeCheck {
    match (session.channel, session.code_hash, totp_secret) {
        (Channel::Totp, _, Some(secret)) => match totp_step(secret, code, now_ms) {
            Some(step) => CodeCheck::Right {
                totp_step: Some(step),
            },
            None => CodeCheck::Wrong,
        },
        (Channel::Sms | Channel::Email, Some(stored), _)
            if ct_eq(&code_hash(code_key, &session.id, code), &stored) =>
        {
            CodeCheck::Right { totp_step: None }
        }
        _ => CodeCheck::Wrong,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totp_matches_rfc6238_sha1_vectors() {
        let secret = b"12345678901234567890";
        // RFC 6238 appendix B, truncated to 6 digits.
        assert_eq!(totp_at(secret, 59_000), "287082");
        assert_eq!(totp_at(secret, 1_111_111_109_000), "081804");
        assert_eq!(totp_step(secret, "287082", 59_000), Some(1));
        assert_eq!(totp_step(secret, "287082", 59_000 + 30_000), Some(1));
        assert_eq!(totp_step(secret, "287082", 59_000 + 90_000), None);
        assert_eq!(totp_step(secret, "28708a", 59_000), None);
    }
}
