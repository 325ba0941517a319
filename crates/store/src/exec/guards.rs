//! The guards' SQL: each [`Guard`] as one conditional statement (it holds when exactly one row
//! changed or matched), and the claim-once guard, which also reads what a key's first claimant
//! stored.

use super::{Arg, WriteTx};
use crate::rows;
use crate::write::{Guard, StoredClaim};
use crate::{Result, StoreError};

/// Claims one key ([`Guard::Claim`]): `None` when claimed, else what the first claimant
/// stored. A claim that holds the key is never deleted before it expires, so one is found;
/// should a purge with a later clock have deleted it meanwhile, the key is claimed again.
pub(crate) async fn claim<T: WriteTx>(tx: &mut T, g: &Guard) -> Result<Option<StoredClaim>> {
    for _ in 0..3 {
        if guard(tx, g).await? == 1 {
            return Ok(None);
        }
        if let Some(stored) = stored_claims(tx, &[g]).await?.pop().flatten() {
            return Ok(Some(stored));
        }
    }
    Err(StoreError::Database(
        "a claimed key kept vanishing while it was read".into(),
    ))
}

/// What the claimants of `claims`' keys stored (`None` where there is no claim), read by a
/// statement of its own: under PostgreSQL's read committed, it sees a claim committed by
/// another transaction while this one waited for it.
pub(crate) async fn stored_claims<T: WriteTx>(
    tx: &mut T,
    claims: &[&Guard],
) -> Result<Vec<Option<StoredClaim>>> {
    let mut out = Vec::with_capacity(claims.len());
    for g in claims {
        let Guard::Claim { namespace, key, .. } = g else {
            return Err(StoreError::Database(
                "stored_claims takes claims only".into(),
            ));
        };
        let found = tx
            .fetch_all(
                "SELECT fingerprint, value, expires_at FROM claims WHERE namespace = $1 AND key = $2",
                vec![Arg::text(namespace), Arg::blob(&key.0)],
                rows::stored_claim,
            )
            .await?;
        out.push(found.into_iter().next());
    }
    Ok(out)
}

/// Runs `guards` one statement each, in order: which held.
pub(super) async fn each_guard<T: WriteTx>(tx: &mut T, guards: &[&Guard]) -> Result<Vec<bool>> {
    let mut held = Vec::with_capacity(guards.len());
    for g in guards {
        held.push(guard(tx, g).await? == 1);
    }
    Ok(held)
}

/// Runs a guard (a conditional UPDATE, or a check); it holds when exactly one row matched.
pub(super) async fn guard<T: WriteTx>(tx: &mut T, g: &Guard) -> Result<u64> {
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
        Guard::Claim { namespace, key, fingerprint, value, now_ms, expires_at_ms } => {
            tx.exec(
                CLAIM,
                vec![
                    Arg::text(namespace),
                    Arg::blob(&key.0),
                    Arg::blob(fingerprint),
                    Arg::Blob(value.as_deref()),
                    Arg::int(*now_ms),
                    Arg::int(*expires_at_ms),
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

/// Claims `($1, $2)` for `$3`, `$4` from `$5` until `$6`: inserted when the key is free,
/// taken over when its claim has expired (expiry is exclusive, as for tokens), and nothing
/// (no row changed) when another claimant holds it.
pub(crate) const CLAIM: &str = "INSERT INTO claims (namespace, key, fingerprint, value, created_at, expires_at) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (namespace, key) DO UPDATE SET fingerprint = excluded.fingerprint, value = excluded.value, \
     created_at = excluded.created_at, expires_at = excluded.expires_at \
     WHERE claims.expires_at <= excluded.created_at";

/// Deletes at most `$2` claims that expired by `$1`, oldest first.
pub(crate) const PURGE_CLAIMS: &str = "DELETE FROM claims WHERE (namespace, key) IN \
     (SELECT namespace, key FROM claims WHERE expires_at <= $1 ORDER BY expires_at LIMIT $2)";
