//! The Synctera dialect (seed `synctera-widget-token.md`, SPEC §4.2): widget tokens, their
//! errors, and `Idempotency-Key` on SQLite and PostgreSQL (across replicas).

use crate::cli::ServeChild;
use crate::helpers::*;
use cardgate_core::Environment;
use futures::future::join_all;
use serde_json::{json, Value};

const BEARER: &str = "Bearer acme-widgets-apikey-0123456789abcdefghijklm";

/// A widget token request: `GET` (or `POST`) with `auth` and an optional idempotency key.
pub async fn widget_token(
    app: &TestApp,
    method: &str,
    auth: Option<&str>,
    card: &str,
    query: &str,
    key: Option<&str>,
) -> (u16, Value) {
    let url = app.url(&format!("/synctera/v1/cards/{card}/widget_token?{query}"));
    let mut req = match method {
        "POST" => app.http.post(url),
        _ => app.http.get(url),
    };
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    status_and_json(req.send().await.unwrap()).await
}

/// A widget token for `widget_type` on `card`, asserting the seed's answer shape.
pub async fn granted(app: &TestApp, card: &str, widget_type: &str) -> String {
    let (status, body) = widget_token(
        app,
        "GET",
        Some(BEARER),
        card,
        &format!("widget_type={widget_type}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["tenant"], "acme");
    assert_eq!(
        body.as_object().unwrap().len(),
        2,
        "{{tenant, widget_token}}"
    );
    body["widget_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn a_widget_token_opens_its_widget_once_and_lives_five_minutes() {
    let app = TestApp::spawn().await;
    // A widget token opens nothing on another card, and nothing once it is spent.
    let token = granted(&app, CARD, "REVEAL").await;
    assert_eq!(
        app.get_details(&token, CARD_BOB).await.status(),
        403,
        "another card"
    );
    assert_eq!(app.get_details(&token, CARD).await.status(), 200);
    for method in ["GET", "POST"] {
        let (status, body) =
            widget_token(&app, method, Some(BEARER), CARD, "widget_type=REVEAL", None).await;
        assert_eq!(status, 200, "{method}: {body}");
        let token = body["widget_token"].as_str().unwrap();
        let details: Value = app.get_details(token, CARD).await.json().await.unwrap();
        assert_eq!(details["pan"], PAN);
        assert_eq!(app.get_details(token, CARD).await.status(), 401, "one-time");
    }
    let token = granted(&app, CARD, "GET_PIN").await;
    let info = app.introspect(BACKEND, &token).await;
    assert_eq!(info["operations"], json!(["GET_PIN"]));
    assert_eq!(
        info["exp"].as_i64().unwrap() - info["iat"].as_i64().unwrap(),
        300
    );
    assert_eq!(
        app.get_details(&token, CARD).await.status(),
        403,
        "only its widget"
    );
    let set = granted(&app, CARD, "SET_PIN").await;
    assert_eq!(app.put_pin(&set, CARD, "97531").await.status(), 204);
    let get = granted(&app, CARD, "GET_PIN").await;
    assert_eq!(
        app.get_pin(&get, CARD).await.json::<Value>().await.unwrap(),
        json!({"pin": "97531"})
    );
    let activate = granted(&app, CARD_INACTIVE, "ACTIVATE").await;
    assert_eq!(
        app.post_activate(&activate, CARD_INACTIVE).await.status(),
        200
    );
}

#[tokio::test]
async fn a_tenant_sets_its_widget_token_lifetime() {
    let app = TestApp::spawn().await;
    let mut file = fixture(None);
    file["tenants"][0]["widget_token_ttl_seconds"] = json!(120);
    app.import(&file).await.unwrap();
    app.svc.reload().await.unwrap();
    let token = granted(&app, CARD, "REVEAL").await;
    let info = app.introspect(BACKEND, &token).await;
    assert_eq!(
        info["exp"].as_i64().unwrap() - info["iat"].as_i64().unwrap(),
        120
    );
    for bad in [json!(0), json!(3601)] {
        file["tenants"][0]["widget_token_ttl_seconds"] = bad;
        let refused = cardgate_core::import::parse(file.to_string().as_bytes(), app.svc.now_ms());
        let message = format!("{:?}", refused.err().expect("refused"));
        assert!(message.contains("widget_token_ttl_seconds"), "{message}");
    }
}

#[tokio::test]
async fn bad_widget_token_requests_get_the_seeds_error_shape_and_spec_statuses() {
    let app = TestApp::spawn().await;
    let other = "Bearer other-backend-apikey-0123456789abcdefghijkl";
    let read_only = format!("Bearer {OWN_KEY}");
    let cases: Vec<(Option<&str>, &str, &str, u16, &str)> = vec![
        (None, CARD, "widget_type=REVEAL", 401, "UNAUTHORIZED"),
        (
            Some("Bearer nope"),
            CARD,
            "widget_type=REVEAL",
            401,
            "UNAUTHORIZED",
        ),
        (
            Some("ApiKey acme-widgets-apikey-0123456789abcdefghijklm"),
            CARD,
            "widget_type=REVEAL",
            401,
            "UNAUTHORIZED",
        ),
        (
            Some(&read_only),
            CARD,
            "widget_type=REVEAL",
            403,
            "FORBIDDEN",
        ),
        (
            Some(BEARER),
            "not-a-uuid",
            "widget_type=REVEAL",
            400,
            "INVALID_CARD_ID",
        ),
        (Some(BEARER), CARD, "", 400, "INVALID_WIDGET_TYPE"),
        (
            Some(BEARER),
            CARD,
            "widget_type=VIEW_CARD",
            400,
            "INVALID_WIDGET_TYPE",
        ),
        (
            Some(BEARER),
            CARD,
            "widget_type=reveal",
            400,
            "INVALID_WIDGET_TYPE",
        ),
        (
            Some(BEARER),
            CARD,
            "widget_type=REVEAL&widget_type=GET_PIN",
            400,
            "BAD_REQUEST",
        ),
        (
            Some(BEARER),
            "00000000-0000-4000-8000-000000000000",
            "widget_type=REVEAL",
            404,
            "CARD_NOT_FOUND",
        ),
        (
            Some(other),
            CARD,
            "widget_type=REVEAL",
            404,
            "CARD_NOT_FOUND",
        ),
        (
            Some(BEARER),
            CARD,
            "widget_type=ACTIVATE",
            422,
            "INVALID_CARD_STATE",
        ),
        (
            Some(BEARER),
            CARD_TERMINATED,
            "widget_type=REVEAL",
            422,
            "INVALID_CARD_STATE",
        ),
        (
            Some(BEARER),
            CARD_TERMINATED,
            "widget_type=SET_PIN",
            422,
            "INVALID_CARD_STATE",
        ),
    ];
    for (auth, card, query, status, code) in cases {
        let (got, body) = widget_token(&app, "GET", auth, card, query, None).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{query} {card}: {body}"
        );
        assert_eq!(body["status"], status, "{body}");
        assert!(
            body["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{body}"
        );
        assert_eq!(
            body.as_object().unwrap().len(),
            3,
            "{{code, detail, status}}"
        );
    }
    let res = app
        .http
        .delete(app.url(&format!(
            "/synctera/v1/cards/{CARD}/widget_token?widget_type=REVEAL"
        )))
        .header("Authorization", BEARER)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    // None of the refusals changed a card.
    let view = granted(&app, CARD_INACTIVE, "REVEAL").await;
    assert_eq!(app.get_details(&view, CARD_INACTIVE).await.status(), 200);
    assert_eq!(
        app.post_activate(
            &granted(&app, CARD_INACTIVE, "ACTIVATE").await,
            CARD_INACTIVE
        )
        .await
        .status(),
        200
    );
}

#[tokio::test]
async fn a_retried_idempotency_key_gets_the_same_token_and_another_request_is_refused() {
    let app = TestApp::spawn().await;
    let first = widget_token(
        &app,
        "GET",
        Some(BEARER),
        CARD,
        "widget_type=REVEAL",
        Some("k-1"),
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.1);
    let minted = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "card_token.minted")
        .count();
    for method in ["GET", "POST"] {
        let again = widget_token(
            &app,
            method,
            Some(BEARER),
            CARD,
            "widget_type=REVEAL",
            Some("k-1"),
        )
        .await;
        assert_eq!(again, first, "a retry ({method}) gets the stored answer");
    }
    let after = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "card_token.minted")
        .count();
    assert_eq!(after, minted, "no new grant");
    for (card, query) in [
        (CARD, "widget_type=GET_PIN"),
        (CARD_INACTIVE, "widget_type=REVEAL"),
    ] {
        let (status, body) =
            widget_token(&app, "GET", Some(BEARER), card, query, Some("k-1")).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("IDEMPOTENCY_KEY_REUSED")),
            "{body}"
        );
    }
    // Another client's key of the same name is its own.
    let (status, _) = widget_token(
        &app,
        "GET",
        Some(&format!("Bearer {BACKEND_KEY}")),
        CARD,
        "widget_type=REVEAL",
        Some("k-1"),
    )
    .await;
    assert_eq!(status, 200);
    // After 24 hours the key is free again.
    app.svc
        .clock
        .advance(std::time::Duration::from_secs(24 * 3600 + 1));
    let later = widget_token(
        &app,
        "GET",
        Some(BEARER),
        CARD,
        "widget_type=GET_PIN",
        Some("k-1"),
    )
    .await;
    assert_eq!(later.0, 200, "{}", later.1);
    assert_ne!(later.1["widget_token"], first.1["widget_token"]);
    // A bad key is a 400.
    let long = "k".repeat(256);
    let (status, body) = widget_token(
        &app,
        "GET",
        Some(BEARER),
        CARD,
        "widget_type=REVEAL",
        Some(&long),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("INVALID_IDEMPOTENCY_KEY"))
    );
}

#[tokio::test]
async fn a_retry_after_the_card_changed_still_gets_its_token() {
    let app = TestApp::spawn().await;
    let first = widget_token(
        &app,
        "GET",
        Some(BEARER),
        CARD_INACTIVE,
        "widget_type=ACTIVATE",
        Some("act"),
    )
    .await;
    assert_eq!(first.0, 200);
    let token = first.1["widget_token"].as_str().unwrap();
    assert_eq!(app.post_activate(token, CARD_INACTIVE).await.status(), 200);
    let again = widget_token(
        &app,
        "GET",
        Some(BEARER),
        CARD_INACTIVE,
        "widget_type=ACTIVATE",
        Some("act"),
    )
    .await;
    assert_eq!(
        again, first,
        "the stored answer, though the card is active now"
    );
    let (status, body) = widget_token(
        &app,
        "GET",
        Some(BEARER),
        CARD_INACTIVE,
        "widget_type=ACTIVATE",
        Some("new"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("INVALID_CARD_STATE"))
    );
}

/// Concurrent retries with one key, spread over `apps`: one grant, one answer.
async fn concurrent_retries_mint_once(apps: &[&TestApp]) {
    let before = apps[0]
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "card_token.minted")
        .count();
    let results = join_all((0..16).map(|i| {
        let app = apps[i % apps.len()];
        async move {
            widget_token(
                app,
                if i % 2 == 0 { "GET" } else { "POST" },
                Some(BEARER),
                CARD,
                "widget_type=REVEAL",
                Some("race"),
            )
            .await
        }
    }))
    .await;
    for r in &results {
        assert_eq!(r, &results[0], "every retry gets the same answer");
    }
    assert_eq!(results[0].0, 200, "{}", results[0].1);
    let after = apps[0]
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "card_token.minted")
        .count();
    assert_eq!(after - before, 1, "one grant");
    let token = results[0].1["widget_token"].as_str().unwrap();
    assert_eq!(apps[0].get_details(token, CARD).await.status(), 200);
}

#[tokio::test]
async fn concurrent_retries_with_one_key_produce_one_grant_on_sqlite() {
    let app = TestApp::spawn().await;
    concurrent_retries_mint_once(&[&app]).await;
}

#[tokio::test]
async fn concurrent_retries_with_one_key_produce_one_grant_across_postgresql_replicas() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let url = fresh_postgres_db(&admin).await;
    let a = TestApp::spawn_on(Db::Postgres(url), Environment::Sandbox, None).await;
    let b = a.replica(Environment::Sandbox).await;
    concurrent_retries_mint_once(&[&a, &b]).await;
    let (status, body) = widget_token(
        &b,
        "GET",
        Some(BEARER),
        CARD,
        "widget_type=GET_PIN",
        Some("race"),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (422, Some("IDEMPOTENCY_KEY_REUSED"))
    );
}

#[tokio::test]
async fn the_stored_answer_is_sealed_and_no_token_or_key_reaches_logs_or_audit() {
    let app = TestApp::spawn().await;
    let (status, body) = widget_token(
        &app,
        "GET",
        Some(BEARER),
        CARD,
        "widget_type=REVEAL",
        Some("sealed-key-123"),
    )
    .await;
    assert_eq!(status, 200);
    let token = body["widget_token"].as_str().unwrap().to_string();
    let details: Value = app.get_details(&token, CARD).await.json().await.unwrap();
    assert_eq!(details["pan"], PAN);
    widget_token(
        &app,
        "GET",
        Some(BEARER),
        CARD,
        "widget_type=REVEAL",
        Some("sealed-key-123"),
    )
    .await;
    let stored = app.database_bytes();
    assert_absent(&stored, &[&token, "sealed-key-123"], "the database");
    let audit: String = app
        .audit_events()
        .await
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {} {}\n",
                e.actor, e.action, e.outcome, e.subject, e.details
            )
        })
        .collect();
    let cvv = format!("\"{CVV}\"");
    let secrets = [token.as_str(), WIDGETS_KEY, PAN, &cvv, "sealed-key-123"];
    assert_absent(audit.as_bytes(), &secrets, "the audit log");
    assert_absent(logs().as_bytes(), &secrets, "the logs");
}

/// Follows the printed Synctera line (`curl -s -X POST 'URL' -H 'Authorization: Bearer KEY'
/// -H 'Idempotency-Key: K'`) twice, then opens the printed widget page with its token.
pub async fn follow_the_demo_lines(server: &ServeChild, out: &str, api_key: &str) {
    let line = out
        .lines()
        .find(|l| l.contains("curl -s -X POST") && l.contains("/synctera/v1/cards/"))
        .unwrap_or_else(|| panic!("no Synctera curl line:\n{out}"));
    let quoted: Vec<&str> = line.split('\'').skip(1).step_by(2).collect();
    let url = quoted.iter().find(|q| q.starts_with(&server.base)).unwrap();
    let header = |name: &str| {
        quoted
            .iter()
            .find_map(|q| q.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_string()
    };
    assert_eq!(header("Authorization"), format!("Bearer {api_key}"));
    let http = reqwest::Client::new();
    let mut answers = Vec::new();
    for _ in 0..2 {
        let res = http
            .post(*url)
            .header("Authorization", header("Authorization"))
            .header("Idempotency-Key", header("Idempotency-Key"))
            .send()
            .await
            .unwrap();
        let (status, body) = status_and_json(res).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["tenant"], "demo");
        answers.push(body);
    }
    assert_eq!(answers[0], answers[1], "the retry gets the same answer");
    let token = answers[0]["widget_token"].as_str().unwrap();
    let widget = out
        .lines()
        .find(|l| l.starts_with("echo ") && l.contains("/widgets/v1/reveal"))
        .unwrap_or_else(|| panic!("no widget URL line:\n{out}"));
    let page = widget
        .trim_start_matches("echo \"")
        .split('#')
        .next()
        .unwrap();
    let res = http.get(page).send().await.unwrap();
    assert_eq!(res.status(), 200, "{page}");
    let card = widget.rsplit("card=").next().unwrap().trim_end_matches('"');
    let details = http
        .get(format!("{}/v1/cards/{card}/details", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        details.status(),
        200,
        "the widget token opens the card it names"
    );
}

#[tokio::test]
async fn concurrent_retries_with_one_key_produce_one_grant_across_two_processes_on_postgresql() {
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
    let minted = || async {
        app.audit_events()
            .await
            .iter()
            .filter(|e| e.action == "card_token.minted")
            .count()
    };
    let before = minted().await;
    let http = reqwest::Client::new();
    let results = join_all((0..16).map(|i| {
        let url = servers[i % 2].url(&format!(
            "/synctera/v1/cards/{CARD}/widget_token?widget_type=REVEAL"
        ));
        let http = http.clone();
        async move {
            let res = http
                .post(url)
                .header("Authorization", BEARER)
                .header("Idempotency-Key", "two-processes")
                .send()
                .await
                .unwrap();
            status_and_json(res).await
        }
    }))
    .await;
    assert_eq!(results[0].0, 200, "{}", results[0].1);
    for r in &results {
        assert_eq!(r, &results[0], "every retry gets the same answer");
    }
    assert_eq!(minted().await - before, 1, "one grant");
}
