//! The Fiserv dialect (seed `fiserv-oauth-token.md`, SPEC §4.3).

use crate::helpers::*;
use serde_json::{json, Value};

const FORM: &str = "application/x-www-form-urlencoded";

#[tokio::test]
async fn a_fiserv_client_gets_a_token_in_the_seeds_shape() {
    let app = TestApp::spawn().await;
    let auth = basic(BACKEND.0, BACKEND.1);
    let before = app.svc.now_ms();
    let res = app
        .post_fiserv_token(
            "cards:read:any",
            &[
                ("Authorization", &auth),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(res.status(), 200);
    let iid = res.headers()["x-fapi-interaction-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        uuid::Uuid::try_parse(&iid).is_ok(),
        "a generated interaction id is a UUID"
    );
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["api_key"], BACKEND.0);
    assert_eq!(body["expires_in"], "900", "seconds, as a string");
    let issued: i64 = body["issued_at"].as_str().unwrap().parse().unwrap();
    assert!(
        issued >= before && issued < before + 60_000,
        "issued_at is epoch milliseconds"
    );
    // The token authenticates the native API, with the scope that was asked for.
    let at = body["access_token"].as_str().unwrap();
    let res = app
        .http
        .post(app.url(&format!("/v1/cards/{CARD}/tokens")))
        .bearer_auth(at)
        .json(&json!({"operations": ["VIEW_CARD"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = app
        .http
        .post(app.url(&format!("/v1/cards/{CARD}/tokens")))
        .bearer_auth(at)
        .json(&json!({"operations": ["SET_PIN"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        403,
        "cards:widgets was not granted to this token"
    );
    assert_eq!(app.introspect(BACKEND, at).await["scope"], "cards:read:any");
}

#[tokio::test]
async fn a_json_body_and_an_echoed_interaction_id_work() {
    let app = TestApp::spawn().await;
    let auth = basic(BACKEND.0, BACKEND.1);
    let res = app
        .post_fiserv_token(
            "cards:read:any",
            &[
                ("Authorization", &auth),
                ("Content-Type", "application/json; charset=utf-8"),
                ("x-fapi-financial-id", ACME_FI),
                ("x-fapi-interaction-id", "abc-123"),
            ],
            r#"{"grant_type":"client_credentials"}"#,
        )
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-fapi-interaction-id"], "abc-123");
}

#[tokio::test]
async fn bad_fiserv_requests_get_their_status_and_always_the_interaction_id() {
    let app = TestApp::spawn().await;
    let good = basic(BACKEND.0, BACKEND.1);
    let bad_secret = basic(BACKEND.0, "wrong-secret-wrong-secret-wrong-secret");
    let other_fi = "87654321";
    let cases: Vec<(&str, &str, Vec<(&str, &str)>, &'static str, u16, &str)> = vec![
        (
            "wrong Content-Type",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", "text/plain"),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=client_credentials",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "no Content-Type",
            "cards:read:any",
            vec![("Authorization", &good), ("x-fapi-financial-id", ACME_FI)],
            "grant_type=client_credentials",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "no financial id",
            "cards:read:any",
            vec![("Authorization", &good), ("Content-Type", FORM)],
            "grant_type=client_credentials",
            400,
            "BAD_REQUEST",
        ),
        (
            "financial id sent twice",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
                ("x-fapi-financial-id", other_fi),
            ],
            "grant_type=client_credentials",
            400,
            "BAD_REQUEST",
        ),
        (
            "interaction id sent twice",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
                ("x-fapi-interaction-id", "one"),
                ("x-fapi-interaction-id", "two"),
            ],
            "grant_type=client_credentials",
            400,
            "BAD_REQUEST",
        ),
        (
            "financial id of 7 digits",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", "1234567"),
            ],
            "grant_type=client_credentials",
            400,
            "BAD_REQUEST",
        ),
        (
            "financial id with letters",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", "1234567a"),
            ],
            "grant_type=client_credentials",
            400,
            "BAD_REQUEST",
        ),
        (
            "another tenant's financial id",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", other_fi),
            ],
            "grant_type=client_credentials",
            401,
            "UNAUTHORIZED",
        ),
        (
            "no Authorization",
            "cards:read:any",
            vec![("Content-Type", FORM), ("x-fapi-financial-id", ACME_FI)],
            "grant_type=client_credentials",
            401,
            "UNAUTHORIZED",
        ),
        (
            "Bearer instead of Basic",
            "cards:read:any",
            vec![
                ("Authorization", "Bearer abc"),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=client_credentials",
            401,
            "UNAUTHORIZED",
        ),
        (
            "wrong secret",
            "cards:read:any",
            vec![
                ("Authorization", &bad_secret),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=client_credentials",
            401,
            "UNAUTHORIZED",
        ),
        (
            "no scope",
            "",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=client_credentials",
            400,
            "BAD_REQUEST",
        ),
        (
            "scope not allowed",
            "sdk:token",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=client_credentials",
            400,
            "INVALID_SCOPE",
        ),
        (
            "password grant",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=password",
            400,
            "UNSUPPORTED_GRANT_TYPE",
        ),
        (
            "JSON that is not JSON",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", "application/json"),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "{grant_type",
            400,
            "BAD_REQUEST",
        ),
        (
            "bad interaction id",
            "cards:read:any",
            vec![
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
                ("x-fapi-interaction-id", "has space"),
            ],
            "grant_type=client_credentials",
            400,
            "BAD_REQUEST",
        ),
    ];
    for (name, scope, headers, body, status, code) in cases {
        let res = app.post_fiserv_token(scope, &headers, body).await;
        assert!(
            res.headers().contains_key("x-fapi-interaction-id"),
            "{name}: interaction id on errors too"
        );
        let (got, json) = status_and_json(res).await;
        assert_eq!(
            (got, json["code"].as_str()),
            (status, Some(code)),
            "{name}: {json}"
        );
        assert!(
            json["message"].is_string() && json["interactionId"].is_string(),
            "{name}: {json}"
        );
    }
    let res = app
        .http
        .get(app.url("/fiserv/cs/oauth2/v1/token"))
        .header("x-fapi-interaction-id", "i-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-fapi-interaction-id"], "i-1");
    assert_eq!(res.status(), 405);
    let res = app
        .http
        .post(app.url("/fiserv/cs/oauth2/v1/nothing"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("x-fapi-interaction-id"));
    assert_eq!(status_and_json(res).await.1["code"], "NOT_FOUND");
}

#[tokio::test]
async fn the_per_client_rate_limit_answers_429_with_retry_after() {
    let app = TestApp::spawn().await;
    let auth = basic(SLOW.0, SLOW.1);
    let headers = [
        ("Authorization", auth.as_str()),
        ("Content-Type", FORM),
        ("x-fapi-financial-id", "11112222"),
    ];
    for _ in 0..2 {
        assert_eq!(
            app.post_fiserv_token("cards:read:any", &headers, "grant_type=client_credentials")
                .await
                .status(),
            200
        );
    }
    let res = app
        .post_fiserv_token("cards:read:any", &headers, "grant_type=client_credentials")
        .await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=60).contains(&retry),
        "Retry-After is a number of seconds: {retry}"
    );
    assert!(res.headers().contains_key("x-fapi-interaction-id"));
    // The tenant's rate is per client: another tenant's client is unaffected, and the
    // bucket refills with time.
    let good = basic(BACKEND.0, BACKEND.1);
    let ok = app
        .post_fiserv_token(
            "cards:read:any",
            &[
                ("Authorization", &good),
                ("Content-Type", FORM),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=client_credentials",
        )
        .await;
    assert_eq!(ok.status(), 200);
    app.svc.clock.advance(std::time::Duration::from_secs(retry));
    assert_eq!(
        app.post_fiserv_token("cards:read:any", &headers, "grant_type=client_credentials")
            .await
            .status(),
        200
    );
}
