//! The SQL of both backends, written once: [`SqlStore`] implements [`Store`] over an
//! [`Engine`] (SQLite or PostgreSQL), which only runs statements. Parameters are `$n`, which
//! both engines accept; rows are read through [`Cols`] by the functions in `rows`.

use crate::exec::{Arg, AUDIT_PAGE};
use crate::rows::{self, corrupt, Cols};
use crate::write::{WriteOutcome, WriteSet};
use crate::{DataKeyRow, OtherEnvironmentIds, RedemptionContext, Result, SigningKeyRow, Store};
use async_trait::async_trait;
use cardgate_core::audit::{
    AuditKey, ChainHead, Relink, Relinking, StoredAuditEvent, KEYED_LINKS, LINKS_META_KEY,
};
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::MfaSession;
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord, TokenId};
use cardgate_core::{
    Account, AccountId, Card, CardId, Client, Environment, Person, PersonId, Tenant, TenantId,
};
use std::sync::atomic::{AtomicBool, Ordering};

/// A row mapper: what a query's rows become.
pub(crate) type Map<T> = fn(&dyn Cols) -> Result<T>;

/// What a backend provides: queries, and the write path (`exec::apply_sets` in one
/// transaction of its own).
#[async_trait]
pub(crate) trait Engine: Send + Sync + 'static {
    const BACKEND: &'static str;
    /// How many write transactions may run at once (see [`Store::writers`]).
    const WRITERS: usize;
    async fn fetch_all<T: Send + 'static>(
        &self,
        sql: &'static str,
        args: Vec<Arg<'_>>,
        map: Map<T>,
    ) -> Result<Vec<T>>;
    /// Applies `sets` in one transaction, appending their audit events to `chain`, linked
    /// under `key`.
    async fn apply(
        &self,
        sets: &[WriteSet],
        chain: i64,
        key: &AuditKey,
    ) -> Result<Vec<WriteOutcome>>;
    /// Re-links an unkeyed audit log under `key` in one transaction (`exec::relink`),
    /// committed only if it was re-linked.
    async fn relink(&self, key: &AuditKey, note: &Relinking) -> Result<Relink>;
    /// Sets `key` unless set; returns its value (one transaction).
    async fn meta_init(&self, key: &str, value: &str) -> Result<String>;
    /// Runs one statement that changes rows, in a transaction of its own: how many it changed.
    async fn write_one(&self, sql: &'static str, args: Vec<Arg<'_>>) -> Result<u64>;
    /// Runs `statements` in one transaction, committed only if the first changed a row:
    /// how many rows each changed, or `None` (rolled back) if the first changed none.
    async fn write_if(
        &self,
        statements: Vec<(&'static str, Vec<Arg<'_>>)>,
    ) -> Result<Option<Vec<u64>>>;
    /// Gives up to `pages` free pages back to the file system (SQLite's incremental vacuum);
    /// nothing where the engine reclaims space by itself.
    async fn reclaim(&self, pages: i64) -> Result<()>;

    async fn fetch_opt<T: Send + 'static>(
        &self,
        sql: &'static str,
        args: Vec<Arg<'_>>,
        map: Map<T>,
    ) -> Result<Option<T>> {
        Ok(self.fetch_all(sql, args, map).await?.into_iter().next())
    }
}

/// A store on one engine.
pub struct SqlStore<E> {
    pub(crate) engine: E,
    /// What every audit link is made with.
    audit_key: AuditKey,
    /// Whether the log is known to be keyed: until it is, the store writes nothing, so no
    /// keyed link ever lands on an unkeyed chain (which could then never be re-linked).
    keyed: AtomicBool,
}

impl<E> SqlStore<E> {
    pub(crate) fn new(engine: E, audit_key: AuditKey) -> Self {
        Self {
            engine,
            audit_key,
            keyed: AtomicBool::new(false),
        }
    }
}

/// Whether the log is keyed (read from the database until it is, then remembered: a log is
/// never legitimately unkeyed again).
async fn is_keyed<E: Engine>(store: &SqlStore<E>) -> Result<bool> {
    if store.keyed.load(Ordering::Acquire) {
        return Ok(true);
    }
    let keyed = store.meta_get(LINKS_META_KEY).await?.as_deref() == Some(KEYED_LINKS);
    if keyed {
        store.keyed.store(true, Ordering::Release);
    }
    Ok(keyed)
}

/// A token of `$2`'s environment with its card and cardholder of that same environment.
const REDEMPTION: &str = "SELECT t.*, c.id AS c_id, c.tenant_id AS c_tenant_id, c.environment AS c_environment, \
     c.account_id AS c_account_id, c.person_id AS c_person_id, c.status AS c_status, \
     c.wallet_eligible AS c_wallet_eligible, c.last4 AS c_last4, c.vault AS c_vault, \
     c.key_version AS c_key_version, p.profile AS p_profile \
     FROM card_tokens t \
     LEFT JOIN cards c ON c.tenant_id = t.tenant_id AND c.id = t.card_id AND c.environment = t.environment \
     LEFT JOIN persons p ON p.tenant_id = c.tenant_id AND p.id = c.person_id AND p.environment = c.environment \
     WHERE t.id = $1 AND t.environment = $2";

/// The ids of a tenant's objects outside one environment, with what they are.
const OTHER_ENVIRONMENT_IDS: &str = "SELECT 'person' AS kind, id FROM persons WHERE tenant_id = $1 AND environment <> $2 \
     UNION ALL SELECT 'account' AS kind, id FROM accounts WHERE tenant_id = $1 AND environment <> $2 \
     UNION ALL SELECT 'card' AS kind, id FROM cards WHERE tenant_id = $1 AND environment <> $2";

fn kind_and_id(r: &dyn Cols) -> Result<(String, String)> {
    Ok((r.text("kind")?, r.text("id")?))
}

fn meta_value(r: &dyn Cols) -> Result<String> {
    r.text("value")
}

fn revocation(r: &dyn Cols) -> Result<(String, i64)> {
    Ok((r.text("token_id")?, r.int("expires_at")?))
}

fn head(r: &dyn Cols) -> Result<ChainHead> {
    Ok(ChainHead {
        chain: r.int("id")?,
        seq: r.int("seq")?,
        hash: r.text("hash")?,
    })
}

#[async_trait]
impl<E: Engine> Store for SqlStore<E> {
    fn backend(&self) -> &'static str {
        E::BACKEND
    }

    fn writers(&self) -> usize {
        E::WRITERS
    }

    async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        self.engine
            .fetch_opt(
                "SELECT value FROM meta WHERE key = $1",
                vec![Arg::text(key)],
                meta_value,
            )
            .await
    }

    async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        self.engine.meta_init(key, value).await
    }

    async fn config_version(&self) -> Result<i64> {
        let v = self.meta_get("config_version").await?;
        v.and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("config_version"))
    }

    async fn load_tenants(&self) -> Result<Vec<Tenant>> {
        self.engine
            .fetch_all(
                "SELECT id, settings, webhook_secret_enc FROM tenants ORDER BY id",
                vec![],
                rows::tenant,
            )
            .await
    }

    async fn load_clients(&self) -> Result<Vec<Client>> {
        self.engine
            .fetch_all("SELECT * FROM clients ORDER BY id", vec![], rows::client)
            .await
    }

    async fn load_signing_keys(&self, env: Environment) -> Result<Vec<SigningKeyRow>> {
        self.engine
            .fetch_all(
                "SELECT * FROM signing_keys WHERE environment = $1 ORDER BY created_at",
                vec![Arg::text(env.as_str())],
                rows::signing_key,
            )
            .await
    }

    async fn load_data_keys(&self, env: Environment) -> Result<Vec<DataKeyRow>> {
        self.engine
            .fetch_all(
                "SELECT * FROM data_keys WHERE environment = $1 ORDER BY tenant_id, version",
                vec![Arg::text(env.as_str())],
                rows::data_key,
            )
            .await
    }

    async fn get_person(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &PersonId,
    ) -> Result<Option<Person>> {
        self.engine
            .fetch_opt(
                "SELECT * FROM persons WHERE tenant_id = $1 AND id = $2 AND environment = $3",
                vec![
                    Arg::text(tenant.as_str()),
                    Arg::string(id.to_string()),
                    Arg::text(env.as_str()),
                ],
                rows::person,
            )
            .await
    }

    async fn get_account(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &str,
    ) -> Result<Option<Account>> {
        self.engine
            .fetch_opt(
                "SELECT * FROM accounts WHERE tenant_id = $1 AND id = $2 AND environment = $3",
                vec![
                    Arg::text(tenant.as_str()),
                    Arg::text(id),
                    Arg::text(env.as_str()),
                ],
                rows::account,
            )
            .await
    }

    async fn get_card(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &CardId,
    ) -> Result<Option<Card>> {
        self.engine
            .fetch_opt(
                "SELECT * FROM cards WHERE tenant_id = $1 AND id = $2 AND environment = $3",
                vec![
                    Arg::text(tenant.as_str()),
                    Arg::string(id.to_string()),
                    Arg::text(env.as_str()),
                ],
                rows::card,
            )
            .await
    }

    async fn list_cards(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Card>> {
        self.engine
            .fetch_all(
                "SELECT * FROM cards WHERE tenant_id = $1 AND environment = $2 ORDER BY id",
                vec![Arg::text(tenant.as_str()), Arg::text(env.as_str())],
                rows::card,
            )
            .await
    }

    async fn list_persons(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Person>> {
        self.engine
            .fetch_all(
                "SELECT * FROM persons WHERE tenant_id = $1 AND environment = $2 ORDER BY id",
                vec![Arg::text(tenant.as_str()), Arg::text(env.as_str())],
                rows::person,
            )
            .await
    }

    async fn list_accounts(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Account>> {
        self.engine
            .fetch_all(
                "SELECT * FROM accounts WHERE tenant_id = $1 AND environment = $2 ORDER BY id",
                vec![Arg::text(tenant.as_str()), Arg::text(env.as_str())],
                rows::account,
            )
            .await
    }

    async fn other_environment_ids(
        &self,
        tenant: &TenantId,
        env: Environment,
    ) -> Result<OtherEnvironmentIds> {
        let found = self
            .engine
            .fetch_all(
                OTHER_ENVIRONMENT_IDS,
                vec![Arg::text(tenant.as_str()), Arg::text(env.as_str())],
                kind_and_id,
            )
            .await?;
        let mut ids = OtherEnvironmentIds::default();
        for (kind, id) in found {
            let stored = match kind.as_str() {
                "person" => PersonId::parse(&id).map(|p| ids.persons.insert(p)).is_ok(),
                "account" => AccountId::parse(&id)
                    .map(|a| ids.accounts.insert(a))
                    .is_ok(),
                _ => CardId::parse(&id).map(|c| ids.cards.insert(c)).is_ok(),
            };
            if !stored {
                return Err(corrupt("id"));
            }
        }
        Ok(ids)
    }

    async fn get_access_token(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<AccessTokenRecord>> {
        self.engine
            .fetch_opt(
                "SELECT * FROM access_tokens WHERE id = $1 AND environment = $2",
                vec![Arg::blob(&id.0), Arg::text(env.as_str())],
                rows::access_token,
            )
            .await
    }

    async fn get_card_token(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<CardTokenRecord>> {
        self.engine
            .fetch_opt(
                "SELECT * FROM card_tokens WHERE id = $1 AND environment = $2",
                vec![Arg::blob(&id.0), Arg::text(env.as_str())],
                rows::card_token,
            )
            .await
    }

    async fn get_redemption(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<RedemptionContext>> {
        self.engine
            .fetch_opt(
                REDEMPTION,
                vec![Arg::blob(&id.0), Arg::text(env.as_str())],
                rows::redemption,
            )
            .await
    }

    async fn get_mfa_session(
        &self,
        id: &MfaSessionId,
        env: Environment,
    ) -> Result<Option<MfaSession>> {
        self.engine
            .fetch_opt(
                "SELECT * FROM mfa_sessions WHERE id = $1 AND environment = $2",
                vec![Arg::string(id.to_string()), Arg::text(env.as_str())],
                rows::mfa_session,
            )
            .await
    }

    async fn get_mfa_person(
        &self,
        tenant: &TenantId,
        person: &PersonId,
    ) -> Result<Option<crate::MfaPersonState>> {
        self.engine
            .fetch_opt(
                "SELECT failures, locked_until FROM mfa_persons WHERE tenant_id = $1 AND person_id = $2",
                vec![Arg::text(tenant.as_str()), Arg::string(person.to_string())],
                rows::mfa_person,
            )
            .await
    }

    async fn revocations_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
        self.engine
            .fetch_all(
                "SELECT token_id, expires_at FROM revocations WHERE created_at >= $1",
                vec![Arg::int(since_ms)],
                revocation,
            )
            .await
    }

    async fn audit_page(&self, after: (i64, i64), limit: i64) -> Result<Vec<StoredAuditEvent>> {
        self.engine
            .fetch_all(
                AUDIT_PAGE,
                vec![Arg::int(after.0), Arg::int(after.1), Arg::int(limit)],
                rows::audit_event,
            )
            .await
    }

    async fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        let heads = self
            .engine
            .fetch_all(
                "SELECT id, seq, hash FROM audit_head ORDER BY id",
                vec![],
                head,
            )
            .await?;
        if heads.is_empty() {
            return Err(corrupt("audit head"));
        }
        Ok(heads)
    }

    async fn load_sdk_server_keys(&self, env: Environment) -> Result<Vec<crate::SdkServerKeyRow>> {
        crate::sdk::sdk_server_keys(self, env).await
    }

    async fn get_sdk_token(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<cardgate_core::sdk::SdkTokenRecord>> {
        crate::sdk::sdk_token(self, id, env).await
    }

    async fn find_sdk_token(
        &self,
        client: &cardgate_core::ClientId,
        env: Environment,
        reference_key: &[u8; 32],
    ) -> Result<Option<cardgate_core::sdk::SdkTokenRecord>> {
        crate::sdk::sdk_token_by_reference(self, client, env, reference_key).await
    }

    async fn get_account_by_number(
        &self,
        tenant: &TenantId,
        env: Environment,
        number: &str,
    ) -> Result<Option<Account>> {
        crate::sdk::account_by_number(self, tenant, env, number).await
    }

    async fn list_account_cards(
        &self,
        tenant: &TenantId,
        env: Environment,
        account: &AccountId,
    ) -> Result<Vec<Card>> {
        crate::sdk::account_cards(self, tenant, env, account).await
    }

    async fn apply_as(&self, writer: usize, sets: &[WriteSet]) -> Result<Vec<WriteOutcome>> {
        if !is_keyed(self).await? {
            return Err(crate::StoreError::Corrupt(
                "the audit log is not keyed yet; nothing is written until it is re-linked \
                 (cardgate does that at start, or `cardgate audit relink`)"
                    .into(),
            ));
        }
        self.engine
            .apply(sets, crate::chain_of(writer), &self.audit_key)
            .await
    }

    async fn mark_audit_keyed(&self) -> Result<()> {
        self.engine.meta_init(LINKS_META_KEY, KEYED_LINKS).await?;
        self.keyed.store(true, Ordering::Release);
        Ok(())
    }

    async fn purge_expired_claims(&self, now_ms: i64, limit: i64) -> Result<u64> {
        self.engine
            .write_one(
                crate::exec::PURGE_CLAIMS,
                vec![Arg::int(now_ms), Arg::int(limit)],
            )
            .await
    }

    async fn purge_expired(
        &self,
        kind: crate::Expiring,
        before_ms: i64,
        limit: i64,
    ) -> Result<u64> {
        crate::retention::purge(self, kind, before_ms, limit).await
    }

    async fn expiring_stats(
        &self,
        kind: crate::Expiring,
        now_ms: i64,
        before_ms: i64,
    ) -> Result<crate::ExpiringStats> {
        crate::retention::stats(self, kind, now_ms, before_ms).await
    }

    async fn audit_stats(&self) -> Result<crate::AuditStats> {
        crate::retention::audit_size(self).await
    }

    async fn space(&self) -> Result<crate::Space> {
        crate::retention::space_used(self).await
    }

    async fn reclaim_space(&self, pages: i64) -> Result<()> {
        self.engine.reclaim(pages).await
    }

    async fn audit_marks(&self) -> Result<Vec<crate::AuditMark>> {
        crate::retention::marks(self).await
    }

    async fn set_audit_mark(&self, mark: &crate::AuditMark, expect: Option<i64>) -> Result<bool> {
        crate::retention::set_mark(self, mark, expect).await
    }

    async fn prune_audit(
        &self,
        mark: &crate::AuditMark,
        expect: Option<i64>,
    ) -> Result<Option<u64>> {
        crate::retention::prune(self, mark, expect).await
    }

    async fn relink_audit(&self, note: &Relinking) -> Result<Relink> {
        if is_keyed(self).await? {
            return Ok(Relink::AlreadyKeyed);
        }
        let outcome = self.engine.relink(&self.audit_key, note).await?;
        if !matches!(outcome, Relink::Broken(_)) {
            self.keyed.store(true, Ordering::Release);
        }
        Ok(outcome)
    }
}
