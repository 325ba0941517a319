//! The application service: one function per use case. Each loads what it needs (from the
//! in-memory directory or the store), lets `cardgate_core` decide, and persists the outcome
//! with its audit event in one write set through the group committer.

pub mod admin;
pub mod auth;
pub mod cards;
pub mod directory;
mod hot;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod webhook;

use metrics::Metrics;
use cardgate_core::audit::{AuditEvent, Relink, Relinking};
use cardgate_core::cards::{MintRefusal, Redemption};
use cardgate_core::mfa::MfaCheck;
use cardgate_core::secret::SecretHash;
use cardgate_core::{Environment, TenantId};
use cardgate_store::committer::Committer;
use cardgate_store::{Store, StoreError, Write, WriteOutcome, WriteSet};
use directory::Snapshot;
use keys::MasterKey;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use auth::{AuthFailure, Principal};

/// Why a use case did not succeed. Each API surface maps this to its own wire shape.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthFailure),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    InvalidScope(String),
    #[error("{0}")]
    Mint(#[from] MintRefusal),
    #[error("MFA: {0:?}")]
    Mfa(MfaCheck),
    #[error("the token cannot be used: {0:?}")]
    Redemption(Redemption),
    #[error("{0}")]
    Conflict(String),
    #[error("too many requests")]
    RateLimited { retry_after_seconds: u64 },
    /// The store cannot answer now (unreachable, too slow, or a commit's outcome unknown):
    /// the caller should retry after [`RETRY_AFTER_SECONDS`]. Never a refusal of its own.
    #[error("the store is unavailable: {0}")]
    Unavailable(StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        if e.is_unavailable() {
            Self::Unavailable(e)
        } else {
            Self::Internal(e.to_string())
        }
    }
}

/// How long a request waits for the store — a read, or its commit — before it is answered
/// 503: an outage is answered within about a second, not waited out.
pub const STORE_WAIT: Duration = Duration::from_secs(1);

/// How long start-up and an operator's commands (import, client, keys) wait for the store:
/// they are not requests, and a busy database should delay them rather than fail them.
pub const COMMAND_STORE_WAIT: Duration = Duration::from_secs(60);

/// What `Retry-After` says when the store cannot answer.
pub const RETRY_AFTER_SECONDS: u64 = 1;

impl ServiceError {
    pub fn crypto(e: cardgate_jose::JoseError) -> Self {
        Self::Internal(format!("crypto: {e}"))
    }
}

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

/// How the service is set up.
#[derive(Clone, Debug)]
pub struct Settings {
    pub environment: Environment,
    pub public_url: String,
}

/// Per-client token buckets for token endpoints (in memory, per replica).
#[derive(Default)]
struct RateLimiter {
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

impl RateLimiter {
    /// Takes one token from `client`'s bucket; `Err(seconds)` when empty.
    fn take(&self, client: &str, per_minute: u32, now_ms: i64) -> Result<(), u64> {
        let cap = f64::from(per_minute.max(1));
        let rate_per_ms = cap / 60_000.0;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = buckets.entry(client.to_string()).or_insert((cap, now_ms));
        *tokens = (*tokens + (now_ms - *last).max(0) as f64 * rate_per_ms).min(cap);
        *last = now_ms;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - *tokens) / rate_per_ms).ceil();
            Err(((wait_ms / 1000.0).ceil() as u64).max(1))
        }
    }
}

/// Bounded caches that let introspection and Bearer authentication skip signature checks
/// and database reads for tokens already seen. Revocation is checked separately.
#[derive(Default)]
struct TokenCache {
    /// SHA-256 of the token → what it says, once verified.
    access: RwLock<HashMap<SecretHash, Arc<oauth::VerifiedAccess>>>,
}

const TOKEN_CACHE_MAX: usize = 100_000;

pub struct Service {
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
    rate: RateLimiter,
    cache: TokenCache,
    hot: hot::HotCache,
    code_key: [u8; 32],
    http: reqwest::Client,
    /// How long a request waits for the store ([`STORE_WAIT`] unless changed), in ms.
    store_wait_ms: AtomicU64,
}

impl Service {
    /// Readies a database for `master`, before anything else touches it: checks that the
    /// master key is this database's (recording it in a new one), then makes sure the audit
    /// log is keyed, re-linking under the audit key a log that predates keyed links. A log
    /// that does not verify as it is under the old rule is refused, naming where it breaks,
    /// and nothing is re-linked (nor written after). Returns how many events were re-linked
    /// now, if any were; `actor` records who did it.
    pub async fn prepare(
        store: &dyn Store,
        master: &MasterKey,
        env: Environment,
        actor: &str,
    ) -> Result<Option<i64>, ServiceError> {
        let stored = store
            .meta_init("master_key_check", &master.check_value())
            .await?;
        if stored != master.check_value() {
            return Err(ServiceError::Internal(
                "the master key does not match the one this database was created with".into(),
            ));
        }
        let note = Relinking {
            ts_ms: Clock::default().now_ms(),
            environment: env.as_str().to_string(),
            actor: actor.to_string(),
        };
        match store.relink_audit(&note).await? {
            Relink::AlreadyKeyed => Ok(None),
            Relink::Relinked { events } => Ok(Some(events)),
            Relink::Broken(b) => Err(ServiceError::Conflict(format!(
                "the database records no keyed audit links, and its audit log does not verify \
                 under the old unkeyed rule: {b}. It was not re-linked, and cardgate writes \
                 nothing to this database until it is (see the README, Security model)"
            ))),
        }
    }

    /// Opens the service on `store`: readies the database ([`Service::prepare`]), ensures a
    /// signing key exists for this environment and loads the directory.
    pub async fn start(
        store: Arc<dyn Store>,
        master: MasterKey,
        settings: Settings,
    ) -> Result<Arc<Self>, ServiceError> {
        let relinked =
            Self::prepare(store.as_ref(), &master, settings.environment, "system").await?;
        if let Some(events) = relinked.filter(|n| *n > 0) {
            tracing::warn!(
                events,
                "the audit log predated keyed links: verified as it was and re-linked under the audit key"
            );
        }
        let clock = Clock::default();
        let now = clock.now_ms();
        let snap = Snapshot::load(store.as_ref(), &master, settings.environment, now).await?;
        let http = webhook::client(settings.environment)
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        let svc = Arc::new(Self {
            committer: Committer::spawn(store.clone()),
            store,
            clock,
            metrics: Arc::new(Metrics::default()),
            code_key: master.derive("cardgate mfa code key v1"),
            master,
            snapshot: RwLock::new(Arc::new(snap)),
            revoked: RwLock::new(HashMap::new()),
            revocations_polled_ms: AtomicI64::new(0),
            rate: RateLimiter::default(),
            cache: TokenCache::default(),
            hot: hot::HotCache::default(),
            settings,
            http,
            // Start-up is not a request: it waits like an operator's command.
            store_wait_ms: AtomicU64::new(COMMAND_STORE_WAIT.as_millis() as u64),
        });
        if svc.snapshot().keys.active.is_none() {
            svc.rotate_signing_key("system").await?;
        }
        svc.poll_revocations().await?;
        // From here on, requests: an outage is answered, not waited out.
        svc.set_store_wait(STORE_WAIT);
        Ok(svc)
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
    pub async fn reload(&self) -> Result<(), ServiceError> {
        let snap =
            Snapshot::load(self.store.as_ref(), &self.master, self.env(), self.now_ms()).await?;
        *self.snapshot.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(snap);
        // Whatever changed elsewhere, remembered cards, names and tokens are read afresh.
        self.hot.clear();
        Ok(())
    }

    /// Reloads if another process or replica changed the configuration.
    pub async fn reload_if_changed(&self) -> Result<bool, ServiceError> {
        let v = self.read(self.store.config_version()).await?;
        if v != self.snapshot().version {
            self.reload().await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Learns revocations made by other replicas (and prunes expired ones).
    pub async fn poll_revocations(&self) -> Result<(), ServiceError> {
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
                let Some(svc) = weak.upgrade() else { break };
                if let Err(e) = svc.reload_if_changed().await {
                    tracing::warn!(error = %e, "config refresh failed");
                }
                if let Err(e) = svc.poll_revocations().await {
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

    /// Rate limit for token issuance by `client` of `tenant`.
    pub fn check_rate(&self, client: &str, tenant: &TenantId) -> Result<(), ServiceError> {
        let per_minute = self
            .snapshot()
            .tenants
            .get(tenant)
            .map_or(600, |t| t.settings.rate_limit_per_minute);
        self.rate
            .take(client, per_minute, self.now_ms())
            .map_err(|retry_after_seconds| ServiceError::RateLimited {
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

    /// Changes [`Service::store_wait`]: an operator's command waits longer
    /// ([`COMMAND_STORE_WAIT`]), and so do tests that hold the writer on purpose.
    pub fn set_store_wait(&self, wait: Duration) {
        self.store_wait_ms.store(
            u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Counts a store error by kind and turns it into the service's error.
    fn store_failed(&self, e: StoreError) -> ServiceError {
        self.metrics.store_error(e.kind());
        e.into()
    }

    /// A store read on a request's path, bounded by [`Service::store_wait`]: a store that does
    /// not answer in time is unavailable.
    pub(crate) async fn read<T>(
        &self,
        read: impl Future<Output = cardgate_store::Result<T>>,
    ) -> Result<T, ServiceError> {
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
    pub async fn ready(&self) -> Result<(), ServiceError> {
        self.read(self.store.config_version()).await.map(|_| ())
    }

    /// Commits a write set through the group committer, waiting at most
    /// [`Service::store_wait`]. A set given up on is dropped if no writer has taken it yet, so
    /// either way its outcome is unknown to the caller, who is answered 503.
    pub async fn commit(&self, set: WriteSet) -> Result<WriteOutcome, ServiceError> {
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
