//! The store contract, run against every backend: SQLite always, PostgreSQL when
//! `CARDGATE_TEST_POSTGRES_URL` is set (required in CI).

mod claims;
mod key_binding;
mod sqlite_migrations;

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

/// Persons, accounts, cards and data keys belong to one environment: reads in another do
/// not find them, and no write moves them there (the write fails and changes nothing).
async fn environments(store: &Arc<dyn Store>, t: &Tenant, card: &Card) {
    let backend = store.backend();
    let prod = Environment::Production;
    assert_eq!(
        store.get_card(&t.id, prod, &card.id).await.unwrap(),
        None,
        "{backend}: another environment's card is not found"
    );
    assert!(store.list_cards(&t.id, prod).await.unwrap().is_empty());
    assert_eq!(
        store.list_cards(&t.id, SB).await.unwrap(),
        vec![card.clone()]
    );
    let account = store
        .get_account(&t.id, SB, card.account_id.as_str())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.environment, SB, "{backend}");
    assert_eq!(
        store
            .get_account(&t.id, prod, card.account_id.as_str())
            .await
            .unwrap(),
        None,
        "{backend}"
    );
    // Not the card's cardholder: the contract's redemption reads a card without one.
    let person = Person {
        id: PersonId::new_random(),
        tenant_id: t.id.clone(),
        environment: SB,
        profile: PersonProfile {
            first_name: "P".into(),
            last_name: "Q".into(),
            email: None,
            isd_code: None,
            mobile_number: None,
            dob: None,
        },
        totp_secret_enc: None,
        key_version: 1,
    };
    store
        .apply(&[WriteSet::of(vec![Write::UpsertPerson(person.clone())])])
        .await
        .unwrap();
    assert_eq!(
        store.list_persons(&t.id, SB).await.unwrap(),
        vec![person.clone()],
        "{backend}"
    );
    assert_eq!(
        store.get_person(&t.id, prod, &person.id).await.unwrap(),
        None,
        "{backend}"
    );
    let elsewhere = store.other_environment_ids(&t.id, prod).await.unwrap();
    assert_eq!(
        (
            elsewhere.persons.into_iter().collect::<Vec<_>>(),
            elsewhere.accounts.into_iter().collect::<Vec<_>>(),
            elsewhere.cards.into_iter().collect::<Vec<_>>()
        ),
        (
            vec![person.id],
            vec![card.account_id.clone()],
            vec![card.id]
        ),
        "{backend}: ids used in sandbox, seen from production"
    );
    assert_eq!(
        store.other_environment_ids(&t.id, SB).await.unwrap(),
        OtherEnvironmentIds::default(),
        "{backend}"
    );
    // An upsert naming another environment's object fails, with the whole batch.
    let logged_before = logged(store).await;
    let moves = [
        Write::UpsertCard(Card {
            environment: prod,
            last4: "9999".into(),
            ..card.clone()
        }),
        Write::UpsertAccount(Account {
            environment: prod,
            account_number: "99".into(),
            ..account.clone()
        }),
        Write::UpsertPerson(Person {
            environment: prod,
            key_version: 9,
            ..person.clone()
        }),
    ];
    for w in moves {
        let res = store
            .apply(&[WriteSet::of(vec![audit("move"), w.clone()])])
            .await;
        assert!(
            matches!(res, Err(StoreError::OtherEnvironment(_))),
            "{backend}: {w:?} → {res:?}"
        );
    }
    assert_eq!(
        logged(store).await,
        logged_before,
        "{backend}: nothing of the batches was written"
    );
    assert_eq!(
        store.get_card(&t.id, SB, &card.id).await.unwrap().as_ref(),
        Some(card),
        "{backend}: the card stayed as it was"
    );
    assert_eq!(
        store
            .get_account(&t.id, SB, card.account_id.as_str())
            .await
            .unwrap(),
        Some(account),
        "{backend}"
    );
    assert_eq!(
        store.get_person(&t.id, SB, &person.id).await.unwrap(),
        Some(person),
        "{backend}"
    );
    // Data keys are per (tenant, environment, version).
    let key = |env: Environment, byte: u8| DataKeyRow {
        tenant_id: t.id.clone(),
        environment: env,
        version: 1,
        key_enc: vec![byte; 60],
        created_at_ms: 5,
    };
    store
        .apply(&[WriteSet::of(vec![
            Write::InsertDataKey(key(SB, 1)),
            Write::InsertDataKey(key(prod, 2)),
        ])])
        .await
        .unwrap();
    assert_eq!(store.load_data_keys(SB).await.unwrap(), vec![key(SB, 1)]);
    assert_eq!(
        store.load_data_keys(prod).await.unwrap(),
        vec![key(prod, 2)]
    );
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

    environments(&store, &t, &card).await;

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

    // MFA sessions: each checked code counts an attempt, at most MAX_ATTEMPTS of them, and a
    // right code consumes the session once.
    let sid = MfaSessionId::new_random();
    let session = MfaSession {
        id: sid,
        tenant_id: t.id.clone(),
        person_id: person,
        environment: Environment::Sandbox,
        channel: Channel::Sms,
        code_hash: Some([7; 32]),
        attempts: 0,
        created_at_ms: 1_000,
        expires_at_ms: 5_000,
        consumed: false,
    };
    store
        .apply(&[WriteSet::of(vec![Write::InsertMfaSession(session.clone())])])
        .await
        .unwrap();
    let attempt = |consume: bool, now_ms: i64| {
        WriteSet::guarded(
            vec![Guard::MfaAttempt {
                id: sid,
                now_ms,
                consume,
            }],
            vec![],
            vec![],
        )
    };
    let refused = || WriteOutcome::refused(GuardKind::MfaAttempt);
    assert_eq!(
        store
            .apply(&[attempt(false, 2_000), attempt(false, 5_000)])
            .await
            .unwrap(),
        vec![A, refused()],
        "{backend}: an expired session checks no code"
    );
    let stored = store.get_mfa_session(&sid, SB).await.unwrap().unwrap();
    assert_eq!(
        (stored.attempts, stored.code_hash, stored.channel),
        (1, Some([7; 32]), Channel::Sms),
        "{backend}"
    );
    assert_eq!(
        store
            .apply(&[
                attempt(true, 2_000),
                attempt(true, 2_000),
                attempt(false, 2_000)
            ])
            .await
            .unwrap(),
        vec![A, refused(), refused()],
        "{backend}: a consumed session checks nothing more"
    );
    let sid2 = MfaSessionId::new_random();
    store
        .apply(&[WriteSet::of(vec![Write::InsertMfaSession(MfaSession {
            id: sid2,
            ..session.clone()
        })])])
        .await
        .unwrap();
    let wrong = || {
        WriteSet::guarded(
            vec![Guard::MfaAttempt {
                id: sid2,
                now_ms: 2_000,
                consume: false,
            }],
            vec![],
            vec![],
        )
    };
    let out = store.apply(&vec![wrong(); 7]).await.unwrap();
    assert_eq!(
        out.iter().filter(|o| **o == A).count(),
        cardgate_core::mfa::MAX_ATTEMPTS as usize,
        "{backend}: five attempts, then the session is locked"
    );
    assert_eq!(
        store
            .get_mfa_session(&sid2, SB)
            .await
            .unwrap()
            .unwrap()
            .attempts,
        cardgate_core::mfa::MAX_ATTEMPTS,
        "{backend}"
    );

    // A cardholder's failures across sessions lock them out; the lockout ends by itself, and
    // a right code forgives the failures.
    let lockout = cardgate_core::mfa::Lockout {
        max_failures: 3,
        window_seconds: 60,
        lockout_seconds: 30,
    };
    let person_attempt = |now_ms: i64| {
        WriteSet::guarded(
            vec![Guard::MfaPersonAttempt {
                tenant: t.id.clone(),
                person,
                now_ms,
                lockout,
            }],
            vec![],
            vec![],
        )
    };
    let locked = || WriteOutcome::refused(GuardKind::MfaPersonAttempt);
    let out = store
        .apply(&[
            person_attempt(10_000),
            person_attempt(10_001),
            person_attempt(10_002),
            person_attempt(10_003),
        ])
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![A, A, A, locked()],
        "{backend}: the third failure locks"
    );
    assert_eq!(
        store.get_mfa_person(&t.id, &person).await.unwrap(),
        Some(cardgate_store::MfaPersonState {
            failures: 3,
            locked_until_ms: 40_002
        }),
        "{backend}"
    );
    assert_eq!(
        store
            .apply(&[
                person_attempt(40_001),
                person_attempt(40_002),
                person_attempt(40_003)
            ])
            .await
            .unwrap(),
        vec![locked(), A, A],
        "{backend}: until the lockout ends"
    );
    store
        .apply(&[WriteSet::of(vec![Write::MfaPersonPassed {
            tenant: t.id.clone(),
            person,
        }])])
        .await
        .unwrap();
    assert_eq!(
        store.get_mfa_person(&t.id, &person).await.unwrap(),
        Some(cardgate_store::MfaPersonState {
            failures: 1,
            locked_until_ms: 0
        }),
        "{backend}: a right code takes back its own attempt, not the failures before it"
    );

    // A TOTP step is accepted once per person, and only moving forward.
    let step = |step: i64| {
        WriteSet::guarded(
            vec![Guard::TotpStep {
                tenant: t.id.clone(),
                person,
                step,
            }],
            vec![],
            vec![],
        )
    };
    let replayed = || WriteOutcome::refused(GuardKind::TotpStep);
    assert_eq!(
        store
            .apply(&[step(100), step(100), step(99), step(101)])
            .await
            .unwrap(),
        vec![A, replayed(), replayed(), A],
        "{backend}"
    );

    // A fallback is decided instead of `on_refused` when a guard fails, and the outcome says
    // which guard refused and what the fallback did; the refused set's own guards are undone.
    let sid3 = MfaSessionId::new_random();
    store
        .apply(&[WriteSet::of(vec![Write::InsertMfaSession(MfaSession {
            id: sid3,
            ..session.clone()
        })])])
        .await
        .unwrap();
    let head_before = logged(&store).await;
    let right_code = |step_no: i64| {
        WriteSet::guarded(
            vec![
                Guard::MfaAttempt {
                    id: sid3,
                    now_ms: 2_000,
                    consume: true,
                },
                Guard::TotpStep {
                    tenant: t.id.clone(),
                    person,
                    step: step_no,
                },
            ],
            vec![audit("stepped up")],
            vec![audit("never")],
        )
        .or_else(WriteSet::guarded(
            vec![Guard::MfaAttempt {
                id: sid3,
                now_ms: 2_000,
                consume: false,
            }],
            vec![audit("counted as wrong")],
            vec![audit("refused")],
        ))
    };
    assert_eq!(
        store.apply(&[right_code(101)]).await.unwrap(),
        vec![WriteOutcome::Refused {
            by: GuardKind::TotpStep,
            fallback: Some(Box::new(A))
        }],
        "{backend}"
    );
    let stored = store.get_mfa_session(&sid3, SB).await.unwrap().unwrap();
    assert_eq!(
        (stored.attempts, stored.consumed),
        (1, false),
        "{backend}: the refused set's consumption was undone, the fallback's attempt kept"
    );
    assert_eq!(
        store.apply(&[right_code(102)]).await.unwrap(),
        vec![A],
        "{backend}"
    );
    assert_eq!(
        store.apply(&[right_code(103)]).await.unwrap(),
        vec![WriteOutcome::Refused {
            by: GuardKind::MfaAttempt,
            fallback: Some(Box::new(refused()))
        }],
        "{backend}: a consumed session refuses both"
    );
    assert_eq!(
        logged(&store).await,
        head_before + 3,
        "{backend}: counted as wrong, stepped up, refused"
    );

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

/// Verifies every chain of `store`'s audit log, reading `page` events at a time: how many
/// events it holds.
async fn verify_all(
    store: &Arc<dyn Store>,
    page: i64,
) -> Result<i64, cardgate_core::audit::ChainBreak> {
    let heads = store.audit_heads().await.unwrap();
    let mut v = LogVerifier::new(heads.clone(), LinkRule::Keyed(audit_key()));
    let mut after = (0, 0);
    loop {
        let events = store.audit_page(after, page).await.unwrap();
        let Some(last) = events.last() else { break };
        after = (last.chain, last.seq);
        for ev in &events {
            v.push(ev)?;
        }
    }
    v.finish(&heads)
}

#[tokio::test]
async fn two_postgres_replicas_appending_to_one_audit_chain_keep_it_intact() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    // Two stores on one database, both as writer 0 (chain 1): each one's remembered head of
    // the chain goes stale whenever the other appends.
    let url = fresh_postgres_db(&admin).await;
    let a = keyed_store(&url).await;
    let b = cardgate_store::connect(&url, audit_key()).await.unwrap();
    let one = |action: &str| vec![WriteSet::of(vec![audit(action), audit(action)])];
    a.apply_as(0, &one("a1")).await.unwrap();
    b.apply_as(0, &one("b1")).await.unwrap();
    a.apply_as(0, &one("a2")).await.unwrap(); // a's remembered head is b's predecessor
    b.apply_as(0, &one("b2")).await.unwrap();
    assert_eq!(verify_all(&a, 50).await, Ok(8), "alternating appends");
    // And concurrently, many at a time from both.
    let work = (0..40).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { store.apply_as(0, &one("concurrent")).await.map(|_| ()) }
    });
    for r in futures::future::join_all(work).await {
        r.unwrap();
    }
    assert_eq!(verify_all(&b, 50).await, Ok(88), "concurrent appends");
    let heads = a.audit_heads().await.unwrap();
    assert_eq!(
        heads.iter().map(|h| (h.chain, h.seq)).collect::<Vec<_>>(),
        vec![(1, 88), (2, 0), (3, 0), (4, 0)],
        "every event went to chain 1, numbered without a gap"
    );
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
