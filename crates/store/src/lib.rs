//! Persistence for cardgate: the [`Store`] trait, its SQLite and PostgreSQL backends (one SQL
//! text, two expansions), guarded write sets applied in one transaction, and the group-commit
//! [`committer::Committer`] that lets concurrent requests share a commit.

#![forbid(unsafe_code)]

pub mod committer;
mod exec;
mod postgres;
mod retention;
mod rows;
mod sdk;
mod sql;
mod sqlite;
mod write;

use async_trait::async_trait;
use cardgate_core::audit::{AuditKey, ChainHead, Relink, Relinking, StoredAuditEvent};
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::MfaSession;
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord, TokenId};
use cardgate_core::{
    Account, AccountId, Card, CardId, Client, Environment, Person, PersonId, Tenant, TenantId,
};
use std::collections::HashSet;
use std::sync::Arc;

pub use postgres::PostgresStore;
pub use retention::{AuditMark, AuditStats, Expiring, ExpiringStats, MarkKind, Space};
pub use sdk::SdkServerKeyRow;
pub use sqlite::SqliteStore;
pub use write::{ClaimKey, Guard, GuardKind, StoredClaim, Write, WriteOutcome, WriteSet};

/// Why the store did not answer. What a caller may do next depends on which: a set that
/// certainly rolled back may be applied again; one whose commit's outcome is unknown must not
/// be (it may already be durable), and neither may be answered as if it had failed for a
/// reason of its own.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached: connection refused, lost or reset, no connection
    /// free in time, shutting down. Nothing was committed.
    #[error("the database cannot be reached: {0}")]
    Unavailable(String),
    /// A statement failed; its transaction, if any, certainly rolled back.
    #[error("database error: {0}")]
    Database(String),
    /// `COMMIT` was sent (or may have been) and its answer never came: the changes may or may
    /// not be durable.
    #[error("the outcome of a commit is unknown: {0}")]
    CommitUnknown(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL (use sqlite://PATH or postgres://…)")]
    UnsupportedUrl,
    #[error("the writer has stopped")]
    WriterGone,
    /// A write named an object that exists in another environment; nothing was written.
    #[error("{0} belongs to another environment")]
    OtherEnvironment(String),
}

impl StoreError {
    /// A label for metrics: never carries the message.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Unavailable(_) => "unavailable",
            Self::Database(_) => "statement",
            Self::CommitUnknown(_) => "commit_unknown",
            Self::Corrupt(_) => "corrupt",
            Self::UnsupportedUrl => "config",
            Self::WriterGone => "writer_gone",
            Self::OtherEnvironment(_) => "other_environment",
        }
    }

    /// Whether the store cannot answer now (try again later), rather than answered an error.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::CommitUnknown(_) | Self::WriterGone
        )
    }

    /// Whether nothing of the failed transaction was committed, so its sets may be applied
    /// again.
    pub fn rolled_back(&self) -> bool {
        matches!(self, Self::Database(_) | Self::OtherEnvironment(_))
    }
}

/// SQLSTATE classes of a PostgreSQL server that cannot serve: connection exceptions (08),
/// operator intervention such as a shutdown (57), insufficient resources (53).
fn unavailable_sqlstate(code: &str) -> bool {
    ["08", "57", "53"]
        .iter()
        .any(|class| code.starts_with(class))
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        let unavailable = match &e {
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed => true,
            E::Database(db) => db
                .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some_and(|pg| unavailable_sqlstate(pg.code())),
            _ => false,
        };
        if unavailable {
            Self::Unavailable(e.to_string())
        } else {
            Self::Database(e.to_string())
        }
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// What a redemption reads: the token, its card (if it still exists) and the cardholder's name.
#[derive(Debug, Clone, PartialEq)]
pub struct RedemptionContext {
    pub token: CardTokenRecord,
    pub card: Option<Card>,
    pub cardholder_name: Option<String>,
}

/// A cardholder's step-up failures, as counted by [`Guard::MfaPersonAttempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaPersonState {
    pub failures: i64,
    pub locked_until_ms: i64,
}

/// A signing key as stored: the private half sealed under the master key.
#[derive(Debug, Clone, PartialEq)]
pub struct SigningKeyRow {
    pub kid: String,
    pub environment: Environment,
    pub private_enc: Vec<u8>,
    pub public_jwk: String,
    pub created_at_ms: i64,
    pub retired_at_ms: Option<i64>,
}

/// A tenant's data key version in one environment, sealed under the master key.
#[derive(Debug, Clone, PartialEq)]
pub struct DataKeyRow {
    pub tenant_id: TenantId,
    pub environment: Environment,
    pub version: i64,
    pub key_enc: Vec<u8>,
    pub created_at_ms: i64,
}

/// The ids a tenant's persons, accounts and cards have in the environments other than one:
/// ids are unique per tenant across environments, so an import must not reuse them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtherEnvironmentIds {
    pub persons: HashSet<PersonId>,
    pub accounts: HashSet<AccountId>,
    pub cards: HashSet<CardId>,
}

/// What every backend provides. Reads are plain queries; every change goes through
/// [`Store::apply`], one transaction for a batch of write sets.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// How many write transactions may run at once: 1 for SQLite (one writer), 2 for
    /// PostgreSQL (each appends to its own audit chain, so they overlap entirely).
    fn writers(&self) -> usize;
    async fn meta_get(&self, key: &str) -> Result<Option<String>>;
    /// Sets `key` to `value` unless it already has a value; returns the value it has now.
    async fn meta_init(&self, key: &str, value: &str) -> Result<String>;
    async fn config_version(&self) -> Result<i64>;

    async fn load_tenants(&self) -> Result<Vec<Tenant>>;
    async fn load_clients(&self) -> Result<Vec<Client>>;
    async fn load_signing_keys(&self, env: Environment) -> Result<Vec<SigningKeyRow>>;
    /// The data keys of `env` (every tenant's, every version).
    async fn load_data_keys(&self, env: Environment) -> Result<Vec<DataKeyRow>>;

    // Persons, accounts, cards, tokens and MFA sessions are read in one environment: another
    // environment's are not found, exactly like ids that do not exist.
    async fn get_person(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &PersonId,
    ) -> Result<Option<Person>>;
    async fn get_account(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &str,
    ) -> Result<Option<Account>>;
    async fn get_card(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &CardId,
    ) -> Result<Option<Card>>;
    async fn list_cards(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Card>>;
    async fn list_persons(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Person>>;
    async fn list_accounts(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Account>>;
    /// The ids `tenant`'s persons, accounts and cards have in environments other than `env`.
    async fn other_environment_ids(
        &self,
        tenant: &TenantId,
        env: Environment,
    ) -> Result<OtherEnvironmentIds>;

    /// An opaque access token by its id (the caller checks the presented token's digest).
    async fn get_access_token(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<AccessTokenRecord>>;
    /// A card token by its id (the caller checks the presented token's digest).
    async fn get_card_token(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<CardTokenRecord>>;
    /// A card token with its card and the cardholder's display name, in one read: what a
    /// redemption needs.
    async fn get_redemption(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<RedemptionContext>>;
    async fn get_mfa_session(
        &self,
        id: &MfaSessionId,
        env: Environment,
    ) -> Result<Option<MfaSession>>;
    async fn get_mfa_person(
        &self,
        tenant: &TenantId,
        person: &PersonId,
    ) -> Result<Option<MfaPersonState>>;
    /// Revocations recorded at or after `since_ms`: `(token id, expires at)`.
    async fn revocations_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>>;

    /// Audit events after `after` = `(chain, seq)`, in `(chain, seq)` order, at most `limit`.
    async fn audit_page(&self, after: (i64, i64), limit: i64) -> Result<Vec<StoredAuditEvent>>;
    /// The head of every audit chain.
    async fn audit_heads(&self) -> Result<Vec<ChainHead>>;
    /// Makes sure the audit log is keyed: a log that predates keyed links is verified once
    /// under the old, unkeyed rule and, only if every chain is intact, re-linked under the
    /// store's audit key in one transaction (recorded by the event `note` makes). Until the
    /// log is keyed the store writes nothing. Call it only once the master key the audit key
    /// comes from is known to be this database's.
    async fn relink_audit(&self, note: &Relinking) -> Result<Relink>;
    /// Records the log as keyed without re-linking anything: for a database the caller knows
    /// was keyed already (its master key check says so) whose marker went missing. Whatever
    /// unkeyed links it holds are then forgeries, and `audit verify` fails on them.
    async fn mark_audit_keyed(&self) -> Result<()>;

    /// Applies write sets in one transaction, in order, as writer number `writer`, whose audit
    /// events go to chain `writer % AUDIT_CHAINS + 1`, linked under the store's audit key
    /// (refused while the log is not keyed, see [`Store::relink_audit`]). A set whose guard
    /// fails is refused as a whole (its `on_refused` writes are applied instead); the others
    /// still apply.
    async fn apply_as(&self, writer: usize, sets: &[WriteSet]) -> Result<Vec<WriteOutcome>>;

    /// Deletes at most `limit` claims ([`Guard::Claim`]) that expired by `now_ms`, oldest
    /// first, in a transaction of its own; returns how many. Call it again while it returns
    /// `limit`: small batches keep each transaction short beside the writers.
    async fn purge_expired_claims(&self, now_ms: i64, limit: i64) -> Result<u64>;

    /// Deletes at most `limit` rows of `kind` that expired by `before_ms`, oldest first, in a
    /// transaction of its own; returns how many. Safe beside other replicas' purges (on
    /// PostgreSQL each skips the rows another holds, so no row is counted twice).
    async fn purge_expired(&self, kind: Expiring, before_ms: i64, limit: i64) -> Result<u64>;
    /// How many rows of `kind` there are, expired by `now_ms`, past `before_ms` (the purge
    /// backlog), and the earliest expiry present.
    async fn expiring_stats(
        &self,
        kind: Expiring,
        now_ms: i64,
        before_ms: i64,
    ) -> Result<ExpiringStats>;
    /// How many audit events are stored and the oldest one's time.
    async fn audit_stats(&self) -> Result<AuditStats>;
    /// The database's size and how its freed space comes back.
    async fn space(&self) -> Result<Space>;
    /// Gives up to `pages` free pages back to the file system (SQLite); a no-op on PostgreSQL.
    async fn reclaim_space(&self, pages: i64) -> Result<()>;
    /// Every chain's export and prune marks.
    async fn audit_marks(&self) -> Result<Vec<AuditMark>>;
    /// Records `mark` where its chain has none of its kind (`expect` `None`), or moves it from
    /// `expect`; `false` if another process moved it first (nothing changed).
    async fn set_audit_mark(&self, mark: &AuditMark, expect: Option<i64>) -> Result<bool>;
    /// Moves the chain's prune mark (a [`MarkKind::Pruned`] `mark`) from `expect` and deletes
    /// the chain's events up to `mark.seq`, in one transaction: how many, or `None` if another
    /// process moved the mark first (nothing changed).
    async fn prune_audit(&self, mark: &AuditMark, expect: Option<i64>) -> Result<Option<u64>>;
    // BankEzy (migration 0010). The defaults serve stores that keep no SDK tokens (test
    // wrappers): no server keys, and every other read an error.
    /// Every tenant's SDK server keys of `env`, every version.
    async fn load_sdk_server_keys(&self, env: Environment) -> Result<Vec<SdkServerKeyRow>> {
        let _ = env;
        Ok(Vec::new())
    }
    /// An SDK token by its id (the caller checks the presented token's digest).
    async fn get_sdk_token(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<cardgate_core::sdk::SdkTokenRecord>> {
        let _ = (id, env);
        Err(StoreError::Database(
            "this store keeps no SDK tokens".into(),
        ))
    }
    /// The newest SDK token of `client` whose reference key is `reference_key`.
    async fn find_sdk_token(
        &self,
        client: &cardgate_core::ClientId,
        env: Environment,
        reference_key: &[u8; 32],
    ) -> Result<Option<cardgate_core::sdk::SdkTokenRecord>> {
        let _ = (client, env, reference_key);
        Err(StoreError::Database(
            "this store keeps no SDK tokens".into(),
        ))
    }
    /// An account of `tenant` in `env` by its account number.
    async fn get_account_by_number(
        &self,
        tenant: &TenantId,
        env: Environment,
        number: &str,
    ) -> Result<Option<Account>> {
        Ok(self
            .list_accounts(tenant, env)
            .await?
            .into_iter()
            .find(|a| a.account_number == number))
    }
    /// The cards of one account.
    async fn list_account_cards(
        &self,
        tenant: &TenantId,
        env: Environment,
        account: &AccountId,
    ) -> Result<Vec<Card>> {
        Ok(self
            .list_cards(tenant, env)
            .await?
            .into_iter()
            .filter(|c| &c.account_id == account)
            .collect())
    }

    /// [`Store::apply_as`] the first writer.
    async fn apply(&self, sets: &[WriteSet]) -> Result<Vec<WriteOutcome>> {
        self.apply_as(0, sets).await
    }
}

/// How many audit chains the schema has (migration 0003); writer `w` appends to chain
/// `w % AUDIT_CHAINS + 1`.
pub const AUDIT_CHAINS: usize = 4;

pub(crate) fn chain_of(writer: usize) -> i64 {
    (writer % AUDIT_CHAINS) as i64 + 1
}

/// Opens the backend the URL names and runs its migrations. Its audit links are made (and
/// re-linked) under `audit_key`.
pub async fn connect(url: &str, audit_key: AuditKey) -> Result<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, audit_key).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, audit_key).await?))
    } else {
        Err(StoreError::UnsupportedUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn a_database_that_cannot_be_reached_is_unavailable_and_a_failed_statement_rolled_back() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let cases: Vec<(sqlx::Error, &str)> = vec![
            (sqlx::Error::PoolTimedOut, "unavailable"),
            (sqlx::Error::PoolClosed, "unavailable"),
            (sqlx::Error::Io(refused), "unavailable"),
            (
                sqlx::Error::Protocol("unexpected message".into()),
                "unavailable",
            ),
            (sqlx::Error::RowNotFound, "statement"),
            (sqlx::Error::ColumnNotFound("x".into()), "statement"),
        ];
        for (e, kind) in cases {
            let what = e.to_string();
            let e = StoreError::from(e);
            assert_eq!(e.kind(), kind, "{what}");
            assert_eq!(e.rolled_back(), kind == "statement", "{what}");
            assert_eq!(e.is_unavailable(), kind == "unavailable", "{what}");
        }
    }

    #[test]
    fn a_sqlite_file_that_cannot_be_used_is_unavailable_and_a_failed_statement_rolled_back() {
        use rusqlite::ffi;
        let cases = [
            (ffi::SQLITE_BUSY, "unavailable"),
            (ffi::SQLITE_IOERR, "unavailable"),
            (ffi::SQLITE_FULL, "unavailable"),
            (ffi::SQLITE_CANTOPEN, "unavailable"),
            (ffi::SQLITE_CONSTRAINT, "statement"),
            (ffi::SQLITE_ERROR, "statement"),
        ];
        for (code, kind) in cases {
            let e = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None);
            assert_eq!(crate::rows::db_err(e).kind(), kind, "SQLite code {code}");
        }
    }
}
