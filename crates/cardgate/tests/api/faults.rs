//! Fault injection: a `Store` around a real one that fails chosen write batches — before
//! applying them (the transaction certainly rolled back) or after the real store committed
//! them (the caller cannot know the outcome) — or stops answering altogether. The tests here
//! show that an unknown commit outcome is never guessed: nothing is applied twice, and the
//! caller is told to retry rather than told a lie.

use crate::helpers::*;
use async_trait::async_trait;
use cardgate_core::audit::{ChainHead, StoredAuditEvent};
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::MfaSession;
use cardgate_core::tokens::{
    AccessTokenRecord, CardTokenRecord, PresentedToken, TokenId, CARD_TOKEN_PREFIX,
};
use cardgate_core::{
    Account, Card, CardId, Client, Environment, Person, PersonId, Tenant, TenantId,
};
use cardgate_store::{
    DataKeyRow, RedemptionContext, Result, SigningKeyRow, Store, StoreError, WriteOutcome, WriteSet,
};
use reqwest::Response;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::{watch, Notify};

/// What the next write batch meets.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// Waits until [`FaultyStore::release`], then applies normally: holds the writer, so the
    /// sets submitted meanwhile queue up and form the next batch together.
    Hold,
    /// Fails without applying anything: the batch certainly rolled back.
    RolledBack,
    /// Applies (the real store commits), then fails as a lost answer to `COMMIT` would: the
    /// caller cannot know the outcome.
    LostCommit,
}

/// Whether the database answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outage {
    None,
    /// Every call fails at once, as when connections are refused.
    Refusing,
    /// Every call waits until the outage ends and then fails, as with a peer that stopped
    /// answering and whose connections are reset when it comes back.
    Silent,
}

/// The error of a database that cannot be reached.
pub fn unreachable() -> StoreError {
    StoreError::Unavailable("injected: the database cannot be reached".into())
}

/// The error of a `COMMIT` whose answer was lost.
pub fn lost_commit() -> StoreError {
    StoreError::CommitUnknown("injected: the connection was lost during COMMIT".into())
}

/// The error of a statement that failed (its transaction rolled back).
pub fn statement_failed() -> StoreError {
    StoreError::Database("injected: a statement failed".into())
}

pub struct FaultyStore {
    pub inner: Arc<dyn Store>,
    plan: Mutex<VecDeque<Fault>>,
    outage: watch::Sender<Outage>,
    holding: Notify,
    release: Notify,
}

impl FaultyStore {
    pub fn around(inner: Arc<dyn Store>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            plan: Mutex::default(),
            outage: watch::Sender::new(Outage::None),
            holding: Notify::new(),
            release: Notify::new(),
        })
    }

    /// The next write batches meet these faults, in order; later ones apply normally.
    pub fn plan(&self, faults: &[Fault]) {
        self.plan.lock().unwrap().extend(faults.iter().copied());
    }

    /// Waits until a [`Fault::Hold`] holds the writer.
    pub async fn holding(&self) {
        self.holding.notified().await;
    }

    /// Lets the held batch go on.
    pub fn release(&self) {
        self.release.notify_one();
    }

    pub fn set_outage(&self, outage: Outage) {
        self.outage.send_replace(outage);
    }

    /// Passes while the database answers; otherwise fails (at once, or when the outage ends).
    async fn reach(&self) -> Result<()> {
        let mut rx = self.outage.subscribe();
        let outage = *rx.borrow_and_update();
        match outage {
            Outage::None => Ok(()),
            Outage::Refusing => Err(unreachable()),
            Outage::Silent => {
                let _ = rx.changed().await;
                Err(unreachable())
            }
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    fn writers(&self) -> usize {
        self.inner.writers()
    }
    async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        self.reach().await?;
        self.inner.meta_get(key).await
    }
    async fn meta_init(&self, key: &str, value: &str) -> Result<String> {
        self.reach().await?;
        self.inner.meta_init(key, value).await
    }
    async fn config_version(&self) -> Result<i64> {
        self.reach().await?;
        self.inner.config_version().await
    }
    async fn load_tenants(&self) -> Result<Vec<Tenant>> {
        self.reach().await?;
        self.inner.load_tenants().await
    }
    async fn load_clients(&self) -> Result<Vec<Client>> {
        self.reach().await?;
        self.inner.load_clients().await
    }
    async fn load_signing_keys(&self, env: Environment) -> Result<Vec<SigningKeyRow>> {
        self.reach().await?;
        self.inner.load_signing_keys(env).await
    }
    async fn load_data_keys(&self, env: Environment) -> Result<Vec<DataKeyRow>> {
        self.reach().await?;
        self.inner.load_data_keys(env).await
    }
    async fn get_person(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &PersonId,
    ) -> Result<Option<Person>> {
        self.reach().await?;
        self.inner.get_person(tenant, env, id).await
    }
    async fn get_account(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &str,
    ) -> Result<Option<Account>> {
        self.reach().await?;
        self.inner.get_account(tenant, env, id).await
    }
    async fn get_card(
        &self,
        tenant: &TenantId,
        env: Environment,
        id: &CardId,
    ) -> Result<Option<Card>> {
        self.reach().await?;
        self.inner.get_card(tenant, env, id).await
    }
    async fn list_cards(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Card>> {
        self.reach().await?;
        self.inner.list_cards(tenant, env).await
    }
    async fn list_persons(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Person>> {
        self.reach().await?;
        self.inner.list_persons(tenant, env).await
    }
    async fn list_accounts(&self, tenant: &TenantId, env: Environment) -> Result<Vec<Account>> {
        self.reach().await?;
        self.inner.list_accounts(tenant, env).await
    }
    async fn other_environment_ids(
        &self,
        tenant: &TenantId,
        env: Environment,
    ) -> Result<cardgate_store::OtherEnvironmentIds> {
        self.reach().await?;
        self.inner.other_environment_ids(tenant, env).await
    }
    async fn get_access_token(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<AccessTokenRecord>> {
        self.reach().await?;
        self.inner.get_access_token(id, env).await
    }
    async fn get_card_token(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<CardTokenRecord>> {
        self.reach().await?;
        self.inner.get_card_token(id, env).await
    }
    async fn get_redemption(
        &self,
        id: &TokenId,
        env: Environment,
    ) -> Result<Option<RedemptionContext>> {
        self.reach().await?;
        self.inner.get_redemption(id, env).await
    }
    async fn get_mfa_session(
        &self,
        id: &MfaSessionId,
        env: Environment,
    ) -> Result<Option<MfaSession>> {
        self.reach().await?;
        self.inner.get_mfa_session(id, env).await
    }
    async fn get_mfa_person(
        &self,
        tenant: &TenantId,
        person: &PersonId,
    ) -> Result<Option<cardgate_store::MfaPersonState>> {
        self.reach().await?;
        self.inner.get_mfa_person(tenant, person).await
    }
    async fn revocations_since(&self, since_ms: i64) -> Result<Vec<(String, i64)>> {
        self.reach().await?;
        self.inner.revocations_since(since_ms).await
    }
    async fn audit_page(&self, after: (i64, i64), limit: i64) -> Result<Vec<StoredAuditEvent>> {
        self.reach().await?;
        self.inner.audit_page(after, limit).await
    }
    async fn audit_heads(&self) -> Result<Vec<ChainHead>> {
        self.reach().await?;
        self.inner.audit_heads().await
    }
    async fn mark_audit_keyed(&self) -> Result<()> {
        self.reach().await?;
        self.inner.mark_audit_keyed().await
    }
    async fn relink_audit(
        &self,
        note: &cardgate_core::audit::Relinking,
    ) -> Result<cardgate_core::audit::Relink> {
        self.reach().await?;
        self.inner.relink_audit(note).await
    }
    async fn purge_expired_claims(&self, now_ms: i64, limit: i64) -> Result<u64> {
        self.reach().await?;
        self.inner.purge_expired_claims(now_ms, limit).await
    }
    async fn purge_expired(
        &self,
        kind: cardgate_store::Expiring,
        before_ms: i64,
        limit: i64,
    ) -> Result<u64> {
        self.reach().await?;
        self.inner.purge_expired(kind, before_ms, limit).await
    }
    async fn expiring_stats(
        &self,
        kind: cardgate_store::Expiring,
        now_ms: i64,
        before_ms: i64,
    ) -> Result<cardgate_store::ExpiringStats> {
        self.reach().await?;
        self.inner.expiring_stats(kind, now_ms, before_ms).await
    }
    async fn audit_stats(&self) -> Result<cardgate_store::AuditStats> {
        self.reach().await?;
        self.inner.audit_stats().await
    }
    async fn space(&self) -> Result<cardgate_store::Space> {
        self.reach().await?;
        self.inner.space().await
    }
    async fn reclaim_space(&self, pages: i64) -> Result<()> {
        self.reach().await?;
        self.inner.reclaim_space(pages).await
    }
    async fn audit_marks(&self) -> Result<Vec<cardgate_store::AuditMark>> {
        self.reach().await?;
        self.inner.audit_marks().await
    }
    async fn set_audit_mark(
        &self,
        mark: &cardgate_store::AuditMark,
        expect: Option<i64>,
    ) -> Result<bool> {
        self.reach().await?;
        self.inner.set_audit_mark(mark, expect).await
    }
    async fn prune_audit(
        &self,
        mark: &cardgate_store::AuditMark,
        expect: Option<i64>,
    ) -> Result<Option<u64>> {
        self.reach().await?;
        self.inner.prune_audit(mark, expect).await
    }

    async fn apply_as(&self, writer: usize, sets: &[WriteSet]) -> Result<Vec<WriteOutcome>> {
        self.reach().await?;
        let fault = self.plan.lock().unwrap().pop_front();
        match fault {
            None => self.inner.apply_as(writer, sets).await,
            Some(Fault::Hold) => {
                self.holding.notify_one();
                self.release.notified().await;
                self.inner.apply_as(writer, sets).await
            }
            Some(Fault::RolledBack) => Err(statement_failed()),
            Some(Fault::LostCommit) => {
                self.inner.apply_as(writer, sets).await?;
                Err(lost_commit())
            }
        }
    }
}

/// A SQLite app on a [`FaultyStore`] (faults armed only after the fixture is imported).
pub async fn spawn_faulty() -> (TestApp, Arc<FaultyStore>) {
    let mut faulty = None;
    let app = TestApp::spawn_wrapped(|store| {
        let f = FaultyStore::around(store);
        faulty = Some(f.clone());
        f
    })
    .await;
    (app, faulty.unwrap())
}

/// How many times the card token `token` has been used, as stored.
async fn uses_made(store: &Arc<dyn Store>, token: &str) -> i64 {
    let id = PresentedToken::parse(token, CARD_TOKEN_PREFIX).unwrap().id;
    store
        .get_card_token(&id, cardgate_core::Environment::Sandbox)
        .await
        .unwrap()
        .unwrap()
        .uses_made
}

/// How many card tokens are stored.
async fn card_tokens_stored(app: &TestApp) -> i64 {
    sqlite_file(&app.database_url)
        .query_row("SELECT count(*) FROM card_tokens", [], |r| r.get(0))
        .unwrap()
}

/// Asserts a native-API answer is 503 `temporarily_unavailable` with `Retry-After`, and that
/// its body is opaque (no cause, nothing injected).
pub async fn assert_native_unavailable(res: Response, what: &str) {
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{what}: {body}"
    );
    assert!(body["error_description"].is_string(), "{what}: {body}");
    assert!(
        retry_after.is_some_and(|r| r.parse::<u64>().is_ok_and(|s| s >= 1)),
        "{what}: Retry-After"
    );
    assert!(!body.to_string().contains("injected"), "{what}: {body}");
}

/// The four requests of the batch under test, sent together while the writer is held, and
/// their answers: a single-use redemption, a 3-use redemption, a PIN change and a mint.
struct Batch {
    single: String,
    triple: String,
    set_pin: String,
}

impl Batch {
    async fn mint(app: &TestApp) -> Batch {
        let single = app
            .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
            .await;
        let triple = app
            .card_token(
                BACKEND,
                CARD,
                json!({"operations": ["VIEW_CARD"], "max_uses": 3}),
            )
            .await;
        // On another card: a PIN change re-seals its card, and a set decided on the card as it
        // was would then (rightly) not apply in the same batch.
        let set_pin = app
            .card_token(BACKEND, CARD_BOB, json!({"operations": ["SET_PIN"]}))
            .await;
        Batch {
            single,
            triple,
            set_pin,
        }
    }

    /// Holds the writer on one mint, sends the four requests, waits until all four are queued
    /// behind it, then lets the writer go on with `fault` planned for their batch. Answers:
    /// (the held mint, [single, triple, set PIN, mint]).
    async fn send(
        &self,
        app: &TestApp,
        faulty: &FaultyStore,
        fault: Fault,
    ) -> (Response, Vec<Response>) {
        faulty.plan(&[Fault::Hold, fault]);
        let held = {
            let (base, http) = (app.base.clone(), app.http.clone());
            tokio::spawn(async move {
                http.post(format!("{base}/v1/cards/{CARD}/tokens"))
                    .basic_auth(BACKEND.0, Some(BACKEND.1))
                    .json(&json!({"operations": ["GET_PIN"]}))
                    .send()
                    .await
                    .unwrap()
            })
        };
        faulty.holding().await;
        let url = |card: &str, p: &str| app.url(&format!("/v1/cards/{card}/{p}"));
        let requests = vec![
            app.http.get(url(CARD, "details")).bearer_auth(&self.single),
            app.http.get(url(CARD, "details")).bearer_auth(&self.triple),
            app.http
                .put(url(CARD_BOB, "pin"))
                .bearer_auth(&self.set_pin)
                .json(&json!({"pin": NEW_PIN})),
            app.http
                .post(url(CARD, "tokens"))
                .basic_auth(BACKEND.0, Some(BACKEND.1))
                .json(&json!({"operations": ["VIEW_CARD"]})),
        ];
        let sent: Vec<_> = requests
            .into_iter()
            .map(|r| tokio::spawn(async move { r.send().await.unwrap() }))
            .collect();
        crate::cli::eventually(
            "the four sets queue behind the held batch",
            std::time::Duration::from_secs(20),
            || {
                let queued = app.svc.committer.queued();
                async move { queued == 4 }
            },
        )
        .await;
        faulty.release();
        let mut answers = Vec::new();
        for s in sent {
            answers.push(s.await.unwrap());
        }
        (held.await.unwrap(), answers)
    }
}

const NEW_PIN: &str = "135790";

/// Bob's card's PIN, read with a fresh GET_PIN token.
async fn current_pin(app: &TestApp) -> Value {
    let token = app
        .card_token(BACKEND, CARD_BOB, json!({"operations": ["GET_PIN"]}))
        .await;
    let (status, body) = status_and_json(app.get_pin(&token, CARD_BOB).await).await;
    assert_eq!(status, 200, "{body}");
    body["pin"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_outcome_is_unknown_is_answered_503_and_never_applied_twice() {
    let (app, faulty) = spawn_faulty().await;
    let batch = Batch::mint(&app).await;
    let before = card_tokens_stored(&app).await;

    let (held, answers) = batch.send(&app, &faulty, Fault::LostCommit).await;
    let (status, body) = status_and_json(held).await;
    assert_eq!(status, 201, "the held mint itself commits: {body}");
    let what = [
        "single-use redemption",
        "3-use redemption",
        "SET_PIN",
        "mint",
    ];
    for (res, what) in answers.into_iter().zip(what) {
        assert_native_unavailable(res, what).await;
    }

    // The store committed the batch once; nothing was applied a second time.
    assert_eq!(uses_made(&faulty.inner, &batch.single).await, 1);
    assert_eq!(
        uses_made(&faulty.inner, &batch.triple).await,
        1,
        "counted once, not twice"
    );
    assert_eq!(uses_made(&faulty.inner, &batch.set_pin).await, 1);
    assert_eq!(
        card_tokens_stored(&app).await,
        before + 2,
        "the held mint and the mint answered 503, each stored once"
    );
    assert_eq!(
        current_pin(&app).await,
        NEW_PIN,
        "the PIN change was applied once"
    );
    // What the store now holds is what later requests see.
    let (status, body) = status_and_json(app.get_details(&batch.single, CARD).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let (status, body) = status_and_json(app.get_details(&batch.triple, CARD).await).await;
    assert_eq!((status, body["pan"].as_str()), (200, Some(PAN)), "{body}");
    assert_eq!(uses_made(&faulty.inner, &batch.triple).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_certainly_rolled_back_is_applied_again_set_by_set() {
    let (app, faulty) = spawn_faulty().await;
    let batch = Batch::mint(&app).await;
    let before = card_tokens_stored(&app).await;

    let (held, answers) = batch.send(&app, &faulty, Fault::RolledBack).await;
    assert_eq!(held.status(), 201);
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert_eq!(
        statuses,
        [200, 200, 204, 201],
        "each set applied alone succeeds"
    );

    assert_eq!(uses_made(&faulty.inner, &batch.single).await, 1);
    assert_eq!(uses_made(&faulty.inner, &batch.triple).await, 1);
    assert_eq!(uses_made(&faulty.inner, &batch.set_pin).await, 1);
    assert_eq!(card_tokens_stored(&app).await, before + 2);
    assert_eq!(current_pin(&app).await, NEW_PIN);
}
