//! MFA step-up sessions: TOTP and webhook-delivered codes (SMS, email).

use crate::helpers::*;
use axum::body::Bytes;
use axum::http::HeaderMap;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A webhook receiver on a port-0 listener; records (signature header, body).
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<(String, Vec<u8>)>>>,
}

async fn receiver(fail_first: usize) -> Receiver {
    let got: Arc<Mutex<Vec<(String, Vec<u8>)>>> = Arc::default();
    let calls = Arc::new(Mutex::new(0usize));
    let state = (got.clone(), calls);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let (got, calls) = state.clone();
            async move {
                let mut n = calls.lock().unwrap();
                *n += 1;
                if *n <= fail_first {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                let sig = headers
                    .get("x-cardgate-signature")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                got.lock().unwrap().push((sig, body.to_vec()));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, got }
}

/// Waits (bounded) for the receiver to hold `n` deliveries.
async fn deliveries(r: &Receiver, n: usize) -> Vec<(String, Vec<u8>)> {
    for _ in 0..100 {
        if r.got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    r.got.lock().unwrap().clone()
}

fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    data_encoding::HEXLOWER.encode(ring::hmac::sign(&k, body).as_ref())
}

#[tokio::test]
async fn an_sms_code_arrives_signed_at_the_webhook_and_serves_one_token() {
    let hook = receiver(0).await;
    let app = TestApp::spawn_with_webhook(&hook.url).await;
    let res = app.post_mfa_session(STEPUP, CAROL, "sms").await;
    assert_eq!(res.status(), 201);
    let session: Value = res.json().await.unwrap();
    let sid = session["session_id"].as_str().unwrap();
    assert!(session["expires_at"].as_str().unwrap().ends_with('Z'));
    let got = deliveries(&hook, 1).await;
    assert_eq!(got.len(), 1);
    let (sig, body) = &got[0];
    assert_eq!(
        sig,
        &format!("sha256={}", hmac_hex(WEBHOOK_SECRET.as_bytes(), body)),
        "HMAC-SHA256 over the exact body"
    );
    let msg: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        (
            msg["type"].as_str(),
            msg["channel"].as_str(),
            msg["destination"].as_str()
        ),
        (Some("mfa.code"), Some("sms"), Some("+15550100"))
    );
    let code = msg["code"].as_str().unwrap();
    assert_eq!(code.len(), 6);

    let mint = |code: &str| {
        app.post_card_token(
            STEPUP,
            CARD_STEPUP,
            json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": sid, "code": code}}),
        )
    };
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, body) = status_and_json(mint(wrong).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("mfa_invalid_code"))
    );
    let token = app
        .card_token(
            STEPUP,
            CARD_STEPUP,
            json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": sid, "code": code}}),
        )
        .await;
    assert_eq!(app.get_details(&token, CARD_STEPUP).await.status(), 200);
    let (status, body) = status_and_json(mint(code).await).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("mfa_used")));
    // The code is stored only as an HMAC, never in clear; and it never reaches the logs.
    assert_absent(
        &app.database_bytes(),
        &[&format!("\"{code}\"")],
        "the database file",
    );
    assert_absent(
        logs().as_bytes(),
        &[&format!("\"code\":\"{code}\"")],
        "the log",
    );
}

#[tokio::test]
async fn webhook_delivery_is_retried_until_it_succeeds() {
    let hook = receiver(2).await;
    let app = TestApp::spawn_with_webhook(&hook.url).await;
    assert_eq!(
        app.post_mfa_session(STEPUP, CAROL, "email").await.status(),
        201
    );
    let got = deliveries(&hook, 1).await;
    assert_eq!(got.len(), 1, "delivered on the third attempt");
    let msg: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(msg["destination"], "carol@example.com");
}

#[tokio::test]
async fn a_session_expires_after_five_minutes() {
    let app = TestApp::spawn().await;
    let session: Value = app.mfa_session(STEPUP, CAROL, "totp").await;
    app.svc.clock.advance(std::time::Duration::from_secs(301));
    let code = totp_now(&app);
    let res = app.post_card_token(STEPUP, CARD_STEPUP, json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session["session_id"], "code": code}})).await;
    let (status, body) = status_and_json(res).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("mfa_expired")));
}

#[tokio::test]
async fn a_session_of_another_cardholder_does_not_step_up_this_card() {
    let app = TestApp::spawn().await;
    // Ada is in tenant acme; a session for her cannot be used by the stepup tenant.
    let session: Value = app.mfa_session(BACKEND, ADA, "totp").await;
    let code = totp_now(&app);
    let res = app.post_card_token(STEPUP, CARD_STEPUP, json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session["session_id"], "code": code}})).await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("mfa_invalid_session"))
    );
}

#[tokio::test]
async fn a_client_that_may_not_have_the_token_cannot_test_codes_or_lock_the_session() {
    let app = TestApp::spawn().await;
    let session: Value = app.mfa_session(BACKEND, ADA, "totp").await;
    let widgets = (
        "acme-widgets",
        "acme-widgets-secret-0123456789abcdefghijklm",
    );
    // More wrong codes than lock a session, from a client without the scope for the operation
    // (widgets cannot add to a wallet), and from an own-key client on another cardholder's
    // card: each is refused for what it is, before its code is looked at.
    for (client, card, op, error) in [
        (widgets, CARD, "ADD_CARD_TO_WALLET", "insufficient_scope"),
        (OWN, CARD_BOB, "VIEW_CARD", "access_denied"),
    ] {
        for code in ["000000", "111111", "222222", "333333", "444444", "555555"] {
            let res = app
                .post_card_token(
                    client,
                    card,
                    json!({"operations": [op], "mfa": {"session_id": session["session_id"], "code": code}}),
                )
                .await;
            let (status, body) = status_and_json(res).await;
            assert_eq!(
                (status, body["error"].as_str()),
                (403, Some(error)),
                "{}: {body}",
                client.0
            );
        }
    }
    // The session counted none of them: the right code still steps up the rightful client.
    let code = totp_now(&app);
    let res = app
        .post_card_token(
            BACKEND,
            CARD,
            json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session["session_id"], "code": code}}),
        )
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn bad_mfa_session_requests_are_refused() {
    let app = TestApp::spawn().await;
    let cases: Vec<((&str, &str), &str, Value, u16, &str)> = vec![
        (
            STEPUP,
            CAROL,
            json!({"channel": "pigeon"}),
            400,
            "invalid_request",
        ),
        (
            STEPUP,
            CAROL,
            json!({"channel": "sms"}),
            409,
            "unavailable_channel",
        ), // no webhook configured: the tenant's configuration, not the client's request
        (
            BACKEND,
            BOB,
            json!({"channel": "totp"}),
            400,
            "invalid_request",
        ), // Bob has no authenticator
        (
            BACKEND,
            BOB,
            json!({"channel": "email"}),
            400,
            "invalid_request",
        ), // nor an email address
        (
            BACKEND,
            "not-a-uuid",
            json!({"channel": "totp"}),
            400,
            "invalid_request",
        ),
        (BACKEND, CAROL, json!({"channel": "totp"}), 404, "not_found"), // another tenant's person
        (OWN, BOB, json!({"channel": "totp"}), 404, "not_found"),       // not the own-key's person
        (BACKEND, ADA, json!({}), 400, "invalid_request"),
    ];
    for (client, person, body, status, error) in cases {
        let res = app
            .http
            .post(app.url(&format!("/v1/persons/{person}/mfa/sessions")))
            .basic_auth(client.0, Some(client.1))
            .json(&body)
            .send()
            .await
            .unwrap();
        let (got, json) = status_and_json(res).await;
        assert_eq!(
            (got, json["error"].as_str()),
            (status, Some(error)),
            "{} {person} {body}: {json}",
            client.0
        );
    }
}

// ---- online guessing (issue: MFA step-up cannot be brute-forced) -----------------------

/// Six-digit codes that are not Carol's TOTP code at any step the server accepts now.
fn wrong_totp_codes(app: &TestApp, n: usize) -> Vec<String> {
    let now = app.svc.now_ms();
    let right: Vec<String> = [-30_000, 0, 30_000]
        .iter()
        .map(|d| cardgate_core::mfa::totp_at(TOTP_KEY, now + d))
        .collect();
    (0..)
        .map(|i| format!("{:06}", 100_000 + i * 7))
        .filter(|c| !right.contains(c))
        .take(n)
        .collect()
}

/// Mints on the stepup card with each of `codes` against session `sid`, all at once, spread
/// over `apps` (replicas of one database): each answer's status and JSON.
async fn burst(apps: &[&TestApp], sid: &str, codes: &[String]) -> Vec<(u16, Value)> {
    let calls = codes.iter().enumerate().map(|(i, code)| {
        let app = apps[i % apps.len()];
        async move {
            status_and_json(
                app.post_card_token(
                    STEPUP,
                    CARD_STEPUP,
                    json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": sid, "code": code}}),
                )
                .await,
            )
            .await
        }
    });
    futures::future::join_all(calls).await
}

/// How many codes the session has checked, as the database counts them.
pub async fn attempts_of(app: &TestApp, sid: &str) -> i64 {
    let id = cardgate_core::ids::MfaSessionId::parse(sid).unwrap();
    app.svc
        .store
        .get_mfa_session(&id, app.svc.env())
        .await
        .unwrap()
        .unwrap()
        .attempts
}

/// A burst of wrong codes on one session checks at most five of them, whatever the
/// concurrency: the database counts five attempts and the rest are refused unseen.
pub async fn a_burst_of_wrong_codes_checks_at_most_five(apps: &[&TestApp]) {
    let app = apps[0];
    let session = app.mfa_session(STEPUP, CAROL, "totp").await;
    let sid = session["session_id"].as_str().unwrap();
    let codes = wrong_totp_codes(app, 120);
    let results = burst(apps, sid, &codes).await;
    assert_eq!(attempts_of(app, sid).await, 5, "attempts counted");
    let checked = results
        .iter()
        .filter(|(_, b)| b["error"] == "mfa_invalid_code")
        .count();
    assert!(checked <= 5, "{checked} codes were reported wrong");
    for (status, body) in &results {
        assert_eq!(status, &403, "{body}");
        assert!(
            ["mfa_invalid_code", "mfa_locked"].contains(&body["error"].as_str().unwrap()),
            "{body}"
        );
    }
    let verified: usize = app
        .audit_events()
        .await
        .iter()
        .filter(|e| e.action == "mfa.verify" && e.outcome.starts_with("wrong_code"))
        .count();
    assert_eq!(verified, 5, "the audit log records five checked codes");
}

/// The right code inside a burst of wrong ones either steps up or gets exactly the answer a
/// wrong code gets in the same state: never one that tells it apart.
pub async fn the_right_code_in_a_burst_is_not_told_apart(apps: &[&TestApp]) {
    let app = apps[0];
    let session = app.mfa_session(STEPUP, CAROL, "totp").await;
    let sid = session["session_id"].as_str().unwrap();
    let mut codes = wrong_totp_codes(app, 40);
    let right = totp_now(app);
    codes.push(right.clone());
    let results = burst(apps, sid, &codes).await;
    let (status, body) = results.last().unwrap().clone();
    assert!(attempts_of(app, sid).await <= 5);
    if status != 201 {
        let others: Vec<&str> = results[..results.len() - 1]
            .iter()
            .filter_map(|(_, b)| b["error"].as_str())
            .collect();
        // Locked: the session (or, after earlier rounds, the cardholder) checks no more codes.
        let error = body["error"].as_str().unwrap();
        assert!(["mfa_locked", "mfa_locked_out"].contains(&error), "{body}");
        assert!(others.contains(&error), "wrong codes got {others:?}");
    }
}

#[tokio::test]
async fn a_burst_of_wrong_codes_on_one_session_checks_at_most_five() {
    let app = TestApp::spawn().await;
    a_burst_of_wrong_codes_checks_at_most_five(&[&app]).await;
}

#[tokio::test]
async fn the_right_code_losing_a_race_gets_the_answer_a_wrong_code_gets() {
    let app = TestApp::spawn().await;
    for _ in 0..3 {
        the_right_code_in_a_burst_is_not_told_apart(&[&app]).await;
        // A new TOTP step for the next round (a code is accepted once per person).
        app.svc.clock.advance(std::time::Duration::from_secs(30));
    }
}

#[tokio::test]
async fn a_totp_code_is_accepted_once_per_person_whatever_the_session() {
    let app = TestApp::spawn().await;
    let mint = |sid: String, code: String| {
        let app = &app;
        async move {
            status_and_json(
                app.post_card_token(
                    STEPUP,
                    CARD_STEPUP,
                    json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": sid, "code": code}}),
                )
                .await,
            )
            .await
        }
    };
    let first = app.mfa_session(STEPUP, CAROL, "totp").await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = app.mfa_session(STEPUP, CAROL, "totp").await["session_id"]
        .as_str()
        .unwrap()
        .to_string();
    let code = totp_now(&app);
    assert_eq!(mint(first, code.clone()).await.0, 201);
    let (status, body) = mint(second.clone(), code.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("mfa_invalid_code")),
        "the same code on a second session (RFC 6238 §5.2)"
    );
    assert_eq!(
        attempts_of(&app, &second).await,
        1,
        "and it counts an attempt"
    );
    // The next time step's code is a new code.
    app.svc.clock.advance(std::time::Duration::from_secs(30));
    let (status, body) = mint(second, totp_now(&app)).await;
    assert_eq!(status, 201, "{body}");
}

/// Wrong codes across `sessions` sessions of Carol, `per` each.
async fn fail_on_sessions(app: &TestApp, sessions: usize, per: usize) {
    for _ in 0..sessions {
        let session = app.mfa_session(STEPUP, CAROL, "totp").await;
        for code in wrong_totp_codes(app, per) {
            let res = app
                .post_card_token(
                    STEPUP,
                    CARD_STEPUP,
                    json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session["session_id"], "code": code}}),
                )
                .await;
            assert_eq!(res.status(), 403);
        }
    }
}

#[tokio::test]
async fn repeated_failures_across_sessions_lock_the_cardholder_out_for_a_while() {
    let app = TestApp::spawn().await;
    // Ten wrong codes over two sessions (the default lockout threshold).
    fail_on_sessions(&app, 2, 5).await;
    let session = app.mfa_session(STEPUP, CAROL, "totp").await;
    let res = app
        .post_card_token(
            STEPUP,
            CARD_STEPUP,
            json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session["session_id"], "code": totp_now(&app)}}),
        )
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("mfa_locked_out")),
        "even the right code on a fresh session: {body}"
    );
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("too many failed"));
    let events = app.audit_events().await;
    assert!(
        events
            .iter()
            .any(|e| e.action == "mfa.person_locked_out" && e.subject == format!("person:{CAROL}")),
        "the lockout is audited"
    );
    assert!(events
        .iter()
        .any(|e| e.action == "mfa.verify" && e.outcome == "person_locked"));
    // After the lockout period (an hour by default) the cardholder steps up again.
    app.svc
        .clock
        .advance(std::time::Duration::from_secs(3600 + 30));
    let session = app.mfa_session(STEPUP, CAROL, "totp").await;
    let res = app
        .post_card_token(
            STEPUP,
            CARD_STEPUP,
            json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session["session_id"], "code": totp_now(&app)}}),
        )
        .await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn the_tenant_sets_the_lockout_numbers() {
    let app = TestApp::spawn().await;
    let mut file = fixture(None);
    let stepup = file["tenants"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|t| t["id"] == "stepup")
        .unwrap();
    stepup["mfa_max_failures"] = json!(3);
    stepup["mfa_lockout_seconds"] = json!(60);
    let plan = cardgate_core::import::parse(file.to_string().as_bytes(), app.svc.now_ms()).unwrap();
    app.svc.importer().import(plan).await.unwrap();
    fail_on_sessions(&app, 1, 3).await;
    let session = app.mfa_session(STEPUP, CAROL, "totp").await;
    let mint = |session: Value| {
        let app = &app;
        async move {
            app.post_card_token(
                STEPUP,
                CARD_STEPUP,
                json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session["session_id"], "code": totp_now(app)}}),
            )
            .await
        }
    };
    let (status, body) = status_and_json(mint(session).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("mfa_locked_out"))
    );
    app.svc.clock.advance(std::time::Duration::from_secs(61));
    let session = app.mfa_session(STEPUP, CAROL, "totp").await;
    assert_eq!(mint(session).await.status(), 201);
}

/// Wrong codes on many sessions of Carol at once, spread over `apps`, lock her out once: the
/// failure that reaches the threshold is audited as one `mfa.person_locked_out` event, not
/// once more for every concurrent request that read the locked state afterwards.
pub async fn a_lockout_reached_by_a_concurrent_burst_is_audited_once(apps: &[&TestApp]) {
    let app = apps[0];
    let mut sids = Vec::new();
    for _ in 0..10 {
        let session = app.mfa_session(STEPUP, CAROL, "totp").await;
        sids.push(session["session_id"].as_str().unwrap().to_string());
    }
    let codes = wrong_totp_codes(app, 50);
    let calls = codes.iter().enumerate().map(|(i, code)| {
        let (app, sid) = (apps[i % apps.len()], &sids[i % sids.len()]);
        async move {
            app.post_card_token(
                STEPUP,
                CARD_STEPUP,
                json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": sid, "code": code}}),
            )
            .await
            .status()
        }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 403), "{statuses:?}");
    let lockouts: Vec<_> = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.action == "mfa.person_locked_out")
        .map(|e| e.details)
        .collect();
    assert_eq!(
        lockouts.len(),
        1,
        "one lockout, audited {} times: {lockouts:?}",
        lockouts.len()
    );
}
