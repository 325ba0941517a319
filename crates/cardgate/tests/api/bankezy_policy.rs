//! BankEzy keeps the program's rules that every other way to card data keeps: a tenant that
//! asks step-up for revealing card details gets no SDK token (and a token issued before the
//! rule reveals nothing after it), and a client tied to one cardholder gets tokens for that
//! cardholder's accounts only.

use crate::bankezy::*;
use crate::helpers::*;
use serde_json::{json, Value};

/// The BankEzy program with `mfa_required_for` and one more client tied to `DAN`.
fn program(mfa_required_for: Value) -> Value {
    let mut doc = ezbank();
    let tenant = &mut doc["tenants"][0];
    tenant["mfa_required_for"] = mfa_required_for;
    tenant["clients"].as_array_mut().unwrap().push(json!({
        "id": "ez-own", "secret": "ez-own-secret-0123456789abcdefghijklmnop",
        "api_key": EZ_OWN_KEY, "sdk_api_key": EZ_OWN_SDK_KEY, "payload_key": EZ_PAYLOAD,
        "environment": "sandbox", "scopes": ["sdk:token"], "person_id": DAN}));
    doc
}

const EZ_OWN_KEY: &str = "ezbank-own-apikey-0123456789abcdefghijklmno";
const EZ_OWN_SDK_KEY: &str = "ezbank-own-sdkkey-0123456789abcdefghijklmno";

/// The token call with `api_key`: status and the decrypted answer.
async fn call_as(app: &TestApp, api_key: &str, request: &Value) -> (u16, Value) {
    let (status, _, body) = post(
        app,
        TOKEN_PATH,
        Some(api_key),
        "text/plain",
        seal(EZ_PAYLOAD, request),
    )
    .await;
    let answer = unseal(EZ_PAYLOAD, &body).unwrap_or_else(|| panic!("{status}: {body}"));
    (status, answer)
}

#[tokio::test]
async fn a_tenant_that_asks_step_up_for_card_details_gets_no_sdk_token_and_old_ones_reveal_nothing()
{
    let app = TestApp::spawn_on(Db::Sqlite, cardgate_core::Environment::Sandbox, None).await;
    app.import(&program(json!([]))).await.unwrap();
    let (_, public_b64) = sdk_keypair();
    let (status, before) = token_call(&app, &token_request("ref-mfa-1", &public_b64)).await;
    assert_eq!(status, 200, "{before}");
    let token = before["token"].as_str().unwrap().to_string();
    let (status, _) = sdk_get(&app, &details_path(EZ_CARD), EZ_SDK_KEY, Some(&token)).await;
    assert_eq!(status, 200, "the reveal works while no step-up is asked");

    // The program now asks step-up for VIEW_CARD, which an SDK token cannot carry.
    app.import(&program(json!(["VIEW_CARD"]))).await.unwrap();
    let (status, answer) = token_call(&app, &token_request("ref-mfa-2", &public_b64)).await;
    assert_eq!(
        (status, answer["resCode"].clone()),
        (403, json!("TOK446")),
        "{answer}"
    );
    assert!(answer.get("token").is_none(), "{answer}");

    // The token issued before the rule: refused within the directory's refresh.
    let mut last = (0, String::new());
    for _ in 0..50 {
        last = sdk_get(&app, &details_path(EZ_CARD), EZ_SDK_KEY, Some(&token)).await;
        if last.0 != 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last.0, 403, "{}", last.1);
    assert!(last.1.contains("TOK446"), "{}", last.1);
    assert_absent(last.1.as_bytes(), &[EZ_PAN], "the refusal");
}

#[tokio::test]
async fn a_client_tied_to_one_cardholder_gets_sdk_tokens_for_that_cardholders_accounts_only() {
    let app = TestApp::spawn_on(Db::Sqlite, cardgate_core::Environment::Sandbox, None).await;
    app.import(&program(json!([]))).await.unwrap();
    let (_, public_b64) = sdk_keypair();
    let own = |reference: &str, account: &str| {
        let mut r = token_request(reference, &public_b64);
        r["sdkApiKey"] = json!(EZ_OWN_SDK_KEY);
        r["accountNumber"] = json!(account);
        r
    };
    let (status, answer) = call_as(&app, EZ_OWN_KEY, &own("ref-own-1", EZ_ACCOUNT)).await;
    assert_eq!(status, 200, "Dan's own account: {answer}");
    // Eve's account: answered as an unknown account, so its existence is not told either.
    let (status, answer) = call_as(&app, EZ_OWN_KEY, &own("ref-own-2", EZ_ACCOUNT_2)).await;
    assert_eq!(
        (status, answer["resCode"].clone()),
        (404, json!("TOK404")),
        "{answer}"
    );
    assert!(answer.get("token").is_none(), "{answer}");
}
