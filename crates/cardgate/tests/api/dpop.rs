//! DPoP (RFC 9449) end to end, with proofs built by a real JOSE library (Python's jwcrypto,
//! through `clients/dpop_proof.py`): bound access and card tokens, every proof rule broken in
//! turn at the token endpoint and at a resource, replays (also on another replica, and on
//! PostgreSQL), server nonces, a store that cannot answer, and no token or proof in the logs.

use crate::helpers::*;
use reqwest::Response;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

/// A DPoP client: jwcrypto in a Python process that keeps its keys by name.
pub struct Prover {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Prover {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prover {
    /// Starts the client. In CI (`CI=true`) a missing python3 or jwcrypto fails the test.
    pub fn start() -> Prover {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/api/clients/dpop_proof.py"
        );
        let mut child = Command::new("python3")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with jwcrypto (installed by .ci/run) builds the DPoP proofs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Prover {
            child,
            stdin,
            stdout,
        }
    }

    /// A proof for `req` (see the script): `(proof, RFC 7638 thumbprint of its key)`.
    pub fn proof(&mut self, req: Value) -> (String, String) {
        writeln!(self.stdin, "{req}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|_| panic!("jwcrypto answered nothing usable (is it installed?)"));
        assert!(v.get("error").is_none(), "the proof script failed: {v}");
        (
            v["proof"].as_str().unwrap().to_string(),
            v["jkt"].as_str().unwrap().to_string(),
        )
    }

    /// A proof by key `key` for `method` on `url`, at the server's clock, with `ath` of `token`.
    pub fn sign(
        &mut self,
        app: &TestApp,
        key: &str,
        method: &str,
        url: &str,
        token: Option<&str>,
    ) -> String {
        let mut req =
            json!({"key": key, "htm": method, "htu": url, "iat": app.svc.now_ms() / 1000});
        if let Some(t) = token {
            req["token"] = json!(t);
        }
        self.proof(req).0
    }
}

/// `POST /oauth2/token` for `client` with `proofs` as `DPoP` headers.
pub async fn token_with(app: &TestApp, client: (&str, &str), proofs: &[&str]) -> Response {
    let mut req = app
        .http
        .post(app.url("/oauth2/token"))
        .basic_auth(client.0, Some(client.1))
        .form(&[("grant_type", "client_credentials")]);
    for p in proofs {
        req = req.header("DPoP", *p);
    }
    req.send().await.unwrap()
}

/// A request with `Authorization: <scheme> <token>` and `proof` as `DPoP`.
pub async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    auth: &str,
    proof: Option<&str>,
) -> Response {
    let mut req = app
        .http
        .request(method, app.url(path))
        .header("Authorization", auth);
    if let Some(p) = proof {
        req = req.header("DPoP", p);
    }
    req.send().await.unwrap()
}

/// Mints a multi-use card token for VIEW_CARD on CARD bound to `key`'s proof.
async fn bound_card_token(app: &TestApp, prover: &mut Prover, key: &str) -> (String, Value) {
    let url = app.url(&format!("/v1/cards/{CARD}/tokens"));
    let proof = prover.sign(app, key, "POST", &url, None);
    let res = app
        .http
        .post(&url)
        .basic_auth(BACKEND.0, Some(BACKEND.1))
        .header("DPoP", proof)
        .json(&json!({"operations": ["VIEW_CARD", "ADD_CARD_TO_WALLET"], "max_uses": 20}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 201, "{body}");
    (body["token"].as_str().unwrap().to_string(), body)
}

/// The error code of an answer, its status and its `WWW-Authenticate`.
async fn refusal(res: Response) -> (u16, String, String) {
    let challenge = res
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let (status, body) = status_and_json(res).await;
    (
        status,
        body["error"].as_str().unwrap_or("").to_string(),
        challenge,
    )
}

#[tokio::test]
async fn a_proof_at_the_token_endpoint_binds_the_access_token_to_its_key() {
    let app = TestApp::spawn().await;
    let mut prover = Prover::start();
    let meta: Value = app
        .http
        .get(app.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let algs = meta["dpop_signing_alg_values_supported"].clone();
    assert_eq!(algs, json!(["ES256", "ES384", "EdDSA", "RS256", "PS256"]));
    // Every algorithm the metadata lists is accepted, for JWT and opaque tokens alike.
    for (i, alg) in algs.as_array().unwrap().iter().enumerate() {
        let client = if i % 2 == 0 { BACKEND } else { OPAQUE };
        let (proof, jkt) = prover.proof(json!({"key": format!("k-{alg}"), "alg": alg,
            "htm": "POST", "htu": app.url("/oauth2/token"), "iat": app.svc.now_ms() / 1000}));
        let (status, body) = status_and_json(token_with(&app, client, &[&proof]).await).await;
        assert_eq!(
            (status, body["token_type"].as_str()),
            (200, Some("DPoP")),
            "{alg}: {body}"
        );
        let token = body["access_token"].as_str().unwrap();
        let seen = app.introspect(client, token).await;
        assert_eq!(seen["active"], true, "{alg}");
        assert_eq!(seen["token_type"], "DPoP", "{alg}");
        assert_eq!(
            seen["cnf"],
            json!({ "jkt": jkt }),
            "{alg}: the RFC 7638 thumbprint"
        );
    }
    // Without a proof, a Bearer token as before, with no cnf.
    let plain = app.access_token(BACKEND).await;
    let seen = app.introspect(BACKEND, &plain).await;
    assert_eq!(
        (seen["token_type"].as_str(), seen.get("cnf")),
        (Some("Bearer"), None)
    );
}

#[tokio::test]
async fn a_bound_card_token_is_redeemed_only_with_fresh_proofs_of_its_key() {
    let app = TestApp::spawn().await;
    let mut prover = Prover::start();
    let (token, body) = bound_card_token(&app, &mut prover, "device").await;
    assert_eq!(body["token_type"], "DPoP");
    let (_, jkt) = prover.proof(json!({"key": "device", "htm": "GET", "htu": "http://x/"}));
    assert_eq!(app.introspect(BACKEND, &token).await["cnf"]["jkt"], jkt);
    let path = format!("/v1/cards/{CARD}/details");
    let url = app.url(&path);
    let auth = format!("DPoP {token}");
    for _ in 0..2 {
        let proof = prover.sign(&app, "device", "GET", &url, Some(&token));
        let res = send(&app, reqwest::Method::GET, &path, &auth, Some(&proof)).await;
        let (status, body) = status_and_json(res).await;
        assert_eq!((status, body["pan"].as_str()), (200, Some(PAN)), "{body}");
    }
    // The wallet route too; then the same token, presented without its key, is refused.
    let wpath = format!("/v1/cards/{CARD}/wallet-eligibility");
    let proof = prover.sign(&app, "device", "GET", &app.url(&wpath), Some(&token));
    let res = send(&app, reqwest::Method::GET, &wpath, &auth, Some(&proof)).await;
    assert_eq!(res.status(), 200);
    let (status, error, challenge) = refusal(app.get_details(&token, CARD).await).await;
    assert_eq!((status, error.as_str()), (401, "invalid_token"));
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    assert!(
        challenge.contains("algs=\"ES256 ES384 EdDSA RS256 PS256\""),
        "{challenge}"
    );
}

#[tokio::test]
async fn every_broken_proof_rule_is_refused_at_the_token_endpoint_with_its_rfc_error() {
    let app = TestApp::spawn().await;
    let mut prover = Prover::start();
    let url = app.url("/oauth2/token");
    let now = app.svc.now_ms() / 1000;
    let base = json!({"key": "k", "htm": "POST", "htu": url, "iat": now});
    let with = |extra: Value| {
        let mut r = base.clone();
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let cases: Vec<(&str, Value)> = vec![
        (
            "typ is not dpop+jwt",
            with(json!({"header": {"typ": "JWT"}})),
        ),
        ("typ is missing", with(json!({"drop": ["typ"]}))),
        ("alg none", with(json!({"alg": "none"}))),
        ("a MAC alg", with(json!({"alg": "HS256"}))),
        (
            "alg does not match the key",
            with(json!({"header": {"alg": "ES384"}})),
        ),
        ("no jwk", with(json!({"drop": ["jwk"]}))),
        (
            "a private key in the header",
            with(json!({"private_jwk": true})),
        ),
        (
            "signed by another key",
            with(json!({"sign_with": "intruder"})),
        ),
        ("another method", with(json!({"htm": "GET"}))),
        (
            "another URL",
            with(json!({"htu": app.url("/oauth2/introspect")})),
        ),
        (
            "another host",
            with(json!({"htu": url.replace("127.0.0.1", "localhost")})),
        ),
        ("iat too old", with(json!({"iat": now - 600}))),
        ("iat in the future", with(json!({"iat": now + 600}))),
        ("no jti", with(json!({"drop": ["jti"]}))),
        ("no htm", with(json!({"drop": ["htm"]}))),
        ("no htu", with(json!({"drop": ["htu"]}))),
        ("no iat", with(json!({"drop": ["iat"]}))),
        ("iat not a number", with(json!({"claims": {"iat": "now"}}))),
    ];
    for (what, req) in cases {
        let (proof, _) = prover.proof(req);
        let (status, error, _) = refusal(token_with(&app, BACKEND, &[&proof]).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_dpop_proof"),
            "{what}"
        );
    }
    for (what, headers) in [
        ("not a JWT", vec!["not-a-jwt"]),
        ("two proofs", vec!["a.b.c", "a.b.c"]),
    ] {
        let (status, error, _) = refusal(token_with(&app, BACKEND, &headers).await).await;
        assert_eq!(
            (status, error.as_str()),
            (400, "invalid_dpop_proof"),
            "{what}"
        );
    }
    // RFC 3986 normalisation: case, default port and a query make no difference.
    let (proof, _) = prover.proof(with(
        json!({"htu": format!("{}?x=1#f", url.replace("http://", "HTTP://"))}),
    ));
    assert_eq!(token_with(&app, BACKEND, &[&proof]).await.status(), 200);
    // A proof is used once: replayed, it is refused.
    let (proof, _) = prover.proof(base.clone());
    assert_eq!(token_with(&app, BACKEND, &[&proof]).await.status(), 200);
    let (status, error, _) = refusal(token_with(&app, BACKEND, &[&proof]).await).await;
    assert_eq!(
        (status, error.as_str()),
        (400, "invalid_dpop_proof"),
        "replay"
    );
    // Bad client credentials are still invalid_client, whatever the proof.
    let (proof, _) = prover.proof(base);
    let (status, error, _) =
        refusal(token_with(&app, (BACKEND.0, "wrong-secret"), &[&proof]).await).await;
    assert_eq!((status, error.as_str()), (401, "invalid_client"));
}

#[tokio::test]
async fn every_broken_presentation_is_refused_at_a_resource_with_a_dpop_challenge() {
    let app = TestApp::spawn().await;
    let mut prover = Prover::start();
    let (token, _) = bound_card_token(&app, &mut prover, "device").await;
    let path = format!("/v1/cards/{CARD}/details");
    let url = app.url(&path);
    let auth = format!("DPoP {token}");
    let now = app.svc.now_ms() / 1000;
    let req = |extra: Value| {
        let mut r = json!({"key": "device", "htm": "GET", "htu": url, "iat": now, "token": token});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        r
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "no ath",
            req(json!({"drop": ["ath"]})),
            "invalid_dpop_proof",
        ),
        (
            "another token's ath",
            req(json!({"token": "cgct_other"})),
            "invalid_dpop_proof",
        ),
        (
            "another URL",
            req(json!({"htu": app.url(&format!("/v1/cards/{CARD}/pin"))})),
            "invalid_dpop_proof",
        ),
        (
            "another method",
            req(json!({"htm": "POST"})),
            "invalid_dpop_proof",
        ),
        (
            "stale",
            req(json!({"iat": now - 3600})),
            "invalid_dpop_proof",
        ),
        (
            "a private key in the header",
            req(json!({"private_jwk": true})),
            "invalid_dpop_proof",
        ),
        ("another key", req(json!({"key": "thief"})), "invalid_token"),
    ];
    for (what, r, code) in cases {
        let (proof, _) = prover.proof(r);
        let res = send(&app, reqwest::Method::GET, &path, &auth, Some(&proof)).await;
        let (status, error, challenge) = refusal(res).await;
        assert_eq!((status, error.as_str()), (401, code), "{what}");
        assert!(
            challenge.starts_with("DPoP ") && challenge.contains(code),
            "{what}: {challenge}"
        );
    }
    // No proof at all, and the bound token as Bearer.
    let (status, error, _) =
        refusal(send(&app, reqwest::Method::GET, &path, &auth, None).await).await;
    assert_eq!(
        (status, error.as_str()),
        (401, "invalid_dpop_proof"),
        "no proof"
    );
    let (status, error, challenge) = refusal(app.get_details(&token, CARD).await).await;
    assert_eq!(
        (status, error.as_str()),
        (401, "invalid_token"),
        "as Bearer"
    );
    assert!(challenge.starts_with("DPoP "));
    // A replayed proof is refused; an unbound token with the DPoP scheme too.
    let proof = prover.sign(&app, "device", "GET", &url, Some(&token));
    assert_eq!(
        send(&app, reqwest::Method::GET, &path, &auth, Some(&proof))
            .await
            .status(),
        200
    );
    let (status, error, _) =
        refusal(send(&app, reqwest::Method::GET, &path, &auth, Some(&proof)).await).await;
    assert_eq!(
        (status, error.as_str()),
        (401, "invalid_dpop_proof"),
        "replay"
    );
    let plain = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    let proof = prover.sign(&app, "device", "GET", &url, Some(&plain));
    let res = send(
        &app,
        reqwest::Method::GET,
        &path,
        &format!("DPoP {plain}"),
        Some(&proof),
    )
    .await;
    assert_eq!(
        refusal(res).await.1,
        "invalid_token",
        "unbound token as DPoP"
    );
    // An expired bound token, with a good proof.
    app.svc.clock.advance(std::time::Duration::from_secs(3600));
    let proof = prover.sign(&app, "device", "GET", &url, Some(&token));
    let (status, error, _) =
        refusal(send(&app, reqwest::Method::GET, &path, &auth, Some(&proof)).await).await;
    assert_eq!((status, error.as_str()), (401, "invalid_token"), "expired");
}

#[tokio::test]
async fn a_bound_access_token_needs_its_proof_at_the_mint_and_binds_the_card_token() {
    let app = TestApp::spawn().await;
    let mut prover = Prover::start();
    let (proof, jkt) = prover.proof(json!({"key": "backend", "htm": "POST",
        "htu": app.url("/oauth2/token"), "iat": app.svc.now_ms() / 1000}));
    let access: Value = token_with(&app, BACKEND, &[&proof])
        .await
        .json()
        .await
        .unwrap();
    let access = access["access_token"].as_str().unwrap().to_string();
    let path = format!("/v1/cards/{CARD}/tokens");
    let body = json!({"operations": ["VIEW_CARD"]});
    // As Bearer: refused.
    let res = app
        .http
        .post(app.url(&path))
        .bearer_auth(&access)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, error, challenge) = refusal(res).await;
    assert_eq!((status, error.as_str()), (401, "invalid_token"));
    assert!(challenge.starts_with("DPoP "), "{challenge}");
    // With its proof (ath): a card token bound to the same key.
    let proof = prover.sign(&app, "backend", "POST", &app.url(&path), Some(&access));
    let res = app
        .http
        .post(app.url(&path))
        .header("Authorization", format!("DPoP {access}"))
        .header("DPoP", &proof)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, minted) = status_and_json(res).await;
    assert_eq!(
        (status, minted["token_type"].as_str()),
        (201, Some("DPoP")),
        "{minted}"
    );
    let card_token = minted["token"].as_str().unwrap();
    assert_eq!(app.introspect(BACKEND, card_token).await["cnf"]["jkt"], jkt);
    // The same proof again, or another key's: refused.
    let res = app
        .http
        .post(app.url(&path))
        .header("Authorization", format!("DPoP {access}"))
        .header("DPoP", &proof)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(res).await.1, "invalid_dpop_proof");
    let other = prover.sign(&app, "thief", "POST", &app.url(&path), Some(&access));
    let res = app
        .http
        .post(app.url(&path))
        .header("Authorization", format!("DPoP {access}"))
        .header("DPoP", &other)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refusal(res).await,
        (401, "invalid_token".into(), refusal_challenge())
    );
}

fn refusal_challenge() -> String {
    "DPoP realm=\"cardgate\", error=\"invalid_token\", error_description=\"the DPoP proof's key is not the one the token is bound to\", algs=\"ES256 ES384 EdDSA RS256 PS256\"".into()
}

/// A tenant whose proofs need a server nonce.
fn nonce_tenant() -> Value {
    json!({"tenants": [{"id": "noncy", "name": "Nonce Bank", "dpop_nonce_required": true,
        "clients": [{"id": "noncy-backend", "secret": "noncy-backend-secret-0123456789abcdefgh",
                     "scopes": ["cards:read:any"]}]}]})
}

#[tokio::test]
async fn a_tenant_can_ask_for_server_nonces_which_every_replica_accepts() {
    let app = TestApp::spawn().await;
    app.import(&nonce_tenant()).await.unwrap();
    let replica = app.replica(cardgate_core::Environment::Sandbox).await;
    let client = ("noncy-backend", "noncy-backend-secret-0123456789abcdefgh");
    let mut prover = Prover::start();
    let url = app.url("/oauth2/token");
    let proof = prover.sign(&app, "k", "POST", &url, None);
    let res = token_with(&app, client, &[&proof]).await;
    let nonce = res.headers()["dpop-nonce"].to_str().unwrap().to_string();
    let (status, error, _) = refusal(res).await;
    assert_eq!((status, error.as_str()), (400, "use_dpop_nonce"));
    // A nonce one replica gave is good on the other (derived, not stored); a made-up one not.
    for (what, nonce, want) in [
        ("made up", "bm9wZQ", 400),
        ("the replica's", nonce.as_str(), 200),
    ] {
        let (proof, _) = prover.proof(
            json!({"key": "k", "htm": "POST", "htu": replica.url("/oauth2/token"),
            "iat": app.svc.now_ms() / 1000, "nonce": nonce}),
        );
        let res = token_with(&replica, client, &[&proof]).await;
        assert_eq!(res.status(), want, "{what}");
    }
    // Tenants that do not ask for nonces are not asked.
    let proof = prover.sign(&app, "k", "POST", &url, None);
    assert_eq!(token_with(&app, BACKEND, &[&proof]).await.status(), 200);
    // Nonces expire: two steps later the old one is refused with a fresh one.
    app.svc.clock.advance(std::time::Duration::from_secs(700));
    let (proof, _) = prover.proof(json!({"key": "k", "htm": "POST", "htu": url,
        "iat": app.svc.now_ms() / 1000, "nonce": nonce}));
    let res = token_with(&app, client, &[&proof]).await;
    assert_ne!(res.headers()["dpop-nonce"].to_str().unwrap(), nonce);
    assert_eq!(refusal(res).await.1, "use_dpop_nonce");
}

/// A proof replayed on another replica of the same database is refused there.
async fn a_replay_on_another_replica_is_refused(app: TestApp) {
    let replica = app.replica(cardgate_core::Environment::Sandbox).await;
    let mut prover = Prover::start();
    // The same URL on both: the replica's public URL differs, so aim the proof at the replica.
    let (proof, _) = prover.proof(json!({"key": "k", "htm": "POST",
        "htu": replica.url("/oauth2/token"), "iat": app.svc.now_ms() / 1000}));
    let first = token_with(&replica, BACKEND, &[&proof]).await;
    assert_eq!(first.status(), 200);
    let (status, error, _) = refusal(token_with(&replica, BACKEND, &[&proof]).await).await;
    assert_eq!((status, error.as_str()), (400, "invalid_dpop_proof"));
    // And one replica's claim holds on the other: same jti, same key, other replica.
    let jti = "shared-jti-1";
    let req = |base: &str| {
        json!({"key": "k", "htm": "POST", "htu": format!("{base}/oauth2/token"),
        "iat": app.svc.now_ms() / 1000, "jti": jti})
    };
    let (p1, _) = prover.proof(req(&app.base));
    let (p2, _) = prover.proof(req(&replica.base));
    assert_eq!(token_with(&app, BACKEND, &[&p1]).await.status(), 200);
    let (status, error, _) = refusal(token_with(&replica, BACKEND, &[&p2]).await).await;
    assert_eq!(
        (status, error.as_str()),
        (400, "invalid_dpop_proof"),
        "jti replayed across replicas"
    );
}

#[tokio::test]
async fn a_proof_replayed_on_another_sqlite_process_is_refused() {
    a_replay_on_another_replica_is_refused(TestApp::spawn().await).await;
}

#[tokio::test]
async fn a_proof_replayed_on_another_postgresql_replica_is_refused() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let url = fresh_postgres_db(&admin).await;
    let app = TestApp::spawn_on(Db::Postgres(url), cardgate_core::Environment::Sandbox, None).await;
    a_replay_on_another_replica_is_refused(app).await;
}

#[tokio::test]
async fn a_store_that_cannot_answer_fails_dpop_closed_with_503() {
    use crate::faults::{assert_native_unavailable, spawn_faulty, Outage};
    let (app, faulty) = spawn_faulty().await;
    let mut prover = Prover::start();
    let (token, _) = bound_card_token(&app, &mut prover, "device").await;
    app.svc
        .set_store_wait(std::time::Duration::from_millis(300));
    faulty.set_outage(Outage::Refusing);
    let proof = prover.sign(&app, "k", "POST", &app.url("/oauth2/token"), None);
    assert_native_unavailable(token_with(&app, BACKEND, &[&proof]).await, "token").await;
    let path = format!("/v1/cards/{CARD}/details");
    let proof = prover.sign(&app, "device", "GET", &app.url(&path), Some(&token));
    let res = send(
        &app,
        reqwest::Method::GET,
        &path,
        &format!("DPoP {token}"),
        Some(&proof),
    )
    .await;
    assert_native_unavailable(res, "redemption").await;
    faulty.set_outage(Outage::None);
    // Not claimed while the store was away: the same proof works once it is back.
    let res = send(
        &app,
        reqwest::Method::GET,
        &path,
        &format!("DPoP {token}"),
        Some(&proof),
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn expired_proof_claims_are_purged_and_no_token_or_proof_is_logged() {
    let app = TestApp::spawn().await;
    let mut prover = Prover::start();
    let (token, _) = bound_card_token(&app, &mut prover, "device").await;
    let path = format!("/v1/cards/{CARD}/details");
    let mut secrets = vec![token.clone()];
    for _ in 0..3 {
        let proof = prover.sign(&app, "device", "GET", &app.url(&path), Some(&token));
        send(
            &app,
            reqwest::Method::GET,
            &path,
            &format!("DPoP {token}"),
            Some(&proof),
        )
        .await;
        secrets.push(proof);
    }
    let bad = prover.sign(&app, "thief", "GET", &app.url(&path), Some(&token));
    send(
        &app,
        reqwest::Method::GET,
        &path,
        &format!("DPoP {token}"),
        Some(&bad),
    )
    .await;
    send(
        &app,
        reqwest::Method::GET,
        &path,
        &format!("Bearer {token}"),
        None,
    )
    .await;
    secrets.push(bad);
    let claims = |app: &TestApp| -> i64 {
        sqlite_file(&app.database_url)
            .query_row("SELECT count(*) FROM claims", [], |r| r.get(0))
            .unwrap()
    };
    assert!(claims(&app) >= 4);
    app.svc.clock.advance(std::time::Duration::from_secs(600));
    app.svc.dpop().purge().await.unwrap();
    assert_eq!(claims(&app), 0, "expired jti claims are purged");
    let needles: Vec<&str> = secrets.iter().map(String::as_str).collect();
    assert_absent(logs().as_bytes(), &needles, "the log");
    let audit = serde_json::to_string(
        &app.audit_events()
            .await
            .iter()
            .map(|e| format!("{e:?}"))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    assert_absent(audit.as_bytes(), &needles, "the audit log");
}
