//! Operability: health, metrics, OpenAPI coverage, fallbacks, that no secret reaches logs,
//! metrics or the database file, and the wire rules every surface shares where the OpenAPI
//! check (`scripts/schemathesis.sh`) cannot tell right from wrong because both answers are
//! documented.

use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[tokio::test]
async fn healthz_answers_ok() {
    let app = TestApp::spawn().await;
    let res = app.http.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_answers_ok_while_the_store_answers() {
    let app = TestApp::spawn().await;
    let res = app.http.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"status": "ok"}));
}

#[tokio::test]
async fn the_openapi_document_covers_exactly_the_routes_served() {
    let app = TestApp::spawn().await;
    let doc: Value = app
        .http
        .get(app.url("/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    // The served document is the one generated from the handlers' declarations, and names
    // exactly the public surface.
    let generated: BTreeSet<(String, String)> = cardgate_http::routes(&cardgate_http::openapi());
    assert_eq!(documented, generated);
    let surface: BTreeSet<(String, String)> = [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("post", "/oauth2/token"),
        ("post", "/oauth2/introspect"),
        ("post", "/oauth2/revoke"),
        ("get", "/.well-known/oauth-authorization-server"),
        ("get", "/.well-known/jwks.json"),
        ("post", "/v1/cards/{card_id}/tokens"),
        ("get", "/v1/cards/{card_id}/details"),
        ("get", "/v1/cards/{card_id}/pin"),
        ("put", "/v1/cards/{card_id}/pin"),
        ("post", "/v1/cards/{card_id}/activate"),
        ("get", "/v1/cards/{card_id}/wallet-eligibility"),
        ("post", "/v1/persons/{person_id}/mfa/sessions"),
        ("post", "/fiserv/cs/oauth2/v1/token"),
        ("get", "/equals/v2/cards/{cardId}/access-token"),
        ("get", "/synctera/v1/cards/{card_id}/widget_token"),
        ("post", "/synctera/v1/cards/{card_id}/widget_token"),
        ("get", "/widgets/v1/{widget}"),
        ("get", "/widgets/v1/embed.js"),
        ("get", "/widgets/v1/widget.js"),
        ("get", "/widgets/v1/widget.css"),
        ("post", "/treasuryprime/person/{id}/uxt_access_token"),
        ("post", "/bankezy/token-service/client/server/new/v2/token"),
        (
            "post",
            "/bankezy/token-service/client/server/invalidate/token",
        ),
        ("get", "/bankezy/token-service/sdk/v1/cards"),
        (
            "get",
            "/bankezy/token-service/sdk/v1/cards/{cardId}/details",
        ),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented, surface);
    // Every documented route is routed (not a fallback), and the metrics label each by the
    // documented template.
    for (method, path) in &documented {
        let concrete = path
            .replace("{card_id}", CARD)
            .replace("{cardId}", CARD)
            .replace("{person_id}", ADA)
            .replace("{widget}", "reveal")
            .replace("{id}", ADA);
        let req = app
            .http
            .request(method.to_uppercase().parse().unwrap(), app.url(&concrete));
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        assert!(
            !(status == 404
                && (body.contains("no such route") || body.contains("no such resource"))),
            "{method} {path} is routed"
        );
    }
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (method, path) in &documented {
        assert!(
            metrics.contains(&format!(
                "route=\"{path}\",method=\"{}\"",
                method.to_uppercase()
            )),
            "{method} {path} is labelled in the metrics"
        );
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_json_errors() {
    let app = TestApp::spawn().await;
    let (status, body) =
        status_and_json(app.http.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (status, body) = status_and_json(
        app.http
            .delete(app.url("/oauth2/token"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

/// RFC 6750 §3.1 and RFC 6749 §5.2: a credential of a scheme the route does not take is an
/// unsupported authentication method, answered like a missing credential (401 with a
/// challenge), not as a malformed request (400).
#[tokio::test]
async fn an_unsupported_authorization_scheme_is_answered_like_a_missing_credential() {
    let app = TestApp::spawn().await;
    let form = "application/x-www-form-urlencoded";
    let mint = format!("/v1/cards/{CARD}/tokens");
    let mfa = format!("/v1/persons/{ADA}/mfa/sessions");
    let details = format!("/v1/cards/{CARD}/details");
    let equals = format!("/equals/v2/cards/{CARD}/access-token?accountId=F50091");
    // (route, method, content type, body, status, error or code)
    let routes: Vec<(&str, &str, &str, &str, u16, &str)> = vec![
        (
            "/oauth2/token",
            "POST",
            form,
            "grant_type=client_credentials",
            401,
            "invalid_client",
        ),
        (
            "/oauth2/introspect",
            "POST",
            form,
            "token=abc",
            401,
            "invalid_client",
        ),
        (
            &mint,
            "POST",
            "application/json",
            r#"{"operations":["VIEW_CARD"]}"#,
            401,
            "invalid_client",
        ),
        (
            &mfa,
            "POST",
            "application/json",
            r#"{"channel":"totp"}"#,
            401,
            "invalid_client",
        ),
        (&details, "GET", "", "", 401, "invalid_token"),
        (
            "/fiserv/cs/oauth2/v1/token?scope=cards:read:any",
            "POST",
            form,
            "grant_type=client_credentials",
            401,
            "UNAUTHORIZED",
        ),
        // Equals answers every credential it cannot use with 403 (SPEC §4.1).
        (&equals, "GET", "", "", 403, "FORBIDDEN"),
    ];
    let schemes = [
        "Digest username=\"acme-backend\", realm=\"cardgate\"",
        "Negotiate YIIBhwYGKwYBBQUCoIIBezCCAXeg",
        "DPoP eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
    ];
    for (route, method, content_type, body, status, error) in &routes {
        for scheme in schemes {
            let mut req = app
                .http
                .request(method.parse().unwrap(), app.url(route))
                .header("Authorization", scheme)
                .header("x-fapi-financial-id", ACME_FI)
                .body(*body);
            if !content_type.is_empty() {
                req = req.header("Content-Type", *content_type);
            }
            let res = req.send().await.unwrap();
            let challenge = res.headers().contains_key("www-authenticate");
            let (got, json) = status_and_json(res).await;
            let code = json["error"].as_str().or(json["code"].as_str());
            // The card API's client routes take DPoP-bound access tokens (RFC 9449 §7.1):
            // there a DPoP credential is a token, and this one is not valid.
            let dpop_route =
                scheme.starts_with("DPoP") && (*route == mint.as_str() || *route == mfa.as_str());
            let (status, error) = if dpop_route {
                (&401, &"invalid_token")
            } else {
                (status, error)
            };
            assert_eq!(
                (got, code),
                (*status, Some(*error)),
                "{method} {route} with {scheme}: {json}"
            );
            if got == 401 {
                assert!(
                    challenge,
                    "{method} {route} with {scheme}: 401 carries a challenge"
                );
            }
        }
    }
}

/// RFC 6749 §3.2: the server ignores parameters it does not recognise, repeated ones too;
/// only a parameter it reads may not repeat. Every surface reads query strings and form
/// bodies the same way.
#[tokio::test]
async fn unrecognized_parameters_are_ignored_even_when_repeated() {
    let app = TestApp::spawn().await;
    let auth = basic(BACKEND.0, BACKEND.1);
    let form = "application/x-www-form-urlencoded";
    let token = |body: &'static str| {
        app.http
            .post(app.url("/oauth2/token"))
            .header("Authorization", &auth)
            .header("Content-Type", form)
            .body(body)
            .send()
    };
    let (status, body) = status_and_json(
        token("grant_type=client_credentials&x=1&x=2&%E2%82%AC=&%E2%82%AC=")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "native token endpoint: {body}");
    let (status, body) = status_and_json(
        token("grant_type=client_credentials&scope=cards:read:any&scope=cards:read:any")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_request")),
        "a repeated scope is refused: {body}"
    );
    let res = app
        .post_fiserv_token(
            "cards:read:any&x=1&x=2",
            &[
                ("Authorization", &auth),
                ("Content-Type", form),
                ("x-fapi-financial-id", ACME_FI),
            ],
            "grant_type=client_credentials&y=1&y=2",
        )
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "Fiserv query and form: {body}");
    let res = app
        .get_equals_token(
            Some(&format!("ApiKey {BACKEND_KEY}")),
            CARD,
            "accountId=F50091&utm=a&utm=b",
        )
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "Equals query: {body}");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_tokens_by_kind() {
    let app = TestApp::spawn().await;
    app.access_token(BACKEND).await;
    let ct = app
        .card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]}))
        .await;
    app.get_details(&ct, CARD).await;
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"cardgate_http_requests_total{route="/oauth2/token",method="POST",status="200"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"route="/v1/cards/{card_id}/details""#));
    assert!(text.contains("cardgate_http_request_duration_seconds_bucket"));
    assert!(text.contains(r#"cardgate_tokens_issued_total{kind="access_token"} 1"#));
    assert!(text.contains(r#"cardgate_tokens_issued_total{kind="card_token"} 1"#));
    assert!(
        !text.contains(CARD),
        "metrics carry route templates, not ids"
    );
}

#[tokio::test]
async fn no_secret_token_or_card_data_reaches_logs_metrics_or_the_database_file() {
    let app = TestApp::spawn().await;
    let mut needles: Vec<String> = fixture_secrets().iter().map(|s| s.to_string()).collect();
    needles.push(app.access_token(BACKEND).await);
    needles.push(app.access_token(OPAQUE).await);
    let ct = app
        .card_token(
            BACKEND,
            CARD,
            json!({"operations": ["VIEW_CARD", "GET_PIN"], "max_uses": 5}),
        )
        .await;
    assert_eq!(app.get_details(&ct, CARD).await.status(), 200);
    assert_eq!(app.get_pin(&ct, CARD).await.status(), 200);
    let set = app
        .card_token(BACKEND, CARD, json!({"operations": ["SET_PIN"]}))
        .await;
    assert_eq!(app.put_pin(&set, CARD, "97531").await.status(), 204);
    app.get_details(&ct, CARD_BOB).await;
    app.post_token(
        (BACKEND.0, "a-wrong-secret-a-wrong-secret-a-wrong"),
        &[("grant_type", "client_credentials")],
    )
    .await;
    let eq = app
        .get_equals_token(
            Some(&format!("ApiKey {BACKEND_KEY}")),
            CARD,
            "accountId=F50091&token=999999&sessionId=x",
        )
        .await;
    assert!(eq.status().is_client_error());
    needles.push(ct.clone());
    needles.push(set.clone());
    needles.push("a-wrong-secret-a-wrong".into());
    // The new PIN is short enough to turn up by chance inside a hex digest: it is looked
    // for as the JSON value it would be wherever it leaked.
    let card_data = [PAN, PAN_BOB, "\"97531\""];
    let mut all: Vec<&str> = needles.iter().map(String::as_str).collect();
    all.extend(card_data);
    let logs = logs();
    assert!(logs.contains("\"route\""), "request logs are captured");
    assert_absent(logs.as_bytes(), &all, "the log");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_absent(metrics.as_bytes(), &all, "the metrics");
    // Force the WAL into the main file too, then look at raw bytes.
    assert_absent(&app.database_bytes(), &all, "the database file");
    // CVV and PIN are short, so look for them only as JSON values the vault would hold.
    assert_absent(
        &app.database_bytes(),
        &["\"cvv\":\"123\"", "\"2468\""],
        "the database file",
    );
}

/// Sends `head` (and no more) on a fresh connection; what the server answers, if anything,
/// before it closes the connection, and how long that took.
async fn stall(app: &TestApp, head: &[u8]) -> (String, std::time::Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(head).await.unwrap();
    let start = std::time::Instant::now();
    let mut got = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(20), async {
        let mut buf = [0u8; 4096];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server held a stalled request for 20 s");
    (String::from_utf8_lossy(&got).into_owned(), start.elapsed())
}

#[tokio::test]
async fn a_client_that_stops_sending_is_answered_or_cut_off_not_waited_for() {
    let app = TestApp::spawn().await;
    // A body that never completes: refused as unreadable, in each route's own shape.
    let (said, took) = stall(
        &app,
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\ngrant_type=client",
    )
    .await;
    assert!(said.starts_with("HTTP/1.1 400"), "{said}");
    assert!(said.contains(r#""error":"invalid_request""#), "{said}");
    assert!(took >= TEST_TIMEOUTS.body / 2, "answered after {took:?}");
    let (said, _) = stall(
        &app,
        format!(
            "POST /fiserv/cs/oauth2/v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Authorization: {}\r\nx-fapi-interaction-id: slow-1\r\nContent-Length: 999\r\n\r\n{{",
            basic(BACKEND.0, BACKEND.1)
        )
        .as_bytes(),
    )
    .await;
    assert!(said.starts_with("HTTP/1.1 400"), "{said}");
    assert!(said.contains("x-fapi-interaction-id: slow-1"), "{said}");
    // Headers that never complete: the connection is closed.
    let (said, took) = stall(&app, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await;
    assert!(!said.contains("200 OK"), "{said}");
    assert!(took >= TEST_TIMEOUTS.headers / 2, "closed after {took:?}");
    // The server still serves everyone else.
    assert_eq!(
        app.http
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}
