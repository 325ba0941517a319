//! The audit log: what it records, that `cardgate audit verify` finds any edit, removal,
//! reorder or truncation, and that no event carries a secret, token or card data.

use crate::cli::{cardgate_on, verified_audit_count};
use crate::helpers::*;
use cardgate_core::audit::StoredAuditEvent;
use serde_json::json;

const WRONG_SECRET: &str = "acme-backend-wrong-secret-0123456789abcdefg";

/// Tokens issued and used along the way, for leak checks.
struct Activity {
    tokens: Vec<String>,
}

/// A token issued, a wrong secret refused, card tokens minted and redeemed, a spent token
/// refused, a PIN changed, an Equals token issued and an access token revoked.
async fn some_activity(app: &TestApp) -> Activity {
    let mut tokens = Vec::new();
    let jwt = app.access_token(BACKEND).await;
    let opaque = app.access_token(OPAQUE).await;
    let (status, body) = status_and_json(
        app.post_token(
            (BACKEND.0, WRONG_SECRET),
            &[("grant_type", "client_credentials")],
        )
        .await,
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client"))
    );

    let view = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    assert_eq!(app.get_details(&view, CARD).await.status(), 200);
    let (status, body) = status_and_json(app.get_details(&view, CARD).await).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_token"))
    );

    let get_pin = app
        .card_token(BACKEND, CARD, json!({"operations": ["GET_PIN"]}))
        .await;
    assert_eq!(app.get_pin(&get_pin, CARD).await.status(), 200);
    let set_pin = app
        .card_token(BACKEND, CARD_BOB, json!({"operations": ["SET_PIN"]}))
        .await;
    assert!(app
        .put_pin(&set_pin, CARD_BOB, NEW_PIN)
        .await
        .status()
        .is_success());

    let res = app
        .get_equals_token(
            Some(&format!("ApiKey {BACKEND_KEY}")),
            CARD,
            "accountId=F50091",
        )
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "{body}");
    let equals = body["token"].as_str().unwrap().to_string();
    assert_eq!(app.get_details(&equals, CARD).await.status(), 200);

    assert_eq!(app.revoke(BACKEND, &jwt).await.status(), 200);

    // Refusals before any token is used: wrong credentials on the card API, a token that is
    // not one, a malformed new PIN with a good token, a malformed Equals request.
    let res = app
        .post_card_token(
            (BACKEND.0, WRONG_SECRET),
            CARD,
            json!({"operations": ["VIEW_CARD"]}),
        )
        .await;
    assert_eq!(res.status(), 401);
    let res = app
        .post_mfa_session((BACKEND.0, WRONG_SECRET), ADA, "totp")
        .await;
    assert_eq!(res.status(), 401);
    let forged = format!("{}x", &view[..view.len() - 1]);
    assert_eq!(app.get_details(&forged, CARD).await.status(), 401);
    let bad_pin = app
        .card_token(BACKEND, CARD_BOB, json!({"operations": ["SET_PIN"]}))
        .await;
    assert_eq!(app.put_pin(&bad_pin, CARD_BOB, "12ab").await.status(), 400);
    let res = app
        .get_equals_token(Some(&format!("ApiKey {BACKEND_KEY}")), CARD, "")
        .await;
    assert_eq!(res.status(), 400);
    tokens.extend([jwt, opaque, view, get_pin, set_pin, equals, forged, bad_pin]);
    Activity { tokens }
}

const NEW_PIN: &str = "975310";

fn has(events: &[StoredAuditEvent], action: &str, outcome: &str) -> bool {
    events
        .iter()
        .any(|e| e.action == action && e.outcome == outcome)
}

#[tokio::test]
async fn the_audit_log_records_issuance_redemption_and_refusals_and_verifies_intact() {
    let app = TestApp::spawn().await;
    some_activity(&app).await;
    let events = app.audit_events().await;
    let summary: Vec<String> = events
        .iter()
        .map(|e| format!("{} {}", e.action, e.outcome))
        .collect();
    for (action, outcome) in [
        ("access_token.issued", "ok"),
        ("access_token.issue", "invalid_client"),
        ("card_token.minted", "ok"),
        ("card_token.redeemed.VIEW_CARD", "ok"),
        ("card_token.redeem.VIEW_CARD", "already_used"),
        ("card_token.redeemed.GET_PIN", "ok"),
        ("card_token.redeemed.SET_PIN", "ok"),
        ("access_token.revoked", "ok"),
        ("client.authenticate", "invalid_client"),
        ("card_token.redeem.VIEW_CARD", "unknown_token"),
        ("card_token.redeem.SET_PIN", "invalid_pin"),
        ("equals.access_token", "missing_account_id"),
    ] {
        assert!(
            has(&events, action, outcome),
            "no {action} {outcome} in {summary:#?}"
        );
    }
    let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "sequence numbers run 1, 2, 3, …"
    );
    assert_eq!(
        verified_audit_count(&app.database_url, &app.master_key).await,
        events.len() as i64
    );
}

#[tokio::test]
async fn audit_verify_finds_edited_removed_reordered_or_truncated_events() {
    let cases: &[(&str, &[&str])] = &[
        ("an edited outcome", &["UPDATE audit_events SET outcome = 'ok' WHERE seq = (SELECT MIN(seq) FROM audit_events WHERE outcome <> 'ok')"]),
        ("a deleted middle event", &["DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) / 2 FROM audit_events)"]),
        (
            "two swapped sequence numbers",
            &[
                "UPDATE audit_events SET seq = -1 WHERE seq = 3",
                "UPDATE audit_events SET seq = 3 WHERE seq = 4",
                "UPDATE audit_events SET seq = 4 WHERE seq = -1",
            ],
        ),
        ("a deleted last event", &["DELETE FROM audit_events WHERE seq = (SELECT MAX(seq) FROM audit_events)"]),
    ];
    for (what, statements) in cases {
        let app = TestApp::spawn().await;
        some_activity(&app).await;
        assert!(verified_audit_count(&app.database_url, &app.master_key).await > 4);

        let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
        for sql in *statements {
            let done = sqlx::query(sql).execute(&pool).await.unwrap();
            assert_eq!(done.rows_affected(), 1, "{what}: {sql}");
        }
        pool.close().await;

        let out = cardgate_on(&app, &["audit", "verify"]).await;
        assert!(!out.success, "{what}: verify passed\n{out:?}");
        assert!(out.stderr.contains("audit chain broken"), "{what}\n{out:?}");
    }
}

/// The words of `text`: runs of letters and digits.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
}

#[tokio::test]
async fn no_audit_event_holds_a_secret_a_token_or_card_data() {
    let app = TestApp::spawn().await;
    let activity = some_activity(&app).await;
    let events = app.audit_events().await;
    assert!(!events.is_empty());

    let mut long: Vec<&str> = fixture_secrets();
    long.push(WRONG_SECRET);
    long.extend(activity.tokens.iter().map(String::as_str));
    long.extend([PAN, PAN_BOB]);
    // CVV and PIN are short enough to occur by chance inside hashes and timestamps, so they
    // are looked for as whole words of the text columns.
    let short = [CVV, PIN, NEW_PIN, "9753"];
    for e in &events {
        let text = [
            e.tenant_id.as_deref().unwrap_or(""),
            &e.environment,
            &e.actor,
            &e.action,
            &e.outcome,
            &e.subject,
            &e.details,
        ]
        .join("|");
        let all = format!("{}|{}|{text}|{}|{}", e.seq, e.ts_ms, e.prev_hash, e.hash);
        assert_absent(
            all.as_bytes(),
            &long,
            &format!("audit event {} ({})", e.seq, e.action),
        );
        for w in words(&text) {
            assert!(
                !short.contains(&w),
                "audit event {} ({}) holds a CVV or PIN: {text}",
                e.seq,
                e.action
            );
        }
    }
}
