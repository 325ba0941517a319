//! The store contract, run against every backend: SQLite always, PostgreSQL when
//! `CARDGATE_TEST_POSTGRES_URL` is set (required in CI).

mod audit_replicas;
mod claims;
mod environments;
mod key_binding;
mod mfa;
mod sqlite_migrations;

use audit_replicas::verify_all;

pub use sqlite_migrations::migrate_as_sqlx_did;

use crate::helpers::{fresh_postgres_db, postgres_admin_url};
use cardgate_core::audit::{AuditEvent, AuditKey, LinkRule, LogVerifier, Relink, Relinking};
use cardgate_core::ids::MfaSessionId;
use cardgate_core::mfa::{Channel, MfaSession};
use cardgate_core::model::{
    PersonProfile, TenantSettings, DEFAULT_CARD_TOKEN_MAX_TTL, DEFAULT_CARD_TOKEN_MAX_USES,
};
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::SecretHash;
use cardgate_core::tokens::{AccessTokenRecord, CardTokenRecord, TokenId, TokenKind, UseLimit};
use cardgate_core::{
    Account, Card, CardId, CardStatus, ClientId, Environment, Operation, Person, PersonId, Tenant,
    TenantId,
};
use cardgate_store::{
    DataKeyRow, Guard, GuardKind, OtherEnvironmentIds, Store, StoreError, Write, WriteOutcome,
    WriteSet, AUDIT_CHAINS,
};
use std::sync::Arc;

const SB: Environment = Environment::Sandbox;

fn tenant() -> Tenant {
    Tenant {
        id: TenantId::parse("t1").unwrap(),
        settings: TenantSettings {
            name: "T".into(),
            financial_institution_id: None,
            widget_origins: vec![],
            mfa_required_for: vec![],
            webhook_url: None,
            rate_limit_per_minute: 10,
            card_token_ttl_seconds: 300,
            card_token_max_ttl_seconds: DEFAULT_CARD_TOKEN_MAX_TTL,
            card_token_max_uses: DEFAULT_CARD_TOKEN_MAX_USES,
            mfa_lockout: Default::default(),
            widget_token_ttl_seconds: None,
            dpop_nonce_required: false,
            sdk_token_ttl_seconds: None,
        },
        webhook_secret_enc: Some(vec![1, 2, 3]),
    }
}

/// The audit key of the stores these tests open.
fn audit_key() -> AuditKey {
    AuditKey::new(&[7; 32])
}

/// The store at `url`, its (new) audit log keyed so that it can write.
async fn keyed_store(url: &str) -> Arc<dyn Store> {
    let store = cardgate_store::connect(url, audit_key()).await.unwrap();
    let note = Relinking {
        ts_ms: 1,
        environment: "sandbox".into(),
        actor: "test".into(),
    };
    assert_eq!(
        store.relink_audit(&note).await.unwrap(),
        Relink::Relinked { events: 0 },
        "a new database's empty log is keyed"
    );
    store
}

fn audit(action: &str) -> Write {
    Write::Audit(AuditEvent {
        ts_ms: 1,
        tenant_id: Some("t1".into()),
        environment: "sandbox".into(),
        actor: "test".into(),
        action: action.into(),
        outcome: "ok".into(),
        subject: "s".into(),
        details: AuditEvent::render_details(&serde_json::json!({"n": 1})),
    })
}

/// A token id made from a name (the store never sees the token itself).
fn tid(name: &[u8]) -> TokenId {
    TokenId::from_slice(&SecretHash::of(name).0[..16]).unwrap()
}

fn card_token(id: TokenId, card: CardId, limit: UseLimit) -> CardTokenRecord {
    CardTokenRecord {
        id,
        hash: SecretHash::of(&id.0),
        kind: TokenKind::Card,
        tenant_id: TenantId::parse("t1").unwrap(),
        client_id: ClientId::parse("c1").unwrap(),
        environment: Environment::Sandbox,
        card_id: Some(card),
        person_id: None,
        operations: vec![Operation::ViewCard, Operation::GetPin],
        issued_at_ms: 1_000,
        expires_at_ms: 10_000,
        use_limit: limit,
        uses_made: 0,
        revoked: false,
        cnf_jkt: None,
    }
}

/// A precondition that `c` is still as it is.
fn is_card(c: &Card) -> Guard {
    Guard::CardIs {
        tenant: c.tenant_id.clone(),
        card: c.id,
        status: c.status,
        vault: c.vault.clone(),
    }
}

/// Stores [`tenant`] with an account and a card; returns the card.
async fn set_up_card(store: &Arc<dyn Store>) -> Card {
    let t = tenant();
    let person = PersonId::new_random();
    let card = Card {
        id: CardId::new_random(),
        tenant_id: t.id.clone(),
        environment: SB,
        account_id: cardgate_core::AccountId::parse("A1").unwrap(),
        person_id: person,
        status: CardStatus::Active,
        wallet_eligible: true,
        last4: "1111".into(),
        vault: vec![9; 40],
        key_version: 1,
    };
    let out = store
        .apply(&[WriteSet::of(vec![
            Write::UpsertTenant(t.clone()),
            Write::UpsertAccount(Account {
                id: card.account_id.clone(),
                tenant_id: t.id.clone(),
                environment: SB,
                account_number: "12".into(),
                person_ids: vec![person],
            }),
            Write::UpsertCard(card.clone()),
        ])])
        .await
        .unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied]);
    card
}

/// Everything a backend must do the same way.
async fn contract(store: Arc<dyn Store>) {
    let backend = store.backend();
    let t = tenant();
    let person = PersonId::new_random();
    let card_id = CardId::new_random();
    let card = Card {
        id: card_id,
        tenant_id: t.id.clone(),
        environment: SB,
        account_id: cardgate_core::AccountId::parse("A1").unwrap(),
        person_id: person,
        status: CardStatus::Inactive,
        wallet_eligible: true,
        last4: "1111".into(),
        vault: vec![9; 40],
        key_version: 1,
    };
    let v0 = store.config_version().await.unwrap();
    let out = store
        .apply(&[WriteSet::of(vec![
            Write::UpsertTenant(t.clone()),
            Write::UpsertAccount(Account {
                id: card.account_id.clone(),
                tenant_id: t.id.clone(),
                environment: SB,
                account_number: "12".into(),
                person_ids: vec![person],
            }),
            Write::UpsertCard(card.clone()),
            Write::BumpConfigVersion,
            audit("setup"),
        ])])
        .await
        .unwrap();
    assert_eq!(out, vec![WriteOutcome::Applied], "{backend}");
    assert_eq!(store.config_version().await.unwrap(), v0 + 1, "{backend}");
    assert_eq!(
        store.load_tenants().await.unwrap(),
        vec![t.clone()],
        "{backend}: tenants round-trip"
    );
    assert_eq!(
        store.get_card(&t.id, SB, &card_id).await.unwrap(),
        Some(card.clone()),
        "{backend}: cards round-trip"
    );
    assert_eq!(
        store
            .get_card(&TenantId::parse("t2").unwrap(), SB, &card_id)
            .await
            .unwrap(),
        None,
        "{backend}: tenant isolation"
    );

    environments::environments(&store, &t, &card).await;

    // meta_init keeps the first value.
    assert_eq!(store.meta_init("k", "first").await.unwrap(), "first");
    assert_eq!(
        store.meta_init("k", "second").await.unwrap(),
        "first",
        "{backend}"
    );

    // A single-use token is redeemed once, even within one batch.
    let hash = tid(b"token-1");
    store
        .apply(&[WriteSet::of(vec![Write::InsertCardToken(card_token(
            hash,
            card_id,
            UseLimit::Once,
        ))])])
        .await
        .unwrap();
    let redeem = || {
        WriteSet::guarded(
            vec![Guard::RedeemCardToken {
                id: hash,
                now_ms: 2_000,
            }],
            vec![audit("redeemed")],
            vec![audit("refused")],
        )
    };
    let out = store.apply(&[redeem(), redeem(), redeem()]).await.unwrap();
    assert_eq!(
        out,
        vec![
            WriteOutcome::Applied,
            WriteOutcome::refused(GuardKind::RedeemCardToken),
            WriteOutcome::refused(GuardKind::RedeemCardToken)
        ],
        "{backend}"
    );
    let got = store.get_card_token(&hash, SB).await.unwrap().unwrap();
    assert_eq!(
        (got.uses_made, got.use_limit),
        (1, UseLimit::Once),
        "{backend}"
    );
    assert_eq!(
        got.operations,
        vec![Operation::ViewCard, Operation::GetPin],
        "{backend}"
    );
    let ctx = store.get_redemption(&hash, SB).await.unwrap().unwrap();
    assert_eq!(
        (ctx.card.map(|c| c.id), ctx.cardholder_name),
        (Some(card_id), None),
        "{backend}: one read for a redemption"
    );
    assert_eq!(ctx.token, got, "{backend}");
    assert_eq!(
        store.get_redemption(&tid(b"nope"), SB).await.unwrap(),
        None,
        "{backend}"
    );

    // Expired and revoked tokens are refused by the guard itself.
    let h2 = tid(b"token-2");
    store
        .apply(&[WriteSet::of(vec![Write::InsertCardToken(card_token(
            h2,
            card_id,
            UseLimit::UntilExpiry,
        ))])])
        .await
        .unwrap();
    let late = WriteSet::guarded(
        vec![Guard::RedeemCardToken {
            id: h2,
            now_ms: 10_000,
        }],
        vec![],
        vec![],
    );
    assert_eq!(
        store.apply(&[late]).await.unwrap(),
        vec![WriteOutcome::refused(GuardKind::RedeemCardToken)],
        "{backend}: expiry is exclusive"
    );
    store
        .apply(&[WriteSet::of(vec![Write::RevokeCardToken { id: h2 }])])
        .await
        .unwrap();
    let revoked = WriteSet::guarded(
        vec![Guard::RedeemCardToken {
            id: h2,
            now_ms: 2_000,
        }],
        vec![],
        vec![],
    );
    assert_eq!(
        store.apply(&[revoked]).await.unwrap(),
        vec![WriteOutcome::refused(GuardKind::RedeemCardToken)],
        "{backend}"
    );

    // Many redemptions in one batch are decided together, each exactly as alone would.
    let fresh = [tid(b"b-1"), tid(b"b-2"), tid(b"b-3"), tid(b"b-4")];
    let mut seed: Vec<Write> = fresh
        .iter()
        .map(|h| Write::InsertCardToken(card_token(*h, card_id, UseLimit::Once)))
        .collect();
    let mut two = card_token(tid(b"b-two"), card_id, UseLimit::Count(2));
    two.uses_made = 0;
    seed.push(Write::InsertCardToken(two));
    seed.push(Write::RevokeCardToken { id: fresh[2] });
    store.apply(&[WriteSet::of(seed)]).await.unwrap();
    let at = |h: TokenId, now_ms: i64| {
        WriteSet::guarded(
            vec![Guard::RedeemCardToken { id: h, now_ms }],
            vec![audit("batch")],
            vec![],
        )
    };
    let out = store
        .apply(&[
            at(fresh[0], 2_000),
            at(fresh[1], 2_000),
            at(fresh[0], 2_000),      // the same single-use token again
            at(fresh[2], 2_000),      // revoked
            at(fresh[3], 10_000),     // expired at its own clock
            at(tid(b"b-two"), 2_000), // two uses allowed: both count
            at(tid(b"b-two"), 2_000),
            at(tid(b"b-two"), 2_000), // a third does not
            at(tid(b"unknown"), 2_000),
        ])
        .await
        .unwrap();
    use WriteOutcome::Applied as A;
    let used = || WriteOutcome::refused(GuardKind::RedeemCardToken);
    assert_eq!(
        out,
        vec![A, A, used(), used(), used(), A, A, used(), used()],
        "{backend}"
    );
    assert_eq!(
        store
            .get_card_token(&fresh[3], SB)
            .await
            .unwrap()
            .unwrap()
            .uses_made,
        0,
        "{backend}"
    );

    // With two guards, a failing second guard undoes the first (savepoint).
    let h3 = tid(b"token-3");
    store
        .apply(&[WriteSet::of(vec![Write::InsertCardToken(card_token(
            h3,
            card_id,
            UseLimit::Once,
        ))])])
        .await
        .unwrap();
    let activate = |from: CardStatus| {
        WriteSet::guarded(
            vec![
                Guard::RedeemCardToken {
                    id: h3,
                    now_ms: 2_000,
                },
                Guard::CardStatus {
                    tenant: t.id.clone(),
                    card: card_id,
                    from,
                    to: CardStatus::Active,
                    now_ms: 2_000,
                },
            ],
            vec![audit("activated")],
            vec![],
        )
    };
    assert_eq!(
        store
            .apply(&[activate(CardStatus::Suspended)])
            .await
            .unwrap(),
        vec![WriteOutcome::refused(GuardKind::CardStatus)],
        "{backend}"
    );
    assert_eq!(
        store
            .get_card_token(&h3, SB)
            .await
            .unwrap()
            .unwrap()
            .uses_made,
        0,
        "{backend}: the redemption was rolled back"
    );
    assert_eq!(
        store
            .apply(&[activate(CardStatus::Inactive)])
            .await
            .unwrap(),
        vec![WriteOutcome::Applied],
        "{backend}"
    );
    assert_eq!(
        store
            .get_card(&t.id, SB, &card_id)
            .await
            .unwrap()
            .unwrap()
            .status,
        CardStatus::Active,
        "{backend}"
    );

    // A precondition on the card as it was read: it holds while the card is unchanged, and
    // when it fails the set writes nothing at all (not even its refusal).
    let now_card = store.get_card(&t.id, SB, &card_id).await.unwrap().unwrap();
    let is = |c: &Card| Guard::CardIs {
        tenant: c.tenant_id.clone(),
        card: c.id,
        status: c.status,
        vault: c.vault.clone(),
    };
    let head_before = logged(&store).await;
    let checked = |c: &Card| {
        WriteSet::guarded(vec![], vec![audit("checked")], vec![audit("refused")])
            .with_preconditions(vec![is(c)])
    };
    assert_eq!(
        store.apply(&[checked(&now_card)]).await.unwrap(),
        vec![WriteOutcome::Applied],
        "{backend}"
    );
    let mut stale = now_card.clone();
    stale.vault.push(0);
    let mut stale_status = now_card.clone();
    stale_status.status = CardStatus::Inactive;
    assert_eq!(
        store
            .apply(&[checked(&stale), checked(&stale_status)])
            .await
            .unwrap(),
        vec![
            WriteOutcome::Stale(GuardKind::CardIs),
            WriteOutcome::Stale(GuardKind::CardIs)
        ],
        "{backend}"
    );
    assert_eq!(
        logged(&store).await,
        head_before + 1,
        "{backend}: a failed precondition writes nothing, not even the refusal"
    );

    // The hot path's batch: mints and redemptions on remembered cards, each behind a card
    // check. However the engine decides them (PostgreSQL: one statement for all checks and
    // one for all redemptions), each set gets what it would get alone.
    let head_before = logged(&store).await;
    let hot = [
        tid(b"h-1"),
        tid(b"h-2"),
        tid(b"h-3"),
        tid(b"h-4"),
        tid(b"h-5"),
    ];
    let mut seed: Vec<Write> = hot
        .iter()
        .map(|h| Write::InsertCardToken(card_token(*h, card_id, UseLimit::Once)))
        .collect();
    seed.push(Write::RevokeCardToken { id: hot[2] });
    store.apply(&[WriteSet::of(seed)]).await.unwrap();
    let redeem_on = |c: &Card, h: TokenId, now_ms: i64| {
        WriteSet::guarded(
            vec![Guard::RedeemCardToken { id: h, now_ms }],
            vec![audit("hot redeemed")],
            vec![audit("hot refused")],
        )
        .with_preconditions(vec![is(c)])
    };
    let minted = tid(b"h-minted");
    let mint_on = |c: &Card, h: TokenId| {
        WriteSet::of(vec![
            Write::InsertCardToken(card_token(h, card_id, UseLimit::Once)),
            audit("hot minted"),
        ])
        .with_preconditions(vec![is(c)])
    };
    let out = store
        .apply(&[
            redeem_on(&now_card, hot[0], 2_000),  // holds
            redeem_on(&stale, hot[1], 2_000),     // the card changed: nothing at all
            redeem_on(&now_card, hot[2], 2_000),  // revoked: refused, refusal audited
            redeem_on(&now_card, hot[3], 10_000), // expired at its own clock
            mint_on(&now_card, minted),           // holds
            mint_on(&stale_status, tid(b"h-never")),
            redeem_on(&now_card, tid(b"h-unknown"), 2_000),
            redeem_on(&now_card, hot[4], 9_999), // holds, the last millisecond
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            A,
            WriteOutcome::Stale(GuardKind::CardIs),
            used(),
            used(),
            A,
            WriteOutcome::Stale(GuardKind::CardIs),
            used(),
            A
        ],
        "{backend}: a mixed batch of checked mints and redemptions"
    );
    let uses = |h: TokenId| {
        let store = store.clone();
        async move {
            store
                .get_card_token(&h, SB)
                .await
                .unwrap()
                .map(|t| t.uses_made)
        }
    };
    assert_eq!(
        (
            uses(hot[0]).await,
            uses(hot[1]).await,
            uses(hot[3]).await,
            uses(hot[4]).await
        ),
        (Some(1), Some(0), Some(0), Some(1)),
        "{backend}: only the redemptions that held were counted"
    );
    assert_eq!(uses(minted).await, Some(0), "{backend}: the mint that held");
    assert_eq!(
        uses(tid(b"h-never")).await,
        None,
        "{backend}: the refused mint wrote no token"
    );
    assert_eq!(
        logged(&store).await,
        head_before + 6,
        "{backend}: three successes and three refusals audited; the two failed checks wrote nothing"
    );
    // A token minted and redeemed in the same batch, and the same token twice: decided in
    // order (the redemption sees the mint; the second use of a single-use token is refused).
    let minted_twice = tid(b"h-minted-2");
    let out = store
        .apply(&[
            mint_on(&now_card, minted_twice),
            redeem_on(&now_card, minted_twice, 2_000),
            redeem_on(&now_card, minted, 2_000),
            redeem_on(&now_card, minted, 2_000),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![A, A, A, used()],
        "{backend}: batch decided in order"
    );
    assert_eq!(
        (uses(minted_twice).await, uses(minted).await),
        (Some(1), Some(1)),
        "{backend}"
    );

    mfa::mfa_sessions(&store, &t, person).await;

    // Opaque access tokens and revocations.
    let ah = tid(b"access");
    let record = AccessTokenRecord {
        id: ah,
        hash: SecretHash::of(b"access token"),
        kind: TokenKind::Access,
        tenant_id: t.id.clone(),
        client_id: ClientId::parse("c1").unwrap(),
        environment: Environment::Production,
        scopes: ScopeSet::of(["cards:read:any", "cards:widgets"]),
        issued_at_ms: 1,
        expires_at_ms: 2,
        revoked: false,
        cnf_jkt: None,
    };
    store
        .apply(&[WriteSet::of(vec![Write::InsertAccessToken(record.clone())])])
        .await
        .unwrap();
    assert_eq!(
        store
            .get_access_token(&ah, Environment::Production)
            .await
            .unwrap(),
        Some(record),
        "{backend}"
    );
    store
        .apply(&[WriteSet::of(vec![Write::AddRevocation {
            token_id: "jti-1".into(),
            tenant: t.id.clone(),
            now_ms: 100,
            expires_at_ms: 999,
        }])])
        .await
        .unwrap();
    assert_eq!(
        store.revocations_since(50).await.unwrap(),
        vec![("jti-1".to_string(), 999)],
        "{backend}"
    );
    assert!(
        store.revocations_since(101).await.unwrap().is_empty(),
        "{backend}"
    );

    // A failing write spoils only its own batch, and nothing of it is kept.
    let dup = WriteSet::of(vec![
        audit("dup"),
        Write::InsertAccessToken(
            store
                .get_access_token(&ah, Environment::Production)
                .await
                .unwrap()
                .unwrap(),
        ),
    ]);
    let head_before = logged(&store).await;
    assert!(
        store.apply(&[dup]).await.is_err(),
        "{backend}: a duplicate primary key fails"
    );
    assert_eq!(
        logged(&store).await,
        head_before,
        "{backend}: the failed batch left no audit event"
    );

    // Writer w appends to chain w % 4 + 1; each chain verifies on its own, and together they
    // hold every event.
    for w in 0..AUDIT_CHAINS + 1 {
        store
            .apply_as(w, &[WriteSet::of(vec![audit("by writer")])])
            .await
            .unwrap();
    }
    let heads = store.audit_heads().await.unwrap();
    assert_eq!(
        heads.iter().map(|h| h.chain).collect::<Vec<_>>(),
        vec![1, 2, 3, 4],
        "{backend}"
    );
    assert_eq!(
        heads.iter().map(|h| h.seq).skip(1).collect::<Vec<_>>(),
        vec![1, 1, 1],
        "{backend}: writers 1, 2, 3 have chains of their own"
    );
    assert_eq!(
        verify_all(&store, 7).await,
        Ok(28),
        "{backend}: setup, one redemption and two refusals, four batched redemptions, one activation, one check, \
         six hot-path events, four in-order events, three step-up events, five by writer"
    );
}

/// How many audit events the store holds, over all chains.
async fn logged(store: &Arc<dyn Store>) -> i64 {
    store
        .audit_heads()
        .await
        .unwrap()
        .iter()
        .map(|h| h.seq)
        .sum()
}

#[tokio::test]
async fn the_sqlite_store_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = keyed_store(&format!("sqlite://{}/s.db", dir.path().display())).await;
    assert_eq!(store.backend(), "sqlite");
    contract(store).await;
}

#[tokio::test]
async fn the_postgres_store_keeps_the_store_contract() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let store = keyed_store(&fresh_postgres_db(&admin).await).await;
    assert_eq!(store.backend(), "postgres");
    contract(store).await;
}

#[tokio::test]
async fn an_unknown_database_url_is_refused() {
    assert!(matches!(
        cardgate_store::connect("mysql://x", audit_key()).await,
        Err(cardgate_store::StoreError::UnsupportedUrl)
    ));
}

#[tokio::test]
async fn migrations_run_once_and_a_second_start_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/m.db", dir.path().display());
    let first = keyed_store(&url).await;
    first
        .apply(&[WriteSet::of(vec![Write::UpsertTenant(tenant())])])
        .await
        .unwrap();
    drop(first);
    let second = cardgate_store::connect(&url, audit_key()).await.unwrap();
    assert_eq!(second.load_tenants().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_store_writes_nothing_until_its_audit_log_is_keyed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/k.db", dir.path().display());
    let unkeyed = cardgate_store::connect(&url, audit_key()).await.unwrap();
    let set = || {
        vec![WriteSet::of(vec![
            Write::UpsertTenant(tenant()),
            audit("setup"),
        ])]
    };
    assert!(unkeyed.apply(&set()).await.is_err());
    assert!(unkeyed.load_tenants().await.unwrap().is_empty());
    let keyed = keyed_store(&url).await;
    keyed.apply(&set()).await.unwrap();
    assert_eq!(verify_all(&keyed, 10).await, Ok(1));
    // The first store sees the log keyed now.
    unkeyed.apply(&set()).await.unwrap();
    assert_eq!(verify_all(&keyed, 10).await, Ok(2));
}
