//! Card data at rest and in flight: answers encrypted to the device (JWE, decrypted with
//! Python's jwcrypto), data key rotation re-sealing the vault online, and cards remembered
//! by one replica while another changes them.

use crate::helpers::*;
use serde_json::{json, Value};

fn jwcrypto_decrypt(private_jwk: &Value, jwe: &str) -> Value {
    let script = "import sys,json\nfrom jwcrypto import jwk, jwe\nk=jwk.JWK(**json.loads(sys.argv[1]))\nt=jwe.JWE()\nt.deserialize(sys.argv[2], key=k)\nprint(t.payload.decode())";
    let out = std::process::Command::new("python3")
        .args(["-c", script, &private_jwk.to_string(), jwe])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "jwcrypto could not decrypt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn jwcrypto_new_key() -> Value {
    let script =
        "from jwcrypto import jwk\nprint(jwk.JWK.generate(kty='EC', crv='P-256').export_private())";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "python3 with jwcrypto is needed (pip install jwcrypto): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn card_details_can_come_back_as_a_jwe_only_the_device_can_read() {
    let app = TestApp::spawn().await;
    let private = jwcrypto_new_key();
    let public = json!({"kty": "EC", "crv": "P-256", "x": private["x"], "y": private["y"]});
    let header = data_encoding::BASE64URL_NOPAD.encode(public.to_string().as_bytes());
    // A bad key is refused before the token is spent.
    let token = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    let bad =
        data_encoding::BASE64URL_NOPAD.encode(br#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}"#);
    let res = app
        .http
        .get(app.url(&format!("/v1/cards/{CARD}/details")))
        .bearer_auth(&token)
        .header("Accept", "application/jose")
        .header("Cardgate-Encryption-Jwk", bad)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // Well-formed, but one bit of x flipped: not a point on the curve.
    let mut x = data_encoding::BASE64URL_NOPAD
        .decode(private["x"].as_str().unwrap().as_bytes())
        .unwrap();
    x[0] ^= 1;
    let off_curve = json!({"kty": "EC", "crv": "P-256",
        "x": data_encoding::BASE64URL_NOPAD.encode(&x), "y": private["y"]});
    let res = app
        .http
        .get(app.url(&format!("/v1/cards/{CARD}/details")))
        .bearer_auth(&token)
        .header("Accept", "application/jose")
        .header(
            "Cardgate-Encryption-Jwk",
            data_encoding::BASE64URL_NOPAD.encode(off_curve.to_string().as_bytes()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "a key off the curve is refused");
    let res = app
        .http
        .get(app.url(&format!("/v1/cards/{CARD}/details")))
        .bearer_auth(&token)
        .header("Accept", "application/jose")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400, "no key at all is refused too");
    let res = app
        .http
        .get(app.url(&format!("/v1/cards/{CARD}/details")))
        .bearer_auth(&token)
        .header("Accept", "application/jose")
        .header("Cardgate-Encryption-Jwk", &header)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/jose");
    let jwe = res.text().await.unwrap();
    assert!(!jwe.contains(PAN));
    let header: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(jwe.split('.').next().unwrap().as_bytes())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        (header["alg"].as_str(), header["enc"].as_str()),
        (Some("ECDH-ES+A256KW"), Some("A256GCM"))
    );
    assert_eq!(jwcrypto_decrypt(&private, &jwe)["pan"], PAN);
}

#[tokio::test]
async fn a_data_key_rotation_reseals_the_vault_and_every_card_keeps_working() {
    let app = TestApp::spawn().await;
    let tenant = cardgate_core::TenantId::parse("acme").unwrap();
    let card_id = cardgate_core::CardId::parse(CARD).unwrap();
    let before = app
        .svc
        .store
        .get_card(&tenant, cardgate_core::Environment::Sandbox, &card_id)
        .await
        .unwrap()
        .unwrap();
    // A token minted before the rotation is redeemed after it.
    let token = app
        .card_token(
            BACKEND,
            CARD,
            json!({"operations": ["VIEW_CARD", "GET_PIN"], "max_uses": 2}),
        )
        .await;
    let (version, resealed) = app.svc.admin().rotate_data_key(&tenant).await.unwrap();
    assert_eq!(version, 2);
    assert_eq!(resealed, 5, "four cards and Ada's TOTP secret");
    let after = app
        .svc
        .store
        .get_card(&tenant, cardgate_core::Environment::Sandbox, &card_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.key_version, 2);
    assert_ne!(after.vault, before.vault);
    assert_eq!(
        app.get_details(&token, CARD)
            .await
            .json::<Value>()
            .await
            .unwrap()["pan"],
        PAN
    );
    assert_eq!(
        app.get_pin(&token, CARD)
            .await
            .json::<Value>()
            .await
            .unwrap()["pin"],
        PIN
    );
    // TOTP still verifies with the re-sealed secret.
    let session: Value = app.mfa_session(BACKEND, ADA, "totp").await;
    let res = app.post_card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": session["session_id"], "code": totp_now(&app)}})).await;
    assert_eq!(res.status(), 201);
    // Another tenant's data is untouched.
    let other = app
        .svc
        .store
        .get_card(
            &cardgate_core::TenantId::parse("other").unwrap(),
            cardgate_core::Environment::Sandbox,
            &cardgate_core::CardId::parse(CARD_OTHER).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(other.key_version, 1);
}

#[tokio::test]
async fn a_pin_change_racing_a_data_key_rotation_is_never_lost() {
    let app = TestApp::spawn().await;
    let tenant = cardgate_core::TenantId::parse("acme").unwrap();
    for round in 0..4 {
        let pin = format!("90{round}1");
        let set = app
            .card_token(BACKEND, CARD, json!({"operations": ["SET_PIN"]}))
            .await;
        let admin = app.svc.admin();
        let (res, rotated) = tokio::join!(
            app.put_pin(&set, CARD, &pin),
            admin.rotate_data_key(&tenant)
        );
        rotated.unwrap();
        let status = res.status().as_u16();
        let get = app
            .card_token(BACKEND, CARD, json!({"operations": ["GET_PIN"]}))
            .await;
        let now: Value = app.get_pin(&get, CARD).await.json().await.unwrap();
        match status {
            204 => assert_eq!(
                now["pin"],
                pin.as_str(),
                "round {round}: an accepted PIN change survives the rotation"
            ),
            409 => assert_eq!(
                app.introspect(BACKEND, &set).await["uses_made"],
                0,
                "round {round}: a refused change costs no use"
            ),
            other => panic!("round {round}: unexpected status {other}"),
        }
    }
}

#[tokio::test]
async fn a_rotation_done_by_another_process_is_picked_up_on_first_sight() {
    let app = TestApp::spawn().await;
    let admin = app.replica(cardgate_core::Environment::Sandbox).await;
    let token = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    admin
        .svc
        .admin()
        .rotate_data_key(&cardgate_core::TenantId::parse("acme").unwrap())
        .await
        .unwrap();
    let res = app.get_details(&token, CARD).await;
    assert_eq!(
        res.status(),
        200,
        "the new key version is loaded, not a 500"
    );
    assert_eq!(res.json::<Value>().await.unwrap()["pan"], PAN);
}

#[tokio::test]
async fn a_card_changed_by_another_replica_is_read_afresh_before_anything_is_revealed() {
    let a = TestApp::spawn().await;
    let b = a.replica(cardgate_core::Environment::Sandbox).await;
    // Replica a reads (and remembers) both cards while minting.
    let read_pin = a
        .card_token(BACKEND, CARD, json!({"operations": ["GET_PIN"]}))
        .await;
    let activate_a = a
        .card_token(BACKEND, CARD_INACTIVE, json!({"operations": ["ACTIVATE"]}))
        .await;
    // Replica b changes them: a new PIN, and the activation.
    let set = b
        .card_token(BACKEND, CARD, json!({"operations": ["SET_PIN"]}))
        .await;
    assert_eq!(b.put_pin(&set, CARD, "97531").await.status(), 204);
    let activate_b = b
        .card_token(BACKEND, CARD_INACTIVE, json!({"operations": ["ACTIVATE"]}))
        .await;
    assert_eq!(
        b.post_activate(&activate_b, CARD_INACTIVE).await.status(),
        200
    );
    // Replica a answers with the card as it is now, not as it remembers it.
    assert_eq!(
        a.get_pin(&read_pin, CARD)
            .await
            .json::<Value>()
            .await
            .unwrap(),
        json!({"pin": "97531"})
    );
    let (status, body) = status_and_json(a.post_activate(&activate_a, CARD_INACTIVE).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("card_state")),
        "{body}"
    );
    // The refused activation kept its use: the token is still valid for nothing else.
    let intro = a.introspect(BACKEND, &activate_a).await;
    assert_eq!(intro["active"], true, "{intro}");
}

#[tokio::test]
async fn a_remembered_card_is_never_a_reason_to_refuse() {
    let a = TestApp::spawn().await;
    let b = a.replica(cardgate_core::Environment::Sandbox).await;
    // Replica a remembers the inactive card while it has no PIN yet.
    let read_pin = a
        .card_token(BACKEND, CARD_INACTIVE, json!({"operations": ["GET_PIN"]}))
        .await;
    let set = b
        .card_token(BACKEND, CARD_INACTIVE, json!({"operations": ["SET_PIN"]}))
        .await;
    assert_eq!(b.put_pin(&set, CARD_INACTIVE, "2468").await.status(), 204);
    // Replica a finds the PIN set on b instead of answering that there is none.
    let res = a.get_pin(&read_pin, CARD_INACTIVE).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"pin": "2468"}));
}
