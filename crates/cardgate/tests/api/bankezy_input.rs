//! BankEzy's bad input: malformed, tampered, wrongly keyed, expired, replayed and mismatched
//! requests, each answered with its documented `resCode` (sealed once the caller's key is
//! known, plain where it cannot be), none writing a token or a claim, none logged.

use crate::bankezy::*;
use crate::helpers::*;
use serde_json::{json, Value};

/// SDK tokens and `referenceId` claims in the database.
fn written(app: &TestApp) -> (i64, i64) {
    let db = sqlite_file(&app.database_url);
    let count = |sql: &str| db.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    (
        count("SELECT COUNT(*) FROM sdk_tokens"),
        count("SELECT COUNT(*) FROM claims WHERE namespace = 'bankezy.reference_id'"),
    )
}

/// Flips one character of a compact JWE's ciphertext.
fn tampered(jwe: &str) -> String {
    let mut parts: Vec<String> = jwe.split('.').map(str::to_string).collect();
    let c = parts[3].remove(0);
    parts[3].insert(0, if c == 'A' { 'B' } else { 'A' });
    parts.join(".")
}

/// A public JWK whose point is not on P-256, as `sdkPublicKey`.
fn off_curve(public_b64: &str) -> String {
    let mut jwk: Value =
        serde_json::from_slice(&data_encoding::BASE64.decode(public_b64.as_bytes()).unwrap())
            .unwrap();
    let mut y = data_encoding::BASE64URL_NOPAD
        .decode(jwk["y"].as_str().unwrap().as_bytes())
        .unwrap();
    y[31] ^= 1;
    jwk["y"] = json!(data_encoding::BASE64URL_NOPAD.encode(&y));
    data_encoding::BASE64.encode(jwk.to_string().as_bytes())
}

fn with(base: &Value, field: &str, value: Value) -> Value {
    let mut v = base.clone();
    v[field] = value;
    v
}

fn without(base: &Value, field: &str) -> Value {
    let mut v = base.clone();
    v.as_object_mut().unwrap().remove(field);
    v
}

enum Body {
    /// Sealed under this payload key.
    Sealed(&'static str, Value),
    Raw(String),
}

#[tokio::test]
async fn every_bad_token_request_gets_its_own_code_and_writes_nothing() {
    let app = spawn_ezbank(Db::Sqlite).await;
    let (_, public_b64) = sdk_keypair();
    let good = token_request("ref-good", &public_b64);
    // A request that succeeded once: its referenceId is taken for anything else.
    let (status, _) = token_call(&app, &good).await;
    assert_eq!(status, 200);
    let sealed_good = seal(EZ_PAYLOAD, &good);
    let big = "A".repeat(70 * 1024);
    use Body::*;
    let cases: Vec<(&str, Option<&str>, &str, Body, u16, &str)> = vec![
        (
            "not a JWE",
            Some(EZ_KEY),
            "text/plain",
            Raw("hello".into()),
            400,
            "TOK400",
        ),
        (
            "tampered",
            Some(EZ_KEY),
            "text/plain",
            Raw(tampered(&sealed_good)),
            400,
            "TOK400",
        ),
        (
            "another client's payload key",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ2_PAYLOAD, good.clone()),
            400,
            "TOK400",
        ),
        (
            "not JSON inside",
            Some(EZ_KEY),
            "text/plain",
            Raw(seal_all(EZ_PAYLOAD, &["not json".into()]).remove(0)),
            400,
            "TOK400",
        ),
        (
            "no X-API-KEY",
            None,
            "text/plain",
            Raw(sealed_good.clone()),
            401,
            "TOK401",
        ),
        (
            "unknown X-API-KEY",
            Some("nope-0123456789abcdefghijklmnopqrstuvwxyz"),
            "text/plain",
            Raw(sealed_good.clone()),
            401,
            "TOK401",
        ),
        (
            "a production client on a sandbox instance",
            Some(EZ_PROD_KEY),
            "text/plain",
            Raw(sealed_good.clone()),
            401,
            "TOK401",
        ),
        (
            "JSON content type",
            Some(EZ_KEY),
            "application/json",
            Raw(sealed_good.clone()),
            415,
            "TOK415",
        ),
        (
            "body over 64 KiB",
            Some(EZ_KEY),
            "text/plain",
            Raw(big),
            413,
            "TOK413",
        ),
        (
            "no sdk:token scope",
            Some(EZ_NOSCOPE_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "referenceId", json!("r1"))),
            403,
            "TOK403",
        ),
        (
            "wrong sdkApiKey",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "sdkApiKey", json!(EZ2_SDK_KEY))),
            403,
            "TOK406",
        ),
        (
            "a foreign account",
            Some(EZ_KEY),
            "text/plain",
            Sealed(
                EZ_PAYLOAD,
                with(&good, "accountNumber", json!("1234567890")),
            ),
            404,
            "TOK404",
        ),
        (
            "20-digit account number",
            Some(EZ_KEY),
            "text/plain",
            Sealed(
                EZ_PAYLOAD,
                with(&good, "accountNumber", json!(12345678901234567890u64)),
            ),
            400,
            "TOK414",
        ),
        (
            "letters in the account number",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "accountNumber", json!("4000-1234"))),
            400,
            "TOK414",
        ),
        (
            "dob 20241340",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "dob", json!(20241340))),
            400,
            "TOK416",
        ),
        (
            "dob 20241340 as a string",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "dob", json!("20241340"))),
            400,
            "TOK416",
        ),
        (
            "JWK off the curve",
            Some(EZ_KEY),
            "text/plain",
            Sealed(
                EZ_PAYLOAD,
                with(&good, "sdkPublicKey", json!(off_curve(&public_b64))),
            ),
            400,
            "TOK412",
        ),
        (
            "sdkPublicKey not base64",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "sdkPublicKey", json!("%%%"))),
            400,
            "TOK412",
        ),
        (
            "no referenceId",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, without(&good, "referenceId")),
            400,
            "TOK410",
        ),
        (
            "no sdkApiKey",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, without(&good, "sdkApiKey")),
            400,
            "TOK410",
        ),
        (
            "referenceId with a space",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "referenceId", json!("a b"))),
            400,
            "TOK411",
        ),
        (
            "isdCode of 5 digits",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "isdCode", json!("12345"))),
            400,
            "TOK417",
        ),
        (
            "mobileNumber with letters",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "mobileNumber", json!("96x"))),
            400,
            "TOK418",
        ),
        (
            "email without a domain",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "email", json!("dan@"))),
            400,
            "TOK419",
        ),
        (
            "an empty lastName",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "lastName", json!(" "))),
            400,
            "TOK420",
        ),
        (
            "data not a string map",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "data", json!({"k": 1}))),
            400,
            "TOK421",
        ),
        (
            "replayed referenceId, other content",
            Some(EZ_KEY),
            "text/plain",
            Sealed(EZ_PAYLOAD, with(&good, "email", json!("x@example.com"))),
            409,
            "TOK409",
        ),
    ];
    let before = written(&app);
    let mut bodies = Vec::new();
    for (what, key, content_type, body, status, code) in cases {
        let body = match body {
            Sealed(k, v) => seal(k, &v),
            Raw(s) => s,
        };
        bodies.push(body.clone());
        let (got, ct, answer) = post(&app, TOKEN_PATH, key, content_type, body).await;
        let plain = ["TOK400", "TOK401"].contains(&code);
        let decoded: Value = if plain {
            assert!(ct.starts_with("application/json"), "{what}: {ct} {answer}");
            serde_json::from_str(&answer).unwrap()
        } else {
            assert!(
                ct.starts_with("text/plain"),
                "{what}: sealed, not {ct}: {answer}"
            );
            unseal(EZ_PAYLOAD, &answer).unwrap_or_else(|| panic!("{what}: does not open"))
        };
        assert_eq!(
            (got, decoded["resCode"].as_str()),
            (status, Some(code)),
            "{what}: {decoded}"
        );
        assert!(
            decoded["resDesc"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
        assert_eq!(written(&app), before, "{what}: wrote something");
    }
    // Nothing of what was refused, nor any secret, reaches the log.
    let log = logs();
    let refs: Vec<&str> = bodies
        .iter()
        .map(|b| &b[..b.len().min(60)])
        .filter(|b| b.len() > 20)
        .collect();
    assert_absent(log.as_bytes(), &refs, "the log");
    assert_absent(log.as_bytes(), &ez_secrets(), "the log");
}

#[tokio::test]
async fn the_sdk_is_refused_a_token_of_another_client_environment_account_or_state() {
    let app = spawn_ezbank(Db::Sqlite).await;
    let (_, public_b64) = sdk_keypair();
    let (_, answer) = token_call(&app, &token_request("ref-sdk", &public_b64)).await;
    let token = answer["token"].as_str().unwrap().to_string();
    // A token the production instance of the same database issued to its production client.
    let prod = app.replica(cardgate_core::Environment::Production).await;
    let request = with(
        &token_request("ref-prod", &public_b64),
        "sdkApiKey",
        json!(EZ_PROD_SDK_KEY),
    );
    let (status, _, body) = post(
        &prod,
        TOKEN_PATH,
        Some(EZ_PROD_KEY),
        "text/plain",
        seal(EZ_PAYLOAD, &request),
    )
    .await;
    assert_eq!(
        status, 404,
        "the production instance sees no sandbox account"
    );
    assert_eq!(unseal(EZ_PAYLOAD, &body).unwrap()["resCode"], "TOK404");
    let card = details_path(EZ_CARD);
    let (other_account, other_tenant, not_a_card, terminated) = (
        details_path(EZ_CARD_OTHER_ACCOUNT),
        details_path(CARD),
        details_path("nope"),
        details_path(EZ_CARD_TERMINATED),
    );
    let cases: Vec<(&str, &str, &str, Option<&str>, u16, &str)> = vec![
        (
            "no X-API-TOKEN",
            CARDS_PATH,
            EZ_SDK_KEY,
            None,
            401,
            "TOK440",
        ),
        (
            "a garbage token",
            CARDS_PATH,
            EZ_SDK_KEY,
            Some("cgsdk_nope"),
            401,
            "TOK440",
        ),
        (
            "another client's SDK key",
            CARDS_PATH,
            EZ2_SDK_KEY,
            Some(&token),
            401,
            "TOK440",
        ),
        (
            "the partner's server key instead of the SDK key",
            CARDS_PATH,
            EZ_KEY,
            Some(&token),
            401,
            "TOK401",
        ),
        (
            "a production SDK key on a sandbox instance",
            CARDS_PATH,
            EZ_PROD_SDK_KEY,
            Some(&token),
            401,
            "TOK401",
        ),
        (
            "a card of another account",
            &other_account,
            EZ_SDK_KEY,
            Some(&token),
            404,
            "TOK443",
        ),
        (
            "a card of another tenant",
            &other_tenant,
            EZ_SDK_KEY,
            Some(&token),
            404,
            "TOK443",
        ),
        (
            "not a card id",
            &not_a_card,
            EZ_SDK_KEY,
            Some(&token),
            404,
            "TOK443",
        ),
        (
            "a terminated card",
            &terminated,
            EZ_SDK_KEY,
            Some(&token),
            422,
            "TOK445",
        ),
    ];
    for (what, path, key, token, status, code) in cases {
        let (got, body) = sdk_get(&app, path, key, token).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("{what}: {body}"));
        assert_eq!(
            (got, v["resCode"].as_str()),
            (status, Some(code)),
            "{what}: {v}"
        );
    }
    // The sandbox token does not work on the production instance either.
    let (status, body) = sdk_get(&prod, &card, EZ_SDK_KEY, Some(&token)).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(sdk_get(&app, &card, EZ_SDK_KEY, Some(&token)).await.0, 200);
    assert_absent(logs().as_bytes(), &[token.as_str(), EZ_PAN], "the log");
}
