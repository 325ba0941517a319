//! The audit log: an append-only record of issuance, redemption, refusal and admin change,
//! in chains whose links are HMAC-SHA256 under a key derived from the master key, so that
//! write access to the database alone cannot rewrite a chain that verifies. Events never
//! carry secrets, tokens, PANs, CVVs or PINs.

use cardgate_jose::digest::{ct_eq, hex, sha256, HmacKey};
use serde_json::Value;

/// The `meta` key recording how the log's links are made, and its value once they are keyed.
/// A log without it predates keyed links and is re-linked (once, if it verifies) at start.
pub const LINKS_META_KEY: &str = "audit_links";
pub const KEYED_LINKS: &str = "hmac-sha256-v1";

/// The hash before the first event of every chain under the old, unkeyed rule.
pub const UNKEYED_GENESIS: &str =
    "0000000000000000000000000000000000000000000000000000000000000000";

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

/// What a link covers: an event's number in its chain and every field.
struct Fields<'a> {
    seq: i64,
    ts_ms: i64,
    tenant_id: Option<&'a str>,
    environment: &'a str,
    actor: &'a str,
    action: &'a str,
    outcome: &'a str,
    subject: &'a str,
    details: &'a str,
}

fn push_field(buf: &mut Vec<u8>, field: &str) {
    buf.extend_from_slice(&(field.len() as u64).to_be_bytes());
    buf.extend_from_slice(field.as_bytes());
}

/// `prev_hash || seq || ts || len-prefixed fields`, after `buf`'s prefix.
fn link_input(mut buf: Vec<u8>, prev_hash: &str, f: &Fields) -> Vec<u8> {
    push_field(&mut buf, prev_hash);
    buf.extend_from_slice(&f.seq.to_be_bytes());
    buf.extend_from_slice(&f.ts_ms.to_be_bytes());
    for field in [
        f.tenant_id.unwrap_or(""),
        f.environment,
        f.actor,
        f.action,
        f.outcome,
        f.subject,
        f.details,
    ] {
        push_field(&mut buf, field);
    }
    buf
}

/// The key every link is made with, derived from the master key: only its holder can make a
/// chain (or a chain's start) that verifies.
#[derive(Clone)]
pub struct AuditKey(HmacKey);

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditKey(..)")
    }
}

impl AuditKey {
    pub fn new(key: &[u8; 32]) -> Self {
        Self(HmacKey::new(key))
    }

    /// The value before the first event of `chain`, keyed: emptying a chain and setting its
    /// head back to a start needs the key (or a copy of that chain's own start).
    pub fn genesis(&self, chain: i64) -> String {
        let mut buf = Vec::with_capacity(40);
        push_field(&mut buf, "cardgate audit genesis v1");
        buf.extend_from_slice(&chain.to_be_bytes());
        hex(&self.0.sign(&buf))
    }

    /// A mark on `chain` at event `seq` (whose link is `hash`): `what` says which (`pruned`,
    /// `exported`, an export's seal). Only the key's holder can make one, so a database
    /// writer can neither move a chain's verified start nor fake an export.
    pub fn mark(&self, what: &str, chain: i64, seq: i64, hash: &str) -> String {
        let mut buf = Vec::with_capacity(128);
        push_field(&mut buf, "cardgate audit mark v1");
        push_field(&mut buf, what);
        buf.extend_from_slice(&chain.to_be_bytes());
        buf.extend_from_slice(&seq.to_be_bytes());
        push_field(&mut buf, hash);
        hex(&self.0.sign(&buf))
    }

    /// Whether `mac` is [`AuditKey::mark`]'s for these values (constant time).
    pub fn mark_is(&self, mac: &str, what: &str, chain: i64, seq: i64, hash: &str) -> bool {
        ct_eq(self.mark(what, chain, seq, hash).as_bytes(), mac.as_bytes())
    }

    /// The link `ev` gets when it follows `prev_hash` (re-linking a stored event).
    pub fn link_after(&self, ev: &StoredAuditEvent, prev_hash: &str) -> String {
        self.link(ev.chain, prev_hash, &ev.fields())
    }

    /// `HMAC-SHA256(key, tag || chain || prev_hash || seq || ts || len-prefixed fields)`, hex.
    fn link(&self, chain: i64, prev_hash: &str, f: &Fields) -> String {
        let mut buf = Vec::with_capacity(320 + f.details.len());
        push_field(&mut buf, "cardgate audit link v1");
        buf.extend_from_slice(&chain.to_be_bytes());
        hex(&self.0.sign(&link_input(buf, prev_hash, f)))
    }
}

/// The old link: `SHA-256(prev_hash || seq || ts || len-prefixed fields)`, hex. Anyone can
/// compute it, so it is only ever checked, once, on a log about to be re-linked.
fn unkeyed_link(prev_hash: &str, f: &Fields) -> String {
    hex(&sha256(&link_input(Vec::with_capacity(256), prev_hash, f)))
}

/// Which links a verifier accepts.
#[derive(Debug, Clone)]
pub enum LinkRule {
    /// HMAC-SHA256 under the audit key from a keyed start per chain: the only rule `audit
    /// verify` accepts.
    Keyed(AuditKey),
    /// The rule before keyed links (plain SHA-256 from an all-zero start), checked only to
    /// re-link a log that predates keyed links.
    Unkeyed,
}

impl LinkRule {
    /// The value before the first event of `chain`.
    pub fn genesis(&self, chain: i64) -> String {
        match self {
            Self::Keyed(key) => key.genesis(chain),
            Self::Unkeyed => UNKEYED_GENESIS.to_string(),
        }
    }

    /// The hash `ev` must carry after its `prev_hash`.
    pub fn hash_of(&self, ev: &StoredAuditEvent) -> String {
        let f = ev.fields();
        match self {
            Self::Keyed(key) => key.link(ev.chain, &ev.prev_hash, &f),
            Self::Unkeyed => unkeyed_link(&ev.prev_hash, &f),
        }
    }
}

impl StoredAuditEvent {
    fn fields(&self) -> Fields<'_> {
        Fields {
            seq: self.seq,
            ts_ms: self.ts_ms,
            tenant_id: self.tenant_id.as_deref(),
            environment: &self.environment,
            actor: &self.actor,
            action: &self.action,
            outcome: &self.outcome,
            subject: &self.subject,
            details: &self.details,
        }
    }
}

impl AuditEvent {
    /// Details rendered canonically (serde_json's maps keep their keys sorted).
    pub fn render_details(details: &Value) -> String {
        details.to_string()
    }

    /// The link of this event as number `seq` of `chain` after `prev_hash`.
    pub fn hash_after(&self, key: &AuditKey, chain: i64, seq: i64, prev_hash: &str) -> String {
        let f = Fields {
            seq,
            ts_ms: self.ts_ms,
            tenant_id: self.tenant_id.as_deref(),
            environment: &self.environment,
            actor: &self.actor,
            action: &self.action,
            outcome: &self.outcome,
            subject: &self.subject,
            details: &self.details,
        };
        key.link(chain, prev_hash, &f)
    }

    /// Places the event after `prev_hash` as number `seq` of `chain`.
    pub fn seal(&self, key: &AuditKey, chain: i64, seq: i64, prev_hash: &str) -> StoredAuditEvent {
        let hash = self.hash_after(key, chain, seq, prev_hash);
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
            details: self.details.clone(),
            prev_hash: prev_hash.to_string(),
            hash,
        }
    }
}

/// Who re-links an unkeyed log, and when: what the event recording it says.
#[derive(Debug, Clone, PartialEq)]
pub struct Relinking {
    pub ts_ms: i64,
    pub environment: String,
    /// `system` at start, `admin` from `cardgate audit relink`.
    pub actor: String,
}

impl Relinking {
    /// The event appended after `events` unkeyed events were re-linked.
    pub fn event(&self, events: i64) -> AuditEvent {
        AuditEvent {
            ts_ms: self.ts_ms,
            tenant_id: None,
            environment: self.environment.clone(),
            actor: self.actor.clone(),
            action: "audit.relinked".into(),
            outcome: "ok".into(),
            subject: "audit_log".into(),
            details: AuditEvent::render_details(
                &serde_json::json!({"events": events, "links": KEYED_LINKS}),
            ),
        }
    }
}

/// What re-linking a log under the key did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Relink {
    /// The log was keyed already: nothing changed.
    AlreadyKeyed,
    /// Every chain verified under the unkeyed rule and was re-linked under the key, in one
    /// transaction: this many events (an empty log is simply keyed).
    Relinked { events: i64 },
    /// The unkeyed log does not verify: nothing was re-linked.
    Broken(ChainBreak),
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
    #[error("chain {chain}: the recorded prune checkpoint at event {seq} was not made with the audit key (moved or forged)")]
    Checkpoint { chain: i64, seq: i64 },
    #[error("the database does not record keyed links (cardgate re-links a log that predates them when it starts, or with `cardgate audit relink`)")]
    NotKeyed,
}

/// Incremental verifier of one chain: feed its events in `seq` order, then check against its
/// head.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    rule: LinkRule,
    chain: i64,
    expected_seq: i64,
    prev_hash: String,
}

impl ChainVerifier {
    pub fn new(chain: i64, rule: LinkRule) -> Self {
        Self {
            prev_hash: rule.genesis(chain),
            rule,
            chain,
            expected_seq: 1,
        }
    }

    /// A verifier of `chain` whose events up to `seq` (the last one's link `hash`) are gone:
    /// pruned, or in an earlier export. The caller vouches for that start.
    pub fn after(chain: i64, rule: LinkRule, seq: i64, hash: &str) -> Self {
        Self {
            prev_hash: hash.to_string(),
            rule,
            chain,
            expected_seq: seq + 1,
        }
    }

    /// The last event verified so far (or the start): `(seq, hash)`.
    pub fn tip(&self) -> (i64, &str) {
        (self.expected_seq - 1, &self.prev_hash)
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
        if !ct_eq(self.rule.hash_of(ev).as_bytes(), ev.hash.as_bytes()) {
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
    /// Per chain, where verifying started (0, or a prune checkpoint).
    first: Vec<i64>,
}

impl LogVerifier {
    /// A verifier of the chains `heads` names, accepting the links of `rule`.
    pub fn new(heads: Vec<ChainHead>, rule: LinkRule) -> Self {
        Self::starting_at(heads, rule, &[])
    }

    /// Like [`LogVerifier::new`], with the chains that `starts` names verified from there (a
    /// prune checkpoint the caller checked): their earlier events are gone.
    pub fn starting_at(mut heads: Vec<ChainHead>, rule: LinkRule, starts: &[ChainHead]) -> Self {
        heads.sort_by_key(|h| h.chain);
        let chains: Vec<ChainVerifier> = heads
            .iter()
            .map(|h| match starts.iter().find(|s| s.chain == h.chain) {
                Some(s) => ChainVerifier::after(h.chain, rule.clone(), s.seq, &s.hash),
                None => ChainVerifier::new(h.chain, rule.clone()),
            })
            .collect();
        let at_head = heads
            .iter()
            .zip(&chains)
            .map(|(h, v)| (h.seq == v.expected_seq - 1).then(|| v.prev_hash.clone()))
            .collect();
        let first = chains.iter().map(|v| v.expected_seq - 1).collect();
        Self {
            heads,
            chains,
            at_head,
            first,
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
        let chains = self.chains.iter().zip(&self.heads).zip(&self.at_head);
        for (((v, start), at_head), first) in chains.zip(&self.first) {
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
            total += seen - first;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> AuditKey {
        AuditKey::new(&[7; 32])
    }

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
        let k = key();
        let a = ev("one").seal(&k, 1, 1, &k.genesis(1));
        let b = ev("two").seal(&k, 1, 2, &a.hash);
        let c = ev("three").seal(&k, 1, 3, &b.hash);
        let run = |evs: &[&StoredAuditEvent]| {
            let mut v = ChainVerifier::new(1, LinkRule::Keyed(k.clone()));
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
        let k = key();
        let a1 = ev("a1").seal(&k, 1, 1, &k.genesis(1));
        let b1 = ev("b1").seal(&k, 2, 1, &k.genesis(2));
        let b2 = ev("b2").seal(&k, 2, 2, &b1.hash);
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
                    hash: k.genesis(3),
                },
            ]
        };
        let run = |evs: &[&StoredAuditEvent]| {
            let mut v = LogVerifier::new(heads(), LinkRule::Keyed(k.clone()));
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
        // The first event of chain 2 relabelled as chain 3.
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
        let a2 = ev("a2").seal(&k, 1, 2, &a1.hash);
        let mut v = LogVerifier::new(heads(), LinkRule::Keyed(k.clone()));
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

    #[test]
    fn only_the_key_makes_links_and_chain_starts_that_verify() {
        let (k, other) = (key(), AuditKey::new(&[8; 32]));
        assert_ne!(k.genesis(1), k.genesis(2), "each chain starts apart");
        assert_ne!(k.genesis(1), other.genesis(1));
        assert_ne!(k.genesis(1), UNKEYED_GENESIS);
        let made_with = |key: &AuditKey| {
            let a = ev("one").seal(key, 1, 1, &key.genesis(1));
            let b = ev("two").seal(key, 1, 2, &a.hash);
            vec![a, b]
        };
        let verify = |rule: LinkRule, evs: &[StoredAuditEvent]| {
            let head = ChainHead {
                chain: 1,
                seq: evs.len() as i64,
                hash: evs.last().map_or(rule.genesis(1), |e| e.hash.clone()),
            };
            let mut v = LogVerifier::new(vec![head.clone()], rule);
            for e in evs {
                v.push(e)?;
            }
            v.finish(&[head])
        };
        let keyed = || LinkRule::Keyed(k.clone());
        assert_eq!(verify(keyed(), &made_with(&k)), Ok(2));
        assert_eq!(
            verify(keyed(), &made_with(&other)),
            Err(ChainBreak::Link { chain: 1, seq: 1 }),
            "another key's chain does not start where this key's does"
        );

        // A log of the old rule, from the all-zero start: only the unkeyed rule accepts it.
        let mut unkeyed = made_with(&k);
        let mut prev = UNKEYED_GENESIS.to_string();
        for e in &mut unkeyed {
            e.prev_hash = prev;
            e.hash = LinkRule::Unkeyed.hash_of(e);
            prev = e.hash.clone();
        }
        assert_eq!(verify(LinkRule::Unkeyed, &unkeyed), Ok(2));
        assert_eq!(
            verify(keyed(), &unkeyed),
            Err(ChainBreak::Link { chain: 1, seq: 1 })
        );

        // An edit re-linked with the old rule after a keyed start.
        let mut forged = made_with(&k);
        forged[1].outcome = "refused".into();
        forged[1].hash = LinkRule::Unkeyed.hash_of(&forged[1]);
        assert_eq!(
            verify(keyed(), &forged),
            Err(ChainBreak::Content { chain: 1, seq: 2 })
        );

        // A chain emptied and its head set back to the all-zero start.
        let reset = ChainHead {
            chain: 1,
            seq: 0,
            hash: UNKEYED_GENESIS.into(),
        };
        assert_eq!(
            LogVerifier::new(vec![reset.clone()], keyed()).finish(&[reset]),
            Err(ChainBreak::Head {
                chain: 1,
                head_seq: 0
            })
        );
    }
}
