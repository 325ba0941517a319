//! The audit log leaves the database: `cardgate audit export` writes events as JSON lines,
//! each with its chain links, verifying every link on the way (a broken chain is refused, not
//! exported), then one `seal` line per chain, the audit key's HMAC over the range it closes.
//! Only once the output is durable does the store's export mark move (per chain, and only
//! forward from where the last export ended), so an interrupted export is simply run again:
//! it starts where the last complete one ended, with no gap. [`verify_export`] checks exported
//! files on their own (with the key), one after another: every link, every seal, and that
//! each file continues where the one before ended.

use super::{checkpoints, mark_ok, Retention};
use crate::{AppError, Conflict};
use cardgate_core::audit::{AuditKey, ChainBreak, ChainVerifier, LinkRule, StoredAuditEvent};
use cardgate_store::{AuditMark, MarkKind};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::io::{BufRead, Write};

/// Where an export starts, per chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// After the last event exported (the store's export mark): the resumable default.
    Last,
    /// From the oldest event still stored.
    All,
    /// From the first event stamped at or after this time (ms).
    Time(i64),
}

/// What to export.
#[derive(Debug, Clone, Copy)]
pub struct ExportRange {
    pub since: Since,
    /// Each chain stops before its first event stamped at or after this time (ms).
    pub until_ms: Option<i64>,
    /// At most this many events in all (the rest is for the next run).
    pub limit: Option<u64>,
}

/// One chain's part of an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportedRange {
    pub chain: i64,
    pub from_seq: i64,
    pub to_seq: i64,
    /// Whether the store's export mark moved to `to_seq`.
    pub recorded: bool,
}

/// The seal's statement: which range of a chain it closes.
fn seal_what(from_seq: i64, prev_hash: &str) -> String {
    format!("export-seal {from_seq} {prev_hash}")
}

fn event_line(e: &StoredAuditEvent) -> Value {
    json!({"type": "event", "chain": e.chain, "seq": e.seq, "ts_ms": e.ts_ms,
        "tenant_id": e.tenant_id, "environment": e.environment, "actor": e.actor,
        "action": e.action, "outcome": e.outcome, "subject": e.subject, "details": e.details,
        "prev_hash": e.prev_hash, "hash": e.hash})
}

fn io_err(e: std::io::Error) -> AppError {
    AppError::Internal(format!("cannot write the export: {e}"))
}

fn broken(b: ChainBreak) -> AppError {
    AppError::Conflict(Conflict::AuditLogBroken(b))
}

impl Retention<'_> {
    /// Writes the events `range` selects to `out` as JSON lines, verifying each chain's links
    /// from its prune checkpoint (or its start), with a seal per chain; then `durable` (flush
    /// and sync the output) and only then moves each chain's export mark where this export
    /// continues the last one. Records the export as an audit event.
    pub async fn export<W: Write>(
        &self,
        out: &mut W,
        range: ExportRange,
        durable: impl FnOnce(&mut W) -> std::io::Result<()>,
    ) -> Result<Vec<ExportedRange>, AppError> {
        let key = crate::audit_key(self.master());
        let marks = self.store.audit_marks().await?;
        for m in &marks {
            if !mark_ok(&key, m) {
                return Err(broken(ChainBreak::Checkpoint {
                    chain: m.chain,
                    seq: m.seq,
                }));
            }
        }
        let starts = checkpoints(&key, &marks).map_err(broken)?;
        let mark_of = |kind: MarkKind, chain: i64| {
            marks
                .iter()
                .find(|m| m.kind == kind && m.chain == chain)
                .cloned()
        };
        let mut left = range.limit.unwrap_or(u64::MAX);
        let mut ranges = Vec::new();
        let mut seals = Vec::new();
        for head in self.store.audit_heads().await? {
            let chain = head.chain;
            let exported = mark_of(MarkKind::Exported, chain);
            let pruned = starts.iter().find(|s| s.chain == chain);
            // Verify from the latest point known good: the export mark when resuming, else
            // the prune checkpoint, else the chain's start.
            let from = match (range.since, &exported) {
                (Since::Last, Some(e)) if pruned.is_none_or(|p| p.seq <= e.seq) => {
                    Some((e.seq, e.hash.clone()))
                }
                _ => pruned.map(|p| (p.seq, p.hash.clone())),
            };
            let mut v = match &from {
                Some((seq, hash)) => {
                    ChainVerifier::after(chain, LinkRule::Keyed(key.clone()), *seq, hash)
                }
                None => ChainVerifier::new(chain, LinkRule::Keyed(key.clone())),
            };
            let mut first: Option<(i64, String)> = None;
            let mut last: Option<(i64, String)> = None;
            let mut after = v.tip().0;
            'chain: while after < head.seq && left > 0 {
                let page = self.store.audit_page((chain, after), 1000).await?;
                if page.is_empty() {
                    break;
                }
                for e in page
                    .iter()
                    .take_while(|e| e.chain == chain && e.seq <= head.seq)
                {
                    v.push(e).map_err(broken)?;
                    after = e.seq;
                    if range.until_ms.is_some_and(|u| e.ts_ms >= u) {
                        break 'chain;
                    }
                    if matches!(range.since, Since::Time(t) if e.ts_ms < t) && first.is_none() {
                        continue;
                    }
                    serde_json::to_writer(&mut *out, &event_line(e))
                        .map_err(|e| io_err(e.into()))?;
                    out.write_all(b"\n").map_err(io_err)?;
                    first.get_or_insert((e.seq, e.prev_hash.clone()));
                    last = Some((e.seq, e.hash.clone()));
                    left -= 1;
                    if left == 0 {
                        break 'chain;
                    }
                }
                if page.last().is_none_or(|e| e.chain != chain) {
                    break;
                }
            }
            if let (Some((from_seq, prev_hash)), Some((to_seq, hash))) = (first, last) {
                let mac = key.mark(&seal_what(from_seq, &prev_hash), chain, to_seq, &hash);
                let seal = json!({"type": "seal", "chain": chain, "from_seq": from_seq,
                    "prev_hash": prev_hash, "to_seq": to_seq, "hash": hash, "mac": mac});
                serde_json::to_writer(&mut *out, &seal).map_err(|e| io_err(e.into()))?;
                out.write_all(b"\n").map_err(io_err)?;
                seals.push((chain, from_seq, to_seq, hash, exported));
            }
        }
        durable(out).map_err(io_err)?;
        let now = self.now_ms();
        for (chain, from_seq, to_seq, hash, exported) in seals {
            let recorded_seq = exported.as_ref().map_or(0, |m| m.seq);
            // Only an export that continues the recorded one (no gap) moves the mark.
            let continues = from_seq <= recorded_seq + 1 && to_seq > recorded_seq;
            let recorded = continues && {
                let mark = AuditMark {
                    kind: MarkKind::Exported,
                    chain,
                    seq: to_seq,
                    hash: hash.clone(),
                    ts_ms: now,
                    mac: key.mark(MarkKind::Exported.as_str(), chain, to_seq, &hash),
                };
                self.store
                    .set_audit_mark(&mark, exported.as_ref().map(|m| m.seq))
                    .await?
            };
            ranges.push(ExportedRange {
                chain,
                from_seq,
                to_seq,
                recorded,
            });
        }
        if !ranges.is_empty() {
            let total: i64 = ranges.iter().map(|r| r.to_seq - r.from_seq + 1).sum();
            let event = self.audit(
                None,
                "admin",
                "audit.exported",
                "ok",
                "audit_log",
                json!({"events": total, "chains": ranges.iter().map(|r| json!({"chain": r.chain,
                    "from_seq": r.from_seq, "to_seq": r.to_seq, "recorded": r.recorded})).collect::<Vec<_>>()}),
            );
            self.commit(cardgate_store::WriteSet::of(vec![event]))
                .await?;
        }
        Ok(ranges)
    }
}

/// What an exported file (or files, in order) holds, per chain: `(first seq, last seq)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifiedExport {
    pub events: u64,
    pub chains: BTreeMap<i64, (i64, i64)>,
}

/// One chain's state while reading exports: its verifier, where its unsealed part began.
struct Reading {
    v: ChainVerifier,
    first: i64,
    open: Option<(i64, String)>,
}

fn field<'a>(v: &'a Value, name: &str, line: usize) -> Result<&'a Value, String> {
    v.get(name)
        .ok_or_else(|| format!("line {line}: no \"{name}\""))
}

fn int(v: &Value, name: &str, line: usize) -> Result<i64, String> {
    field(v, name, line)?
        .as_i64()
        .ok_or_else(|| format!("line {line}: \"{name}\" is not a number"))
}

fn text(v: &Value, name: &str, line: usize) -> Result<String, String> {
    field(v, name, line)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("line {line}: \"{name}\" is not a string"))
}

fn event_of(v: &Value, line: usize) -> Result<StoredAuditEvent, String> {
    let tenant = field(v, "tenant_id", line)?;
    Ok(StoredAuditEvent {
        chain: int(v, "chain", line)?,
        seq: int(v, "seq", line)?,
        ts_ms: int(v, "ts_ms", line)?,
        tenant_id: if tenant.is_null() {
            None
        } else {
            Some(text(v, "tenant_id", line)?)
        },
        environment: text(v, "environment", line)?,
        actor: text(v, "actor", line)?,
        action: text(v, "action", line)?,
        outcome: text(v, "outcome", line)?,
        subject: text(v, "subject", line)?,
        details: text(v, "details", line)?,
        prev_hash: text(v, "prev_hash", line)?,
        hash: text(v, "hash", line)?,
    })
}

/// Verifies exported files with the audit key, in the order given, as one sequence: per
/// chain, every link holds and each event follows the one before (across files too: a later
/// file must continue where the earlier ended, so a missing export is a gap); a chain's first
/// event is number 1 after the keyed start, or follows whatever came before it (an earlier
/// export or a pruned part, which the seal covers); every range is closed by a seal the key
/// made over exactly that range, so a truncated or interrupted export fails.
pub fn verify_export<R: BufRead>(key: &AuditKey, files: Vec<R>) -> Result<VerifiedExport, String> {
    let mut chains: BTreeMap<i64, Reading> = BTreeMap::new();
    let mut events = 0;
    for (f, file) in files.into_iter().enumerate() {
        for (i, line) in file.lines().enumerate() {
            let line_no = i + 1;
            let line = line.map_err(|e| format!("file {}: cannot read: {e}", f + 1))?;
            if line.trim().is_empty() {
                continue;
            }
            let at = |m: String| format!("file {}, {m}", f + 1);
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| at(format!("line {line_no}: not JSON: {e}")))?;
            match v.get("type").and_then(Value::as_str) {
                Some("event") => {
                    let e = event_of(&v, line_no).map_err(at)?;
                    let r = chains.entry(e.chain).or_insert_with(|| Reading {
                        v: if e.seq == 1 {
                            ChainVerifier::new(e.chain, LinkRule::Keyed(key.clone()))
                        } else {
                            ChainVerifier::after(
                                e.chain,
                                LinkRule::Keyed(key.clone()),
                                e.seq - 1,
                                &e.prev_hash,
                            )
                        },
                        first: e.seq,
                        open: None,
                    });
                    r.v.push(&e)
                        .map_err(|b| at(format!("line {line_no}: {b}")))?;
                    r.open.get_or_insert((e.seq, e.prev_hash.clone()));
                    events += 1;
                }
                Some("seal") => {
                    let chain = int(&v, "chain", line_no).map_err(at)?;
                    let from_seq = int(&v, "from_seq", line_no).map_err(at)?;
                    let prev_hash = text(&v, "prev_hash", line_no).map_err(at)?;
                    let to_seq = int(&v, "to_seq", line_no).map_err(at)?;
                    let hash = text(&v, "hash", line_no).map_err(at)?;
                    let mac = text(&v, "mac", line_no).map_err(at)?;
                    if !key.mark_is(&mac, &seal_what(from_seq, &prev_hash), chain, to_seq, &hash) {
                        return Err(at(format!(
                            "line {line_no}: the seal of chain {chain} was not made with the audit key"
                        )));
                    }
                    let r = chains.get_mut(&chain).ok_or_else(|| {
                        at(format!(
                            "line {line_no}: a seal of chain {chain} without its events"
                        ))
                    })?;
                    let (tip_seq, tip_hash) = r.v.tip();
                    let open = r.open.take();
                    if open != Some((from_seq, prev_hash)) || tip_seq != to_seq || tip_hash != hash
                    {
                        return Err(at(format!(
                            "line {line_no}: chain {chain}'s events are not the range its seal closes ({from_seq}..{to_seq})"
                        )));
                    }
                }
                _ => return Err(at(format!("line {line_no}: neither an event nor a seal"))),
            }
        }
    }
    let mut out = VerifiedExport {
        events,
        chains: BTreeMap::new(),
    };
    for (chain, r) in chains {
        if let Some((from, _)) = r.open {
            return Err(format!(
                "chain {chain}: events from {from} on are not sealed (an interrupted or truncated export)"
            ));
        }
        out.chains.insert(chain, (r.first, r.v.tip().0));
    }
    Ok(out)
}
