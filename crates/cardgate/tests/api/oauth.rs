//! Native OAuth2: token, introspection, revocation, metadata, JWKS, environments.

use crate::helpers::*;
use cardgate_core::Environment;
use serde_json::{json, Value};

fn b64(s: &str) -> Vec<u8> {
    data_encoding::BASE64URL_NOPAD.decode(s.as_bytes()).unwrap()
}

/// Verifies an ES256 JWT against the server's JWKS with ring, returning (header, claims).
async fn verify_with_jwks(app: &TestApp, token: &str) -> (Value, Value) {
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    let header: Value = serde_json::from_slice(&b64(parts[0])).unwrap();
    let claims: Value = serde_json::from_slice(&b64(parts[1])).unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid is published");
    let mut point = vec![4u8];
    point.extend(b64(key["x"].as_str().unwrap()));
    point.extend(b64(key["y"].as_str().unwrap()));
    let pk =
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, point);
    pk.verify(
        format!("{}.{}", parts[0], parts[1]).as_bytes(),
        &b64(parts[2]),
    )
    .expect("signature verifies with the JWKS key");
    (header, claims)
}

#[tokio::test]
async fn a_client_gets_an_rfc9068_jwt_that_verifies_against_the_jwks() {
    let app = TestApp::spawn().await;
    let res = app
        .post_token(BACKEND, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["scope"], "cards:read:any cards:widgets");
    let (header, claims) = verify_with_jwks(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    for claim in ["iss", "sub", "aud", "client_id", "iat", "exp", "jti"] {
        assert!(
            claims.get(claim).is_some(),
            "RFC 9068 claim {claim} is present"
        );
    }
    assert_eq!(claims["client_id"], BACKEND.0);
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        900
    );
}

#[tokio::test]
async fn client_secret_post_works_but_two_authentication_methods_are_refused() {
    let app = TestApp::spawn().await;
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", BACKEND.0),
        ("client_secret", BACKEND.1),
    ];
    let res = app
        .http
        .post(app.url("/oauth2/token"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app.post_token(BACKEND, &form).await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request"))
    );
}

#[tokio::test]
async fn a_requested_scope_must_be_one_the_client_holds() {
    let app = TestApp::spawn().await;
    let res = app
        .post_token(
            BACKEND,
            &[
                ("grant_type", "client_credentials"),
                ("scope", "cards:widgets"),
            ],
        )
        .await;
    assert_eq!(res.json::<Value>().await.unwrap()["scope"], "cards:widgets");
    let res = app
        .post_token(
            BACKEND,
            &[("grant_type", "client_credentials"), ("scope", "sdk:token")],
        )
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

#[tokio::test]
async fn opaque_and_jwt_tokens_introspect_active_until_revoked() {
    let app = TestApp::spawn().await;
    for client in [BACKEND, OPAQUE] {
        let token = app.access_token(client).await;
        assert_eq!(
            token.starts_with("cgat_"),
            client == OPAQUE,
            "the client's format is used"
        );
        let info = app.introspect(client, &token).await;
        assert_eq!(info["active"], true);
        assert_eq!(info["client_id"], client.0);
        assert!(info["exp"].as_i64().unwrap() > info["iat"].as_i64().unwrap());
        let res = app.revoke(client, &token).await;
        assert_eq!(res.status(), 200);
        assert_eq!(
            app.introspect(client, &token).await,
            json!({"active": false})
        );
        // A revoked token no longer authenticates the card API either.
        let res = app
            .http
            .post(app.url(&format!("/v1/cards/{CARD}/tokens")))
            .bearer_auth(&token)
            .json(&json!({"operations": ["VIEW_CARD"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
}

#[tokio::test]
async fn a_revocation_on_one_replica_reaches_the_other() {
    let app = TestApp::spawn().await;
    let other = app.replica(Environment::Sandbox).await;
    let token = app.access_token(BACKEND).await;
    assert_eq!(other.introspect(BACKEND, &token).await["active"], true);
    assert_eq!(app.revoke(BACKEND, &token).await.status(), 200);
    let mut inactive = false;
    for _ in 0..50 {
        if other.introspect(BACKEND, &token).await["active"] == false {
            inactive = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(inactive, "the other replica learns of the revocation");
}

#[tokio::test]
async fn another_tenant_cannot_introspect_or_revoke_a_token() {
    let app = TestApp::spawn().await;
    let token = app.access_token(BACKEND).await;
    assert_eq!(
        app.introspect(OTHER, &token).await,
        json!({"active": false})
    );
    assert_eq!(app.revoke(OTHER, &token).await.status(), 200);
    assert_eq!(
        app.introspect(BACKEND, &token).await["active"],
        true,
        "a foreign revocation does nothing"
    );
}

#[tokio::test]
async fn an_expired_token_is_inactive() {
    let app = TestApp::spawn().await;
    let jwt = app.access_token(BACKEND).await;
    let opaque = app.access_token(OPAQUE).await;
    app.svc.clock.advance(std::time::Duration::from_secs(901));
    assert_eq!(app.introspect(BACKEND, &jwt).await["active"], false);
    assert_eq!(app.introspect(OPAQUE, &opaque).await["active"], false);
}

#[tokio::test]
async fn after_key_rotation_old_tokens_stay_valid_and_both_keys_are_published() {
    let app = TestApp::spawn().await;
    let before = app.access_token(BACKEND).await;
    let old_kid = verify_with_jwks(&app, &before).await.0["kid"].clone();
    app.svc.admin().rotate_signing_key("test").await.unwrap();
    let after = app.access_token(BACKEND).await;
    let new_kid = verify_with_jwks(&app, &after).await.0["kid"].clone();
    assert_ne!(old_kid, new_kid);
    assert_eq!(app.introspect(BACKEND, &before).await["active"], true);
    verify_with_jwks(&app, &before).await;
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
    // Once every token of the old key has expired, the key leaves the JWKS.
    app.svc.clock.advance(std::time::Duration::from_secs(3601));
    app.svc.reload().await.unwrap();
    let jwks: Value = app
        .http
        .get(app.url("/.well-known/jwks.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
    assert_eq!(jwks["keys"][0]["kid"], new_kid);
}

#[tokio::test]
async fn an_instance_accepts_no_credential_or_token_of_another_environment() {
    let app = TestApp::spawn().await;
    let res = app
        .post_token(PROD, &[("grant_type", "client_credentials")])
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let production = app.replica(Environment::Production).await;
    let token = production.access_token(PROD).await;
    let sandbox_token = app.access_token(BACKEND).await;
    assert_eq!(
        production.introspect(PROD, &sandbox_token).await["active"],
        false
    );
    let res = production
        .post_token(BACKEND, &[("grant_type", "client_credentials")])
        .await;
    assert_eq!(
        res.status(),
        401,
        "a sandbox credential is refused by production"
    );
    let res = app
        .http
        .post(app.url("/oauth2/introspect"))
        .basic_auth(BACKEND.0, Some(BACKEND.1))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.json::<Value>().await.unwrap()["active"],
        false,
        "a production token is inactive in sandbox"
    );
}

#[tokio::test]
async fn a_disabled_client_is_refused_and_its_tokens_go_inactive() {
    let app = TestApp::spawn().await;
    let token = app.access_token(BACKEND).await;
    app.svc
        .admin()
        .set_client_disabled(&cardgate_core::ClientId::parse(BACKEND.0).unwrap(), true)
        .await
        .unwrap();
    let (status, body) = status_and_json(
        app.post_token(BACKEND, &[("grant_type", "client_credentials")])
            .await,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );
    let res = app
        .http
        .post(app.url("/oauth2/introspect"))
        .basic_auth(OPAQUE.0, Some(OPAQUE.1))
        .form(&[("token", &token)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.json::<Value>().await.unwrap()["active"], false);
}

#[tokio::test]
async fn metadata_names_every_endpoint_and_dpop_algorithms() {
    let app = TestApp::spawn().await;
    let meta: Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["issuer"], app.base);
    assert_eq!(meta["token_endpoint"], app.url("/oauth2/token"));
    assert_eq!(
        meta["introspection_endpoint"],
        app.url("/oauth2/introspect")
    );
    assert_eq!(meta["revocation_endpoint"], app.url("/oauth2/revoke"));
    assert_eq!(meta["jwks_uri"], app.url("/.well-known/jwks.json"));
    assert_eq!(
        meta["dpop_signing_alg_values_supported"],
        serde_json::json!(["ES256", "ES384", "EdDSA", "RS256", "PS256"]),
        "RFC 9449 §5.1"
    );
}

#[tokio::test]
async fn bad_token_requests_get_rfc6749_errors() {
    let app = TestApp::spawn().await;
    let big = "a".repeat(70 * 1024);
    let good = basic(BACKEND.0, BACKEND.1);
    let form = "application/x-www-form-urlencoded";
    let cases: Vec<(&str, Option<String>, Option<&str>, String, u16, &str)> = vec![
        (
            "no Content-Type",
            Some(good.clone()),
            None,
            "grant_type=client_credentials".into(),
            400,
            "invalid_request",
        ),
        (
            "JSON body",
            Some(good.clone()),
            Some("application/json"),
            r#"{"grant_type":"client_credentials"}"#.into(),
            400,
            "invalid_request",
        ),
        (
            "no grant_type",
            Some(good.clone()),
            Some(form),
            "scope=cards:read:any".into(),
            400,
            "invalid_request",
        ),
        (
            "password grant",
            Some(good.clone()),
            Some(form),
            "grant_type=password".into(),
            400,
            "unsupported_grant_type",
        ),
        (
            "repeated parameter",
            Some(good.clone()),
            Some(form),
            "grant_type=client_credentials&grant_type=client_credentials".into(),
            400,
            "invalid_request",
        ),
        (
            "malformed scope",
            Some(good.clone()),
            Some(form),
            "grant_type=client_credentials&scope=a%22b".into(),
            400,
            "invalid_scope",
        ),
        (
            "no credentials",
            None,
            Some(form),
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        // RFC 6749 §5.2: the client tried the Authorization header, and it does not parse.
        (
            "Basic not base64",
            Some("Basic !!!".into()),
            Some(form),
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        (
            "Basic without colon",
            Some(format!(
                "Basic {}",
                data_encoding::BASE64.encode(b"nocolon")
            )),
            Some(form),
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        (
            "unknown client",
            Some(basic("nobody", BACKEND.1)),
            Some(form),
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        (
            "wrong secret",
            Some(basic(BACKEND.0, "wrong-secret-wrong-secret-wrong-secret")),
            Some(form),
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        (
            "public client",
            None,
            Some(form),
            format!("grant_type=client_credentials&client_id={}", BACKEND.0),
            401,
            "invalid_client",
        ),
        (
            "a scheme the token endpoint does not take",
            Some("Bearer abc".into()),
            Some(form),
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        (
            // An unsupported authentication method (RFC 6749 §5.2).
            "unknown scheme",
            Some("Digest abc def".into()),
            Some(form),
            "grant_type=client_credentials".into(),
            401,
            "invalid_client",
        ),
        (
            "body over 64 KiB",
            Some(good.clone()),
            Some(form),
            format!("grant_type=client_credentials&pad={big}"),
            413,
            "invalid_request",
        ),
    ];
    for (name, auth, ct, body, status, error) in cases {
        let mut req = app.http.post(app.url("/oauth2/token")).body(body);
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        if let Some(c) = ct {
            req = req.header("Content-Type", c);
        }
        let res = req.send().await.unwrap();
        let www = res.headers().get("www-authenticate").is_some();
        let (got, body) = status_and_json(res).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(error)),
            "{name}: {body}"
        );
        assert!(
            body["error_description"].is_string(),
            "{name}: has a description"
        );
        if got == 401 {
            assert!(www, "{name}: 401 carries WWW-Authenticate");
        }
    }
    for (path, form) in [("/oauth2/introspect", "token="), ("/oauth2/revoke", "")] {
        let res = app
            .http
            .post(app.url(path))
            .header("Authorization", &good)
            .header("Content-Type", form_ct())
            .body(form)
            .send()
            .await
            .unwrap();
        let (got, body) = status_and_json(res).await;
        assert_eq!(
            (got, body["error"].as_str()),
            (400, Some("invalid_request")),
            "{path} without a token"
        );
    }
}

fn form_ct() -> &'static str {
    "application/x-www-form-urlencoded"
}

#[tokio::test]
async fn refusals_and_issuance_are_audited_without_secrets() {
    let app = TestApp::spawn().await;
    let token = app.access_token(BACKEND).await;
    app.post_token(
        (BACKEND.0, "wrong-secret-wrong-secret-wrong-secret"),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let events = app.audit_events().await;
    assert!(events.iter().any(|e| e.action == "access_token.issued"
        && e.outcome == "ok"
        && e.actor == format!("client:{}", BACKEND.0)));
    assert!(events
        .iter()
        .any(|e| e.action == "access_token.issue" && e.outcome == "invalid_client"));
    let all = format!("{events:?}");
    let mut needles = fixture_secrets();
    needles.push(&token);
    needles.push("wrong-secret-wrong-secret");
    assert_absent(all.as_bytes(), &needles, "the audit log");
}

/// Every kind of token `client` holds: a JWT or opaque access token, a native card token and
/// (with an API key) an Equals card token.
#[tokio::test]
async fn a_disabled_clients_tokens_of_every_kind_stop_working_on_every_replica() {
    let app = TestApp::spawn().await;
    let other = app.replica(Environment::Sandbox).await;
    let jwt = app.access_token(BACKEND).await;
    let opaque = app.access_token(OPAQUE).await;
    let card = app
        .card_token(
            BACKEND,
            CARD,
            json!({"operations": ["VIEW_CARD"], "single_use": false}),
        )
        .await;
    let res = app
        .get_equals_token(
            Some(&format!("ApiKey {BACKEND_KEY}")),
            CARD,
            "accountId=F50091",
        )
        .await;
    let equals = res.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let widgets = (
        "acme-widgets",
        "acme-widgets-secret-0123456789abcdefghijklm",
    );
    for replica in [&app, &other] {
        assert_eq!(replica.get_details(&card, CARD).await.status(), 200);
        for t in [&jwt, &opaque, &card, &equals] {
            assert_eq!(replica.introspect(widgets, t).await["active"], true);
        }
    }
    for id in [BACKEND.0, OPAQUE.0] {
        app.svc
            .admin()
            .set_client_disabled(&cardgate_core::ClientId::parse(id).unwrap(), true)
            .await
            .unwrap();
    }
    // Refused at once here, and on the other replica within its refresh interval.
    for replica in [&app, &other] {
        let mut all_inactive = false;
        for _ in 0..50 {
            let mut active = 0;
            for t in [&jwt, &opaque, &card, &equals] {
                if replica.introspect(widgets, t).await["active"] == true {
                    active += 1;
                }
            }
            if active == 0 {
                all_inactive = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(all_inactive, "every token introspects inactive");
        for (t, card_id) in [(&card, CARD), (&equals, CARD)] {
            let (status, body) = status_and_json(replica.get_details(t, card_id).await).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (401, Some("invalid_token")),
                "a disabled client's card token reveals nothing"
            );
        }
        for t in [&jwt, &opaque] {
            let res = replica
                .http
                .post(replica.url(&format!("/v1/cards/{CARD}/tokens")))
                .bearer_auth(t)
                .json(&json!({"operations": ["VIEW_CARD"]}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 401, "a disabled client's access token");
        }
    }
    // Enabling the client again does not revive what it held while disabled.
    app.svc
        .admin()
        .set_client_disabled(&cardgate_core::ClientId::parse(BACKEND.0).unwrap(), false)
        .await
        .unwrap();
    assert_eq!(app.get_details(&card, CARD).await.status(), 401);
    assert_eq!(app.introspect(widgets, &jwt).await["active"], false);
    let fresh = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    assert_eq!(app.get_details(&fresh, CARD).await.status(), 200);
}

/// A replica learns of `client disable` within its refresh interval; until then it still
/// authenticates the client and mints for it. What the client minted after the disable must
/// stay refused when the client is enabled again, like everything it held before: a leaked
/// credential hammering the mint endpoint gets tokens in that window.
#[tokio::test]
async fn tokens_a_replica_minted_after_the_disable_stay_refused_after_enable() {
    let app = TestApp::spawn().await;
    let other = app.replica(Environment::Sandbox).await;
    let backend = cardgate_core::ClientId::parse(BACKEND.0).unwrap();
    let mut minted_after_disable = Vec::new();
    for _ in 0..3 {
        app.svc
            .admin()
            .set_client_disabled(&backend, true)
            .await
            .unwrap();
        // Right after the disable committed: the other replica may not have reloaded yet.
        let res = other
            .post_card_token(
                BACKEND,
                CARD,
                json!({"operations": ["VIEW_CARD"], "single_use": false}),
            )
            .await;
        if res.status() == 201 {
            let v: Value = res.json().await.unwrap();
            minted_after_disable.push(v["token"].as_str().unwrap().to_string());
        }
        app.svc
            .admin()
            .set_client_disabled(&backend, false)
            .await
            .unwrap();
    }
    for token in &minted_after_disable {
        let (status, body) = status_and_json(app.get_details(token, CARD).await).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("invalid_token")),
            "a card token minted after `client disable` ({} of them) works again after `client enable`",
            minted_after_disable.len()
        );
    }
}
