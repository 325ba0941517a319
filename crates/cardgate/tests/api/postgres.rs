//! The PostgreSQL suite: the main flows on PostgreSQL, single use exactly once across
//! replicas and across real processes, and environment isolation on a shared database (the
//! scenarios of `environments`, and `migration`'s version-3 database).

use crate::cli::ServeChild;
use crate::helpers::*;
use crate::{environments, migration};
use cardgate_core::audit::ChainBreak;
use cardgate_core::Environment;
use futures::future::join_all;
use serde_json::{json, Value};

/// A sandbox app on a fresh PostgreSQL database, or `None` when the suite is skipped.
async fn spawn_on_postgres() -> Option<TestApp> {
    let admin = postgres_admin_url()?;
    let url = fresh_postgres_db(&admin).await;
    Some(TestApp::spawn_on(Db::Postgres(url), Environment::Sandbox, None).await)
}

/// Asserts exactly one redemption succeeded (with the PAN) and every other one was refused
/// as `invalid_token`.
fn assert_exactly_one_success(results: &[(u16, Value)]) {
    let granted: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(granted.len(), 1, "successes: {granted:?}");
    assert_eq!(granted[0].1["pan"], PAN);
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(
            (*status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "{body}"
        );
    }
}

#[tokio::test]
async fn jwt_and_opaque_access_tokens_issue_introspect_and_revoke_on_postgresql() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    for client in [BACKEND, OPAQUE] {
        let token = app.access_token(client).await;
        let info = app.introspect(client, &token).await;
        assert_eq!(info["active"], true, "{}: {info}", client.0);
        assert_eq!(info["client_id"], client.0);
        assert_eq!(app.revoke(client, &token).await.status(), 200);
        assert_eq!(
            app.introspect(client, &token).await["active"],
            false,
            "{} after revocation",
            client.0
        );
    }
    let jwt = app.access_token(BACKEND).await;
    assert_eq!(jwt.split('.').count(), 3, "the backend client gets JWTs");
    let opaque = app.access_token(OPAQUE).await;
    assert_ne!(
        opaque.split('.').count(),
        3,
        "the opaque client gets opaque tokens"
    );
}

#[tokio::test]
async fn native_card_tokens_mint_and_redeem_once_on_postgresql() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    let token = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    let (status, body) = status_and_json(app.get_details(&token, CARD).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["pan"].as_str(), body["cvv"].as_str()),
        (Some(PAN), Some(CVV))
    );
    assert_eq!(body["cardholder_name"], "Ada Lovelace");
    let (status, body) = status_and_json(app.get_details(&token, CARD).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );

    let pin = app
        .card_token(BACKEND, CARD, json!({"operations": ["GET_PIN"]}))
        .await;
    let (status, body) = status_and_json(app.get_pin(&pin, CARD).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pin"], PIN);
}

#[tokio::test]
async fn equals_tokens_are_issued_and_single_use_on_postgresql() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    let res = app
        .get_equals_token(
            Some(&format!("ApiKey {BACKEND_KEY}")),
            CARD,
            "accountId=F50091",
        )
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();
    let (status, body) = status_and_json(app.get_details(token, CARD).await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pan"], PAN);
    let (status, body) = status_and_json(app.get_details(token, CARD).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_is_redeemed_exactly_once_across_replicas() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    let replicas = [
        app.replica(Environment::Sandbox).await,
        app.replica(Environment::Sandbox).await,
    ];
    let apps = [&app, &replicas[0], &replicas[1]];
    let token = app
        .card_token(
            BACKEND,
            CARD,
            json!({"operations": ["VIEW_CARD"], "single_use": true}),
        )
        .await;

    let attempts = (0..30).map(|i| {
        let target = apps[i % apps.len()];
        let token = token.clone();
        async move { status_and_json(target.get_details(&token, CARD).await).await }
    });
    let results = join_all(attempts).await;
    assert_exactly_one_success(&results);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_use_token_is_redeemed_exactly_once_across_processes() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let url = fresh_postgres_db(&admin).await;
    // The in-process app migrates the database and imports the fixture.
    let app = TestApp::spawn_on(Db::Postgres(url.clone()), Environment::Sandbox, None).await;
    let servers = [
        ServeChild::start(&url, &app.master_key, &[]).await,
        ServeChild::start(&url, &app.master_key, &[]).await,
    ];

    let http = reqwest::Client::new();
    let res = http
        .post(servers[0].url(&format!("/v1/cards/{CARD}/tokens")))
        .basic_auth(BACKEND.0, Some(BACKEND.1))
        .json(&json!({"operations": ["VIEW_CARD"], "single_use": true}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 201, "{body}");
    let token = body["token"].as_str().unwrap().to_string();

    let attempts = (0..30).map(|i| {
        let url = servers[i % servers.len()].url(&format!("/v1/cards/{CARD}/details"));
        let (http, token) = (http.clone(), token.clone());
        async move { status_and_json(http.get(url).bearer_auth(token).send().await.unwrap()).await }
    });
    let results = join_all(attempts).await;
    assert_exactly_one_success(&results);
}

#[tokio::test]
async fn a_production_replica_on_the_same_database_refuses_sandbox_tokens_and_credentials() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    let prod = app.replica(Environment::Production).await;

    // The production replica works for production credentials…
    let prod_token = prod.access_token(PROD).await;
    assert_eq!(prod.introspect(PROD, &prod_token).await["active"], true);
    // …but a sandbox JWT is inactive there, and sandbox credentials are refused.
    let sandbox_jwt = app.access_token(BACKEND).await;
    assert_eq!(prod.introspect(PROD, &sandbox_jwt).await["active"], false);
    let (status, body) = status_and_json(
        prod.post_token(BACKEND, &[("grant_type", "client_credentials")])
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let res = prod
        .http
        .post(prod.url(&format!("/v1/cards/{CARD}/tokens")))
        .bearer_auth(&sandbox_jwt)
        .json(&json!({"operations": ["VIEW_CARD"]}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "a sandbox JWT as a production Bearer"
    );
    // Nor does the sandbox accept the production token.
    assert_eq!(app.introspect(BACKEND, &prod_token).await["active"], false);

    let card_token = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    assert_eq!(prod.introspect(PROD, &card_token).await["active"], false);
    let (status, body) = status_and_json(prod.get_details(&card_token, CARD).await).await;
    assert!(status == 401 || status == 403, "{status} {body}");
    assert!(body.get("pan").is_none());
    // The refused attempt did not use the token up.
    let (status, body) = status_and_json(app.get_details(&card_token, CARD).await).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_production_replica_answers_a_sandbox_card_token_as_an_invalid_token() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    let prod = app.replica(Environment::Production).await;
    let card_token = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    let (status, body) = status_and_json(prod.get_details(&card_token, CARD).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    // Exactly what an unknown token gets: another environment's tokens do not exist here.
    let (unknown_status, unknown) = status_and_json(
        prod.get_details("cgct_unknown0123456789abcdefghijklmnopqrstuv", CARD)
            .await,
    )
    .await;
    assert_eq!((status, &body), (unknown_status, &unknown));
}

#[tokio::test]
async fn the_audit_chain_stays_intact_under_concurrent_writers_on_several_replicas() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    let a = app.replica(Environment::Sandbox).await;
    let b = app.replica(Environment::Sandbox).await;
    let replicas = [&app, &a, &b];
    let work = (0..90).map(|i| {
        let r = replicas[i % 3];
        async move {
            if i % 2 == 0 {
                r.post_token(OPAQUE, &[("grant_type", "client_credentials")])
                    .await
                    .status()
                    .as_u16()
            } else {
                r.post_card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
                    .await
                    .status()
                    .as_u16()
            }
        }
    });
    let statuses = join_all(work).await;
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 201),
        "{statuses:?}"
    );
    let verified = app.svc.admin().verify_audit().await.unwrap();
    let count = verified.expect("the chain verifies");
    assert!(count >= 90, "every issuance was audited: {count}");
    let events = app.audit_events().await;
    assert_eq!(events.len() as i64, count, "every event is in a chain");
    // Each chain numbers its events 1, 2, 3 … with no gap and no duplicate, and the writers
    // of the three replicas shared the chains between them.
    let mut chains: std::collections::BTreeMap<i64, Vec<i64>> = Default::default();
    for e in &events {
        chains.entry(e.chain).or_default().push(e.seq);
    }
    for (chain, seqs) in &chains {
        let expected: Vec<i64> = (1..=seqs.len() as i64).collect();
        assert_eq!(seqs, &expected, "chain {chain}: no gaps, no duplicates");
    }
    assert!(
        chains.keys().all(|c| (1..=4).contains(c)),
        "{:?}",
        chains.keys()
    );
    // An edit in any chain, not only the first, breaks verification there.
    let last = *chains.keys().last().unwrap();
    let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    let edited =
        sqlx::query("UPDATE audit_events SET outcome = 'edited' WHERE chain = $1 AND seq = 1")
            .bind(last)
            .execute(&pool)
            .await
            .unwrap();
    assert_eq!(edited.rows_affected(), 1);
    pool.close().await;
    assert_eq!(
        app.svc.admin().verify_audit().await.unwrap(),
        Err(ChainBreak::Content {
            chain: last,
            seq: 1
        })
    );
}

#[tokio::test]
async fn a_burst_of_wrong_codes_across_two_replicas_checks_at_most_five() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    let other = app.replica(Environment::Sandbox).await;
    crate::mfa::a_burst_of_wrong_codes_checks_at_most_five(&[&app, &other]).await;
    app.svc.clock.advance(std::time::Duration::from_secs(30));
    other.svc.clock.advance(std::time::Duration::from_secs(30));
    crate::mfa::the_right_code_in_a_burst_is_not_told_apart(&[&app, &other]).await;
}

#[tokio::test]
async fn a_lockout_reached_by_a_burst_across_two_replicas_is_audited_once() {
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    let other = app.replica(Environment::Sandbox).await;
    crate::mfa::a_lockout_reached_by_a_concurrent_burst_is_audited_once(&[&app, &other]).await;
}

/// A sandbox and a production instance on one fresh PostgreSQL database (see
/// `environments`), or `None` when the suite is skipped.
async fn sandbox_and_production_on_postgres() -> Option<(TestApp, TestApp)> {
    let admin = postgres_admin_url()?;
    let url = fresh_postgres_db(&admin).await;
    Some(environments::sandbox_and_production(Db::Postgres(url)).await)
}

#[tokio::test]
async fn a_client_cannot_revoke_a_card_token_of_the_other_environment_on_postgresql() {
    let Some((sandbox, production)) = sandbox_and_production_on_postgres().await else {
        return;
    };
    environments::a_client_cannot_revoke_a_card_token_of_the_other_environment(
        &sandbox,
        &production,
    )
    .await;
}

#[tokio::test]
async fn credentials_cannot_mint_for_or_reveal_the_other_environments_cards_on_postgresql() {
    let Some((sandbox, production)) = sandbox_and_production_on_postgres().await else {
        return;
    };
    environments::credentials_cannot_mint_for_or_reveal_the_other_environments_cards(
        &sandbox,
        &production,
    )
    .await;
}

#[tokio::test]
async fn persons_and_mfa_sessions_stay_in_their_environment_on_postgresql() {
    let Some((sandbox, production)) = sandbox_and_production_on_postgres().await else {
        return;
    };
    environments::persons_and_mfa_sessions_stay_in_their_environment(&sandbox, &production).await;
}

#[tokio::test]
async fn imports_in_each_environment_create_objects_only_visible_there_on_postgresql() {
    let Some((sandbox, production)) = sandbox_and_production_on_postgres().await else {
        return;
    };
    environments::imports_in_each_environment_create_objects_only_visible_there(
        &sandbox,
        &production,
    )
    .await;
}

#[tokio::test]
async fn an_import_naming_an_id_of_the_other_environment_is_refused_and_writes_nothing_on_postgresql(
) {
    let Some((sandbox, production)) = sandbox_and_production_on_postgres().await else {
        return;
    };
    environments::an_import_naming_an_id_of_the_other_environment_is_refused_and_writes_nothing(
        &sandbox,
        &production,
    )
    .await;
}

#[tokio::test]
async fn admin_verbs_change_only_their_own_environment_on_postgresql() {
    let Some((sandbox, production)) = sandbox_and_production_on_postgres().await else {
        return;
    };
    environments::admin_verbs_change_only_their_own_environment(&sandbox, &production).await;
}

#[tokio::test]
async fn a_version_3_postgresql_database_migrates_its_rows_to_the_environments_of_their_tokens() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let url = fresh_postgres_db(&admin).await;
    migration::a_version_3_database_migrates_its_rows_to_the_environments_of_their_tokens(&url)
        .await;
}

#[tokio::test]
async fn an_unkeyed_log_is_relinked_once_by_replicas_starting_together_and_then_verifies() {
    use crate::audit::{assert_relinked, make_from_before_keyed_links, some_activity, Sql};
    let Some(app) = spawn_on_postgres().await else {
        return;
    };
    some_activity(&app).await;
    let db = Sql::connect(&app.database_url).await;
    make_from_before_keyed_links(&db, &app.master_key).await;
    let unkeyed = db.events().await;

    // Both re-link at start; the heads' locks let exactly one of them do it.
    let (a, b) = tokio::join!(
        app.replica(Environment::Sandbox),
        app.replica(Environment::Sandbox)
    );
    assert_relinked(&unkeyed, &db.events().await);
    let n = unkeyed.len() as i64 + 1;
    assert_eq!(a.svc.admin().verify_audit().await.unwrap(), Ok(n));
    // Both go on appending keyed links.
    for r in [&a, &b] {
        r.access_token(OPAQUE).await;
    }
    assert_eq!(b.svc.admin().verify_audit().await.unwrap(), Ok(n + 2));
    db.close().await;
}
