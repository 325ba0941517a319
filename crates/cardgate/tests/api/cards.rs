//! Native card tokens: minting, every redemption, use limits, revocation, concurrency, JWE.

use crate::helpers::*;
use serde_json::{json, Value};

#[tokio::test]
async fn a_view_card_token_reveals_the_card_once() {
    let app = TestApp::spawn().await;
    let res = app
        .post_card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let minted: Value = res.json().await.unwrap();
    assert_eq!(minted["operations"], json!(["VIEW_CARD"]));
    assert_eq!(minted["max_uses"], 1);
    assert_eq!(minted["expires_in"], 300, "the tenant's default lifetime");
    let token = minted["token"].as_str().unwrap();
    let res = app.get_details(token, CARD).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let details: Value = res.json().await.unwrap();
    assert_eq!(
        details,
        json!({"pan": PAN, "cvv": CVV, "expiry_month": 12, "expiry_year": 2029, "cardholder_name": "Ada Lovelace"})
    );
    let (status, body) = status_and_json(app.get_details(token, CARD).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    assert_eq!(body["error_description"], "the token has been used up");
}

#[tokio::test]
async fn pins_are_read_and_set_through_their_own_tokens() {
    let app = TestApp::spawn().await;
    let get = app
        .card_token(BACKEND, CARD, json!({"operations": ["GET_PIN"]}))
        .await;
    assert_eq!(
        app.get_pin(&get, CARD).await.json::<Value>().await.unwrap(),
        json!({"pin": PIN})
    );
    let set = app
        .card_token(BACKEND, CARD, json!({"operations": ["SET_PIN"]}))
        .await;
    assert_eq!(app.put_pin(&set, CARD, "13579").await.status(), 204);
    let get = app
        .card_token(BACKEND, CARD, json!({"operations": ["GET_PIN"]}))
        .await;
    assert_eq!(
        app.get_pin(&get, CARD).await.json::<Value>().await.unwrap(),
        json!({"pin": "13579"})
    );
    // A bad PIN costs no use of the token.
    let set = app
        .card_token(BACKEND, CARD, json!({"operations": ["SET_PIN"]}))
        .await;
    let (status, body) = status_and_json(app.put_pin(&set, CARD, "12a4").await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    // A PIN sent as a number is refused without the error repeating it.
    let res = app
        .http
        .put(app.url(&format!("/v1/cards/{CARD}/pin")))
        .bearer_auth(&set)
        .json(&json!({"pin": 97531}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let said = body.to_string();
    assert!(
        said.contains("expected a string") && !said.contains("97531"),
        "{said}"
    );
    assert_eq!(app.put_pin(&set, CARD, "1234").await.status(), 204);
}

#[tokio::test]
async fn activation_moves_an_inactive_card_to_active_once() {
    let app = TestApp::spawn().await;
    let token = app
        .card_token(BACKEND, CARD_INACTIVE, json!({"operations": ["ACTIVATE"]}))
        .await;
    let res = app.post_activate(&token, CARD_INACTIVE).await;
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"card_id": CARD_INACTIVE, "status": "ACTIVE"})
    );
    let (status, body) = status_and_json(
        app.post_card_token(BACKEND, CARD_INACTIVE, json!({"operations": ["ACTIVATE"]}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("card_state")),
        "an active card cannot be activated again"
    );
}

#[tokio::test]
async fn two_activation_tokens_activate_once_and_the_loser_keeps_its_use() {
    let app = TestApp::spawn().await;
    let a = app
        .card_token(BACKEND, CARD_INACTIVE, json!({"operations": ["ACTIVATE"]}))
        .await;
    let b = app
        .card_token(BACKEND, CARD_INACTIVE, json!({"operations": ["ACTIVATE"]}))
        .await;
    assert_eq!(app.post_activate(&a, CARD_INACTIVE).await.status(), 200);
    let (status, body) = status_and_json(app.post_activate(&b, CARD_INACTIVE).await).await;
    assert_eq!((status, body["error"].as_str()), (409, Some("card_state")));
    let info = app.introspect(BACKEND, &b).await;
    assert_eq!(
        (info["active"].as_bool(), info["uses_made"].as_i64()),
        (Some(true), Some(0)),
        "nothing partial was written"
    );
}

#[tokio::test]
async fn wallet_eligibility_answers_for_the_card() {
    let app = TestApp::spawn().await;
    let token = app
        .card_token(BACKEND, CARD, json!({"operations": ["ADD_CARD_TO_WALLET"]}))
        .await;
    let body: Value = app.get_wallet(&token, CARD).await.json().await.unwrap();
    assert_eq!(
        body,
        json!({"card_id": CARD, "wallet_eligible": true, "last4": "1111", "status": "ACTIVE"})
    );
}

#[tokio::test]
async fn a_token_covers_only_its_card_and_operations() {
    let app = TestApp::spawn().await;
    let token = app
        .card_token(
            BACKEND,
            CARD,
            json!({"operations": ["VIEW_CARD"], "max_uses": 5}),
        )
        .await;
    for res in [
        app.get_details(&token, CARD_BOB).await,
        app.get_pin(&token, CARD).await,
        app.get_wallet(&token, CARD).await,
    ] {
        let (status, body) = status_and_json(res).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("insufficient_scope"))
        );
    }
    assert_eq!(
        app.get_details(&token, CARD).await.status(),
        200,
        "refusals cost no use"
    );
}

#[tokio::test]
async fn use_limits_are_counted_and_unlimited_tokens_last_until_expiry() {
    let app = TestApp::spawn().await;
    let three = app
        .card_token(
            BACKEND,
            CARD,
            json!({"operations": ["VIEW_CARD"], "max_uses": 3}),
        )
        .await;
    for _ in 0..3 {
        assert_eq!(app.get_details(&three, CARD).await.status(), 200);
    }
    assert_eq!(app.get_details(&three, CARD).await.status(), 401);
    let unlimited = app
        .card_token(
            BACKEND,
            CARD,
            json!({"operations": ["VIEW_CARD"], "single_use": false, "ttl_seconds": 60}),
        )
        .await;
    for _ in 0..5 {
        assert_eq!(app.get_details(&unlimited, CARD).await.status(), 200);
    }
    app.svc.clock.advance(std::time::Duration::from_secs(61));
    let (status, body) = status_and_json(app.get_details(&unlimited, CARD).await).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (401, Some("the token has expired"))
    );
}

#[tokio::test]
async fn a_revoked_card_token_is_refused() {
    let app = TestApp::spawn().await;
    let token = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    assert_eq!(app.introspect(BACKEND, &token).await["active"], true);
    assert_eq!(app.revoke(BACKEND, &token).await.status(), 200);
    let (status, body) = status_and_json(app.get_details(&token, CARD).await).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (401, Some("the token has been revoked"))
    );
    assert_eq!(
        app.introspect(BACKEND, &token).await,
        json!({"active": false})
    );
}

#[tokio::test]
async fn of_many_concurrent_redemptions_of_a_single_use_token_exactly_one_succeeds() {
    let app = TestApp::spawn().await;
    for _round in 0..3 {
        let token = app
            .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
            .await;
        let attempts = (0..24).map(|_| app.get_details(&token, CARD));
        let statuses: Vec<u16> = futures::future::join_all(attempts)
            .await
            .iter()
            .map(|r| r.status().as_u16())
            .collect();
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 200 || *s == 401),
            "{statuses:?}"
        );
    }
}

#[tokio::test]
async fn a_client_bound_to_a_cardholder_reaches_only_that_cardholders_cards() {
    let app = TestApp::spawn().await;
    assert_eq!(
        app.post_card_token(OWN, CARD, json!({"operations": ["VIEW_CARD"]}))
            .await
            .status(),
        201
    );
    let (status, body) = status_and_json(
        app.post_card_token(OWN, CARD_BOB, json!({"operations": ["VIEW_CARD"]}))
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("access_denied"))
    );
    let res = app
        .post_card_token(OWN, CARD, json!({"operations": ["SET_PIN"]}))
        .await;
    assert_eq!(
        res.headers()["www-authenticate"],
        "Bearer realm=\"cardgate\", error=\"insufficient_scope\"",
        "RFC 6750 §3.1"
    );
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
}

#[tokio::test]
async fn bad_mint_and_redeem_requests_get_clear_errors_and_write_nothing() {
    let app = TestApp::spawn().await;
    let before = app.audit_events().await.len();
    let cases: Vec<(&str, &str, Option<(&str, &str)>, &str, String, u16, &str)> = vec![
        (
            "malformed card id",
            "not-a-uuid",
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"]}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "unknown operation",
            CARD,
            Some(BACKEND),
            "application/json",
            r#"{"operations":["STEAL"]}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "no operation",
            CARD,
            Some(BACKEND),
            "application/json",
            r#"{"operations":[]}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "not JSON",
            CARD,
            Some(BACKEND),
            "application/json",
            "{operations".into(),
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            CARD,
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"],"x":1}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "wrong content type",
            CARD,
            Some(BACKEND),
            "text/plain",
            r#"{"operations":["VIEW_CARD"]}"#.into(),
            415,
            "invalid_request",
        ),
        (
            "ttl too long",
            CARD,
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"],"ttl_seconds":999999}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "zero uses",
            CARD,
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"],"max_uses":0}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "single use and a count",
            CARD,
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"],"single_use":true,"max_uses":2}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "negative ttl",
            CARD,
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"],"ttl_seconds":-1}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "unknown card",
            "00000000-0000-4000-8000-000000000000",
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"]}"#.into(),
            404,
            "not_found",
        ),
        (
            "another tenant's card",
            CARD_OTHER,
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"]}"#.into(),
            404,
            "not_found",
        ),
        (
            "terminated card",
            CARD_TERMINATED,
            Some(BACKEND),
            "application/json",
            r#"{"operations":["VIEW_CARD"]}"#.into(),
            409,
            "card_state",
        ),
        (
            "no credentials",
            CARD,
            None,
            "application/json",
            r#"{"operations":["VIEW_CARD"]}"#.into(),
            401,
            "invalid_client",
        ),
        (
            "wrong secret",
            CARD,
            Some((BACKEND.0, "wrong-secret-wrong-secret-wrong-secret")),
            "application/json",
            r#"{"operations":["VIEW_CARD"]}"#.into(),
            401,
            "invalid_client",
        ),
        (
            "step-up without MFA",
            CARD_STEPUP,
            Some(STEPUP),
            "application/json",
            r#"{"operations":["VIEW_CARD"]}"#.into(),
            403,
            "mfa_required",
        ),
        (
            "body over 64 KiB",
            CARD,
            Some(BACKEND),
            "application/json",
            format!(
                r#"{{"operations":["VIEW_CARD"],"pad":"{}"}}"#,
                "x".repeat(70_000)
            ),
            413,
            "invalid_request",
        ),
    ];
    for (name, card, client, ct, body, status, error) in cases {
        let mut req = app
            .http
            .post(app.url(&format!("/v1/cards/{card}/tokens")))
            .header("Content-Type", ct)
            .body(body);
        if let Some((id, secret)) = client {
            req = req.basic_auth(id, Some(secret));
        }
        let (got, json) = status_and_json(req.send().await.unwrap()).await;
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(error)),
            "{name}: {json}"
        );
    }
    // Redemption side.
    let token = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    let redeem_cases: Vec<(&str, Option<String>, &str, u16, &str)> = vec![
        ("no token", None, CARD, 401, "invalid_token"),
        (
            "unknown token",
            Some("Bearer cgct_unknown".into()),
            CARD,
            401,
            "invalid_token",
        ),
        (
            "Basic instead of Bearer",
            Some(basic(BACKEND.0, BACKEND.1)),
            CARD,
            401,
            "invalid_token",
        ),
        (
            "malformed card id",
            Some(format!("Bearer {token}")),
            "123",
            400,
            "invalid_request",
        ),
        (
            "another card",
            Some(format!("Bearer {token}")),
            CARD_BOB,
            403,
            "insufficient_scope",
        ),
    ];
    for (name, auth, card, status, error) in redeem_cases {
        let mut req = app.http.get(app.url(&format!("/v1/cards/{card}/details")));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        let res = req.send().await.unwrap();
        if status == 401 {
            assert!(res.headers().contains_key("www-authenticate"), "{name}");
        }
        let (got, json) = status_and_json(res).await;
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(error)),
            "{name}: {json}"
        );
    }
    assert_eq!(
        app.get_details(&token, CARD).await.status(),
        200,
        "the token survived every refusal"
    );
    // Refusals are audited, but nothing else was written: one mint, one redemption.
    let events = app.audit_events().await;
    let writes: Vec<_> = events[before..]
        .iter()
        .filter(|e| e.outcome == "ok")
        .map(|e| e.action.as_str())
        .collect();
    assert_eq!(
        writes,
        vec!["card_token.minted", "card_token.redeemed.VIEW_CARD"]
    );
}

/// Decrypts a compact JWE with a private JWK using Python's jwcrypto (a real JOSE library).
#[tokio::test]
async fn a_head_request_spends_no_use_of_a_card_token() {
    let app = TestApp::spawn().await;
    for (path, op) in [
        ("details", "VIEW_CARD"),
        ("pin", "GET_PIN"),
        ("wallet-eligibility", "ADD_CARD_TO_WALLET"),
    ] {
        let token = app
            .card_token(BACKEND, CARD, json!({"operations": [op]}))
            .await;
        let url = app.url(&format!("/v1/cards/{CARD}/{path}"));
        let res = app
            .http
            .head(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "HEAD {path}");
        let res = app.http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(
            res.status(),
            200,
            "GET {path} after the HEAD: the use is still there"
        );
    }
}
