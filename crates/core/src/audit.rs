//! The audit log: an append-only, hash-chained record of issuance, redemption, refusal and
//! admin change. Events never carry secrets, tokens, PANs, CVVs or PINs.

use cardgate_jose::digest::{hex, sha256};
use serde_json::Value;

/// An event about to be appended.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub ts_ms: i64,
    pub tenant_id: Option<String>,
    pub environment: String,
    /// Who acted: `client:<id>`, `token:<hash prefix>`, `admin`, `system`.
    pub actor: String,
    /// What happened, e.g. `token.issued`, `card_token.redeemed`.
    pub action: String,
    /// `ok` or a refusal reason such as `invalid_client`.
    pub outcome: String,
    /// What it happened to, e.g. `card:<uuid>`.
    pub subject: String,
    /// Extra facts, as canonical JSON (keys sorted): rendered when the event is made, on the
    /// request's own thread, not by the single writer that appends it.
    pub details: String,
}

/// An event as stored, with its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAuditEvent {
    pub seq: i64,
    pub ts_ms: i64,
    pub tenant_id: Option<String>,
    pub environment: String,
    pub actor: String,
    pub action: String,
    pub outcome: String,
    pub subject: String,
    pub details: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash before the first event.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn push_field(buf: &mut Vec<u8>, field: &str) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field.as_bytes());
}

/// `hash = SHA-256(prev_hash || seq || ts || len-prefixed fields)`, hex.
#[allow(clippy::too_many_arguments)]
pub fn chain_hash(
    prev_hash: &str,
    seq: i64,
    ts_ms: i64,
    tenant_id: Option<&str>,
    environment: &str,
    actor: &str,
    action: &str,
    outcome: &str,
    subject: &str,
    details: &str,
) -> String {
    let mut buf = Vec::with_capacity(256 + details.len());
    push_field(&mut buf, prev_hash);
    buf.extend_from_slice(&seq.to_be_bytes());
    buf.extend_from_slice(&ts_ms.to_be_bytes());
    push_field(&mut buf, tenant_id.unwrap_or(""));
    push_field(&mut buf, environment);
    push_field(&mut buf, actor);
    push_field(&mut buf, action);
    push_field(&mut buf, outcome);
    push_field(&mut buf, subject);
    push_field(&mut buf, details);
    hex(&sha256(&buf))
}

impl AuditEvent {
    /// Details rendered canonically (serde_json's maps keep their keys sorted).
    pub fn render_details(details: &Value) -> String {
        details.to_string()
    }

    /// The hash of this event as number `seq` after `prev_hash`.
    pub fn hash_after(&self, seq: i64, prev_hash: &str) -> String {
        chain_hash(
            prev_hash,
            seq,
            self.ts_ms,
            self.tenant_id.as_deref(),
            &self.environment,
            &self.actor,
            &self.action,
            &self.outcome,
            &self.subject,
            &self.details,
        )
    }

    /// Places the event after `prev_hash` as number `seq`.
    pub fn seal(&self, seq: i64, prev_hash: &str) -> StoredAuditEvent {
        let details = self.details.clone();
        let hash = self.hash_after(seq, prev_hash);
        StoredAuditEvent {
            seq,
            ts_ms: self.ts_ms,
            tenant_id: self.tenant_id.clone(),
            environment: self.environment.clone(),
            actor: self.actor.clone(),
            action: self.action.clone(),
            outcome: self.outcome.clone(),
            subject: self.subject.clone(),
            details,
            prev_hash: prev_hash.to_string(),
            hash,
        }
    }
}

/// Where and why a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error(
        "event {seq}: expected sequence number {expected} (an event was removed or reordered)"
    )]
    Gap { seq: i64, expected: i64 },
    #[error("event {seq}: does not follow the previous event's hash (removed or reordered)")]
    Link { seq: i64 },
    #[error("event {seq}: content does not match its hash (edited)")]
    Content { seq: i64 },
    #[error("the chain head says {head_seq} events ending in another hash; the log was truncated or rewritten")]
    Head { head_seq: i64 },
}

/// Incremental verifier: feed events in `seq` order, then check against the head.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS.to_string(),
        }
    }
}

impl ChainVerifier {
    pub fn push(&mut self, ev: &StoredAuditEvent) -> Result<(), ChainBreak> {
        if ev.seq != self.expected_seq {
            return Err(ChainBreak::Gap {
                seq: ev.seq,
                expected: self.expected_seq,
            });
        }
        if ev.prev_hash != self.prev_hash {
            return Err(ChainBreak::Link { seq: ev.seq });
        }
        let recomputed = chain_hash(
            &ev.prev_hash,
            ev.seq,
            ev.ts_ms,
            ev.tenant_id.as_deref(),
            &ev.environment,
            &ev.actor,
            &ev.action,
            &ev.outcome,
            &ev.subject,
            &ev.details,
        );
        if recomputed != ev.hash {
            return Err(ChainBreak::Content { seq: ev.seq });
        }
        self.expected_seq += 1;
        self.prev_hash = ev.hash.clone();
        Ok(())
    }

    /// Checks that the last event seen is the one the head records. Returns the count.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<i64, ChainBreak> {
        let seen = self.expected_seq - 1;
        if seen != head_seq || self.prev_hash != head_hash {
            return Err(ChainBreak::Head { head_seq });
        }
        Ok(seen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: &str) -> AuditEvent {
        AuditEvent {
            ts_ms: 1,
            tenant_id: Some("t".into()),
            environment: "sandbox".into(),
            actor: "client:a".into(),
            action: action.into(),
            outcome: "ok".into(),
            subject: "s".into(),
            details: AuditEvent::render_details(&serde_json::json!({"b": 1, "a": 2})),
        }
    }

    #[test]
    fn the_verifier_finds_edits_removals_and_reorders() {
        let a = ev("one").seal(1, GENESIS);
        let b = ev("two").seal(2, &a.hash);
        let c = ev("three").seal(3, &b.hash);
        let run = |evs: &[&StoredAuditEvent]| {
            let mut v = ChainVerifier::default();
            for e in evs {
                v.push(e)?;
            }
            v.finish(3, &c.hash)
        };
        assert_eq!(run(&[&a, &b, &c]), Ok(3));
        let mut edited = b.clone();
        edited.outcome = "refused".into();
        assert_eq!(run(&[&a, &edited, &c]), Err(ChainBreak::Content { seq: 2 }));
        assert_eq!(
            run(&[&a, &c]),
            Err(ChainBreak::Gap {
                seq: 3,
                expected: 2
            })
        );
        assert!(run(&[&a, &c, &b]).is_err());
        assert_eq!(run(&[&a, &b]), Err(ChainBreak::Head { head_seq: 3 }));
    }
}
