//! The immediate writes' SQL: each [`Write`] that is not appended at the end of a batch, as one
//! statement.

use super::{Arg, WriteTx};
use crate::write::Write;
use crate::{Result, StoreError};
use cardgate_core::Operation;

pub(crate) fn ops_to_text(ops: &[Operation]) -> String {
    ops.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(",")
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Runs one immediate (not deferred) write.
pub(super) async fn write<T: WriteTx>(tx: &mut T, w: &Write) -> Result<()> {
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
            // The right code's own attempt was counted as a failure by the guard: it is taken
            // back (and the lockout it alone would have started with it). Earlier failures stay.
            tx.exec(
                "UPDATE mfa_persons SET failures = CASE WHEN failures > 0 THEN failures - 1 ELSE 0 END, \
                 locked_until = 0 WHERE tenant_id = $1 AND person_id = $2",
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
                "UPDATE clients SET disabled = $1, tokens_not_before = CAST($3 AS BIGINT) WHERE id = $2",
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
        Write::InsertSdkServerKey(k) => crate::sdk::insert_server_key(tx, k).await?,
        Write::InsertSdkToken(t) => crate::sdk::insert_token(tx, t).await?,
        Write::RevokeSdkToken { id } => crate::sdk::revoke_token(tx, id).await?,
        Write::SetMeta { key, value } => {
            tx.exec(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                vec![Arg::text(key), Arg::text(value)],
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
