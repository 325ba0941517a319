//! The write path, written once for both engines: how a batch of write sets applies inside one
//! open transaction — each set's guards decided alone or, for a batch of simple sets, all
//! together in bulk — with the SQL of the guards (`guards`), of the writes (`writes`) and of
//! the audit chain append (`audit`). Each backend supplies a [`WriteTx`], the way to run one
//! statement in its transaction.

mod audit;
mod guards;
mod writes;

pub(crate) use audit::{append_after_head, link, relink, AUDIT_PAGE};
pub(crate) use guards::{claim, PURGE_CLAIMS};
pub(crate) use writes::{ops_to_text, META_INIT};

use crate::sql::Map;
use crate::write::{Guard, StoredClaim, Write, WriteOutcome, WriteSet};
use crate::{Result, StoreError};
use async_trait::async_trait;
use cardgate_core::audit::{AuditEvent, AuditKey};
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord};
use guards::{each_guard, guard};
use std::borrow::Cow;

/// A bound parameter. `$n` in the SQL is `args[n - 1]`. NULLs carry their type, which
/// PostgreSQL needs.
#[derive(Debug, Clone)]
pub(crate) enum Arg<'a> {
    Int(Option<i64>),
    Text(Option<Cow<'a, str>>),
    Blob(Option<&'a [u8]>),
    Bool(bool),
}

impl<'a> Arg<'a> {
    pub fn int(v: i64) -> Self {
        Self::Int(Some(v))
    }
    pub fn text(v: &'a str) -> Self {
        Self::Text(Some(Cow::Borrowed(v)))
    }
    pub fn string(v: String) -> Self {
        Self::Text(Some(Cow::Owned(v)))
    }
    pub fn blob(v: &'a [u8]) -> Self {
        Self::Blob(Some(v))
    }
}

/// A table rows are appended to, in column order.
pub(crate) struct Table {
    pub name: &'static str,
    pub columns: &'static str,
    /// The single-row INSERT (`$1` … `$n`), for engines where one row per statement is cheapest.
    pub insert_one: &'static str,
}

pub(crate) const AUDIT_EVENTS: Table = Table {
    name: "audit_events",
    columns: "chain, seq, ts_ms, tenant_id, environment, actor, action, outcome, subject, details, prev_hash, hash",
    insert_one: "INSERT INTO audit_events (chain, seq, ts_ms, tenant_id, environment, actor, action, outcome, subject, details, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
};

pub(crate) const ACCESS_TOKENS: Table = Table {
    name: "access_tokens",
    columns: "id, hash, kind, tenant_id, client_id, environment, scope, issued_at, expires_at, revoked, cnf_jkt",
    insert_one: "INSERT INTO access_tokens (id, hash, kind, tenant_id, client_id, environment, scope, issued_at, expires_at, revoked, cnf_jkt) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
};

pub(crate) const CARD_TOKENS: Table = Table {
    name: "card_tokens",
    columns: "id, hash, kind, tenant_id, client_id, environment, card_id, person_id, operations, issued_at, expires_at, max_uses, uses_made, revoked, cnf_jkt",
    insert_one: "INSERT INTO card_tokens (id, hash, kind, tenant_id, client_id, environment, card_id, person_id, operations, \
                 issued_at, expires_at, max_uses, uses_made, revoked, cnf_jkt) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
};

/// One open write transaction of a backend.
#[async_trait]
pub(crate) trait WriteTx: Send + Sized {
    /// Runs one statement and returns how many rows it changed.
    async fn exec(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64>;
    /// Runs a query and returns how many rows it found.
    async fn count(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64>;
    /// Appends rows to `table` (one statement per row or per chunk, as the engine prefers).
    async fn insert_rows(&mut self, table: &'static Table, rows: Vec<Vec<Arg<'_>>>) -> Result<()>;
    /// Runs a query inside the transaction and maps every row it returns.
    async fn fetch_all<U: Send + 'static>(
        &mut self,
        sql: &'static str,
        args: Vec<Arg<'_>>,
        map: Map<U>,
    ) -> Result<Vec<U>>;
    /// The head of audit chain `chain`, locked for the rest of the transaction where the
    /// engine needs it.
    async fn chain_head(&mut self, chain: i64) -> Result<(i64, String)>;

    /// Appends a batch's audit events to `chain`, linked under `key`, and moves its head there.
    async fn append_audit(
        &mut self,
        key: &AuditKey,
        chain: i64,
        events: &[&AuditEvent],
    ) -> Result<()> {
        append_after_head(self, key, chain, events)
            .await
            .map(|_| ())
    }

    /// Sets the links of stored audit events: `(chain, seq, prev_hash, hash)` each. Engines
    /// where a statement costs a network round trip set them all with one.
    async fn set_links(&mut self, links: &[(i64, i64, String, String)]) -> Result<()> {
        for (chain, seq, prev, hash) in links {
            self.exec(
                "UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE chain = $3 AND seq = $4",
                vec![
                    Arg::text(prev),
                    Arg::text(hash),
                    Arg::int(*chain),
                    Arg::int(*seq),
                ],
            )
            .await?;
        }
        Ok(())
    }

    /// Which of `checks` (each a [`Guard::CardIs`]) hold. Engines where a statement costs a
    /// network round trip answer them all with one.
    async fn cards_are(&mut self, checks: &[&Guard]) -> Result<Vec<bool>> {
        each_guard(self, checks).await
    }

    /// Counts one use of each of `redeems` (each a [`Guard::RedeemCardToken`], all of different
    /// tokens) and says which were counted. Engines where a statement costs a network round
    /// trip count them all with one.
    async fn redeem_all(&mut self, redeems: &[&Guard]) -> Result<Vec<bool>> {
        each_guard(self, redeems).await
    }

    /// Claims each of `claims` (each a [`Guard::Claim`], all of different keys): `None` where
    /// it was claimed, what the first claimant stored where the key was taken. Engines where a
    /// statement costs a network round trip claim them all with one.
    async fn claim_all(&mut self, claims: &[&Guard]) -> Result<Vec<Option<StoredClaim>>> {
        let mut out = Vec::with_capacity(claims.len());
        for g in claims {
            out.push(claim(self, g).await?);
        }
        Ok(out)
    }
}

/// Why a set was refused: the guard that did not hold (its index in the set's guards) and,
/// when that guard was a taken [`Guard::Claim`], what the first claimant stored.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    at: usize,
    taken: Option<StoredClaim>,
}

impl Refusal {
    fn at(at: usize) -> Self {
        Self { at, taken: None }
    }
}

/// Whether a set is decided by its guards alone, without writing anything before the last
/// one: card checks, then at most one token redemption or claim, and writes that are all
/// appended at the end of the batch (tokens, audit events).
fn decided_in_bulk(set: &WriteSet) -> bool {
    let deferred = |w: &Write| {
        matches!(
            w,
            Write::Audit(_) | Write::InsertAccessToken(_) | Write::InsertCardToken(_)
        )
    };
    let guards_ok = match set.guards.split_last() {
        None => true,
        Some((last, before)) => {
            before.iter().all(|g| matches!(g, Guard::CardIs { .. }))
                && matches!(
                    last,
                    Guard::CardIs { .. } | Guard::RedeemCardToken { .. } | Guard::Claim { .. }
                )
        }
    };
    guards_ok
        && set.fallback.is_none()
        && set.writes.iter().all(deferred)
        && set.on_refused.iter().all(deferred)
}

/// For a batch where every set is [`decided_in_bulk`], no token is redeemed twice or redeemed
/// in the batch that mints it, and no key is claimed twice, the outcome of every set, found
/// with one statement for all card checks, one for all redemptions and one for all claims
/// (and, where keys were taken, one that reads what their claimants stored). Such sets do not
/// change anything another set's guards read before the end of the batch, so deciding them
/// together is the same as deciding them one after another. `None` when the batch is not like
/// that.
async fn decide_in_bulk<T: WriteTx>(
    tx: &mut T,
    sets: &[WriteSet],
) -> Result<Option<Vec<Option<Refusal>>>> {
    if sets.len() < 2 || !sets.iter().all(decided_in_bulk) {
        return Ok(None);
    }
    let mut redeemed = std::collections::HashSet::new();
    let mut claimed = std::collections::HashSet::new();
    for set in sets {
        for g in &set.guards {
            let repeated = match g {
                Guard::RedeemCardToken { id, .. } => !redeemed.insert(id),
                Guard::Claim { namespace, key, .. } => !claimed.insert((namespace, key)),
                _ => false,
            };
            if repeated {
                return Ok(None);
            }
        }
    }
    let minted_here = sets
        .iter()
        .flat_map(|s| s.writes.iter())
        .any(|w| matches!(w, Write::InsertCardToken(t) if redeemed.contains(&t.id)));
    if minted_here {
        return Ok(None);
    }
    let checks: Vec<&Guard> = sets
        .iter()
        .flat_map(|s| s.guards.iter())
        .filter(|g| matches!(g, Guard::CardIs { .. }))
        .collect();
    let mut checked = tx.cards_are(&checks).await?.into_iter();
    // The first failing check of each set, and the redemptions and claims of the sets whose
    // checks held.
    let mut refused: Vec<Option<Refusal>> = Vec::with_capacity(sets.len());
    let mut redeems: Vec<(usize, &Guard)> = Vec::new();
    let mut claims: Vec<(usize, &Guard)> = Vec::new();
    for (k, set) in sets.iter().enumerate() {
        let mut first_failed = None;
        for (i, g) in set.guards.iter().enumerate() {
            match g {
                Guard::CardIs { .. } => {
                    let held = checked.next().ok_or_else(|| corrupt_bulk("card checks"))?;
                    if !held && first_failed.is_none() {
                        first_failed = Some(Refusal::at(i));
                    }
                }
                Guard::Claim { .. } if first_failed.is_none() => claims.push((k, g)),
                _ if first_failed.is_none() => redeems.push((k, g)),
                _ => {}
            }
        }
        refused.push(first_failed);
    }
    if !redeems.is_empty() {
        let guards: Vec<&Guard> = redeems.iter().map(|(_, g)| *g).collect();
        let counted = tx.redeem_all(&guards).await?;
        if counted.len() != redeems.len() {
            return Err(corrupt_bulk("redemptions"));
        }
        for ((k, _), ok) in redeems.iter().zip(counted) {
            if !ok {
                refused[*k] = Some(Refusal::at(sets[*k].guards.len() - 1));
            }
        }
    }
    if !claims.is_empty() {
        let guards: Vec<&Guard> = claims.iter().map(|(_, g)| *g).collect();
        let taken = tx.claim_all(&guards).await?;
        if taken.len() != claims.len() {
            return Err(corrupt_bulk("claims"));
        }
        for ((k, _), taken) in claims.iter().zip(taken) {
            if let Some(stored) = taken {
                refused[*k] = Some(Refusal {
                    at: sets[*k].guards.len() - 1,
                    taken: Some(stored),
                });
            }
        }
    }
    Ok(Some(refused))
}

fn corrupt_bulk(what: &str) -> StoreError {
    StoreError::Database(format!("the engine answered a different number of {what}"))
}

fn card_token_row(t: &CardTokenRecord) -> Vec<Arg<'_>> {
    vec![
        Arg::blob(&t.id.0),
        Arg::blob(&t.hash.0),
        Arg::text(t.kind.as_str()),
        Arg::text(t.tenant_id.as_str()),
        Arg::text(t.client_id.as_str()),
        Arg::text(t.environment.as_str()),
        Arg::Text(t.card_id.map(|c| Cow::Owned(c.to_string()))),
        Arg::Text(t.person_id.map(|p| Cow::Owned(p.to_string()))),
        Arg::string(ops_to_text(&t.operations)),
        Arg::int(t.issued_at_ms),
        Arg::int(t.expires_at_ms),
        Arg::Int(t.use_limit.max_uses()),
        Arg::int(t.uses_made),
        Arg::Bool(t.revoked),
        Arg::Text(t.cnf_jkt.as_deref().map(Cow::Borrowed)),
    ]
}

fn access_token_row(t: &AccessTokenRecord) -> Vec<Arg<'_>> {
    vec![
        Arg::blob(&t.id.0),
        Arg::blob(&t.hash.0),
        Arg::text(t.kind.as_str()),
        Arg::text(t.tenant_id.as_str()),
        Arg::text(t.client_id.as_str()),
        Arg::text(t.environment.as_str()),
        Arg::string(t.scopes.to_string_list()),
        Arg::int(t.issued_at_ms),
        Arg::int(t.expires_at_ms),
        Arg::Bool(t.revoked),
        Arg::Text(t.cnf_jkt.as_deref().map(Cow::Borrowed)),
    ]
}

/// Rows a batch inserts, written together (before anything that must see them, and at the end).
#[derive(Default)]
struct Pending<'a> {
    access_tokens: Vec<&'a AccessTokenRecord>,
    card_tokens: Vec<&'a CardTokenRecord>,
}

impl Pending<'_> {
    async fn flush<T: WriteTx>(&mut self, tx: &mut T) -> Result<()> {
        if !self.card_tokens.is_empty() {
            let rows = self.card_tokens.iter().map(|t| card_token_row(t)).collect();
            tx.insert_rows(&CARD_TOKENS, rows).await?;
            self.card_tokens.clear();
        }
        if !self.access_tokens.is_empty() {
            let rows = self
                .access_tokens
                .iter()
                .map(|t| access_token_row(t))
                .collect();
            tx.insert_rows(&ACCESS_TOKENS, rows).await?;
            self.access_tokens.clear();
        }
        Ok(())
    }
}

/// Applies `sets` in order inside the open transaction `tx` (the caller begins and commits).
/// A set whose guard fails is refused whole (a savepoint when a guard that wrote precedes another) and its
/// `on_refused` writes apply instead (none when a precondition failed); a set whose claim is
/// taken likewise, answered [`WriteOutcome::Taken`]; the other sets still apply. The audit events of the whole batch are appended last, to `chain` (linked under
/// `key`), whose head stays locked until commit (PostgreSQL); writers on other chains go on
/// meanwhile.
pub(crate) async fn apply_sets<T: WriteTx>(
    tx: &mut T,
    sets: &[WriteSet],
    chain: i64,
    key: &AuditKey,
) -> Result<Vec<WriteOutcome>> {
    let mut audits: Vec<&AuditEvent> = Vec::new();
    let mut pending = Pending::default();
    let mut outcomes = Vec::with_capacity(sets.len());
    let mut decided = decide_in_bulk(tx, sets).await?;
    for (k, set) in sets.iter().enumerate() {
        let mut bulk = decided.as_mut().map(|d| d[k].take());
        // The set, then its fallback (and the fallback's), until one is decided.
        let mut current = set;
        let mut refused_by = Vec::new();
        let mut outcome = loop {
            let refused = match bulk.take() {
                Some(r) => r,
                None => decide(tx, current, &mut pending).await?,
            };
            let (writes, outcome): (&[Write], _) = match refused {
                None => (&current.writes, WriteOutcome::Applied),
                Some(Refusal {
                    at,
                    taken: Some(stored),
                }) => {
                    let writes: &[Write] = if at < current.preconditions {
                        &[]
                    } else {
                        &current.on_refused
                    };
                    (writes, WriteOutcome::Taken(stored))
                }
                Some(Refusal { at: i, .. }) if i < current.preconditions => {
                    (&[], WriteOutcome::Stale(current.guards[i].kind()))
                }
                Some(Refusal { at: i, .. }) => match &current.fallback {
                    Some(fallback) => {
                        refused_by.push(current.guards[i].kind());
                        current = fallback;
                        continue;
                    }
                    None => (
                        &current.on_refused,
                        WriteOutcome::refused(current.guards[i].kind()),
                    ),
                },
            };
            for w in writes {
                match w {
                    Write::Audit(ev) => audits.push(ev),
                    Write::InsertAccessToken(t) => pending.access_tokens.push(t),
                    Write::InsertCardToken(t) => pending.card_tokens.push(t),
                    other => {
                        // Immediate writes see every row this batch has inserted so far.
                        pending.flush(tx).await?;
                        writes::write(tx, other).await?;
                    }
                }
            }
            break outcome;
        };
        while let Some(by) = refused_by.pop() {
            outcome = WriteOutcome::Refused {
                by,
                fallback: Some(Box::new(outcome)),
            };
        }
        outcomes.push(outcome);
    }
    pending.flush(tx).await?;
    if !audits.is_empty() {
        tx.append_audit(key, chain, &audits).await?;
    }
    Ok(outcomes)
}

/// Runs the guards of one set in order; the first that fails refuses it, undoing what the
/// guards before it changed.
async fn decide<T: WriteTx>(
    tx: &mut T,
    set: &WriteSet,
    pending: &mut Pending<'_>,
) -> Result<Option<Refusal>> {
    // A guard on a card token inserted earlier in this batch must see it.
    let touches_pending = set.guards.iter().any(|g| {
        matches!(g, Guard::RedeemCardToken { id, .. } if pending.card_tokens.iter().any(|t| &t.id == id))
    });
    if touches_pending {
        pending.flush(tx).await?;
    }
    // Only a guard that changed something before a later guard failed needs undoing.
    let savepoint = set
        .guards
        .split_last()
        .is_some_and(|(_, before)| before.iter().any(Guard::writes));
    if savepoint {
        tx.exec("SAVEPOINT ws", vec![]).await?;
    }
    let mut refused = None;
    for (i, g) in set.guards.iter().enumerate() {
        let refusal = match g {
            Guard::Claim { .. } => claim(tx, g).await?.map(|stored| Refusal {
                at: i,
                taken: Some(stored),
            }),
            _ => (guard(tx, g).await? != 1).then(|| Refusal::at(i)),
        };
        if refusal.is_some() {
            refused = refusal;
            break;
        }
    }
    if savepoint {
        if refused.is_some() {
            tx.exec("ROLLBACK TO SAVEPOINT ws", vec![]).await?;
        }
        tx.exec("RELEASE SAVEPOINT ws", vec![]).await?;
    }
    Ok(refused)
}
