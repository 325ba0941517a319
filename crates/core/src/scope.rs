//! OAuth2 scopes (RFC 6749 §3.3) and which card operations they permit.

use crate::model::Operation;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

pub const CARDS_READ_ANY: &str = "cards:read:any";
pub const CARDS_READ_OWN: &str = "cards:read:own";
pub const CARDS_WIDGETS: &str = "cards:widgets";
pub const PERSONS_UXT: &str = "persons:uxt";
pub const SDK_TOKEN: &str = "sdk:token";

/// The scopes cardgate knows. Imports and admin commands refuse others.
pub const KNOWN: [&str; 5] = [
    CARDS_READ_ANY,
    CARDS_READ_OWN,
    CARDS_WIDGETS,
    PERSONS_UXT,
    SDK_TOKEN,
];

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope is malformed")]
    Malformed,
    #[error("scope {0} is not allowed for this client")]
    NotAllowed(String),
}

impl ScopeSet {
    pub fn of<I: IntoIterator<Item = S>, S: Into<String>>(it: I) -> Self {
        Self(it.into_iter().map(Into::into).collect())
    }

    /// Parses a space-delimited scope string (RFC 6749 §3.3: `%x21 / %x23-5B / %x5D-7E`).
    pub fn parse(s: &str) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for part in s.split(' ') {
            if part.is_empty() {
                continue;
            }
            if !part
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
            {
                return Err(ScopeError::Malformed);
            }
            set.insert(part.to_string());
        }
        Ok(Self(set))
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The space-delimited form.
    pub fn to_string_list(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(" ")
    }

    /// The scopes to grant for a request: all of the client's when none are asked for,
    /// otherwise exactly those asked, each of which must be the client's.
    pub fn grant(&self, requested: Option<&str>) -> Result<ScopeSet, ScopeError> {
        let Some(requested) = requested else {
            return Ok(self.clone());
        };
        let asked = Self::parse(requested)?;
        if asked.is_empty() {
            return Ok(self.clone());
        }
        if let Some(extra) = asked.0.iter().find(|s| !self.0.contains(*s)) {
            return Err(ScopeError::NotAllowed(extra.clone()));
        }
        Ok(asked)
    }
}

/// How far a principal's scopes reach for one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Any card of the tenant.
    Any,
    /// Only cards whose cardholder is the client's person.
    Own,
    None,
}

/// The reach a scope set grants for minting a token for `op`:
/// `cards:read:any` / `cards:read:own` cover `VIEW_CARD` and `ADD_CARD_TO_WALLET`;
/// `cards:widgets` covers every widget operation (`VIEW_CARD`, `ACTIVATE`, `GET_PIN`, `SET_PIN`).
pub fn reach_for(scopes: &ScopeSet, op: Operation) -> Reach {
    let reads = matches!(op, Operation::ViewCard | Operation::AddCardToWallet);
    let widget = matches!(
        op,
        Operation::ViewCard | Operation::Activate | Operation::GetPin | Operation::SetPin
    );
    if (reads && scopes.contains(CARDS_READ_ANY)) || (widget && scopes.contains(CARDS_WIDGETS)) {
        Reach::Any
    } else if reads && scopes.contains(CARDS_READ_OWN) {
        Reach::Own
    } else {
        Reach::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gets_only_scopes_the_client_holds() {
        let client = ScopeSet::of([CARDS_READ_ANY, CARDS_WIDGETS]);
        assert_eq!(client.grant(None), Ok(client.clone()));
        assert_eq!(
            client.grant(Some("cards:widgets")),
            Ok(ScopeSet::of([CARDS_WIDGETS]))
        );
        assert_eq!(
            client.grant(Some("sdk:token")),
            Err(ScopeError::NotAllowed("sdk:token".into()))
        );
        assert_eq!(client.grant(Some("bad\"scope")), Err(ScopeError::Malformed));
    }

    #[test]
    fn own_scope_reaches_only_read_operations() {
        let own = ScopeSet::of([CARDS_READ_OWN]);
        assert_eq!(reach_for(&own, Operation::ViewCard), Reach::Own);
        assert_eq!(reach_for(&own, Operation::SetPin), Reach::None);
    }
}
