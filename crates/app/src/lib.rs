//! cardgate's use cases, by concept: the [`directory`] (tenants, clients and keys in memory,
//! and who is calling), [`access`] tokens (OAuth2), [`cards`] (card tokens: minting and
//! redemption), [`mfa`] step-up, [`admin`]istration and [`import`]. Each use case loads what it
//! needs (from the directory or the store), lets `cardgate_core` decide, and persists the
//! outcome with its audit event in one write set through the group committer. An API surface
//! calls a use case with what its wire format carries and maps the outcome (or the one
//! [`AppError`]) back to its own shape; no rule lives there.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod cards;
pub mod directory;
pub mod dpop;
pub mod error;
mod hot;
pub mod import;
mod limits;
pub mod metrics;
pub mod mfa;
pub mod retention;
pub mod sdk;
mod vault;

pub use access::AccessTokens;
pub use admin::Admin;
pub use cards::CardTokens;
pub use directory::{AuthFailure, Directory, Principal};
pub use dpop::{Dpop, DpopError};
pub use error::{AppError, Conflict, Denial, Entity, Invalid};
pub use import::Importer;
pub use mfa::{Courier, Mfa};
pub use retention::{Retention, RetentionSettings};
pub use sdk::SdkTokens;

use cardgate_core::audit::{AuditEvent, AuditKey, Relink, Relinking};
use cardgate_core::{Environment, TenantId};
use cardgate_jose::vault::MasterKey;
use cardgate_store::committer::Committer;
use cardgate_store::{Store, StoreError, Write, WriteOutcome, WriteSet};
use directory::Snapshot;
use metrics::Metrics;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a request waits for the store — a read, or its commit — before it is answered
/// 503: an outage is answered within about a second, not waited out.
pub const STORE_WAIT: Duration = Duration::from_secs(1);

/// How long start-up and an operator's commands (import, client, keys) wait for the store:
/// they are not requests, and a busy database should delay them rather than fail them.
pub const COMMAND_STORE_WAIT: Duration = Duration::from_secs(60);

/// What `Retry-After` says when the store cannot answer.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Wall-clock time with an adjustable offset, so tests can move time forward.
#[derive(Default)]
pub struct Clock {
    offset_ms: AtomicI64,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        i64::try_from(real).unwrap_or(i64::MAX) + self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn advance(&self, by: Duration) {
        self.offset_ms.fetch_add(
            i64::try_from(by.as_millis()).unwrap_or(0),
            Ordering::Relaxed,
        );
    }
}

/// How the instance is set up.
#[derive(Clone, Debug)]
pub struct Settings {
    pub environment: Environment,
    pub public_url: String,
}

/// What the database's master key check says: the value stored when the database was
/// created, an HMAC under the master key, so only a holder of the master key can write one.
/// Databases from before keyed audit links hold the first form; a database created or
/// re-linked since holds the second, which also says its audit log is keyed.
pub enum KeyCheck {
    BeforeKeyedLinks,
    Keyed,
}

impl KeyCheck {
    pub const META_KEY: &'static str = "master_key_check";

    /// The check of a database whose audit log is keyed.
    pub fn keyed_value(master: &MasterKey) -> String {
        cardgate_jose::digest::hex(
            &master.derive("cardgate master key check v2: audit links keyed")[..],
        )
    }

    /// Reads (or, in a new database, records) the check: a wrong master key is refused.
    pub async fn read(store: &dyn Store, master: &MasterKey) -> Result<Self, AppError> {
        let keyed = Self::keyed_value(master);
        let stored = store.meta_init(Self::META_KEY, &keyed).await?;
        if stored == keyed {
            Ok(Self::Keyed)
        } else if stored == master.check_value() {
            Ok(Self::BeforeKeyedLinks)
        } else {
            Err(AppError::Conflict(Conflict::WrongMasterKey))
        }
    }
}

/// The key every audit link is made with: only a holder of the master key can write (or
/// rewrite) a chain that `audit verify` accepts.
pub fn audit_key(master: &MasterKey) -> AuditKey {
    AuditKey::new(&master.derive("cardgate audit chain key v1"))
}

/// The running application: the store, the committer, the in-memory directory and the
/// caches every use case shares. Its use cases are reached by concept: [`App::directory`],
/// [`App::access_tokens`], [`App::card_tokens`], [`App::mfa`], [`App::admin`],
/// [`App::importer`].
pub struct App {
    pub store: Arc<dyn Store>,
    pub committer: Committer,
    pub settings: Settings,
    pub clock: Clock,
    pub metrics: Arc<Metrics>,
    master: MasterKey,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Revoked token ids (JWT `jti`, or the hash hex of opaque tokens) → expiry.
    revoked: RwLock<HashMap<String, i64>>,
    revocations_polled_ms: AtomicI64,
    rate: limits::RateLimiter,
    tokens: access::TokenCache,
    hot: hot::HotCache,
    code_key: zeroize::Zeroizing<[u8; 32]>,
    courier: Arc<dyn Courier>,
    /// How long a request waits for the store ([`STORE_WAIT`] unless changed), in ms.
    store_wait_ms: AtomicU64,
    /// DPoP: how old a proof's `iat` may be, and the clock skew allowed (seconds).
    dpop_window_s: AtomicI64,
    dpop_skew_s: AtomicI64,
    /// DPoP: the key server nonces are derived under.
    dpop_nonce_key: cardgate_jose::digest::HmacKey,
    /// How the purger runs ([`App::retention`]).
    retention_settings: RwLock<RetentionSettings>,
    /// BankEzy: each live SDK token's key agreement, run once per token (see `sdk::reveal`).
    sdk_agreements: sdk::Agreements,
}

/// The use cases of one concept, over the shared [`App`].
macro_rules! facade {
    ($(#[$doc:meta])* $name:ident, $accessor:ident) => {
        $(#[$doc])*
        pub struct $name<'a>(&'a std::sync::Arc<$crate::App>);

        impl std::ops::Deref for $name<'_> {
            type Target = std::sync::Arc<$crate::App>;
            fn deref(&self) -> &std::sync::Arc<$crate::App> {
                self.0
            }
        }

        impl $crate::App {
            $(#[$doc])*
            pub fn $accessor(self: &std::sync::Arc<Self>) -> $name<'_> {
                $name(self)
            }
        }
    };
}
pub(crate) use facade;

impl App {
    /// Readies a database for `master`, before anything else touches it: checks that the
    /// master key is this database's (recording it in a new one), then makes sure the audit
    /// log is keyed. Whether it was keyed already is read from the master key check, which
    /// only a holder of the master key can write ([`KeyCheck`]): a database created or
    /// re-linked by this version says so there, and its log is never re-linked again — a log
    /// rewritten with the old rule and its marker deleted stays unkeyed and fails `audit
    /// verify`. Only a database whose check predates keyed links has its log verified under
    /// the old rule and, if intact, re-linked under the audit key (and its check moved on),
    /// and only when `relink`; a log that does not verify is refused, naming where it
    /// breaks, and nothing is written. Returns how many events were re-linked now.
    pub async fn prepare(
        store: &dyn Store,
        master: &MasterKey,
        env: Environment,
        actor: &str,
        relink: bool,
    ) -> Result<Option<i64>, AppError> {
        match KeyCheck::read(store, master).await? {
            KeyCheck::Keyed => {
                let marked = store.meta_get(cardgate_core::audit::LINKS_META_KEY).await?;
                let empty = store.audit_heads().await?.iter().all(|h| h.seq == 0);
                match (marked, empty) {
                    (Some(_), _) => {}
                    // A new database: its empty chains start from their keyed genesis.
                    (None, true) => {
                        let note = Relinking {
                            ts_ms: Clock::default().now_ms(),
                            environment: env.as_str().to_string(),
                            actor: actor.to_string(),
                        };
                        store.relink_audit(&note).await?;
                    }
                    // Keyed once, its marker gone: marked again, never re-linked.
                    (None, false) => store.mark_audit_keyed().await?,
                }
                Ok(None)
            }
            KeyCheck::BeforeKeyedLinks if !relink => {
                Err(AppError::Conflict(Conflict::AuditLogNotKeyed))
            }
            KeyCheck::BeforeKeyedLinks => {
                let note = Relinking {
                    ts_ms: Clock::default().now_ms(),
                    environment: env.as_str().to_string(),
                    actor: actor.to_string(),
                };
                let events = match store.relink_audit(&note).await? {
                    Relink::AlreadyKeyed => None,
                    Relink::Relinked { events } => Some(events),
                    Relink::Broken(b) => {
                        return Err(AppError::Conflict(Conflict::AuditLogBroken(b)))
                    }
                };
                store
                    .apply(&[WriteSet::of(vec![Write::SetMeta {
                        key: KeyCheck::META_KEY,
                        value: KeyCheck::keyed_value(master),
                    }])])
                    .await?;
                Ok(events)
            }
        }
    }

    /// Opens the application on `store`: readies the database ([`App::prepare`]), ensures a
    /// signing key exists for this environment and loads the directory. `courier` carries
    /// step-up codes to tenants' webhooks.
    pub async fn start(
        store: Arc<dyn Store>,
        master: MasterKey,
        settings: Settings,
        courier: Arc<dyn Courier>,
    ) -> Result<Arc<Self>, AppError> {
        let relinked = Self::prepare(
            store.as_ref(),
            &master,
            settings.environment,
            "system",
            true,
        )
        .await?;
        if let Some(events) = relinked.filter(|n| *n > 0) {
            tracing::warn!(
                events,
                "the audit log predated keyed links: verified as it was and re-linked under the audit key"
            );
        }
        let clock = Clock::default();
        let now = clock.now_ms();
        let snap = Snapshot::load(store.as_ref(), &master, settings.environment, now).await?;
        let app = Arc::new(Self {
            committer: Committer::spawn(store.clone()),
            store,
            clock,
            metrics: Arc::new(Metrics::default()),
            code_key: master.derive("cardgate mfa code key v1"),
            dpop_nonce_key: cardgate_jose::digest::HmacKey::new(
                &master.derive("cardgate dpop nonce key v1")[..],
            ),
            dpop_window_s: AtomicI64::new(dpop::DEFAULT_IAT_WINDOW_SECONDS),
            dpop_skew_s: AtomicI64::new(dpop::DEFAULT_CLOCK_SKEW_SECONDS),
            master,
            snapshot: RwLock::new(Arc::new(snap)),
            revoked: RwLock::new(HashMap::new()),
            revocations_polled_ms: AtomicI64::new(0),
            rate: limits::RateLimiter::default(),
            tokens: access::TokenCache::default(),
            hot: hot::HotCache::default(),
            settings,
            courier,
            // Start-up is not a request: it waits like an operator's command.
            store_wait_ms: AtomicU64::new(COMMAND_STORE_WAIT.as_millis() as u64),
            retention_settings: RwLock::default(),
            sdk_agreements: sdk::Agreements::default(),
        });
        if app.snapshot().keys.active.is_none() {
            app.admin().rotate_signing_key("system").await?;
        }
        app.poll_revocations().await?;
        // From here on, requests: an outage is answered, not waited out.
        app.set_store_wait(STORE_WAIT);
        Ok(app)
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn env(&self) -> Environment {
        self.settings.environment
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn master(&self) -> &MasterKey {
        &self.master
    }

    /// Reloads tenants, clients and keys from the store.
    pub async fn reload(&self) -> Result<(), AppError> {
        // Bounded like any read: a request that needs a reload is answered, not held.
        let wait = self.store_wait();
        let load = Snapshot::load(self.store.as_ref(), &self.master, self.env(), self.now_ms());
        let snap = match tokio::time::timeout(wait, load).await {
            Ok(snap) => snap?,
            Err(_) => {
                return Err(self.store_failed(StoreError::Unavailable(format!(
                    "no answer within {wait:?}"
                ))))
            }
        };
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
        // Whatever changed elsewhere, remembered cards, names and tokens are read afresh.
        self.hot.clear();
        Ok(())
    }

    /// Reloads if another process or replica changed the configuration.
    pub async fn reload_if_changed(&self) -> Result<bool, AppError> {
        let v = self.read(self.store.config_version()).await?;
        if v != self.snapshot().version {
            self.reload().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Learns revocations made by other replicas (and prunes expired ones).
    pub async fn poll_revocations(&self) -> Result<(), AppError> {
        let now = self.now_ms();
        let since = self.revocations_polled_ms.load(Ordering::Relaxed) - 10_000;
        let rows = self.read(self.store.revocations_since(since)).await?;
        let mut set = self.revoked.write().unwrap_or_else(|p| p.into_inner());
        set.retain(|_, exp| *exp > now);
        for (id, exp) in rows {
            if exp > now {
                set.insert(id, exp);
            }
        }
        self.revocations_polled_ms.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Background refresh of the directory and the revocation list, every `every`.
    pub fn spawn_pollers(self: &Arc<Self>, every: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(app) = weak.upgrade() else { break };
                if let Err(e) = app.reload_if_changed().await {
                    tracing::warn!(error = %e, "config refresh failed");
                }
                if let Err(e) = app.poll_revocations().await {
                    tracing::warn!(error = %e, "revocation refresh failed");
                }
            }
        });
    }

    pub(crate) fn is_revoked(&self, token_id: &str) -> bool {
        self.revoked
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(token_id)
    }

    pub(crate) fn mark_revoked(&self, token_id: String, expires_at_ms: i64) {
        self.revoked
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token_id, expires_at_ms);
    }

    /// Takes one request from `client`'s budget (the tenant's `rate_limit_per_minute`, per
    /// replica): the token endpoints and step-up session starts.
    pub(crate) fn check_rate(&self, client: &str, tenant: &TenantId) -> Result<(), AppError> {
        let per_minute = self
            .snapshot()
            .tenants
            .get(tenant)
            .map_or(cardgate_core::model::DEFAULT_RATE_LIMIT_PER_MINUTE, |t| {
                t.settings.rate_limit_per_minute
            });
        self.rate
            .take(client, per_minute, self.now_ms())
            .map_err(|retry_after_seconds| AppError::RateLimited {
                retry_after_seconds,
            })
    }

    /// An audit event stamped with now and this environment.
    pub fn audit(
        &self,
        tenant: Option<&TenantId>,
        actor: impl Into<String>,
        action: &str,
        outcome: &str,
        subject: impl Into<String>,
        details: serde_json::Value,
    ) -> Write {
        Write::Audit(AuditEvent {
            ts_ms: self.now_ms(),
            tenant_id: tenant.map(|t| t.as_str().to_string()),
            environment: self.env().as_str().to_string(),
            actor: actor.into(),
            action: action.to_string(),
            outcome: outcome.to_string(),
            subject: subject.into(),
            details: AuditEvent::render_details(&details),
        })
    }

    /// How long a request waits for the store before it is answered 503.
    pub fn store_wait(&self) -> Duration {
        Duration::from_millis(self.store_wait_ms.load(Ordering::Relaxed))
    }

    /// Changes [`App::store_wait`]: an operator's command waits longer
    /// ([`COMMAND_STORE_WAIT`]), and so do tests that hold the writer on purpose.
    pub fn set_store_wait(&self, wait: Duration) {
        self.store_wait_ms.store(
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a store error by kind and turns it into the application's error.
    fn store_failed(&self, e: StoreError) -> AppError {
        self.metrics.store_error(e.kind());
        e.into()
    }

    /// A store read on a request's path, bounded by [`App::store_wait`]: a store that does
    /// not answer in time is unavailable.
    pub(crate) async fn read<T>(
        &self,
        read: impl Future<Output = cardgate_store::Result<T>>,
    ) -> Result<T, AppError> {
        let wait = self.store_wait();
        match tokio::time::timeout(wait, read).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.store_failed(e)),
            Err(_) => Err(self.store_failed(StoreError::Unavailable(format!(
                "no answer within {wait:?}"
            )))),
        }
    }

    /// Whether the store answers now (a cheap read, bounded like every request's): readiness.
    pub async fn ready(&self) -> Result<(), AppError> {
        self.read(self.store.config_version()).await.map(|_| ())
    }

    /// Commits a write set through the group committer, waiting at most
    /// [`App::store_wait`]. A set given up on is dropped if no writer has taken it yet, so
    /// either way its outcome is unknown to the caller, who is answered 503.
    pub async fn commit(&self, set: WriteSet) -> Result<WriteOutcome, AppError> {
        let wait = self.store_wait();
        match tokio::time::timeout(wait, self.committer.submit(set)).await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(e)) => Err(self.store_failed(e)),
            Err(_) => Err(self.store_failed(StoreError::CommitUnknown(format!(
                "not committed within {wait:?}"
            )))),
        }
    }

    /// Records a refusal in the audit log. A failure to record is logged, not surfaced: the
    /// caller is refused either way.
    pub async fn audit_refusal(
        &self,
        tenant: Option<&TenantId>,
        actor: impl Into<String>,
        action: &str,
        outcome: &str,
        subject: impl Into<String>,
    ) {
        let w = self.audit(
            tenant,
            actor,
            action,
            outcome,
            subject,
            serde_json::json!({}),
        );
        if let Err(e) = self.commit(WriteSet::of(vec![w])).await {
            tracing::error!(error = %e, action, "could not record a refusal in the audit log");
        }
    }
}
