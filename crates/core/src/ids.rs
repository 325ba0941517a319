//! Identifier newtypes and the environment an instance, credential or token belongs to.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Sandbox,
    Production,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sandbox => "sandbox",
            Self::Production => "production",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sandbox" => Some(Self::Sandbox),
            "production" => Some(Self::Production),
            _ => None,
        }
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! string_id {
    ($name:ident, $max:expr, $what:expr) => {
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Accepts 1..=max characters of `[A-Za-z0-9._:-]`.
            pub fn parse(s: &str) -> Result<Self, String> {
                let ok = !s.is_empty()
                    && s.len() <= $max
                    && s.bytes().all(|b| {
                        b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':')
                    });
                if ok {
                    Ok(Self(s.to_string()))
                } else {
                    Err(format!(
                        "{} must be 1-{} characters of letters, digits, '-', '_', '.', ':'",
                        $what, $max
                    ))
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(TenantId, 64, "a tenant id");
string_id!(ClientId, 128, "a client id");
string_id!(AccountId, 64, "an account id");

macro_rules! uuid_id {
    ($name:ident, $what:expr) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(uuid::Uuid);

        impl $name {
            /// Accepts a hyphenated UUID of at most 36 characters.
            pub fn parse(s: &str) -> Result<Self, String> {
                if s.len() > 36 {
                    return Err(format!("{} must be a UUID", $what));
                }
                uuid::Uuid::try_parse(s)
                    .map(Self)
                    .map_err(|_| format!("{} must be a UUID", $what))
            }

            pub fn new_random() -> Self {
                Self(uuid::Uuid::new_v4())
            }

            pub fn as_uuid(&self) -> &uuid::Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }
    };
}

uuid_id!(CardId, "a card id");
uuid_id!(PersonId, "a person id");
uuid_id!(MfaSessionId, "an MFA session id");
