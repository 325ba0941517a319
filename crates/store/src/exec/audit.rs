//! The audit log's write side: appending a batch's events to a chain (each linked under the
//! audit key) and re-linking a log that predates keyed links.

use super::{Arg, WriteTx, AUDIT_EVENTS, META_INIT};
use crate::rows::{self, Cols};
use crate::{Result, StoreError};
use cardgate_core::audit::{
    AuditEvent, AuditKey, ChainHead, LinkRule, LogVerifier, Relink, Relinking, KEYED_LINKS,
    LINKS_META_KEY,
};
use std::borrow::Cow;

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
