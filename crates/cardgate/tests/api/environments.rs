//! Environments on one shared database: a sandbox and a production instance neither read nor
//! change each other's persons, accounts, cards, data keys, tokens or MFA sessions; imports
//! and admin verbs create objects in their own environment. The scenarios take the two
//! instances, so the PostgreSQL suite runs them too.

use crate::helpers::*;
use cardgate_app::import::ImportErrorOr;
use cardgate_core::{AccountId, CardId, Environment, PersonId, TenantId};
use serde_json::{json, Value};

/// Production's cardholder, account and card (imported by the production instance).
pub const DORA: &str = "d0a0d0a0-1111-4222-8333-444455556666";
pub const CARD_PROD: &str = "feedface-0000-4111-8222-333344445555";
pub const PAN_PROD: &str = "5105105105105100";
const PIN_PROD: &str = "1357";

pub fn acme() -> TenantId {
    TenantId::parse("acme").unwrap()
}

/// The production import file: tenant acme (settings as in the sandbox fixture) with one
/// cardholder, account and card of its own.
pub fn production_file() -> Value {
    json!({"tenants": [{
        "id": "acme", "name": "Acme Card Program", "financial_institution_id": ACME_FI,
        "widget_origins": ["http://127.0.0.1:9000"], "mfa_required_for": [],
        "persons": [{"id": DORA, "first_name": "Dora", "last_name": "Prod", "totp_secret": TOTP_SECRET}],
        "accounts": [{"id": "P1", "account_number": "5550001", "person_ids": [DORA]}],
        "cards": [{"id": CARD_PROD, "account_id": "P1", "person_id": DORA, "pan": PAN_PROD, "cvv": "321",
                   "expiry": "2030-06", "pin": PIN_PROD, "status": "ACTIVE"}]
    }]})
}

/// A sandbox instance with the fixture and a production instance with [`production_file`],
/// both on one database.
pub async fn sandbox_and_production(db: Db) -> (TestApp, TestApp) {
    let sandbox = TestApp::spawn_on(db, Environment::Sandbox, None).await;
    let production = sandbox.replica(Environment::Production).await;
    let report = production.import(&production_file()).await.unwrap();
    assert!(report.changes > 0, "the production file adds objects");
    (sandbox, production)
}

/// Status and body of a mint for `card` by `client`.
pub async fn mint(app: &TestApp, client: (&str, &str), card: &str) -> (u16, Value) {
    status_and_json(
        app.post_card_token(client, card, json!({"operations": ["VIEW_CARD"]}))
            .await,
    )
    .await
}

/// Mints a VIEW_CARD token and reveals the card: its PAN and cardholder name.
pub async fn reveal(app: &TestApp, client: (&str, &str), card: &str) -> (String, String) {
    let token = app
        .card_token(client, card, json!({"operations": ["VIEW_CARD"]}))
        .await;
    let (status, body) = status_and_json(app.get_details(&token, card).await).await;
    assert_eq!(status, 200, "{body}");
    (
        body["pan"].as_str().unwrap().to_string(),
        body["cardholder_name"].as_str().unwrap().to_string(),
    )
}

pub fn unknown_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

pub async fn a_client_cannot_revoke_a_card_token_of_the_other_environment(
    sandbox: &TestApp,
    production: &TestApp,
) {
    let prod_token = production
        .card_token(PROD, CARD_PROD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    let sandbox_token = sandbox
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    // RFC 7009: the same answer whatever the token, and nothing happens.
    assert_eq!(sandbox.revoke(BACKEND, &prod_token).await.status(), 200);
    assert_eq!(production.revoke(PROD, &sandbox_token).await.status(), 200);
    assert_eq!(
        sandbox.introspect(BACKEND, &prod_token).await["active"],
        false
    );
    assert_eq!(
        production.introspect(PROD, &prod_token).await["active"],
        true,
        "a sandbox client's revocation left the production token alone"
    );
    assert_eq!(
        sandbox.introspect(BACKEND, &sandbox_token).await["active"],
        true,
        "a production client's revocation left the sandbox token alone"
    );
    let revoked = sandbox
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "card_token.revoked")
        .count();
    assert_eq!(revoked, 0, "no revocation happened");
    // Both tokens still redeem where they live.
    let (status, body) =
        status_and_json(production.get_details(&prod_token, CARD_PROD).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pan"], PAN_PROD);
    let (status, body) = status_and_json(sandbox.get_details(&sandbox_token, CARD).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pan"], PAN);
}

pub async fn credentials_cannot_mint_for_or_reveal_the_other_environments_cards(
    sandbox: &TestApp,
    production: &TestApp,
) {
    // Each credential with cards:read:any sees its own environment's cards only; another
    // environment's card is answered exactly like a card that does not exist.
    let cases: [(&TestApp, (&str, &str), &str, &str); 4] = [
        (
            sandbox,
            BACKEND,
            CARD_PROD,
            "a sandbox client on a production card",
        ),
        (
            production,
            PROD,
            CARD,
            "a production client on a sandbox card",
        ),
        (
            production,
            PROD,
            CARD_BOB,
            "a production client on a sandbox card",
        ),
        (
            production,
            PROD,
            CARD_OTHER,
            "a production client on another tenant's card",
        ),
    ];
    for (app, client, card, what) in cases {
        let foreign = mint(app, client, card).await;
        let unknown = mint(app, client, &unknown_id()).await;
        assert_eq!(foreign.0, 404, "{what}: {}", foreign.1);
        assert_eq!(foreign, unknown, "{what}: answered like an unknown card");
    }
    // The Equals dialect mints too: same answer as for an unknown card.
    let auth = format!("ApiKey {BACKEND_KEY}");
    let foreign = status_and_json(
        sandbox
            .get_equals_token(Some(&auth), CARD_PROD, "accountId=P1")
            .await,
    )
    .await;
    let unknown = status_and_json(
        sandbox
            .get_equals_token(Some(&auth), &unknown_id(), "accountId=P1")
            .await,
    )
    .await;
    assert_eq!(foreign.0, 404, "{}", foreign.1);
    assert_eq!(foreign, unknown);
    // Each environment still reveals its own cards, with their own cardholders.
    assert_eq!(
        reveal(production, PROD, CARD_PROD).await,
        (PAN_PROD.to_string(), "Dora Prod".to_string())
    );
    assert_eq!(
        reveal(sandbox, BACKEND, CARD).await,
        (PAN.to_string(), "Ada Lovelace".to_string())
    );
}

pub async fn persons_and_mfa_sessions_stay_in_their_environment(
    sandbox: &TestApp,
    production: &TestApp,
) {
    let cases: [(&TestApp, (&str, &str), &str, &str); 2] = [
        (
            sandbox,
            BACKEND,
            DORA,
            "a sandbox client on a production person",
        ),
        (
            production,
            PROD,
            ADA,
            "a production client on a sandbox person",
        ),
    ];
    for (app, client, person, what) in cases {
        let foreign = status_and_json(app.post_mfa_session(client, person, "totp").await).await;
        let unknown =
            status_and_json(app.post_mfa_session(client, &unknown_id(), "totp").await).await;
        assert_eq!(foreign.0, 404, "{what}: {}", foreign.1);
        assert_eq!(foreign, unknown, "{what}: answered like an unknown person");
    }
    // Production's own person has sessions there; a session of one environment is an
    // unknown session in the other.
    let prod_session = production.mfa_session(PROD, DORA, "totp").await;
    let with_session = |session: Value| json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session, "code": totp_now(sandbox)}});
    let foreign = status_and_json(
        sandbox
            .post_card_token(
                BACKEND,
                CARD,
                with_session(prod_session["session_id"].clone()),
            )
            .await,
    )
    .await;
    let unknown = status_and_json(
        sandbox
            .post_card_token(BACKEND, CARD, with_session(json!(unknown_id())))
            .await,
    )
    .await;
    assert_eq!(foreign.0, 403, "{}", foreign.1);
    assert_eq!(
        foreign, unknown,
        "a production session is unknown in sandbox"
    );
}

pub async fn imports_in_each_environment_create_objects_only_visible_there(
    sandbox: &TestApp,
    production: &TestApp,
) {
    let (tenant, card, prod_card) = (
        acme(),
        CardId::parse(CARD).unwrap(),
        CardId::parse(CARD_PROD).unwrap(),
    );
    let (ada, dora) = (
        PersonId::parse(ADA).unwrap(),
        PersonId::parse(DORA).unwrap(),
    );
    let (f50091, p1) = (
        AccountId::parse("F50091").unwrap(),
        AccountId::parse("P1").unwrap(),
    );
    for (app, env) in [
        (sandbox, Environment::Sandbox),
        (production, Environment::Production),
    ] {
        let store = &app.svc.store;
        let mine = env == Environment::Sandbox;
        let card_seen = store.get_card(&tenant, env, &card).await.unwrap();
        let prod_card_seen = store.get_card(&tenant, env, &prod_card).await.unwrap();
        assert_eq!(card_seen.is_some(), mine, "{env}: the sandbox card");
        assert_eq!(
            prod_card_seen.is_some(),
            !mine,
            "{env}: the production card"
        );
        for c in card_seen.iter().chain(&prod_card_seen) {
            assert_eq!(c.environment, env, "a card records its environment");
        }
        let ada_seen = store.get_person(&tenant, env, &ada).await.unwrap();
        let dora_seen = store.get_person(&tenant, env, &dora).await.unwrap();
        assert_eq!(ada_seen.is_some(), mine, "{env}: the sandbox person");
        assert_eq!(dora_seen.is_some(), !mine, "{env}: the production person");
        let f50091_seen = store
            .get_account(&tenant, env, f50091.as_str())
            .await
            .unwrap();
        let p1_seen = store.get_account(&tenant, env, p1.as_str()).await.unwrap();
        assert_eq!(f50091_seen.is_some(), mine, "{env}: the sandbox account");
        assert_eq!(p1_seen.is_some(), !mine, "{env}: the production account");
        let cards = store.list_cards(&tenant, env).await.unwrap();
        assert_eq!(cards.len(), if mine { 4 } else { 1 }, "{env}: acme's cards");
        assert!(cards.iter().all(|c| c.environment == env));
        let keys = store.load_data_keys(env).await.unwrap();
        assert!(
            keys.iter()
                .any(|k| k.tenant_id == tenant && k.environment == env),
            "{env}: acme has a data key of its own"
        );
        assert!(keys.iter().all(|k| k.environment == env));
    }
    // Re-importing each file in its own environment changes nothing: neither sees the
    // other's objects as its own.
    let again = sandbox.import(&fixture(None)).await.unwrap();
    assert_eq!(again.changes, 0, "sandbox re-import");
    let again = production.import(&production_file()).await.unwrap();
    assert_eq!(again.changes, 0, "production re-import");
}

pub async fn an_import_naming_an_id_of_the_other_environment_is_refused_and_writes_nothing(
    sandbox: &TestApp,
    production: &TestApp,
) {
    let applied = |events: &[cardgate_core::audit::StoredAuditEvent]| {
        events
            .iter()
            .filter(|e| e.action == "import.applied")
            .count()
    };
    let applied_before = applied(&sandbox.audit_events().await);
    let new_card = unknown_id();
    // Each file also renames Dora and adds a new card: none of it may be written.
    let production_with = |section: &str, item: Value| {
        let mut file = production_file();
        let t = &mut file["tenants"][0];
        t["persons"][0]["last_name"] = json!("Renamed");
        t["cards"].as_array_mut().unwrap().push(json!({
            "id": new_card, "account_id": "P1", "person_id": DORA, "pan": "4242424242424242",
            "cvv": "999", "expiry": "2031-01", "status": "ACTIVE"}));
        t[section].as_array_mut().unwrap().push(item);
        file
    };
    let sandbox_with_card = {
        let mut file = fixture(None);
        file["tenants"][0]["cards"]
            .as_array_mut()
            .unwrap()
            .push(json!({
            "id": CARD_PROD, "account_id": "F50091", "person_id": ADA, "pan": "4242424242424242",
            "cvv": "999", "expiry": "2031-01", "status": "ACTIVE"}));
        file
    };
    let cases: [(&TestApp, Value, &str); 4] = [
        (
            production,
            production_with(
                "persons",
                json!({"id": ADA, "first_name": "Mallory", "last_name": "Moved"}),
            ),
            "tenants[0].persons[1].id",
        ),
        (
            production,
            production_with(
                "accounts",
                json!({"id": "F50091", "account_number": "1", "person_ids": [DORA]}),
            ),
            "tenants[0].accounts[1].id",
        ),
        (
            production,
            production_with(
                "cards",
                json!({"id": CARD, "account_id": "P1", "person_id": DORA, "pan": "4242424242424242",
                       "cvv": "999", "expiry": "2031-01", "status": "ACTIVE"}),
            ),
            "tenants[0].cards[2].id",
        ),
        (sandbox, sandbox_with_card, "tenants[0].cards[4].id"),
    ];
    for (app, file, path) in cases {
        match app.import(&file).await {
            Err(ImportErrorOr::Invalid(e)) => {
                assert_eq!(e.path, path, "{e}");
                assert!(e.message.contains("environment"), "{e}");
            }
            other => panic!("{path}: expected a refusal, got {other:?}"),
        }
    }
    // Nothing of the refused files was written, in either environment.
    assert_eq!(
        applied(&sandbox.audit_events().await),
        applied_before,
        "no import applied"
    );
    assert_eq!(mint(production, PROD, &new_card).await.0, 404);
    assert_eq!(
        reveal(production, PROD, CARD_PROD).await,
        (PAN_PROD.to_string(), "Dora Prod".to_string())
    );
    assert_eq!(
        reveal(sandbox, BACKEND, CARD).await,
        (PAN.to_string(), "Ada Lovelace".to_string())
    );
    let account = sandbox
        .svc
        .store
        .get_account(&acme(), Environment::Sandbox, "F50091")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(account.account_number, "1234567890");
}

pub async fn admin_verbs_change_only_their_own_environment(
    sandbox: &TestApp,
    production: &TestApp,
) {
    let card = |id: &str, account: &str| {
        let doc = json!({"id": id, "account_id": account, "person_id": DORA, "pan": "4242424242424242",
                         "cvv": "999", "expiry": "2031-01", "pin": "8080", "status": "ACTIVE"});
        cardgate_core::import::parse_card(doc.to_string().as_bytes(), production.svc.now_ms())
            .unwrap()
    };
    // `card add` in production: on production's account; a sandbox account is unknown there,
    // and a sandbox card's id is refused naming the field.
    let added = unknown_id();
    production
        .svc
        .importer()
        .add_card(&acme(), card(&added, "P1"))
        .await
        .unwrap();
    assert_eq!(reveal(production, PROD, &added).await.0, "4242424242424242");
    assert_eq!(mint(sandbox, BACKEND, &added).await.0, 404);
    let on_sandbox_account = production
        .svc
        .importer()
        .add_card(&acme(), card(&unknown_id(), "F50091"))
        .await
        .unwrap_err()
        .to_string();
    let on_unknown_account = production
        .svc
        .importer()
        .add_card(&acme(), card(&unknown_id(), "NOPE"))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(on_sandbox_account, on_unknown_account);
    assert!(
        on_sandbox_account.contains("card.account_id"),
        "{on_sandbox_account}"
    );
    let taken = production
        .svc
        .importer()
        .add_card(&acme(), card(CARD, "P1"))
        .await
        .unwrap_err()
        .to_string();
    assert!(taken.starts_with("card.id:"), "{taken}");
    assert!(taken.contains("environment"), "{taken}");

    // `keys rotate-data-key` in production: a new production key, production's two cards and
    // Dora's TOTP secret re-sealed; the sandbox keeps its key and its cards untouched.
    let (version, resealed) = production
        .svc
        .admin()
        .rotate_data_key(&acme())
        .await
        .unwrap();
    assert_eq!((version, resealed), (2, 3), "two cards and a TOTP secret");
    let sandbox_card = sandbox
        .svc
        .store
        .get_card(&acme(), Environment::Sandbox, &CardId::parse(CARD).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sandbox_card.key_version, 1, "sandbox cards keep their key");
    let prod_card = production
        .svc
        .store
        .get_card(
            &acme(),
            Environment::Production,
            &CardId::parse(CARD_PROD).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(prod_card.key_version, 2);
    let newest = |keys: Vec<cardgate_store::DataKeyRow>| {
        keys.iter()
            .filter(|k| k.tenant_id == acme())
            .map(|k| k.version)
            .max()
    };
    assert_eq!(
        newest(
            sandbox
                .svc
                .store
                .load_data_keys(Environment::Sandbox)
                .await
                .unwrap()
        ),
        Some(1)
    );
    assert_eq!(
        newest(
            production
                .svc
                .store
                .load_data_keys(Environment::Production)
                .await
                .unwrap()
        ),
        Some(2)
    );
    assert_eq!(reveal(production, PROD, CARD_PROD).await.0, PAN_PROD);
    assert_eq!(reveal(sandbox, BACKEND, CARD).await.0, PAN);
    // The sandbox rotates its own key the same way: its four cards and Ada's TOTP secret.
    assert_eq!(
        sandbox.svc.admin().rotate_data_key(&acme()).await.unwrap(),
        (2, 5)
    );
    assert_eq!(reveal(production, PROD, CARD_PROD).await.0, PAN_PROD);
}

#[tokio::test]
async fn a_client_cannot_revoke_a_card_token_of_the_other_environment_on_a_shared_sqlite_file() {
    let (sandbox, production) = sandbox_and_production(Db::Sqlite).await;
    a_client_cannot_revoke_a_card_token_of_the_other_environment(&sandbox, &production).await;
}

#[tokio::test]
async fn credentials_cannot_mint_for_or_reveal_the_other_environments_cards_on_a_shared_sqlite_file(
) {
    let (sandbox, production) = sandbox_and_production(Db::Sqlite).await;
    credentials_cannot_mint_for_or_reveal_the_other_environments_cards(&sandbox, &production).await;
}

#[tokio::test]
async fn persons_and_mfa_sessions_stay_in_their_environment_on_a_shared_sqlite_file() {
    let (sandbox, production) = sandbox_and_production(Db::Sqlite).await;
    persons_and_mfa_sessions_stay_in_their_environment(&sandbox, &production).await;
}

#[tokio::test]
async fn imports_in_each_environment_create_objects_only_visible_there_on_a_shared_sqlite_file() {
    let (sandbox, production) = sandbox_and_production(Db::Sqlite).await;
    imports_in_each_environment_create_objects_only_visible_there(&sandbox, &production).await;
}

#[tokio::test]
async fn an_import_naming_an_id_of_the_other_environment_is_refused_and_writes_nothing_on_a_shared_sqlite_file(
) {
    let (sandbox, production) = sandbox_and_production(Db::Sqlite).await;
    an_import_naming_an_id_of_the_other_environment_is_refused_and_writes_nothing(
        &sandbox,
        &production,
    )
    .await;
}

#[tokio::test]
async fn admin_verbs_change_only_their_own_environment_on_a_shared_sqlite_file() {
    let (sandbox, production) = sandbox_and_production(Db::Sqlite).await;
    admin_verbs_change_only_their_own_environment(&sandbox, &production).await;
}
