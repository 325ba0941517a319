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

/// An event as stored, with its place in its chain.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredAuditEvent {
    /// Which chain holds it (see [`ChainHead`]); `seq` counts within that chain.
    pub chain: i64,
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

    /// Places the event after `prev_hash` as number `seq` of `chain`.
    pub fn seal(&self, chain: i64, seq: i64, prev_hash: &str) -> StoredAuditEvent {
        let details = self.details.clone();
        let hash = self.hash_after(seq, prev_hash);
        StoredAuditEvent {
            chain,
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

/// The last event of one chain, as the store records it. The log is a few independent
/// chains, so that writers that commit in parallel (PostgreSQL) never wait for one another's
/// append; each chain is complete and ordered on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub chain: i64,
    pub seq: i64,
    pub hash: String,
}

/// Where and why a chain stops verifying.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("chain {chain}, event {seq}: expected sequence number {expected} (an event was removed or reordered)")]
    Gap { chain: i64, seq: i64, expected: i64 },
    #[error("chain {chain}, event {seq}: does not follow the previous event's hash (removed or reordered)")]
    Link { chain: i64, seq: i64 },
    #[error("chain {chain}, event {seq}: content does not match its hash (edited)")]
    Content { chain: i64, seq: i64 },
    #[error("chain {chain}: the head says {head_seq} events ending in another hash; the log was truncated or rewritten")]
    Head { chain: i64, head_seq: i64 },
    #[error("chain {chain}, event {seq}: no such chain (the event was moved or forged)")]
    UnknownChain { chain: i64, seq: i64 },
}

/// Incremental verifier of one chain: feed its events in `seq` order, then check against its
/// head.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    chain: i64,
    expected_seq: i64,
    prev_hash: String,
}

impl ChainVerifier {
    pub fn new(chain: i64) -> Self {
        Self {
            chain,
            expected_seq: 1,
            prev_hash: GENESIS.to_string(),
        }
    }

    pub fn push(&mut self, ev: &StoredAuditEvent) -> Result<(), ChainBreak> {
        let chain = self.chain;
        if ev.chain != chain {
            return Err(ChainBreak::UnknownChain {
                chain: ev.chain,
                seq: ev.seq,
            });
        }
        if ev.seq != self.expected_seq {
            return Err(ChainBreak::Gap {
                chain,
                seq: ev.seq,
                expected: self.expected_seq,
            });
        }
        if ev.prev_hash != self.prev_hash {
            return Err(ChainBreak::Link { chain, seq: ev.seq });
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
            return Err(ChainBreak::Content { chain, seq: ev.seq });
        }
        self.expected_seq += 1;
        self.prev_hash = ev.hash.clone();
        Ok(())
    }

    /// Checks that the last event seen is the one the head records. Returns the count.
    pub fn finish(&self, head_seq: i64, head_hash: &str) -> Result<i64, ChainBreak> {
        let seen = self.expected_seq - 1;
        if seen != head_seq || self.prev_hash != head_hash {
            return Err(ChainBreak::Head {
                chain: self.chain,
                head_seq,
            });
        }
        Ok(seen)
    }
}

/// Verifies the whole log: every chain the heads name, fed events in `(chain, seq)` order.
/// The heads are read before the walk; events appended while it runs are verified too, and
/// must be covered by the heads read after it (see [`LogVerifier::finish`]).
#[derive(Debug, Clone)]
pub struct LogVerifier {
    heads: Vec<ChainHead>,
    chains: Vec<ChainVerifier>,
    /// Per chain, the hash of the event at the starting head's `seq`, once seen.
    at_head: Vec<Option<String>>,
}

impl LogVerifier {
    pub fn new(mut heads: Vec<ChainHead>) -> Self {
        heads.sort_by_key(|h| h.chain);
        let chains = heads.iter().map(|h| ChainVerifier::new(h.chain)).collect();
        let at_head = heads
            .iter()
            .map(|h| (h.seq == 0).then(|| GENESIS.to_string()))
            .collect();
        Self {
            heads,
            chains,
            at_head,
        }
    }

    pub fn push(&mut self, ev: &StoredAuditEvent) -> Result<(), ChainBreak> {
        let Ok(i) = self.heads.binary_search_by_key(&ev.chain, |h| h.chain) else {
            return Err(ChainBreak::UnknownChain {
                chain: ev.chain,
                seq: ev.seq,
            });
        };
        self.chains[i].push(ev)?;
        if ev.seq == self.heads[i].seq {
            self.at_head[i] = Some(ev.hash.clone());
        }
        Ok(())
    }

    /// Checks every chain: it reaches its starting head with the head's hash, and whatever
    /// follows was appended legitimately meanwhile, i.e. lies within `later` (the heads read
    /// after the walk). Returns the number of events in all.
    pub fn finish(&self, later: &[ChainHead]) -> Result<i64, ChainBreak> {
        let mut total = 0;
        for ((v, start), at_head) in self.chains.iter().zip(&self.heads).zip(&self.at_head) {
            let seen = v.expected_seq - 1;
            let broken = ChainBreak::Head {
                chain: start.chain,
                head_seq: start.seq,
            };
            if seen < start.seq || at_head.as_deref() != Some(start.hash.as_str()) {
                return Err(broken);
            }
            if seen > start.seq {
                let Some(end) = later.iter().find(|h| h.chain == start.chain) else {
                    return Err(broken);
                };
                if seen > end.seq || (seen == end.seq && v.prev_hash != end.hash) {
                    return Err(ChainBreak::Head {
                        chain: start.chain,
                        head_seq: end.seq,
                    });
                }
            }
            total += seen;
        }
        Ok(total)
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
        let a = ev("one").seal(1, 1, GENESIS);
        let b = ev("two").seal(1, 2, &a.hash);
        let c = ev("three").seal(1, 3, &b.hash);
        let run = |evs: &[&StoredAuditEvent]| {
            let mut v = ChainVerifier::new(1);
            for e in evs {
                v.push(e)?;
            }
            v.finish(3, &c.hash)
        };
        assert_eq!(run(&[&a, &b, &c]), Ok(3));
        let mut edited = b.clone();
        edited.outcome = "refused".into();
        assert_eq!(
            run(&[&a, &edited, &c]),
            Err(ChainBreak::Content { chain: 1, seq: 2 })
        );
        assert_eq!(
            run(&[&a, &c]),
            Err(ChainBreak::Gap {
                chain: 1,
                seq: 3,
                expected: 2
            })
        );
        assert!(run(&[&a, &c, &b]).is_err());
        assert_eq!(
            run(&[&a, &b]),
            Err(ChainBreak::Head {
                chain: 1,
                head_seq: 3
            })
        );
    }

    #[test]
    fn every_chain_is_checked_and_an_event_cannot_change_chains() {
        let a1 = ev("a1").seal(1, 1, GENESIS);
        let b1 = ev("b1").seal(2, 1, GENESIS);
        let b2 = ev("b2").seal(2, 2, &b1.hash);
        let heads = || {
            vec![
                ChainHead {
                    chain: 2,
                    seq: 2,
                    hash: b2.hash.clone(),
                },
                ChainHead {
                    chain: 1,
                    seq: 1,
                    hash: a1.hash.clone(),
                },
                ChainHead {
                    chain: 3,
                    seq: 0,
                    hash: GENESIS.into(),
                },
            ]
        };
        let run = |evs: &[&StoredAuditEvent]| {
            let mut v = LogVerifier::new(heads());
            for e in evs {
                v.push(e)?;
            }
            v.finish(&heads())
        };
        assert_eq!(run(&[&a1, &b1, &b2]), Ok(3));
        // The last event of chain 2 dropped: its head no longer matches.
        assert_eq!(
            run(&[&a1, &b1]),
            Err(ChainBreak::Head {
                chain: 2,
                head_seq: 2
            })
        );
        // The first event of chain 2 relabelled as chain 3 (both start at genesis).
        let mut moved = b1.clone();
        moved.chain = 3;
        assert!(run(&[&a1, &b2, &moved]).is_err());
        let mut forged = a1.clone();
        forged.chain = 9;
        assert_eq!(
            run(&[&forged]),
            Err(ChainBreak::UnknownChain { chain: 9, seq: 1 })
        );
        // An event appended during the walk counts if the later heads cover it; one that no
        // head covers (forged beyond the head) breaks the chain.
        let a2 = ev("a2").seal(1, 2, &a1.hash);
        let mut v = LogVerifier::new(heads());
        for e in [&a1, &a2, &b1, &b2] {
            v.push(e).unwrap();
        }
        assert_eq!(
            v.finish(&heads()),
            Err(ChainBreak::Head {
                chain: 1,
                head_seq: 1
            })
        );
        let mut later = heads();
        later[1] = ChainHead {
            chain: 1,
            seq: 2,
            hash: a2.hash.clone(),
        };
        assert_eq!(v.finish(&later), Ok(4));
    }
}
