//! The Equals Money dialect (seed `equals-money-card-access-token.md`, SPEC §4.1).

use crate::helpers::*;
use serde_json::Value;

fn api_key(k: &str) -> String {
    format!("ApiKey {k}")
}

async fn equals_token(app: &TestApp, auth: &str, card: &str, query: &str) -> String {
    let res = app.get_equals_token(Some(auth), card, query).await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body.as_object().unwrap().len(),
        1,
        "the answer is exactly {{\"token\"}}"
    );
    body["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_equals_client_gets_a_single_use_view_card_token() {
    let app = TestApp::spawn().await;
    let token = equals_token(&app, &api_key(BACKEND_KEY), CARD, "accountId=F50091").await;
    let details: Value = app.get_details(&token, CARD).await.json().await.unwrap();
    assert_eq!(details["pan"], PAN);
    assert_eq!(
        app.get_details(&token, CARD).await.status(),
        401,
        "single use"
    );
    let info = app
        .introspect(
            BACKEND,
            &equals_token(&app, &api_key(BACKEND_KEY), CARD, "accountId=F50091").await,
        )
        .await;
    assert_eq!(info["operations"], serde_json::json!(["VIEW_CARD"]));
    assert_eq!(
        info["exp"].as_i64().unwrap() - info["iat"].as_i64().unwrap(),
        300,
        "five minutes"
    );
}

#[tokio::test]
async fn the_raw_key_alone_is_accepted_as_the_seeds_curl_sample_sends_it() {
    let app = TestApp::spawn().await;
    equals_token(&app, BACKEND_KEY, CARD, "accountId=F50091").await;
}

#[tokio::test]
async fn a_wallet_token_allows_only_the_wallet_operation() {
    let app = TestApp::spawn().await;
    let token = equals_token(
        &app,
        &api_key(BACKEND_KEY),
        CARD,
        "accountId=F50091&operationName=ADD_CARD_TO_WALLET",
    )
    .await;
    assert_eq!(app.get_details(&token, CARD).await.status(), 403);
    let body: Value = app.get_wallet(&token, CARD).await.json().await.unwrap();
    assert_eq!(body["wallet_eligible"], true);
}

#[tokio::test]
async fn an_equals_token_expires_after_five_minutes() {
    let app = TestApp::spawn().await;
    let token = equals_token(&app, &api_key(BACKEND_KEY), CARD, "accountId=F50091").await;
    app.svc.clock.advance(std::time::Duration::from_secs(301));
    let (status, body) = status_and_json(app.get_details(&token, CARD).await).await;
    assert_eq!(
        (status, body["error_description"].as_str()),
        (401, Some("the token has expired"))
    );
}

#[tokio::test]
async fn an_own_key_reaches_only_its_cardholders_cards() {
    let app = TestApp::spawn().await;
    equals_token(
        &app,
        &api_key(OWN_KEY),
        CARD,
        &format!("accountId=F50091&personId={ADA}"),
    )
    .await;
    let (status, body) = status_and_json(
        app.get_equals_token(Some(&api_key(OWN_KEY)), CARD_BOB, "accountId=F50092")
            .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("CARD_NOT_OWNED"))
    );
    let (status, body) = status_and_json(
        app.get_equals_token(
            Some(&api_key(OWN_KEY)),
            CARD,
            &format!("accountId=F50091&personId={BOB}"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("PERSON_MISMATCH"))
    );
}

#[tokio::test]
async fn bad_equals_requests_get_a_code_and_a_message() {
    let app = TestApp::spawn().await;
    let key = api_key(BACKEND_KEY);
    let long = format!("{CARD}0");
    let cases: Vec<(&str, Option<String>, &str, String, u16, &str)> = vec![
        (
            "no Authorization",
            None,
            CARD,
            "accountId=F50091".into(),
            401,
            "UNAUTHORIZED",
        ),
        (
            "unknown key",
            Some(api_key("no-such-key-no-such-key-no-such-key-123")),
            CARD,
            "accountId=F50091".into(),
            403,
            "FORBIDDEN",
        ),
        (
            "key without Equals scope",
            Some(api_key(WIDGETS_KEY)),
            CARD,
            "accountId=F50091".into(),
            403,
            "INSUFFICIENT_SCOPE",
        ),
        (
            "cardId not a UUID",
            Some(key.clone()),
            "card-1",
            "accountId=F50091".into(),
            400,
            "INVALID_CARD_ID",
        ),
        (
            "cardId of 37 characters",
            Some(key.clone()),
            &long,
            "accountId=F50091".into(),
            400,
            "INVALID_CARD_ID",
        ),
        (
            "no accountId",
            Some(key.clone()),
            CARD,
            "".into(),
            400,
            "MISSING_ACCOUNT_ID",
        ),
        (
            "accountId twice",
            Some(key.clone()),
            CARD,
            "accountId=F50091&accountId=F50091".into(),
            400,
            "BAD_REQUEST",
        ),
        (
            "account that does not hold the card",
            Some(key.clone()),
            CARD,
            "accountId=F50092".into(),
            404,
            "NOT_FOUND",
        ),
        (
            "unknown card",
            Some(key.clone()),
            "00000000-0000-4000-8000-000000000000",
            "accountId=F50091".into(),
            404,
            "CARD_NOT_FOUND",
        ),
        (
            "another tenant's card",
            Some(key.clone()),
            CARD_OTHER,
            "accountId=O1".into(),
            404,
            "CARD_NOT_FOUND",
        ),
        (
            "unknown operation",
            Some(key.clone()),
            CARD,
            "accountId=F50091&operationName=SET_PIN".into(),
            400,
            "INVALID_OPERATION",
        ),
        (
            "personId not a UUID",
            Some(key.clone()),
            CARD,
            "accountId=F50091&personId=ada".into(),
            400,
            "INVALID_PERSON_ID",
        ),
        (
            "personId of another cardholder",
            Some(key.clone()),
            CARD,
            format!("accountId=F50091&personId={BOB}"),
            403,
            "PERSON_MISMATCH",
        ),
        (
            "sessionId without token",
            Some(key.clone()),
            CARD,
            "accountId=F50091&sessionId=abc".into(),
            400,
            "BAD_REQUEST",
        ),
        (
            "terminated card",
            Some(key.clone()),
            CARD_TERMINATED,
            "accountId=F50091".into(),
            422,
            "CARD_STATE",
        ),
    ];
    for (name, auth, card, query, status, code) in cases {
        let res = app.get_equals_token(auth.as_deref(), card, &query).await;
        let (got, body) = status_and_json(res).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{name}: {body}"
        );
        assert!(body["message"].is_string(), "{name}: {body}");
    }
    let (status, body) = status_and_json(
        app.http
            .post(app.url(&format!("/equals/v2/cards/{CARD}/access-token")))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (405, Some("METHOD_NOT_ALLOWED"))
    );
}

#[tokio::test]
async fn step_up_is_required_where_the_tenant_asks_for_it() {
    let app = TestApp::spawn().await;
    let key = api_key(STEPUP_KEY);
    let (status, body) = status_and_json(
        app.get_equals_token(Some(&key), CARD_STEPUP, "accountId=S1")
            .await,
    )
    .await;
    assert_eq!((status, body["code"].as_str()), (403, Some("MFA_REQUIRED")));
    // The wallet operation is not in the tenant's mfa_required_for.
    equals_token(
        &app,
        &key,
        CARD_STEPUP,
        "accountId=S1&operationName=ADD_CARD_TO_WALLET",
    )
    .await;

    let session: Value = app.mfa_session(STEPUP, CAROL, "totp").await;
    let sid = session["session_id"].as_str().unwrap();
    let (status, body) = status_and_json(
        app.get_equals_token(
            Some(&key),
            CARD_STEPUP,
            &format!("accountId=S1&sessionId={sid}&token=000000"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("MFA_CODE_INVALID"))
    );
    let code = totp_now(&app);
    let token = equals_token(
        &app,
        &key,
        CARD_STEPUP,
        &format!("accountId=S1&sessionId={sid}&token={code}"),
    )
    .await;
    assert_eq!(app.get_details(&token, CARD_STEPUP).await.status(), 200);
    let (status, body) = status_and_json(
        app.get_equals_token(
            Some(&key),
            CARD_STEPUP,
            &format!("accountId=S1&sessionId={sid}&token={code}"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("MFA_SESSION_USED")),
        "a verified session serves one token"
    );
}

#[tokio::test]
async fn five_wrong_codes_lock_the_session() {
    let app = TestApp::spawn().await;
    let key = api_key(STEPUP_KEY);
    let session: Value = app.mfa_session(STEPUP, CAROL, "totp").await;
    let sid = session["session_id"].as_str().unwrap();
    let mut codes = Vec::new();
    for _ in 0..5 {
        let (_, body) = status_and_json(
            app.get_equals_token(
                Some(&key),
                CARD_STEPUP,
                &format!("accountId=S1&sessionId={sid}&token=000000"),
            )
            .await,
        )
        .await;
        codes.push(body["code"].as_str().unwrap().to_string());
    }
    assert_eq!(
        codes,
        [
            "MFA_CODE_INVALID",
            "MFA_CODE_INVALID",
            "MFA_CODE_INVALID",
            "MFA_CODE_INVALID",
            "MFA_SESSION_LOCKED"
        ]
    );
    let code = totp_now(&app);
    let (status, body) = status_and_json(
        app.get_equals_token(
            Some(&key),
            CARD_STEPUP,
            &format!("accountId=S1&sessionId={sid}&token={code}"),
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (403, Some("MFA_SESSION_LOCKED")),
        "even the right code is refused now"
    );
}

#[tokio::test]
async fn a_head_request_mints_nothing() {
    let app = TestApp::spawn().await;
    let before = app.audit_events().await.len();
    let res = app
        .http
        .head(app.url(&format!(
            "/equals/v2/cards/{CARD}/access-token?accountId=F50091"
        )))
        .header("Authorization", api_key(BACKEND_KEY))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(
        app.audit_events().await.len(),
        before,
        "no token was minted or audited"
    );
}
