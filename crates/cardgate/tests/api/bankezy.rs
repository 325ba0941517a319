//! The BankEzy dialect (seed `bankezy-sdk-token.md`, SPEC §4.5): the tests act as the
//! partner's server and as the SDK through Python's jwcrypto (`clients/bankezy_client.py`), a
//! JOSE library cardgate did not write. The bad-input table is in `bankezy_input`.

use crate::helpers::*;
use serde_json::{json, Value};
use std::process::{Command, Stdio};

pub const EZ_KEY: &str = "ezbank-backend-apikey-0123456789abcdefghijk";
pub const EZ_SDK_KEY: &str = "ezbank-backend-sdkkey-0123456789abcdefghijk";
/// base64url of "ezbank-backend-payload-key-32byt".
pub const EZ_PAYLOAD: &str = "ZXpiYW5rLWJhY2tlbmQtcGF5bG9hZC1rZXktMzJieXQ";
pub const EZ2_KEY: &str = "ezbank-second-apikey-0123456789abcdefghijkl";
pub const EZ2_SDK_KEY: &str = "ezbank-second-sdkkey-0123456789abcdefghijkl";
/// base64url of "ezbank-second-payload-key-32byte".
pub const EZ2_PAYLOAD: &str = "ZXpiYW5rLXNlY29uZC1wYXlsb2FkLWtleS0zMmJ5dGU";
pub const EZ_NOSCOPE_KEY: &str = "ezbank-noscope-apikey-0123456789abcdefghijk";
pub const EZ_PROD_KEY: &str = "ezbank-prod-apikey-0123456789abcdefghijklmn";
pub const EZ_PROD_SDK_KEY: &str = "ezbank-prod-sdkkey-0123456789abcdefghijklmn";
pub const EZ_ACCOUNT: &str = "4000123412341234";
pub const EZ_ACCOUNT_2: &str = "4000999988887777";
pub const EZ_CARD: &str = "b0000000-0000-4000-8000-000000000001";
pub const EZ_CARD_TERMINATED: &str = "b0000000-0000-4000-8000-000000000002";
pub const EZ_CARD_OTHER_ACCOUNT: &str = "b0000000-0000-4000-8000-000000000003";
pub const EZ_PAN: &str = "4917610000000000";
pub const DAN: &str = "d0000000-0000-4000-8000-00000000000d";
const EVE: &str = "e0000000-0000-4000-8000-00000000000e";

pub const TOKEN_PATH: &str = "/bankezy/token-service/client/server/new/v2/token";
pub const INVALIDATE_PATH: &str = "/bankezy/token-service/client/server/invalidate/token";
pub const CARDS_PATH: &str = "/bankezy/token-service/sdk/v1/cards";

/// A BankEzy program: a backend client, a second one, one without the scope and one of
/// production; two accounts.
pub fn ezbank() -> Value {
    let client = |id: &str,
                  key: &str,
                  sdk: Option<&str>,
                  payload: Option<&str>,
                  env: &str,
                  scopes: Value| {
        json!({"id": id, "secret": format!("{id}-secret-0123456789abcdefghijklmnop"), "api_key": key,
               "sdk_api_key": sdk, "payload_key": payload, "environment": env, "scopes": scopes})
    };
    json!({"tenants": [{
        "id": "ezbank", "name": "EzBank",
        "clients": [
            client("ez-backend", EZ_KEY, Some(EZ_SDK_KEY), Some(EZ_PAYLOAD), "sandbox", json!(["sdk:token"])),
            client("ez-second", EZ2_KEY, Some(EZ2_SDK_KEY), Some(EZ2_PAYLOAD), "sandbox", json!(["sdk:token"])),
            client("ez-noscope", EZ_NOSCOPE_KEY, None, Some(EZ_PAYLOAD), "sandbox", json!(["cards:read:any"])),
            client("ez-prod", EZ_PROD_KEY, Some(EZ_PROD_SDK_KEY), Some(EZ_PAYLOAD), "production", json!(["sdk:token"]))],
        "persons": [{"id": DAN, "first_name": "Dan", "last_name": "Driver"},
                    {"id": EVE, "first_name": "Eve", "last_name": "Other"}],
        "accounts": [{"id": "EZ1", "account_number": EZ_ACCOUNT, "person_ids": [DAN]},
                     {"id": "EZ2", "account_number": EZ_ACCOUNT_2, "person_ids": [EVE]}],
        "cards": [
            {"id": EZ_CARD, "account_id": "EZ1", "person_id": DAN, "pan": EZ_PAN, "cvv": "987",
             "expiry": "2031-07", "status": "ACTIVE"},
            {"id": EZ_CARD_TERMINATED, "account_id": "EZ1", "person_id": DAN, "pan": "4000056655665556",
             "cvv": "111", "expiry": "2031-08", "status": "TERMINATED"},
            {"id": EZ_CARD_OTHER_ACCOUNT, "account_id": "EZ2", "person_id": EVE, "pan": "5105105105105100",
             "cvv": "222", "expiry": "2031-09", "status": "ACTIVE"}]}]})
}

pub async fn spawn_ezbank(db: Db) -> TestApp {
    let app = TestApp::spawn_on(db, cardgate_core::Environment::Sandbox, None).await;
    app.import(&ezbank()).await.unwrap();
    app
}

/// Every secret of the BankEzy program, for leak checks.
pub fn ez_secrets() -> Vec<&'static str> {
    vec![
        EZ_KEY,
        EZ_SDK_KEY,
        EZ_PAYLOAD,
        EZ2_KEY,
        EZ2_SDK_KEY,
        EZ2_PAYLOAD,
        EZ_PROD_SDK_KEY,
        EZ_PAN,
    ]
}

// ---- the partner server and the SDK, in jwcrypto ----------------------------------------

fn py(args: &[&str], stdin: &Value) -> Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/api/clients/bankezy_client.py"
    );
    let mut child = Command::new("python3")
        .arg(script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stdin.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the jwcrypto client failed (python3 with jwcrypto is needed): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The SDK's key pair: its private JWK, and `sdkPublicKey` as BankEzy sends it.
pub fn sdk_keypair() -> (Value, String) {
    let v = py(&["keypair"], &Value::Null);
    (
        v["private"].clone(),
        v["public_b64"].as_str().unwrap().to_string(),
    )
}

pub fn seal_all(key: &str, plaintexts: &[String]) -> Vec<String> {
    let v = py(&["seal", key], &json!(plaintexts));
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

pub fn seal(key: &str, plaintext: &Value) -> String {
    seal_all(key, &[plaintext.to_string()]).remove(0)
}

/// The decrypted answer, or `None` when it does not open under `key`.
pub fn unseal(key: &str, jwe: &str) -> Option<Value> {
    py(&["unseal", key], &json!([jwe]))[0]
        .as_str()
        .map(|s| serde_json::from_str(s).unwrap())
}

/// Opens a reveal with the SDK's private key: (protected header, card details).
pub fn sdk_open(private: &Value, jwe: &str) -> (Value, Value) {
    let v = py(&["open"], &json!({"private": private, "jwe": jwe}));
    (
        v["header"].clone(),
        serde_json::from_str(v["payload"].as_str().unwrap()).unwrap(),
    )
}

pub fn token_request(reference: &str, sdk_public: &str) -> Value {
    json!({"referenceId": reference, "sdkPublicKey": sdk_public, "sdkApiKey": EZ_SDK_KEY,
           "accountNumber": EZ_ACCOUNT, "firstname": "Dan", "lastName": "Driver",
           "email": "dan@example.com", "isdCode": 91, "mobileNumber": 9642308308u64,
           "dob": 19910807, "data": {"key1": "value1"}})
}

/// POSTs `body` to `path` with `X-API-KEY: api_key`: status, Content-Type and body text.
pub async fn post(
    app: &TestApp,
    path: &str,
    api_key: Option<&str>,
    content_type: &str,
    body: String,
) -> (u16, String, String) {
    let mut req = app
        .http
        .post(app.url(path))
        .header("Content-Type", content_type)
        .body(body);
    if let Some(k) = api_key {
        req = req.header("X-API-KEY", k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, res.text().await.unwrap())
}

/// The token call as the partner server makes it: status and the decrypted answer.
pub async fn token_call(app: &TestApp, request: &Value) -> (u16, Value) {
    let (status, ct, body) = post(
        app,
        TOKEN_PATH,
        Some(EZ_KEY),
        "text/plain",
        seal(EZ_PAYLOAD, request),
    )
    .await;
    assert!(ct.starts_with("text/plain"), "{status} {ct} {body}");
    (
        status,
        unseal(EZ_PAYLOAD, &body).unwrap_or_else(|| panic!("answer does not open: {body}")),
    )
}

pub async fn invalidate(app: &TestApp, reference: &str) -> (u16, Value) {
    let body = seal(EZ_PAYLOAD, &json!({"tokenReferenceId": reference}));
    let (status, _, body) = post(app, INVALIDATE_PATH, Some(EZ_KEY), "text/plain", body).await;
    (status, unseal(EZ_PAYLOAD, &body).unwrap())
}

/// A GET of the SDK with its key and token: status and body text.
pub async fn sdk_get(
    app: &TestApp,
    path: &str,
    sdk_key: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut req = app.http.get(app.url(path)).header("X-API-KEY", sdk_key);
    if let Some(t) = token {
        req = req.header("X-API-TOKEN", t);
    }
    let res = req.send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

pub fn details_path(card: &str) -> String {
    format!("{CARDS_PATH}/{card}/details")
}

// ---- tests ------------------------------------------------------------------------------

/// Token call, list, reveal, exact retry: on any store.
async fn partner_and_sdk_round_trip(app: &TestApp) {
    let (private, public_b64) = sdk_keypair();
    let request = token_request("ref-0001", &public_b64);
    let (status, answer) = token_call(app, &request).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["resCode"], "TOK200");
    assert_eq!(answer["resDesc"], "SUCCESS");
    assert_eq!(answer["referenceId"], "ref-0001");
    let token = answer["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("cgsdk_"));
    let expire_at = answer["expireAt"].as_i64().unwrap();
    let lifetime = expire_at - app.svc.now_ms();
    assert!(
        (1_790_000..=1_800_000).contains(&lifetime),
        "30 minutes: {lifetime}"
    );
    let server: Value = serde_json::from_slice(
        &data_encoding::BASE64
            .decode(answer["serverPubKey"].as_str().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (server["kty"].as_str(), server["crv"].as_str()),
        (Some("EC"), Some("P-256"))
    );
    assert!(server.get("d").is_none());

    // An exact retry gets the same answer; nothing new is issued.
    let (status, again) = token_call(app, &request).await;
    assert_eq!((status, &again), (200, &answer));

    // The SDK lists its account's cards, masked.
    let (status, body) = sdk_get(app, CARDS_PATH, EZ_SDK_KEY, Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains(EZ_PAN), "the list shows no PAN");
    let list: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<&str> = list["cards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cardId"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![EZ_CARD, EZ_CARD_TERMINATED],
        "only the token's account's cards"
    );
    assert_eq!(list["cards"][0]["maskedPan"], "************0000");

    // The reveal opens only with the SDK's key, and was made with serverPubKey.
    let (status, jwe) = sdk_get(app, &details_path(EZ_CARD), EZ_SDK_KEY, Some(&token)).await;
    assert_eq!(status, 200, "{jwe}");
    assert!(!jwe.contains(EZ_PAN));
    let (header, details) = sdk_open(&private, &jwe);
    assert_eq!(
        (header["alg"].as_str(), header["enc"].as_str()),
        (Some("ECDH-ES"), Some("A256GCM"))
    );
    assert_eq!(
        (&header["epk"]["x"], &header["epk"]["y"]),
        (&server["x"], &server["y"])
    );
    assert_eq!(details["pan"], EZ_PAN);
    assert_eq!(details["cvv"], "987");
    assert_eq!(
        (
            details["expiryMonth"].as_i64(),
            details["expiryYear"].as_i64()
        ),
        (Some(7), Some(2031))
    );
    assert_eq!(details["cardholderName"], "Dan Driver");
    let (other_private, _) = sdk_keypair();
    let wrong = std::panic::catch_unwind(|| sdk_open(&other_private, &jwe));
    assert!(wrong.is_err(), "another key does not open the reveal");

    let actions: Vec<String> = app
        .audit_events()
        .await
        .into_iter()
        .map(|e| e.action)
        .collect();
    for a in ["bankezy.sdk_token.issued", "bankezy.sdk.revealed"] {
        assert!(actions.iter().any(|x| x == a), "{a} audited");
    }
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "bankezy.sdk_token.issued")
            .count(),
        1
    );
    let mut secrets = ez_secrets();
    secrets.push(&token);
    assert_absent(logs().as_bytes(), &secrets, "the log");
    let audit = format!("{:?}", app.audit_events().await);
    assert_absent(audit.as_bytes(), &secrets, "the audit log");
}

#[tokio::test]
async fn a_partner_server_gets_a_token_and_the_sdk_reveals_a_card_only_it_can_read() {
    let app = spawn_ezbank(Db::Sqlite).await;
    partner_and_sdk_round_trip(&app).await;
    let db = app.database_bytes();
    assert_absent(&db, &[EZ_PAN, EZ_SDK_KEY, EZ_PAYLOAD], "the database");
}

#[tokio::test]
async fn the_bankezy_flow_works_on_postgresql() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let app = spawn_ezbank(Db::Postgres(fresh_postgres_db(&admin).await)).await;
    partner_and_sdk_round_trip(&app).await;
}

#[tokio::test]
async fn an_invalidated_token_is_refused_at_once_on_every_replica() {
    let app = spawn_ezbank(Db::Sqlite).await;
    let other = app.replica(cardgate_core::Environment::Sandbox).await;
    let (_, public_b64) = sdk_keypair();
    let (_, answer) = token_call(&app, &token_request("ref-inv", &public_b64)).await;
    let token = answer["token"].as_str().unwrap();
    assert_eq!(
        sdk_get(&other, CARDS_PATH, EZ_SDK_KEY, Some(token)).await.0,
        200
    );

    let (status, done) = invalidate(&app, "ref-inv").await;
    assert_eq!(
        (status, done["resCode"].as_str()),
        (200, Some("TOK200")),
        "{done}"
    );
    assert_eq!(done["tokenReferenceId"], "ref-inv");
    for replica in [&other, &app] {
        let (status, body) =
            sdk_get(replica, &details_path(EZ_CARD), EZ_SDK_KEY, Some(token)).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap()["resCode"],
            "TOK442"
        );
    }
    // Again: nothing changes; an unknown reference is its own code.
    assert_eq!(invalidate(&other, "ref-inv").await.1["resCode"], "TOK200");
    let (status, unknown) = invalidate(&app, "ref-never").await;
    assert_eq!((status, unknown["resCode"].as_str()), (404, Some("TOK423")));
}

#[tokio::test]
async fn a_token_dies_at_expire_at() {
    let app = spawn_ezbank(Db::Sqlite).await;
    let (_, public_b64) = sdk_keypair();
    let (_, answer) = token_call(&app, &token_request("ref-exp", &public_b64)).await;
    let token = answer["token"].as_str().unwrap();
    app.svc.clock.advance(std::time::Duration::from_secs(1801));
    let (status, body) = sdk_get(&app, CARDS_PATH, EZ_SDK_KEY, Some(token)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["resCode"],
        "TOK441"
    );
}

#[tokio::test]
async fn a_rotated_server_key_serves_new_tokens_while_old_tokens_keep_theirs() {
    let app = spawn_ezbank(Db::Sqlite).await;
    let (private, public_b64) = sdk_keypair();
    let (_, old) = token_call(&app, &token_request("ref-rot-1", &public_b64)).await;
    let tenant = cardgate_core::TenantId::parse("ezbank").unwrap();
    let version = app
        .svc
        .sdk_tokens()
        .rotate_server_key(&tenant, "test")
        .await
        .unwrap();
    assert_eq!(version, 2);
    let (_, new) = token_call(&app, &token_request("ref-rot-2", &public_b64)).await;
    assert_ne!(old["serverPubKey"], new["serverPubKey"]);
    for answer in [&old, &new] {
        let server: Value = serde_json::from_slice(
            &data_encoding::BASE64
                .decode(answer["serverPubKey"].as_str().unwrap().as_bytes())
                .unwrap(),
        )
        .unwrap();
        let (status, jwe) = sdk_get(
            &app,
            &details_path(EZ_CARD),
            EZ_SDK_KEY,
            answer["token"].as_str(),
        )
        .await;
        assert_eq!(status, 200, "{jwe}");
        let (header, details) = sdk_open(&private, &jwe);
        assert_eq!(
            header["epk"]["x"], server["x"],
            "made with the token's own server key"
        );
        assert_eq!(details["pan"], EZ_PAN);
    }
}

#[tokio::test]
async fn serve_demo_prints_a_bankezy_example_that_works() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}/demo.db", dir.path().display());
    let server =
        crate::cli::ServeChild::start(&db, &crate::cli::new_master_key(), &["--demo"]).await;
    let out = server.stdout();
    let line: String = out
        .lines()
        .skip_while(|l| !l.contains("scripts/bankezy_demo.py"))
        .take(2)
        .map(|l| l.trim_end_matches('\\').trim().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    let args: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(args[..2], ["python3", "scripts/bankezy_demo.py"], "{out}");
    assert!(line.contains(&server.base), "{line}");
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let run = Command::new("python3")
        .args(&args[1..])
        .current_dir(root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        said.contains("\"pan\": \"4111111111111111\"")
            || said.contains("\"pan\":\"4111111111111111\""),
        "{said}"
    );
}
