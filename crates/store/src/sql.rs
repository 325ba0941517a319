//! The SQL of both backends, written once: `sql_store!` expands it for SQLite and for
//! PostgreSQL. Parameters are `$n` (both engines accept it); the only differences are how a
//! write transaction begins and how the audit chain head is locked.

use crate::write::{Guard, Write, WriteOutcome, WriteSet};
use crate::{DataKeyRow, RedemptionContext, Result, SigningKeyRow, Store, StoreError};
use async_trait::async_trait;
use cardgate_core::audit::StoredAuditEvent;
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::{Channel, MfaSession};
use cardgate_core::model::{ClientSettings, PersonProfile, TenantSettings};
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::SecretHash;
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord, TokenKind, UseLimit};
use cardgate_core::{
    Account, AccountId, Card, CardId, CardStatus, Client, ClientId, Environment, Operation, Person,
    PersonId, Tenant, TenantId,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn env_of(s: &str) -> Result<Environment> {
    Environment::parse(s).ok_or_else(|| corrupt("environment"))
}

fn hash_of(b: &[u8]) -> Result<SecretHash> {
    SecretHash::from_slice(b).ok_or_else(|| corrupt("hash"))
}

fn json_of<T: serde::de::DeserializeOwned>(s: &str, what: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|_| corrupt(what))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn ops_to_text(ops: &[Operation]) -> String {
    ops.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(",")
}

fn ops_of(s: &str) -> Result<Vec<Operation>> {
    s.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| Operation::parse(p).ok_or_else(|| corrupt("operation")))
        .collect()
}

fn migrator(files: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            files
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect(),
        ),
        ..Migrator::DEFAULT
    }
}

/// Rows per multi-row INSERT: 13 columns × 64 rows stays far below both engines' limits on
/// bound parameters.
const ROWS_PER_INSERT: usize = 64;

/// Rows a batch inserts, written together at the end (or before a guard that needs them).
#[derive(Default)]
struct Pending<'a> {
    audit: Vec<StoredAuditEvent>,
    access_tokens: Vec<&'a AccessTokenRecord>,
    card_tokens: Vec<&'a CardTokenRecord>,
}

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "init",
    include_str!("../migrations/sqlite/0001_init.sql"),
)];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "init",
    include_str!("../migrations/postgres/0001_init.sql"),
)];

macro_rules! sql_store {
    ($name:ident, $db:ty, $row:ty, $backend:literal, $begin:literal, $lock:literal, $writers:literal) => {
        /// A store on this backend: a read pool and a write pool.
        pub struct $name {
            read: sqlx::Pool<$db>,
            write: sqlx::Pool<$db>,
        }

        impl $name {
            fn tenant(row: &$row) -> Result<Tenant> {
                Ok(Tenant {
                    id: TenantId::parse(&row.try_get::<String, _>("id")?).map_err(|_| corrupt("tenant id"))?,
                    settings: json_of::<TenantSettings>(&row.try_get::<String, _>("settings")?, "tenant settings")?,
                    webhook_secret_enc: row.try_get("webhook_secret_enc")?,
                })
            }

            fn client(row: &$row) -> Result<Client> {
                let opt_hash = |col: &str| -> Result<Option<SecretHash>> {
                    row.try_get::<Option<Vec<u8>>, _>(col)?.map(|b| hash_of(&b)).transpose()
                };
                Ok(Client {
                    id: ClientId::parse(&row.try_get::<String, _>("id")?).map_err(|_| corrupt("client id"))?,
                    tenant_id: TenantId::parse(&row.try_get::<String, _>("tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                    environment: env_of(&row.try_get::<String, _>("environment")?)?,
                    secret_hash: hash_of(&row.try_get::<Vec<u8>, _>("secret_hash")?)?,
                    api_key_hash: opt_hash("api_key_hash")?,
                    sdk_api_key_hash: opt_hash("sdk_api_key_hash")?,
                    payload_key_enc: row.try_get("payload_key_enc")?,
                    disabled: row.try_get("disabled")?,
                    settings: json_of::<ClientSettings>(&row.try_get::<String, _>("settings")?, "client settings")?,
                })
            }

            fn person(row: &$row) -> Result<Person> {
                Ok(Person {
                    id: PersonId::parse(&row.try_get::<String, _>("id")?).map_err(|_| corrupt("person id"))?,
                    tenant_id: TenantId::parse(&row.try_get::<String, _>("tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                    profile: json_of::<PersonProfile>(&row.try_get::<String, _>("profile")?, "person profile")?,
                    totp_secret_enc: row.try_get("totp_secret_enc")?,
                    key_version: row.try_get("key_version")?,
                })
            }

            fn account(row: &$row) -> Result<Account> {
                Ok(Account {
                    id: AccountId::parse(&row.try_get::<String, _>("id")?).map_err(|_| corrupt("account id"))?,
                    tenant_id: TenantId::parse(&row.try_get::<String, _>("tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                    account_number: row.try_get("account_number")?,
                    person_ids: json_of::<Vec<PersonId>>(&row.try_get::<String, _>("person_ids")?, "account holders")?,
                })
            }

            fn card(row: &$row) -> Result<Card> {
                Ok(Card {
                    id: CardId::parse(&row.try_get::<String, _>("id")?).map_err(|_| corrupt("card id"))?,
                    tenant_id: TenantId::parse(&row.try_get::<String, _>("tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                    account_id: AccountId::parse(&row.try_get::<String, _>("account_id")?).map_err(|_| corrupt("account id"))?,
                    person_id: PersonId::parse(&row.try_get::<String, _>("person_id")?).map_err(|_| corrupt("person id"))?,
                    status: CardStatus::parse(&row.try_get::<String, _>("status")?).ok_or_else(|| corrupt("card status"))?,
                    wallet_eligible: row.try_get("wallet_eligible")?,
                    last4: row.try_get("last4")?,
                    vault: row.try_get("vault")?,
                    key_version: row.try_get("key_version")?,
                })
            }

            fn audit_event(row: &$row) -> Result<StoredAuditEvent> {
                Ok(StoredAuditEvent {
                    seq: row.try_get("seq")?,
                    ts_ms: row.try_get("ts_ms")?,
                    tenant_id: row.try_get("tenant_id")?,
                    environment: row.try_get("environment")?,
                    actor: row.try_get("actor")?,
                    action: row.try_get("action")?,
                    outcome: row.try_get("outcome")?,
                    subject: row.try_get("subject")?,
                    details: row.try_get("details")?,
                    prev_hash: row.try_get("prev_hash")?,
                    hash: row.try_get("hash")?,
                })
            }

            /// Writes the deferred rows with one multi-row INSERT per table and chunk.
            async fn flush(tx: &mut sqlx::Transaction<'static, $db>, pending: &mut Pending<'_>) -> Result<()> {
                for chunk in pending.card_tokens.chunks(ROWS_PER_INSERT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO card_tokens (hash, kind, tenant_id, client_id, environment, card_id, person_id, operations, \
                         issued_at, expires_at, max_uses, uses_made, revoked) ",
                    );
                    q.push_values(chunk, |mut b, t| {
                        b.push_bind(t.hash.0.to_vec())
                            .push_bind(t.kind.as_str())
                            .push_bind(t.tenant_id.as_str().to_string())
                            .push_bind(t.client_id.as_str().to_string())
                            .push_bind(t.environment.as_str())
                            .push_bind(t.card_id.map(|c| c.to_string()))
                            .push_bind(t.person_id.map(|p| p.to_string()))
                            .push_bind(ops_to_text(&t.operations))
                            .push_bind(t.issued_at_ms)
                            .push_bind(t.expires_at_ms)
                            .push_bind(t.use_limit.max_uses())
                            .push_bind(t.uses_made)
                            .push_bind(t.revoked);
                    });
                    q.build().execute(&mut **tx).await?;
                }
                pending.card_tokens.clear();
                for chunk in pending.access_tokens.chunks(ROWS_PER_INSERT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO access_tokens (hash, kind, tenant_id, client_id, environment, scope, issued_at, expires_at, revoked) ",
                    );
                    q.push_values(chunk, |mut b, t| {
                        b.push_bind(t.hash.0.to_vec())
                            .push_bind(t.kind.as_str())
                            .push_bind(t.tenant_id.as_str().to_string())
                            .push_bind(t.client_id.as_str().to_string())
                            .push_bind(t.environment.as_str())
                            .push_bind(t.scopes.to_string_list())
                            .push_bind(t.issued_at_ms)
                            .push_bind(t.expires_at_ms)
                            .push_bind(t.revoked);
                    });
                    q.build().execute(&mut **tx).await?;
                }
                pending.access_tokens.clear();
                for chunk in pending.audit.chunks(ROWS_PER_INSERT) {
                    let mut q = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO audit_events (seq, ts_ms, tenant_id, environment, actor, action, outcome, subject, details, prev_hash, hash) ",
                    );
                    q.push_values(chunk, |mut b, e| {
                        b.push_bind(e.seq)
                            .push_bind(e.ts_ms)
                            .push_bind(e.tenant_id.clone())
                            .push_bind(e.environment.clone())
                            .push_bind(e.actor.clone())
                            .push_bind(e.action.clone())
                            .push_bind(e.outcome.clone())
                            .push_bind(e.subject.clone())
                            .push_bind(e.details.clone())
                            .push_bind(e.prev_hash.clone())
                            .push_bind(e.hash.clone());
                    });
                    q.build().execute(&mut **tx).await?;
                }
                pending.audit.clear();
                Ok(())
            }

            fn card_token(r: &$row, hash: &SecretHash) -> Result<CardTokenRecord> {
                Ok(CardTokenRecord {
                    hash: *hash,
                    kind: TokenKind::parse(&r.try_get::<String, _>("kind")?).ok_or_else(|| corrupt("token kind"))?,
                    tenant_id: TenantId::parse(&r.try_get::<String, _>("tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                    client_id: ClientId::parse(&r.try_get::<String, _>("client_id")?).map_err(|_| corrupt("client id"))?,
                    environment: env_of(&r.try_get::<String, _>("environment")?)?,
                    card_id: r.try_get::<Option<String>, _>("card_id")?.map(|c| CardId::parse(&c)).transpose().map_err(|_| corrupt("card id"))?,
                    person_id: r.try_get::<Option<String>, _>("person_id")?.map(|c| PersonId::parse(&c)).transpose().map_err(|_| corrupt("person id"))?,
                    operations: ops_of(&r.try_get::<String, _>("operations")?)?,
                    issued_at_ms: r.try_get("issued_at")?,
                    expires_at_ms: r.try_get("expires_at")?,
                    use_limit: UseLimit::from_max_uses(r.try_get("max_uses")?),
                    uses_made: r.try_get("uses_made")?,
                    revoked: r.try_get("revoked")?,
                })
            }

            async fn guard(tx: &mut sqlx::Transaction<'static, $db>, g: &Guard) -> Result<bool> {
                let res = match g {
                    Guard::RedeemCardToken { hash, now_ms } => {
                        sqlx::query(
                            "UPDATE card_tokens SET uses_made = uses_made + 1 WHERE hash = $1 AND revoked = FALSE \
                             AND expires_at > $2 AND (max_uses IS NULL OR uses_made < max_uses)",
                        )
                        .bind(&hash.0[..])
                        .bind(*now_ms)
                        .execute(&mut **tx)
                        .await?
                    }
                    Guard::ConsumeMfaSession { id, now_ms } => {
                        sqlx::query(
                            "UPDATE mfa_sessions SET consumed = TRUE WHERE id = $1 AND consumed = FALSE \
                             AND attempts < $2 AND expires_at > $3",
                        )
                        .bind(id.to_string())
                        .bind(cardgate_core::mfa::MAX_ATTEMPTS)
                        .bind(*now_ms)
                        .execute(&mut **tx)
                        .await?
                    }
                    Guard::CardStatus { tenant, card, from, to, now_ms } => {
                        sqlx::query("UPDATE cards SET status = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4 AND status = $5")
                            .bind(to.as_str())
                            .bind(*now_ms)
                            .bind(tenant.as_str())
                            .bind(card.to_string())
                            .bind(from.as_str())
                            .execute(&mut **tx)
                            .await?
                    }
                    Guard::CardVault { tenant, card, expect_vault, vault, key_version, now_ms } => {
                        sqlx::query(
                            "UPDATE cards SET vault = $1, key_version = $2, updated_at = $3 \
                             WHERE tenant_id = $4 AND id = $5 AND vault = $6",
                        )
                        .bind(vault.as_slice())
                        .bind(*key_version)
                        .bind(*now_ms)
                        .bind(tenant.as_str())
                        .bind(card.to_string())
                        .bind(expect_vault.as_slice())
                        .execute(&mut **tx)
                        .await?
                    }
                };
                Ok(res.rows_affected() == 1)
            }

            async fn write(tx: &mut sqlx::Transaction<'static, $db>, w: &Write) -> Result<()> {
                match w {
                    Write::Audit(_) | Write::InsertAccessToken(_) | Write::InsertCardToken(_) => {
                        // Deferred into multi-row inserts by `apply`; never written one by one.
                        return Err(StoreError::Database("deferred write reached the single-row path".into()));
                    }
                    Write::RevokeAccessToken { hash } => {
                        sqlx::query("UPDATE access_tokens SET revoked = TRUE WHERE hash = $1")
                            .bind(&hash.0[..])
                            .execute(&mut **tx)
                            .await?;
                    }
                    Write::RevokeCardToken { hash } => {
                        sqlx::query("UPDATE card_tokens SET revoked = TRUE WHERE hash = $1")
                            .bind(&hash.0[..])
                            .execute(&mut **tx)
                            .await?;
                    }
                    Write::AddRevocation { token_id, tenant, now_ms, expires_at_ms } => {
                        sqlx::query(
                            "INSERT INTO revocations (token_id, tenant_id, created_at, expires_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (token_id) DO NOTHING",
                        )
                        .bind(token_id)
                        .bind(tenant.as_str())
                        .bind(*now_ms)
                        .bind(*expires_at_ms)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Write::InsertMfaSession(s) => {
                        sqlx::query(
                            "INSERT INTO mfa_sessions (id, tenant_id, person_id, environment, channel, code_hash, attempts, created_at, expires_at, consumed) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                        )
                        .bind(s.id.to_string())
                        .bind(s.tenant_id.as_str())
                        .bind(s.person_id.to_string())
                        .bind(s.environment.as_str())
                        .bind(s.channel.as_str())
                        .bind(s.code_hash.map(|h| h.to_vec()))
                        .bind(s.attempts)
                        .bind(s.created_at_ms)
                        .bind(s.expires_at_ms)
                        .bind(s.consumed)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Write::MfaWrongAttempt { id } => {
                        sqlx::query("UPDATE mfa_sessions SET attempts = attempts + 1 WHERE id = $1")
                            .bind(id.to_string())
                            .execute(&mut **tx)
                            .await?;
                    }
                    Write::UpsertTenant(t) => {
                        sqlx::query(
                            "INSERT INTO tenants (id, settings, webhook_secret_enc, updated_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (id) DO UPDATE SET settings = excluded.settings, \
                             webhook_secret_enc = excluded.webhook_secret_enc, updated_at = excluded.updated_at",
                        )
                        .bind(t.id.as_str())
                        .bind(to_json(&t.settings)?)
                        .bind(t.webhook_secret_enc.as_deref())
                        .bind(0i64)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Write::UpsertClient(c) => {
                        sqlx::query(
                            "INSERT INTO clients (id, tenant_id, environment, secret_hash, api_key_hash, sdk_api_key_hash, payload_key_enc, disabled, settings, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                             ON CONFLICT (id) DO UPDATE SET environment = excluded.environment, secret_hash = excluded.secret_hash, \
                             api_key_hash = excluded.api_key_hash, sdk_api_key_hash = excluded.sdk_api_key_hash, \
                             payload_key_enc = excluded.payload_key_enc, disabled = excluded.disabled, settings = excluded.settings, \
                             updated_at = excluded.updated_at",
                        )
                        .bind(c.id.as_str())
                        .bind(c.tenant_id.as_str())
                        .bind(c.environment.as_str())
                        .bind(&c.secret_hash.0[..])
                        .bind(c.api_key_hash.map(|h| h.0.to_vec()))
                        .bind(c.sdk_api_key_hash.map(|h| h.0.to_vec()))
                        .bind(c.payload_key_enc.as_deref())
                        .bind(c.disabled)
                        .bind(to_json(&c.settings)?)
                        .bind(0i64)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Write::SetClientDisabled { id, disabled } => {
                        sqlx::query("UPDATE clients SET disabled = $1 WHERE id = $2")
                            .bind(*disabled)
                            .bind(id.as_str())
                            .execute(&mut **tx)
                            .await?;
                    }
                    Write::UpsertPerson(p) => {
                        sqlx::query(
                            "INSERT INTO persons (tenant_id, id, profile, totp_secret_enc, key_version) VALUES ($1, $2, $3, $4, $5) \
                             ON CONFLICT (tenant_id, id) DO UPDATE SET profile = excluded.profile, \
                             totp_secret_enc = excluded.totp_secret_enc, key_version = excluded.key_version",
                        )
                        .bind(p.tenant_id.as_str())
                        .bind(p.id.to_string())
                        .bind(to_json(&p.profile)?)
                        .bind(p.totp_secret_enc.as_deref())
                        .bind(p.key_version)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Write::UpsertAccount(a) => {
                        sqlx::query(
                            "INSERT INTO accounts (tenant_id, id, account_number, person_ids) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (tenant_id, id) DO UPDATE SET account_number = excluded.account_number, person_ids = excluded.person_ids",
                        )
                        .bind(a.tenant_id.as_str())
                        .bind(a.id.as_str())
                        .bind(&a.account_number)
                        .bind(to_json(&a.person_ids)?)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Write::UpsertCard(c) => {
                        sqlx::query(
                            "INSERT INTO cards (tenant_id, id, account_id, person_id, status, wallet_eligible, last4, vault, key_version, updated_at) \
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                             ON CONFLICT (tenant_id, id) DO UPDATE SET account_id = excluded.account_id, person_id = excluded.person_id, \
                             status = excluded.status, wallet_eligible = excluded.wallet_eligible, last4 = excluded.last4, \
                             vault = excluded.vault, key_version = excluded.key_version, updated_at = excluded.updated_at",
                        )
                        .bind(c.tenant_id.as_str())
                        .bind(c.id.to_string())
                        .bind(c.account_id.as_str())
                        .bind(c.person_id.to_string())
                        .bind(c.status.as_str())
                        .bind(c.wallet_eligible)
                        .bind(&c.last4)
                        .bind(c.vault.as_slice())
                        .bind(c.key_version)
                        .bind(0i64)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Write::InsertSigningKey(k) => {
                        sqlx::query(
                            "INSERT INTO signing_keys (kid, environment, alg, private_enc, public_jwk, created_at, retired_at) \
                             VALUES ($1, $2, 'ES256', $3, $4, $5, $6)",
                        )
                        .bind(&k.kid)
                        .bind(k.environment.as_str())
                        .bind(k.private_enc.as_slice())
                        .bind(&k.public_jwk)
                        .bind(k.created_at_ms)
                        .bind(k.retired_at_ms)
                        .execute(&mut **tx)
                        .await?;
                    }
                    Write::RetireSigningKey { kid, at_ms } => {
                        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE kid = $2 AND retired_at IS NULL")
                            .bind(*at_ms)
                            .bind(kid)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Write::InsertDataKey(k) => {
                        sqlx::query("INSERT INTO data_keys (tenant_id, version, key_enc, created_at) VALUES ($1, $2, $3, $4)")
                            .bind(k.tenant_id.as_str())
                            .bind(k.version)
                            .bind(k.key_enc.as_slice())
                            .bind(k.created_at_ms)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Write::BumpConfigVersion => {
                        sqlx::query(
                            "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = 'config_version'",
                        )
                        .execute(&mut **tx)
                        .await?;
                    }
                }
                Ok(())
            }
        }

        #[async_trait]
        impl Store for $name {
            fn backend(&self) -> &'static str {
                $backend
            }

            fn writers(&self) -> usize {
                $writers
            }

            async fn meta_get(&self, key: &str) -> Result<Option<String>> {
                Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1").bind(key).fetch_optional(&self.read).await?)
            }

            async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
                let mut tx = self.write.begin_with($begin).await?;
                sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
                    .bind(key)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
                let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1").bind(key).fetch_one(&mut *tx).await?;
                tx.commit().await?;
                Ok(v)
            }

            async fn config_version(&self) -> Result<i64> {
                let v: Option<String> = self.meta_get("config_version").await?;
                v.and_then(|s| s.parse().ok()).ok_or_else(|| corrupt("config_version"))
            }

            async fn load_tenants(&self) -> Result<Vec<Tenant>> {
                sqlx::query("SELECT id, settings, webhook_secret_enc FROM tenants ORDER BY id")
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(Self::tenant)
                    .collect()
            }

            async fn load_clients(&self) -> Result<Vec<Client>> {
                sqlx::query("SELECT * FROM clients ORDER BY id").fetch_all(&self.read).await?.iter().map(Self::client).collect()
            }

            async fn load_signing_keys(&self, env: Environment) -> Result<Vec<SigningKeyRow>> {
                sqlx::query("SELECT * FROM signing_keys WHERE environment = $1 ORDER BY created_at")
                    .bind(env.as_str())
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(SigningKeyRow {
                            kid: r.try_get("kid")?,
                            environment: env_of(&r.try_get::<String, _>("environment")?)?,
                            private_enc: r.try_get("private_enc")?,
                            public_jwk: r.try_get("public_jwk")?,
                            created_at_ms: r.try_get("created_at")?,
                            retired_at_ms: r.try_get("retired_at")?,
                        })
                    })
                    .collect()
            }

            async fn load_data_keys(&self) -> Result<Vec<DataKeyRow>> {
                sqlx::query("SELECT * FROM data_keys ORDER BY tenant_id, version")
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(|r| {
                        Ok(DataKeyRow {
                            tenant_id: TenantId::parse(&r.try_get::<String, _>("tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                            version: r.try_get("version")?,
                            key_enc: r.try_get("key_enc")?,
                            created_at_ms: r.try_get("created_at")?,
                        })
                    })
                    .collect()
            }

            async fn get_person(&self, tenant: &TenantId, id: &PersonId) -> Result<Option<Person>> {
                sqlx::query("SELECT * FROM persons WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_str())
                    .bind(id.to_string())
                    .fetch_optional(&self.read)
                    .await?
                    .as_ref()
                    .map(Self::person)
                    .transpose()
            }

            async fn get_account(&self, tenant: &TenantId, id: &str) -> Result<Option<Account>> {
                sqlx::query("SELECT * FROM accounts WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_str())
                    .bind(id)
                    .fetch_optional(&self.read)
                    .await?
                    .as_ref()
                    .map(Self::account)
                    .transpose()
            }

            async fn get_card(&self, tenant: &TenantId, id: &CardId) -> Result<Option<Card>> {
                sqlx::query("SELECT * FROM cards WHERE tenant_id = $1 AND id = $2")
                    .bind(tenant.as_str())
                    .bind(id.to_string())
                    .fetch_optional(&self.read)
                    .await?
                    .as_ref()
                    .map(Self::card)
                    .transpose()
            }

            async fn list_cards(&self, tenant: &TenantId) -> Result<Vec<Card>> {
                sqlx::query("SELECT * FROM cards WHERE tenant_id = $1 ORDER BY id")
                    .bind(tenant.as_str())
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(Self::card)
                    .collect()
            }

            async fn list_persons(&self, tenant: &TenantId) -> Result<Vec<Person>> {
                sqlx::query("SELECT * FROM persons WHERE tenant_id = $1 ORDER BY id")
                    .bind(tenant.as_str())
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(Self::person)
                    .collect()
            }

            async fn list_accounts(&self, tenant: &TenantId) -> Result<Vec<Account>> {
                sqlx::query("SELECT * FROM accounts WHERE tenant_id = $1 ORDER BY id")
                    .bind(tenant.as_str())
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(Self::account)
                    .collect()
            }

            async fn get_access_token(&self, hash: &SecretHash) -> Result<Option<AccessTokenRecord>> {
                let Some(r) = sqlx::query("SELECT * FROM access_tokens WHERE hash = $1")
                    .bind(&hash.0[..])
                    .fetch_optional(&self.read)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(AccessTokenRecord {
                    hash: *hash,
                    kind: TokenKind::parse(&r.try_get::<String, _>("kind")?).ok_or_else(|| corrupt("token kind"))?,
                    tenant_id: TenantId::parse(&r.try_get::<String, _>("tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                    client_id: ClientId::parse(&r.try_get::<String, _>("client_id")?).map_err(|_| corrupt("client id"))?,
                    environment: env_of(&r.try_get::<String, _>("environment")?)?,
                    scopes: ScopeSet::parse(&r.try_get::<String, _>("scope")?).map_err(|_| corrupt("scope"))?,
                    issued_at_ms: r.try_get("issued_at")?,
                    expires_at_ms: r.try_get("expires_at")?,
                    revoked: r.try_get("revoked")?,
                }))
            }

            async fn get_card_token(&self, hash: &SecretHash) -> Result<Option<CardTokenRecord>> {
                let Some(r) = sqlx::query("SELECT * FROM card_tokens WHERE hash = $1")
                    .bind(&hash.0[..])
                    .fetch_optional(&self.read)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(Self::card_token(&r, hash)?))
            }

            async fn get_redemption(&self, hash: &SecretHash) -> Result<Option<RedemptionContext>> {
                let Some(r) = sqlx::query(
                    "SELECT t.*, c.id AS c_id, c.tenant_id AS c_tenant_id, c.account_id AS c_account_id, \
                     c.person_id AS c_person_id, c.status AS c_status, c.wallet_eligible AS c_wallet_eligible, \
                     c.last4 AS c_last4, c.vault AS c_vault, c.key_version AS c_key_version, p.profile AS p_profile \
                     FROM card_tokens t \
                     LEFT JOIN cards c ON c.tenant_id = t.tenant_id AND c.id = t.card_id \
                     LEFT JOIN persons p ON p.tenant_id = c.tenant_id AND p.id = c.person_id \
                     WHERE t.hash = $1",
                )
                .bind(&hash.0[..])
                .fetch_optional(&self.read)
                .await?
                else {
                    return Ok(None);
                };
                let token = Self::card_token(&r, hash)?;
                let card = match r.try_get::<Option<String>, _>("c_id")? {
                    None => None,
                    Some(id) => Some(Card {
                        id: CardId::parse(&id).map_err(|_| corrupt("card id"))?,
                        tenant_id: TenantId::parse(&r.try_get::<String, _>("c_tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                        account_id: AccountId::parse(&r.try_get::<String, _>("c_account_id")?).map_err(|_| corrupt("account id"))?,
                        person_id: PersonId::parse(&r.try_get::<String, _>("c_person_id")?).map_err(|_| corrupt("person id"))?,
                        status: CardStatus::parse(&r.try_get::<String, _>("c_status")?).ok_or_else(|| corrupt("card status"))?,
                        wallet_eligible: r.try_get("c_wallet_eligible")?,
                        last4: r.try_get("c_last4")?,
                        vault: r.try_get("c_vault")?,
                        key_version: r.try_get("c_key_version")?,
                    }),
                };
                let cardholder_name = r
                    .try_get::<Option<String>, _>("p_profile")?
                    .map(|p| json_of::<PersonProfile>(&p, "person profile"))
                    .transpose()?
                    .map(|p| format!("{} {}", p.first_name, p.last_name));
                Ok(Some(RedemptionContext { token, card, cardholder_name }))
            }

            async fn get_mfa_session(&self, id: &MfaSessionId) -> Result<Option<MfaSession>> {
                let Some(r) = sqlx::query("SELECT * FROM mfa_sessions WHERE id = $1")
                    .bind(id.to_string())
                    .fetch_optional(&self.read)
                    .await?
                else {
                    return Ok(None);
                };
                let code_hash: Option<Vec<u8>> = r.try_get("code_hash")?;
                Ok(Some(MfaSession {
                    id: *id,
                    tenant_id: TenantId::parse(&r.try_get::<String, _>("tenant_id")?).map_err(|_| corrupt("tenant id"))?,
                    person_id: PersonId::parse(&r.try_get::<String, _>("person_id")?).map_err(|_| corrupt("person id"))?,
                    environment: env_of(&r.try_get::<String, _>("environment")?)?,
                    channel: Channel::parse(&r.try_get::<String, _>("channel")?).ok_or_else(|| corrupt("channel"))?,
                    code_hash: code_hash.map(|b| b.try_into().map_err(|_| corrupt("code hash"))).transpose()?,
                    attempts: r.try_get("attempts")?,
                    created_at_ms: r.try_get("created_at")?,
                    expires_at_ms: r.try_get("expires_at")?,
                    consumed: r.try_get("consumed")?,
                }))
            }

            async fn revocations_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
                let rows = sqlx::query("SELECT token_id, expires_at FROM revocations WHERE created_at >= $1")
                    .bind(since_ms)
                    .fetch_all(&self.read)
                    .await?;
                rows.iter().map(|r| Ok((r.try_get("token_id")?, r.try_get("expires_at")?))).collect()
            }

            async fn audit_page(&self, after: i64, limit: i64) -> Result<Vec<StoredAuditEvent>> {
                sqlx::query("SELECT * FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after)
                    .bind(limit)
                    .fetch_all(&self.read)
                    .await?
                    .iter()
                    .map(Self::audit_event)
                    .collect()
            }

            async fn audit_head(&self) -> Result<(i64, String)> {
                let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1").fetch_one(&self.read).await?;
                Ok((r.try_get("seq")?, r.try_get("hash")?))
            }

            async fn apply(&self, sets: &[WriteSet]) -> Result<Vec<WriteOutcome>> {
                let mut tx = self.write.begin_with($begin).await?;
                let mut audits = Vec::new();
                let mut pending = Pending::default();
                let mut outcomes = Vec::with_capacity(sets.len());
                for set in sets {
                    // A guard on a card token inserted earlier in this batch must see it.
                    let touches_pending = set.guards.iter().any(|g| {
                        matches!(g, Guard::RedeemCardToken { hash, .. } if pending.card_tokens.iter().any(|t| &t.hash == hash))
                    });
                    if touches_pending {
                        Self::flush(&mut tx, &mut pending).await?;
                    }
                    let savepoint = set.guards.len() > 1;
                    if savepoint {
                        sqlx::query("SAVEPOINT ws").execute(&mut *tx).await?;
                    }
                    let mut refused = None;
                    for (i, g) in set.guards.iter().enumerate() {
                        if !Self::guard(&mut tx, g).await? {
                            refused = Some(i);
                            break;
                        }
                    }
                    if savepoint {
                        if refused.is_some() {
                            sqlx::query("ROLLBACK TO SAVEPOINT ws").execute(&mut *tx).await?;
                        }
                        sqlx::query("RELEASE SAVEPOINT ws").execute(&mut *tx).await?;
                    }
                    let writes = if refused.is_some() { &set.on_refused } else { &set.writes };
                    for w in writes {
                        match w {
                            Write::Audit(ev) => audits.push(ev),
                            Write::InsertAccessToken(t) => pending.access_tokens.push(t),
                            Write::InsertCardToken(t) => pending.card_tokens.push(t),
other => {
                                // Immediate writes see every row this batch has inserted so far.
                                Self::flush(&mut tx, &mut pending).await?;
                                Self::write(&mut tx, other).await?
                            }
                        }
                    }
                    outcomes.push(refused.map_or(WriteOutcome::Applied, WriteOutcome::Refused));
                }
                Self::flush(&mut tx, &mut pending).await?;
                // The chain head is locked last, so concurrent writers (PostgreSQL) overlap
                // everything but appending to the chain and committing.
                if !audits.is_empty() {
                    let r = sqlx::query(concat!("SELECT seq, hash FROM audit_head WHERE id = 1", $lock))
                        .fetch_one(&mut *tx)
                        .await?;
                    let (mut seq, mut head) = (r.try_get::<i64, _>("seq")?, r.try_get::<String, _>("hash")?);
                    for ev in audits {
                        seq += 1;
                        let sealed = ev.seal(seq, &head);
                        head.clone_from(&sealed.hash);
                        pending.audit.push(sealed);
                    }
                    Self::flush(&mut tx, &mut pending).await?;
                    sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                        .bind(seq)
                        .bind(&head)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(outcomes)
            }
        }
    };
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    "sqlite",
    "BEGIN IMMEDIATE",
    "",
    1
);
sql_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    "postgres",
    "BEGIN",
    " FOR UPDATE",
    4
);

impl SqliteStore {
    /// Opens (creating if needed) a SQLite database in WAL mode with `synchronous=FULL`, so a
    /// commit is durable before any response that depends on it leaves. Writes go through one
    /// connection; reads use a small pool.
    pub async fn connect(url: &str) -> Result<Self> {
        let path = url
            .trim_start_matches("sqlite://")
            .trim_start_matches("sqlite:");
        let path = path.split('?').next().unwrap_or(path);
        if let Some(dir) = std::path::Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Database(format!("cannot create {}: {e}", dir.display()))
                })?;
            }
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{path}"))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .statement_cache_capacity(256);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(opts.clone())
            .await?;
        migrator(SQLITE_MIGRATIONS)
            .run(&write)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Self { read, write })
    }
}

impl PostgresStore {
    /// Connects to PostgreSQL; migrations take the migrator's advisory lock, so replicas
    /// starting together migrate once.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        migrator(POSTGRES_MIGRATIONS)
            .run(&pool)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }
}
