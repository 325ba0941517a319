//! The Treasury Prime dialect (SPEC §4.4): the UX Toolkit access token, a DPoP-bound person
//! token, asked for with a proof built by jwcrypto; the person's front end then uses the card
//! API on that person's own cards — and no one else's — each call with a fresh proof; the
//! tenant's `mfa_required_for` still applies.

use crate::dpop::{send, Prover};
use crate::helpers::*;
use reqwest::{Method, Response};
use serde_json::{json, Value};

const TP: (&str, &str) = ("tp-backend", "tp-backend-secret-0123456789abcdefghijklmn");
const TP_KEY: &str = "tp-backend-apikey-0123456789abcdefghijklmno";
const TP_NOSCOPE: (&str, &str) = ("tp-noscope", "tp-noscope-secret-0123456789abcdefghijklmn");
const PAT: &str = "3c1e7a90-1b2c-4d3e-8f40-5a6b7c8d9e01";
const QUINN: &str = "4d2f8b01-2c3d-4e4f-9a51-6b7c8d9e0f12";
const CARD_PAT: &str = "8e7d6c5b-4a39-4281-9706-f5e4d3c2b1a0";
const CARD_QUINN: &str = "9f8e7d6c-5b4a-4392-8817-a6f5e4d3c2b1";
const PAN_PAT: &str = "4000002500003155";

fn tp_tenant() -> Value {
    json!({"tenants": [{"id": "tp", "name": "Treasury Prime Program", "mfa_required_for": ["GET_PIN"],
        "clients": [
            {"id": TP.0, "secret": TP.1, "api_key": TP_KEY, "scopes": ["persons:uxt"]},
            {"id": TP_NOSCOPE.0, "secret": TP_NOSCOPE.1, "scopes": ["cards:read:any"]}],
        "persons": [{"id": PAT, "first_name": "Pat", "last_name": "Prime"},
                    {"id": QUINN, "first_name": "Quinn", "last_name": "Quay"}],
        "accounts": [{"id": "TP1", "account_number": "5551", "person_ids": [PAT]},
                     {"id": "TP2", "account_number": "5552", "person_ids": [QUINN]}],
        "cards": [
            {"id": CARD_PAT, "account_id": "TP1", "person_id": PAT, "pan": PAN_PAT, "cvv": "321",
             "expiry": "2030-06", "pin": "1357", "status": "ACTIVE", "wallet_eligible": true},
            {"id": CARD_QUINN, "account_id": "TP2", "person_id": QUINN, "pan": "4000000000000002",
             "cvv": "654", "expiry": "2030-07", "status": "ACTIVE"}]}]})
}

async fn spawn() -> TestApp {
    let app = TestApp::spawn().await;
    app.import(&tp_tenant()).await.unwrap();
    app
}

fn uxt_path(person: &str) -> String {
    format!("/treasuryprime/person/{person}/uxt_access_token")
}

/// `POST …/uxt_access_token` with `auth` and `body` (JSON when it is one).
async fn post_uxt(
    app: &TestApp,
    person: &str,
    auth: Option<&str>,
    body: Option<Value>,
) -> Response {
    let mut req = app.http.post(app.url(&uxt_path(person)));
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

/// A UX Toolkit token for PAT bound to `key` (asserts success).
async fn uxt_token(app: &TestApp, prover: &mut Prover, key: &str) -> String {
    let proof = prover.sign(app, key, "POST", &app.url(&uxt_path(PAT)), None);
    let res = post_uxt(
        app,
        PAT,
        Some(&basic(TP.0, TP.1)),
        Some(json!({"dpop": proof})),
    )
    .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_string()
}

/// A card API call with the person token and a fresh proof of `key`.
async fn call(
    app: &TestApp,
    prover: &mut Prover,
    key: &str,
    token: &str,
    method: Method,
    path: &str,
) -> (u16, Value) {
    let proof = prover.sign(app, key, method.as_str(), &app.url(path), Some(token));
    status_and_json(send(app, method, path, &format!("DPoP {token}"), Some(&proof)).await).await
}

#[tokio::test]
async fn a_uxt_token_is_a_dpop_bound_jwt_for_the_person_answered_as_treasury_prime_does() {
    let app = spawn().await;
    let mut prover = Prover::start();
    let (proof, jkt) = prover.proof(json!({"key": "phone", "htm": "POST",
        "htu": app.url(&uxt_path(PAT)), "iat": app.svc.now_ms() / 1000}));
    let res = post_uxt(
        &app,
        PAT,
        Some(&basic(TP.0, TP.1)),
        Some(json!({"dpop": proof})),
    )
    .await;
    assert_eq!(res.headers()["cache-control"], "no-store");
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");
    assert_eq!(
        (body["expires_in"].as_u64(), body["token_type"].as_str()),
        (Some(3600), Some("DPoP"))
    );
    let token = body["access_token"].as_str().unwrap();
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(payload.as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (claims["sub"].as_str(), claims["cnf"]["jkt"].as_str()),
        (Some(PAT), Some(jkt.as_str()))
    );
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        3600
    );
    let seen = app.introspect(TP, token).await;
    assert_eq!(
        (seen["active"].as_bool(), seen["token_type"].as_str()),
        (Some(true), Some("DPoP"))
    );
    assert_eq!(
        (seen["person_id"].as_str(), seen["cnf"]["jkt"].as_str()),
        (Some(PAT), Some(jkt.as_str()))
    );
    // `Bearer <api key>`, with the proof in a DPoP header instead of the body.
    let proof = prover.sign(&app, "phone", "POST", &app.url(&uxt_path(PAT)), None);
    let res = app
        .http
        .post(app.url(&uxt_path(PAT)))
        .bearer_auth(TP_KEY)
        .header("DPoP", proof)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_person_token_opens_the_persons_own_cards_only_each_call_with_a_fresh_proof() {
    let app = spawn().await;
    let mut prover = Prover::start();
    let token = uxt_token(&app, &mut prover, "phone").await;
    let details = format!("/v1/cards/{CARD_PAT}/details");
    for _ in 0..2 {
        let (status, body) = call(&app, &mut prover, "phone", &token, Method::GET, &details).await;
        assert_eq!(
            (status, body["pan"].as_str()),
            (200, Some(PAN_PAT)),
            "{body}"
        );
        assert_eq!(body["cardholder_name"], "Pat Prime");
    }
    let wallet = format!("/v1/cards/{CARD_PAT}/wallet-eligibility");
    assert_eq!(
        call(&app, &mut prover, "phone", &token, Method::GET, &wallet)
            .await
            .0,
        200
    );
    // Another person's card, and another tenant's: not covered (nothing about them is told).
    for card in [CARD_QUINN, CARD] {
        let path = format!("/v1/cards/{card}/details");
        let (status, body) = call(&app, &mut prover, "phone", &token, Method::GET, &path).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("insufficient_scope")),
            "{card}"
        );
    }
    // GET_PIN is in the tenant's mfa_required_for: the person token does not open it.
    let pin = format!("/v1/cards/{CARD_PAT}/pin");
    let (status, body) = call(&app, &mut prover, "phone", &token, Method::GET, &pin).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("insufficient_scope"))
    );
    // Without its key: as Bearer, or proven by another key.
    let (status, body) = status_and_json(app.get_details(&token, CARD_PAT).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    let (status, body) = call(&app, &mut prover, "thief", &token, Method::GET, &details).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );
    // Revoked: refused from then on.
    assert_eq!(app.revoke(TP, &token).await.status(), 200);
    let (status, body) = call(&app, &mut prover, "phone", &token, Method::GET, &details).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token")),
        "{body}"
    );
    // A forged token (the same claims, another signature) matches nothing.
    let token2 = uxt_token(&app, &mut prover, "phone").await;
    let forged = format!("{}.AAAA", token2.rsplit_once('.').unwrap().0);
    let (status, _) = call(&app, &mut prover, "phone", &forged, Method::GET, &details).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn bad_uxt_requests_get_treasury_primes_error_shape() {
    let app = spawn().await;
    let mut prover = Prover::start();
    let auth = basic(TP.0, TP.1);
    let url = app.url(&uxt_path(PAT));
    let good = |p: &mut Prover| p.sign(&app, "phone", "POST", &url, None);
    let cases: Vec<(&str, &str, Option<String>, Option<Value>, u16, &str)> = vec![
        (
            "no credentials",
            PAT,
            None,
            Some(json!({"dpop": good(&mut prover)})),
            401,
            "",
        ),
        (
            "wrong secret",
            PAT,
            Some(basic(TP.0, "nope-nope-nope")),
            Some(json!({"dpop": good(&mut prover)})),
            401,
            "",
        ),
        (
            "no persons:uxt",
            PAT,
            Some(basic(TP_NOSCOPE.0, TP_NOSCOPE.1)),
            Some(json!({"dpop": good(&mut prover)})),
            403,
            "",
        ),
        (
            "unknown person",
            "00000000-0000-4000-8000-000000000000",
            Some(auth.clone()),
            Some(
                json!({"dpop": prover.sign(&app, "phone", "POST", &app.url(&uxt_path("00000000-0000-4000-8000-000000000000")), None)}),
            ),
            404,
            "",
        ),
        (
            "another tenant's person",
            ADA,
            Some(auth.clone()),
            Some(
                json!({"dpop": prover.sign(&app, "phone", "POST", &app.url(&uxt_path(ADA)), None)}),
            ),
            404,
            "",
        ),
        (
            "a malformed id",
            "not-a-uuid",
            Some(auth.clone()),
            Some(json!({"dpop": good(&mut prover)})),
            400,
            "",
        ),
        (
            "no proof",
            PAT,
            Some(auth.clone()),
            Some(json!({})),
            400,
            "invalid_dpop_proof",
        ),
        (
            "a proof for another person",
            PAT,
            Some(auth.clone()),
            Some(
                json!({"dpop": prover.sign(&app, "phone", "POST", &app.url(&uxt_path(QUINN)), None)}),
            ),
            400,
            "invalid_dpop_proof",
        ),
        (
            "a proof for GET",
            PAT,
            Some(auth.clone()),
            Some(json!({"dpop": prover.sign(&app, "phone", "GET", &url, None)})),
            400,
            "invalid_dpop_proof",
        ),
        (
            "a private key in the proof",
            PAT,
            Some(auth.clone()),
            Some(
                json!({"dpop": prover.proof(json!({"key": "phone", "htm": "POST", "htu": url, "private_jwk": true})).0}),
            ),
            400,
            "invalid_dpop_proof",
        ),
        (
            "dpop not a string",
            PAT,
            Some(auth.clone()),
            Some(json!({"dpop": 7})),
            400,
            "",
        ),
    ];
    for (what, person, auth, body, want, code) in cases {
        let (status, body) =
            status_and_json(post_uxt(&app, person, auth.as_deref(), body).await).await;
        assert_eq!(status, want, "{what}: {body}");
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: {body}"));
        assert!(error.starts_with(code), "{what}: {error}");
        assert_eq!(body.as_object().unwrap().len(), 1, "{what}: {body}");
    }
    // The same proof twice: the second is a replay.
    let proof = good(&mut prover);
    let body = Some(json!({"dpop": proof}));
    assert_eq!(
        post_uxt(&app, PAT, Some(&auth), body.clone())
            .await
            .status(),
        200
    );
    let (status, v) = status_and_json(post_uxt(&app, PAT, Some(&auth), body).await).await;
    assert_eq!(
        (
            status,
            v["error"]
                .as_str()
                .unwrap()
                .starts_with("invalid_dpop_proof")
        ),
        (400, true)
    );
    // Not JSON, another method, another path.
    let res = app
        .http
        .post(&url)
        .header("Authorization", &auth)
        .body("dpop=x")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 415);
    let res = app
        .http
        .get(&url)
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(status_and_json(res).await.0, 405);
    let res = app
        .http
        .post(app.url("/treasuryprime/nothing"))
        .send()
        .await
        .unwrap();
    let (status, v) = status_and_json(res).await;
    assert_eq!((status, v.get("error").is_some()), (404, true));
}

#[tokio::test]
async fn no_uxt_token_or_proof_is_logged_or_audited() {
    let app = spawn().await;
    let mut prover = Prover::start();
    let proof = prover.sign(&app, "phone", "POST", &app.url(&uxt_path(PAT)), None);
    let res = post_uxt(
        &app,
        PAT,
        Some(&basic(TP.0, TP.1)),
        Some(json!({"dpop": proof})),
    )
    .await;
    let token = res.json::<Value>().await.unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();
    let details = format!("/v1/cards/{CARD_PAT}/details");
    let used = prover.sign(&app, "phone", "GET", &app.url(&details), Some(&token));
    send(
        &app,
        Method::GET,
        &details,
        &format!("DPoP {token}"),
        Some(&used),
    )
    .await;
    send(
        &app,
        Method::GET,
        &details,
        &format!("DPoP {token}"),
        Some(&used),
    )
    .await;
    let needles = [
        token.as_str(),
        proof.as_str(),
        used.as_str(),
        TP.1,
        TP_KEY,
        PAN_PAT,
    ];
    assert_absent(logs().as_bytes(), &needles, "the log");
    let audit: Vec<String> = app
        .audit_events()
        .await
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    assert_absent(audit.join("\n").as_bytes(), &needles, "the audit log");
    assert!(audit.iter().any(|e| e.contains("treasuryprime_uxt_token")));
}

#[tokio::test]
async fn the_demos_treasury_prime_lines_work_as_printed() {
    use crate::cli::{new_master_key, ServeChild};
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/demo.db", dir.path().display());
    let server = ServeChild::start(&db, &new_master_key(), &["--demo"]).await;
    let out = server.stdout();
    let script: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("# Treasury Prime dialect"))
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(script.len() >= 4, "no Treasury Prime lines in:\n{out}");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script.join("\n")])
        .current_dir(root)
        .env("DPOP_KEY_FILE", dir.path().join("dpop-key.json"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let details: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| panic!("{stdout}"));
    assert_eq!(details["pan"], PAN, "{stdout}");
}

#[tokio::test]
async fn a_step_up_rule_the_tenant_adds_later_applies_to_person_tokens_already_out() {
    let app = spawn().await;
    let mut prover = Prover::start();
    let token = uxt_token(&app, &mut prover, "phone").await;
    let details = format!("/v1/cards/{CARD_PAT}/details");
    let (status, body) = call(&app, &mut prover, "phone", &token, Method::GET, &details).await;
    assert_eq!(status, 200, "{body}");
    // The program now asks step-up for VIEW_CARD too.
    let mut doc = tp_tenant();
    doc["tenants"][0]["mfa_required_for"] = json!(["GET_PIN", "VIEW_CARD"]);
    app.import(&doc).await.unwrap();
    let mut last = (0, Value::Null);
    for _ in 0..50 {
        last = call(&app, &mut prover, "phone", &token, Method::GET, &details).await;
        if last.0 != 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(
        (last.0, last.1["error"].as_str()),
        (403, Some("insufficient_scope")),
        "{}",
        last.1
    );
    assert!(last.1.get("pan").is_none());
}
