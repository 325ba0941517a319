//! The write path, written once for both engines: the SQL of every guard and write, how a
//! batch of write sets applies inside one open transaction, and the audit chain append. Each
//! backend supplies a [`WriteTx`], the way to run one statement in its transaction.

use crate::rows::{self, Cols};
use crate::sql::Map;
use crate::write::{Guard, Write, WriteOutcome, WriteSet};
use crate::{Result, StoreError};
use async_trait::async_trait;
use cardgate_core::audit::{
    AuditEvent, AuditKey, ChainHead, LinkRule, LogVerifier, Relink, Relinking, KEYED_LINKS,
    LINKS_META_KEY,
};
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord};
use cardgate_core::Operation;
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
    columns: "id, hash, kind, tenant_id, client_id, environment, scope, issued_at, expires_at, revoked",
    insert_one: "INSERT INTO access_tokens (id, hash, kind, tenant_id, client_id, environment, scope, issued_at, expires_at, revoked) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
};

pub(crate) const CARD_TOKENS: Table = Table {
    name: "card_tokens",
    columns: "id, hash, kind, tenant_id, client_id, environment, card_id, person_id, operations, issued_at, expires_at, max_uses, uses_made, revoked",
    insert_one: "INSERT INTO card_tokens (id, hash, kind, tenant_id, client_id, environment, card_id, person_id, operations, \
                 issued_at, expires_at, max_uses, uses_made, revoked) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
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
}

/// Runs `guards` one statement each, in order: which held.
async fn each_guard<T: WriteTx>(tx: &mut T, guards: &[&Guard]) -> Result<Vec<bool>> {
    let mut held = Vec::with_capacity(guards.len());
    for g in guards {
        held.push(guard(tx, g).await? == 1);
    }
    Ok(held)
}

/// Whether a set is decided by its guards alone, without writing anything before the last
/// one: card checks, then at most one token redemption, and writes that are all appended at the
/// end of the batch (tokens, audit events).
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
                && matches!(last, Guard::CardIs { .. } | Guard::RedeemCardToken { .. })
        }
    };
    guards_ok
        && set.fallback.is_none()
        && set.writes.iter().all(deferred)
        && set.on_refused.iter().all(deferred)
}

/// For a batch where every set is [`decided_in_bulk`] and no token is redeemed twice or
/// redeemed in the batch that mints it, the outcome of every set, found with one statement for
/// all card checks and one for all redemptions. Such sets do not change anything another
/// set's guards read before the end of the batch, so deciding them together is the same as
/// deciding them one after another. `None` when the batch is not like that.
async fn decide_in_bulk<T: WriteTx>(
    tx: &mut T,
    sets: &[WriteSet],
) -> Result<Option<Vec<Option<usize>>>> {
    if sets.len() < 2 || !sets.iter().all(decided_in_bulk) {
        return Ok(None);
    }
    let mut redeemed = std::collections::HashSet::new();
    for set in sets {
        for g in &set.guards {
            if let Guard::RedeemCardToken { id, .. } = g {
                if !redeemed.insert(id) {
                    return Ok(None);
                }
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
    // The first failing check of each set, and the redemptions of the sets whose checks held.
    let mut refused: Vec<Option<usize>> = Vec::with_capacity(sets.len());
    let mut redeems: Vec<(usize, &Guard)> = Vec::new();
    for (k, set) in sets.iter().enumerate() {
        let mut first_failed = None;
        for (i, g) in set.guards.iter().enumerate() {
            match g {
                Guard::CardIs { .. } => {
                    let held = checked.next().ok_or_else(|| corrupt_bulk("card checks"))?;
                    if !held && first_failed.is_none() {
                        first_failed = Some(i);
                    }
                }
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
                refused[*k] = Some(sets[*k].guards.len() - 1);
            }
        }
    }
    Ok(Some(refused))
}

fn corrupt_bulk(what: &str) -> StoreError {
    StoreError::Database(format!("the engine answered a different number of {what}"))
}

pub(crate) fn ops_to_text(ops: &[Operation]) -> String {
    ops.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(",")
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
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
    ]
}

/// An event's row, as number `seq` of `chain` between `prev_hash` and its own `hash`.
fn audit_row<'a>(
    e: &'a AuditEvent,
    chain: i64,
    seq: i64,
    prev_hash: &'a str,
    hash: &'a str,
) -> Vec<Arg<'a>> {
    vec![
        Arg::int(chain),
        Arg::int(seq),
        Arg::int(e.ts_ms),
        Arg::Text(e.tenant_id.as_deref().map(Cow::Borrowed)),
        Arg::text(&e.environment),
        Arg::text(&e.actor),
        Arg::text(&e.action),
        Arg::text(&e.outcome),
        Arg::text(&e.subject),
        Arg::text(&e.details),
        Arg::text(prev_hash),
        Arg::text(hash),
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
/// `on_refused` writes apply instead (none when a precondition failed); the other sets still
/// apply. The audit events of the whole batch are appended last, to `chain` (linked under
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
    let decided = decide_in_bulk(tx, sets).await?;
    for (k, set) in sets.iter().enumerate() {
        let mut bulk = decided.as_ref().map(|d| d[k]);
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
                Some(i) if i < current.preconditions => {
                    (&[], WriteOutcome::Stale(current.guards[i].kind()))
                }
                Some(i) => match &current.fallback {
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
                        write(tx, other).await?;
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

/// Links `events` after `(seq, head)` of `chain` under `key`: each one's `(seq, prev_hash, hash)`.
pub(crate) fn link(
    key: &AuditKey,
    chain: i64,
    events: &[&AuditEvent],
    seq: i64,
    head: &str,
) -> Vec<(i64, String, String)> {
    let mut prev = head.to_owned();
    events
        .iter()
        .zip(seq + 1..)
        .map(|(ev, seq)| {
            let hash = ev.hash_after(key, chain, seq, &prev);
            (seq, std::mem::replace(&mut prev, hash.clone()), hash)
        })
        .collect()
}

/// Appends `events` to `chain` after its head, read (and locked, where the engine needs it)
/// now, and moves the head: the default [`WriteTx::append_audit`].
pub(crate) async fn append_after_head<T: WriteTx>(
    tx: &mut T,
    key: &AuditKey,
    chain: i64,
    events: &[&AuditEvent],
) -> Result<(i64, String)> {
    let (seq, head) = tx.chain_head(chain).await?;
    let links = link(key, chain, events, seq, &head);
    let rows = events
        .iter()
        .zip(&links)
        .map(|(ev, (seq, prev, hash))| audit_row(ev, chain, *seq, prev, hash))
        .collect();
    tx.insert_rows(&AUDIT_EVENTS, rows).await?;
    let (seq, _, head) = links.last().cloned().unwrap_or((seq, String::new(), head));
    tx.exec(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = $3",
        vec![Arg::int(seq), Arg::text(&head), Arg::int(chain)],
    )
    .await?;
    Ok((seq, head))
}

/// Audit events after `(chain, seq)` = `($1, $2)`, in `(chain, seq)` order, at most `$3`.
/// (A row comparison, so both engines walk the primary key: PostgreSQL scanned the table for
/// every page of the `chain > $1 OR (chain = $1 AND seq > $2)` form.)
pub(crate) const AUDIT_PAGE: &str =
    "SELECT * FROM audit_events WHERE (chain, seq) > ($1, $2) ORDER BY chain, seq LIMIT $3";

/// Events read per statement while re-linking.
const RELINK_PAGE: i64 = 1000;

/// Re-links a log that predates keyed links, inside the open transaction `tx` (the caller
/// commits only on [`Relink::Relinked`]): every chain's head is locked, so no writer of any
/// version appends meanwhile; every chain is verified as it is under the unkeyed rule; each
/// event's link is remade under `key` from its chain's keyed start; the heads move to the new
/// links; the keyed format is recorded; and the re-link itself is appended as an event. A
/// chain that does not verify is [`Relink::Broken`], and the caller writes nothing.
pub(crate) async fn relink<T: WriteTx>(
    tx: &mut T,
    key: &AuditKey,
    note: &Relinking,
) -> Result<Relink> {
    let ids = tx
        .fetch_all(
            "SELECT id FROM audit_head ORDER BY id",
            vec![],
            |r: &dyn Cols| r.int("id"),
        )
        .await?;
    let mut heads = Vec::with_capacity(ids.len());
    for chain in ids {
        let (seq, hash) = tx.chain_head(chain).await?;
        heads.push(ChainHead { chain, seq, hash });
    }
    let format = tx
        .fetch_all(
            "SELECT value FROM meta WHERE key = $1",
            vec![Arg::text(LINKS_META_KEY)],
            |r: &dyn Cols| r.text("value"),
        )
        .await?;
    match format.first() {
        Some(f) if f == KEYED_LINKS => return Ok(Relink::AlreadyKeyed),
        Some(f) => {
            return Err(StoreError::Corrupt(format!(
                "the audit log's links are in an unknown format {f:?}"
            )))
        }
        None => {}
    }
    let mut unkeyed = LogVerifier::new(heads.clone(), LinkRule::Unkeyed);
    let mut tips: Vec<(i64, String)> = heads
        .iter()
        .map(|h| (h.chain, key.genesis(h.chain)))
        .collect();
    let (mut after, mut events) = ((0, 0), 0);
    loop {
        let page = tx
            .fetch_all(
                AUDIT_PAGE,
                vec![Arg::int(after.0), Arg::int(after.1), Arg::int(RELINK_PAGE)],
                rows::audit_event,
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = (last.chain, last.seq);
        let mut links = Vec::with_capacity(page.len());
        for ev in &page {
            if let Err(b) = unkeyed.push(ev) {
                return Ok(Relink::Broken(b));
            }
            let tip = tips
                .iter_mut()
                .find(|(c, _)| *c == ev.chain)
                .map(|(_, tip)| tip)
                .ok_or_else(|| rows::corrupt("audit chain"))?;
            let hash = key.link_after(ev, tip);
            links.push((ev.chain, ev.seq, std::mem::replace(tip, hash.clone()), hash));
        }
        tx.set_links(&links).await?;
        events += links.len() as i64;
    }
    if let Err(b) = unkeyed.finish(&heads) {
        return Ok(Relink::Broken(b));
    }
    for (chain, tip) in &tips {
        tx.exec(
            "UPDATE audit_head SET hash = $1 WHERE id = $2",
            vec![Arg::text(tip), Arg::int(*chain)],
        )
        .await?;
    }
    tx.exec(
        META_INIT,
        vec![Arg::text(LINKS_META_KEY), Arg::text(KEYED_LINKS)],
    )
    .await?;
    if let (Some(first), true) = (heads.first(), events > 0) {
        append_after_head(tx, key, first.chain, &[&note.event(events)]).await?;
    }
    Ok(Relink::Relinked { events })
}

/// Runs the guards of one set in order; the first that fails refuses it, undoing what the
/// guards before it changed.
async fn decide<T: WriteTx>(
    tx: &mut T,
    set: &WriteSet,
    pending: &mut Pending<'_>,
) -> Result<Option<usize>> {
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
        if guard(tx, g).await? != 1 {
            refused = Some(i);
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

/// Runs a guard (a conditional UPDATE, or a check); it holds when exactly one row matched.
async fn guard<T: WriteTx>(tx: &mut T, g: &Guard) -> Result<u64> {
    match g {
        Guard::RedeemCardToken { id, now_ms } => {
            tx.exec(
                "UPDATE card_tokens SET uses_made = uses_made + 1 WHERE id = $1 AND revoked = FALSE \
                 AND expires_at > $2 AND (max_uses IS NULL OR uses_made < max_uses)",
                vec![Arg::blob(&id.0), Arg::int(*now_ms)],
            )
            .await
        }
        Guard::MfaAttempt { id, now_ms, consume } => {
            tx.exec(
                "UPDATE mfa_sessions SET attempts = attempts + 1, consumed = $4 WHERE id = $1 \
                 AND consumed = FALSE AND attempts < $2 AND expires_at > $3",
                vec![
                    Arg::string(id.to_string()),
                    Arg::int(cardgate_core::mfa::MAX_ATTEMPTS),
                    Arg::int(*now_ms),
                    Arg::Bool(*consume),
                ],
            )
            .await
        }
        Guard::MfaPersonAttempt { tenant, person, now_ms, lockout } => {
            // A new window starts when the last one is over or ended in a lockout (which,
            // since this row is not locked now, has expired).
            macro_rules! fresh {
                () => {
                    "(mfa_persons.window_start + CAST($5 AS BIGINT) <= CAST($3 AS BIGINT) \
                     OR mfa_persons.failures >= CAST($4 AS BIGINT))"
                };
            }
            tx.exec(
                concat!(
                    "INSERT INTO mfa_persons (tenant_id, person_id, failures, window_start, locked_until, totp_step) \
                     VALUES ($1, $2, 1, CAST($3 AS BIGINT), \
                       CASE WHEN CAST($4 AS BIGINT) <= 1 THEN CAST($3 AS BIGINT) + CAST($6 AS BIGINT) ELSE 0 END, -1) \
                     ON CONFLICT (tenant_id, person_id) DO UPDATE SET \
                       failures = CASE WHEN ", fresh!(), " THEN 1 ELSE mfa_persons.failures + 1 END, \
                       window_start = CASE WHEN ", fresh!(), " THEN CAST($3 AS BIGINT) ELSE mfa_persons.window_start END, \
                       locked_until = CASE WHEN (CASE WHEN ", fresh!(), " THEN 1 ELSE mfa_persons.failures + 1 END) \
                         >= CAST($4 AS BIGINT) THEN CAST($3 AS BIGINT) + CAST($6 AS BIGINT) ELSE mfa_persons.locked_until END \
                     WHERE mfa_persons.locked_until <= CAST($3 AS BIGINT)"
                ),
                vec![
                    Arg::text(tenant.as_str()),
                    Arg::string(person.to_string()),
                    Arg::int(*now_ms),
                    Arg::int(i64::from(lockout.max_failures)),
                    Arg::int(i64::from(lockout.window_seconds) * 1000),
                    Arg::int(i64::from(lockout.lockout_seconds) * 1000),
                ],
            )
            .await
        }
        Guard::TotpStep { tenant, person, step } => {
            tx.exec(
                "INSERT INTO mfa_persons (tenant_id, person_id, failures, window_start, locked_until, totp_step) \
                 VALUES ($1, $2, 0, 0, 0, CAST($3 AS BIGINT)) \
                 ON CONFLICT (tenant_id, person_id) DO UPDATE SET totp_step = excluded.totp_step \
                 WHERE mfa_persons.totp_step < excluded.totp_step",
                vec![Arg::text(tenant.as_str()), Arg::string(person.to_string()), Arg::int(*step)],
            )
            .await
        }
        Guard::CardStatus { tenant, card, from, to, now_ms } => {
            tx.exec(
                "UPDATE cards SET status = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4 AND status = $5",
                vec![
                    Arg::text(to.as_str()),
                    Arg::int(*now_ms),
                    Arg::text(tenant.as_str()),
                    Arg::string(card.to_string()),
                    Arg::text(from.as_str()),
                ],
            )
            .await
        }
        Guard::CardIs { tenant, card, status, vault } => {
            tx.count(
                "SELECT 1 FROM cards WHERE tenant_id = $1 AND id = $2 AND status = $3 AND vault = $4",
                vec![
                    Arg::text(tenant.as_str()),
                    Arg::string(card.to_string()),
                    Arg::text(status.as_str()),
                    Arg::blob(vault),
                ],
            )
            .await
        }
        Guard::CardVault { tenant, card, expect_vault, vault, key_version, now_ms } => {
            tx.exec(
                "UPDATE cards SET vault = $1, key_version = $2, updated_at = $3 \
                 WHERE tenant_id = $4 AND id = $5 AND vault = $6",
                vec![
                    Arg::blob(vault),
                    Arg::int(*key_version),
                    Arg::int(*now_ms),
                    Arg::text(tenant.as_str()),
                    Arg::string(card.to_string()),
                    Arg::blob(expect_vault),
                ],
            )
            .await
        }
    }
}

/// Runs one immediate (not deferred) write.
async fn write<T: WriteTx>(tx: &mut T, w: &Write) -> Result<()> {
    match w {
        Write::Audit(_) | Write::InsertAccessToken(_) | Write::InsertCardToken(_) => {
            // Deferred into the batch's inserts by `apply_sets`; never written one by one.
            return Err(StoreError::Database(
                "deferred write reached the single-row path".into(),
            ));
        }
        Write::RevokeAccessToken { id } => {
            tx.exec(
                "UPDATE access_tokens SET revoked = TRUE WHERE id = $1",
                vec![Arg::blob(&id.0)],
            )
            .await?;
        }
        Write::RevokeCardToken { id } => {
            tx.exec(
                "UPDATE card_tokens SET revoked = TRUE WHERE id = $1",
                vec![Arg::blob(&id.0)],
            )
            .await?;
        }
        Write::AddRevocation {
            token_id,
            tenant,
            now_ms,
            expires_at_ms,
        } => {
            tx.exec(
                "INSERT INTO revocations (token_id, tenant_id, created_at, expires_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (token_id) DO NOTHING",
                vec![Arg::text(token_id), Arg::text(tenant.as_str()), Arg::int(*now_ms), Arg::int(*expires_at_ms)],
            )
            .await?;
        }
        Write::InsertMfaSession(s) => {
            tx.exec(
                "INSERT INTO mfa_sessions (id, tenant_id, person_id, environment, channel, code_hash, attempts, created_at, expires_at, consumed) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                vec![
                    Arg::string(s.id.to_string()),
                    Arg::text(s.tenant_id.as_str()),
                    Arg::string(s.person_id.to_string()),
                    Arg::text(s.environment.as_str()),
                    Arg::text(s.channel.as_str()),
                    Arg::Blob(s.code_hash.as_ref().map(|h| &h[..])),
                    Arg::int(s.attempts),
                    Arg::int(s.created_at_ms),
                    Arg::int(s.expires_at_ms),
                    Arg::Bool(s.consumed),
                ],
            )
            .await?;
        }
        Write::MfaPersonPassed { tenant, person } => {
            tx.exec(
                "UPDATE mfa_persons SET failures = 0, locked_until = 0 WHERE tenant_id = $1 AND person_id = $2",
                vec![Arg::text(tenant.as_str()), Arg::string(person.to_string())],
            )
            .await?;
        }
        Write::UpsertTenant(t) => {
            tx.exec(
                "INSERT INTO tenants (id, settings, webhook_secret_enc, updated_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET settings = excluded.settings, \
                 webhook_secret_enc = excluded.webhook_secret_enc, updated_at = excluded.updated_at",
                vec![
                    Arg::text(t.id.as_str()),
                    Arg::string(to_json(&t.settings)?),
                    Arg::Blob(t.webhook_secret_enc.as_deref()),
                    Arg::int(0),
                ],
            )
            .await?;
        }
        Write::UpsertClient(c) => {
            tx.exec(
                "INSERT INTO clients (id, tenant_id, environment, secret_hash, api_key_hash, sdk_api_key_hash, payload_key_enc, disabled, settings, updated_at, tokens_not_before) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (id) DO UPDATE SET environment = excluded.environment, secret_hash = excluded.secret_hash, \
                 api_key_hash = excluded.api_key_hash, sdk_api_key_hash = excluded.sdk_api_key_hash, \
                 payload_key_enc = excluded.payload_key_enc, disabled = excluded.disabled, settings = excluded.settings, \
                 updated_at = excluded.updated_at, tokens_not_before = excluded.tokens_not_before",
                vec![
                    Arg::text(c.id.as_str()),
                    Arg::text(c.tenant_id.as_str()),
                    Arg::text(c.environment.as_str()),
                    Arg::blob(&c.secret_hash.0),
                    Arg::Blob(c.api_key_hash.as_ref().map(|h| &h.0[..])),
                    Arg::Blob(c.sdk_api_key_hash.as_ref().map(|h| &h.0[..])),
                    Arg::Blob(c.payload_key_enc.as_deref()),
                    Arg::Bool(c.disabled),
                    Arg::string(to_json(&c.settings)?),
                    Arg::int(0),
                    Arg::int(c.tokens_not_before_ms),
                ],
            )
            .await?;
        }
        Write::SetClientDisabled {
            id,
            disabled,
            now_ms,
        } => {
            tx.exec(
                "UPDATE clients SET disabled = $1, \
                 tokens_not_before = CASE WHEN $1 THEN CAST($3 AS BIGINT) ELSE tokens_not_before END WHERE id = $2",
                vec![Arg::Bool(*disabled), Arg::text(id.as_str()), Arg::int(*now_ms)],
            )
            .await?;
        }
        Write::UpsertPerson(p) => {
            let n = tx.exec(
                "INSERT INTO persons (tenant_id, id, environment, profile, totp_secret_enc, key_version) \
                 VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET profile = excluded.profile, \
                 totp_secret_enc = excluded.totp_secret_enc, key_version = excluded.key_version \
                 WHERE persons.environment = excluded.environment",
                vec![
                    Arg::text(p.tenant_id.as_str()),
                    Arg::string(p.id.to_string()),
                    Arg::text(p.environment.as_str()),
                    Arg::string(to_json(&p.profile)?),
                    Arg::Blob(p.totp_secret_enc.as_deref()),
                    Arg::int(p.key_version),
                ],
            )
            .await?;
            same_environment(n, || format!("person {} of tenant {}", p.id, p.tenant_id))?;
        }
        Write::UpsertAccount(a) => {
            let n = tx.exec(
                "INSERT INTO accounts (tenant_id, id, environment, account_number, person_ids) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET account_number = excluded.account_number, \
                 person_ids = excluded.person_ids WHERE accounts.environment = excluded.environment",
                vec![
                    Arg::text(a.tenant_id.as_str()),
                    Arg::text(a.id.as_str()),
                    Arg::text(a.environment.as_str()),
                    Arg::text(&a.account_number),
                    Arg::string(to_json(&a.person_ids)?),
                ],
            )
            .await?;
            same_environment(n, || format!("account {} of tenant {}", a.id, a.tenant_id))?;
        }
        Write::UpsertCard(c) => {
            let n = tx.exec(
                "INSERT INTO cards (tenant_id, id, environment, account_id, person_id, status, wallet_eligible, last4, vault, \
                 key_version, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (tenant_id, id) DO UPDATE SET account_id = excluded.account_id, person_id = excluded.person_id, \
                 status = excluded.status, wallet_eligible = excluded.wallet_eligible, last4 = excluded.last4, \
                 vault = excluded.vault, key_version = excluded.key_version, updated_at = excluded.updated_at \
                 WHERE cards.environment = excluded.environment",
                vec![
                    Arg::text(c.tenant_id.as_str()),
                    Arg::string(c.id.to_string()),
                    Arg::text(c.environment.as_str()),
                    Arg::text(c.account_id.as_str()),
                    Arg::string(c.person_id.to_string()),
                    Arg::text(c.status.as_str()),
                    Arg::Bool(c.wallet_eligible),
                    Arg::text(&c.last4),
                    Arg::blob(&c.vault),
                    Arg::int(c.key_version),
                    Arg::int(0),
                ],
            )
            .await?;
            same_environment(n, || format!("card {} of tenant {}", c.id, c.tenant_id))?;
        }
        Write::InsertSigningKey(k) => {
            tx.exec(
                "INSERT INTO signing_keys (kid, environment, alg, private_enc, public_jwk, created_at, retired_at) \
                 VALUES ($1, $2, 'ES256', $3, $4, $5, $6)",
                vec![
                    Arg::text(&k.kid),
                    Arg::text(k.environment.as_str()),
                    Arg::blob(&k.private_enc),
                    Arg::text(&k.public_jwk),
                    Arg::int(k.created_at_ms),
                    Arg::Int(k.retired_at_ms),
                ],
            )
            .await?;
        }
        Write::RetireSigningKey { kid, at_ms } => {
            tx.exec(
                "UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL",
                vec![Arg::int(*at_ms), Arg::text(kid)],
            )
            .await?;
        }
        Write::InsertDataKey(k) => {
            tx.exec(
                "INSERT INTO data_keys (tenant_id, environment, version, key_enc, created_at) VALUES ($1, $2, $3, $4, $5)",
                vec![
                    Arg::text(k.tenant_id.as_str()),
                    Arg::text(k.environment.as_str()),
                    Arg::int(k.version),
                    Arg::blob(&k.key_enc),
                    Arg::int(k.created_at_ms),
                ],
            )
            .await?;
        }
        Write::BumpConfigVersion => {
            tx.exec(
                "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'config_version'",
                vec![],
            )
            .await?;
        }
    }
    Ok(())
}

/// An upsert of a person, account or card changes no row when the id exists in another
/// environment (its `DO UPDATE … WHERE` keeps objects where they are): then the whole
/// transaction fails, so nothing of it is written.
fn same_environment(changed: u64, what: impl FnOnce() -> String) -> Result<()> {
    if changed == 1 {
        Ok(())
    } else {
        Err(StoreError::OtherEnvironment(what()))
    }
}

/// `INSERT … ON CONFLICT DO NOTHING` of a meta key, then its value: both engines.
pub(crate) const META_INIT: &str =
    "INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
