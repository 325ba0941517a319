//! cardgate's domain: tenants, clients, cards, tokens, MFA and audit rules. Pure decisions,
//! no web or SQL; time arrives as a parameter (`now_ms`, milliseconds since the epoch).

#![forbid(unsafe_code)]

pub mod audit;
pub mod cards;
pub mod ids;
pub mod import;
pub mod mfa;
pub mod model;
pub mod scope;
pub mod sdk;
pub mod secret;
pub mod tokens;
pub mod webhook;

pub use ids::{AccountId, CardId, ClientId, Environment, PersonId, TenantId};
pub use model::{AccessTokenFormat, Account, Card, CardStatus, Client, Operation, Person, Tenant};

/// A JSON parse error as a message fit to show the caller: what was wrong and where, but never
/// the value that was wrong (`{"pin": 2468}` must not come back as "invalid type: integer
/// `2468`"). The field name, when serde gives one, stays.
pub fn json_error_message(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let at = format!(" at line {} column {}", e.line(), e.column());
    let msg = full.strip_suffix(&at).unwrap_or(&full);
    let redacted = if let Some(rest) = ["invalid type: ", "invalid value: "]
        .iter()
        .find_map(|p| msg.strip_prefix(p).map(|r| (&p[..p.len() - 2], r)))
        .map(|(kind, r)| match r.split_once(", expected ") {
            Some((_, expected)) if expected.starts_with("struct ") => {
                format!("{kind}, expected a JSON object")
            }
            Some((_, expected)) => format!("{kind}, expected {expected}"),
            None => kind.to_string(),
        }) {
        rest
    } else if let Some(r) = msg.strip_prefix("unknown variant ") {
        match r.split_once(", expected ") {
            Some((_, expected)) => format!("unknown variant, expected {expected}"),
            None => "unknown variant".to_string(),
        }
    } else {
        msg.to_string()
    };
    if e.line() == 0 {
        redacted
    } else {
        format!("{redacted}{at}")
    }
}

#[cfg(test)]
mod tests {
    use super::json_error_message;

    fn err(json: &str) -> serde_json::Error {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Body {
            pin: String,
            op: Option<crate::Operation>,
            n: Option<u8>,
        }
        serde_json::from_str::<Body>(json).unwrap_err()
    }

    #[test]
    fn a_json_error_never_repeats_the_value_it_refused() {
        for (json, secret, says) in [
            (
                r#"{"pin": 2468}"#,
                "2468",
                "invalid type, expected a string",
            ),
            (
                r#"{"pin": 1357.5}"#,
                "1357",
                "invalid type, expected a string",
            ),
            (
                r#"{"pin": "1", "n": 987654321012345}"#,
                "98765",
                "invalid value, expected u8",
            ),
            (
                r#"{"pin": "1", "op": "SECRET_OP"}"#,
                "SECRET_OP",
                "unknown variant, expected one of",
            ),
            (r#"{"pin": "1", "op": 987654}"#, "987654", "expected value"),
        ] {
            let m = json_error_message(&err(json));
            assert!(!m.contains(secret), "{json}: {m}");
            assert!(m.contains(says), "{json}: {m}");
            assert!(m.contains("at line 1 column"), "{json}: {m}");
        }
        // What carries no value keeps serde's words.
        assert_eq!(
            json_error_message(&err(r#"{"pim": "1"}"#)),
            "unknown field `pim`, expected one of `pin`, `op`, `n` at line 1 column 6"
        );
        assert_eq!(
            json_error_message(&err(r#"{}"#)),
            "missing field `pin` at line 1 column 2"
        );
    }
}
