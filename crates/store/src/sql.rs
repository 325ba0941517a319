//! The SQL of both backends, written once: `sql_store!` expands it for SQLite and for
//! PostgreSQL. Parameters are `$n` (both engines accept it); the only differences are how a
//! write transaction begins and how the audit chain head is locked.

use crate::direct::DirectConn;
use crate::exec::{self, Arg, Table, WriteTx};
use crate::write::{WriteOutcome, WriteSet};
use crate::{DataKeyRow, RedemptionContext, Result, SigningKeyRow, Store, StoreError};
use async_trait::async_trait;
use cardgate_core::audit::StoredAuditEvent;
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::{Channel, MfaSession};
use cardgate_core::model::{ClientSettings, PersonProfile, TenantSettings};
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::SecretHash;
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord, TokenId, TokenKind, UseLimit};
use cardgate_core::{
    Account, AccountId, Card, CardId, CardStatus, Client, ClientId, Environment, Operation, Person,
    PersonId, Tenant, TenantId,
};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::Connection as _;
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

const SQLITE_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/sqlite/0001_init.sql"),
    ),
    (
        2,
        "split tokens",
        include_str!("../migrations/sqlite/0002_split_tokens.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "split tokens",
        include_str!("../migrations/postgres/0002_split_tokens.sql"),
    ),
];

macro_rules! sql_store {
    ($name:ident, $db:ty, $row:ty, $backend:literal, $writers:literal) => {
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

            fn card_token(r: &$row, id: &TokenId) -> Result<CardTokenRecord> {
                Ok(CardTokenRecord {
                    id: *id,
                    hash: hash_of(&r.try_get::<Vec<u8>, _>("hash")?)?,
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
                self.meta_init_impl(key, value).await
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

            async fn get_access_token(&self, id: &TokenId) -> Result<Option<AccessTokenRecord>> {
                let Some(r) = sqlx::query("SELECT * FROM access_tokens WHERE id = $1")
                    .bind(&id.0[..])
                    .fetch_optional(&self.read)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(AccessTokenRecord {
                    id: *id,
                    hash: hash_of(&r.try_get::<Vec<u8>, _>("hash")?)?,
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

            async fn get_card_token(&self, id: &TokenId) -> Result<Option<CardTokenRecord>> {
                let Some(r) = sqlx::query("SELECT * FROM card_tokens WHERE id = $1")
                    .bind(&id.0[..])
                    .fetch_optional(&self.read)
                    .await?
                else {
                    return Ok(None);
                };
                Ok(Some(Self::card_token(&r, id)?))
            }

            async fn get_redemption(&self, id: &TokenId) -> Result<Option<RedemptionContext>> {
                let Some(r) = sqlx::query(
                    "SELECT t.*, c.id AS c_id, c.tenant_id AS c_tenant_id, c.account_id AS c_account_id, \
                     c.person_id AS c_person_id, c.status AS c_status, c.wallet_eligible AS c_wallet_eligible, \
                     c.last4 AS c_last4, c.vault AS c_vault, c.key_version AS c_key_version, p.profile AS p_profile \
                     FROM card_tokens t \
                     LEFT JOIN cards c ON c.tenant_id = t.tenant_id AND c.id = t.card_id \
                     LEFT JOIN persons p ON p.tenant_id = c.tenant_id AND p.id = c.person_id \
                     WHERE t.id = $1",
                )
                .bind(&id.0[..])
                .fetch_optional(&self.read)
                .await?
                else {
                    return Ok(None);
                };
                let token = Self::card_token(&r, id)?;
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
                self.apply_impl(sets).await
            }
        }
    };
}

sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    "sqlite",
    1
);
sql_store!(
    PostgresStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    "postgres",
    4
);

/// The SQLite store: a read pool of sqlx connections, and one write connection driven
/// directly (see `direct`), so a write batch costs no thread round trip per statement.
pub struct SqliteStore {
    read: sqlx::Pool<sqlx::Sqlite>,
    writer: tokio::sync::Mutex<DirectConn>,
}

impl SqliteStore {
    /// Opens (creating if needed) a SQLite database in WAL mode with `synchronous=FULL`, so a
    /// commit is durable before any response that depends on it leaves. Writes go through one
    /// connection, driven directly (`direct`); reads use a small pool.
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
        let mut write = SqliteConnection::connect_with(&opts).await?;
        migrator(SQLITE_MIGRATIONS)
            .run(&mut write)
            .await
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let writer = DirectConn::open(write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .min_connections(1)
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Self {
            read,
            writer: tokio::sync::Mutex::new(writer),
        })
    }

    async fn apply_impl(&self, sets: &[WriteSet]) -> Result<Vec<WriteOutcome>> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin()?;
        let outcomes = exec::apply_sets(&mut tx, sets).await?;
        tx.commit()?;
        Ok(outcomes)
    }

    async fn meta_init_impl(&self, key: &str, value: &str) -> Result<String> {
        let mut writer = self.writer.lock().await;
        let mut tx = writer.begin()?;
        tx.run(exec::META_INIT, &[Arg::text(key), Arg::text(value)])?;
        let v = tx
            .query_text("SELECT value FROM meta WHERE key = $1", &[Arg::text(key)])?
            .ok_or_else(|| corrupt("meta"))?;
        tx.commit()?;
        Ok(v)
    }
}

/// The PostgreSQL store: one pool for reads and for the group committer's writers.
pub struct PostgresStore {
    read: sqlx::Pool<sqlx::Postgres>,
    write: sqlx::Pool<sqlx::Postgres>,
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

    async fn apply_impl(&self, sets: &[WriteSet]) -> Result<Vec<WriteOutcome>> {
        let mut tx = PgTx(self.write.begin().await?);
        let outcomes = exec::apply_sets(&mut tx, sets).await?;
        tx.0.commit().await?;
        Ok(outcomes)
    }

    async fn meta_init_impl(&self, key: &str, value: &str) -> Result<String> {
        let mut tx = self.write.begin().await?;
        sqlx::query(exec::META_INIT)
            .bind(key)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        let v: String = sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(v)
    }
}

/// Rows per multi-row INSERT on PostgreSQL: 13 columns × 64 rows stays far below its limit
/// on bound parameters, and one statement per chunk saves a network round trip per row.
const PG_ROWS_PER_INSERT: usize = 64;

fn pg_bind<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    a: &'q Arg<'_>,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    match a {
        Arg::Int(v) => q.bind(*v),
        Arg::Text(v) => q.bind(v.as_deref()),
        Arg::Blob(v) => q.bind(*v),
        Arg::Bool(v) => q.bind(*v),
    }
}

/// An open PostgreSQL write transaction.
struct PgTx(sqlx::Transaction<'static, sqlx::Postgres>);

#[async_trait]
impl WriteTx for PgTx {
    async fn exec(&mut self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64> {
        let q = args.iter().fold(sqlx::query(sql), pg_bind);
        Ok(q.execute(&mut *self.0).await?.rows_affected())
    }

    async fn insert_rows(&mut self, table: &'static Table, rows: Vec<Vec<Arg<'_>>>) -> Result<()> {
        for chunk in rows.chunks(PG_ROWS_PER_INSERT) {
            let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
                "INSERT INTO {} ({}) ",
                table.name, table.columns
            ));
            q.push_values(chunk, |mut b, row| {
                for a in row {
                    match a {
                        Arg::Int(v) => b.push_bind(*v),
                        Arg::Text(v) => b.push_bind(v.as_deref()),
                        Arg::Blob(v) => b.push_bind(*v),
                        Arg::Bool(v) => b.push_bind(*v),
                    };
                }
            });
            q.build().execute(&mut *self.0).await?;
        }
        Ok(())
    }

    async fn chain_head(&mut self) -> Result<(i64, String)> {
        // Serialises the chain append across writers and replicas until commit.
        let r = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE")
            .fetch_one(&mut *self.0)
            .await?;
        Ok((r.try_get("seq")?, r.try_get("hash")?))
    }
}
