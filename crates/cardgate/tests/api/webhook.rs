//! MFA webhooks cannot be aimed inward: no redirect is ever followed, and a production
//! instance sends codes only over https to public addresses, checked on the address it
//! connects to (after DNS), so neither a URL nor a name can point the code at the inside.

use crate::helpers::*;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode};
use cardgate_app::admin::NewClient;
use cardgate_core::{AccessTokenFormat, ClientId, Environment, TenantId};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What an HTTP listener received: (method, path, signature header, body).
type Received = Arc<Mutex<Vec<(Method, String, String, Vec<u8>)>>>;

/// An HTTP listener on a port-0 loopback socket that records every request and answers each
/// with `status` (and `Location: location` when given).
struct Listener {
    url: String,
    got: Received,
}

async fn listener(status: StatusCode, location: Option<String>) -> Listener {
    let got: Received = Arc::default();
    let record = got.clone();
    let app = axum::Router::new().fallback(
        move |method: Method, uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
            let (record, location) = (record.clone(), location.clone());
            async move {
                let sig = headers
                    .get("x-cardgate-signature")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                record
                    .lock()
                    .unwrap()
                    .push((method, uri.path().to_string(), sig, body.to_vec()));
                let mut res = axum::response::Response::new(axum::body::Body::empty());
                *res.status_mut() = status;
                if let Some(l) = location {
                    res.headers_mut().insert("location", l.parse().unwrap());
                }
                res
            }
        },
    );
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", tcp.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(tcp, app).await.unwrap() });
    Listener { url, got }
}

/// A TCP listener that only counts the connections made to it.
struct Knock {
    port: u16,
    connections: Arc<AtomicUsize>,
}

async fn knock(addr: &str) -> Knock {
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let port = tcp.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = tcp.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    Knock { port, connections }
}

/// How cardgate's delivery of `session`'s code ended, as its final log line says
/// (`delivered`, `redirected`, `refused` or `failed`); waits for it, bounded.
async fn delivery_outcome(session: &str) -> Option<String> {
    for _ in 0..200 {
        let found = logs()
            .lines()
            .filter(|l| l.contains(session))
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find_map(|v| {
                (v["fields"]["session"] == session)
                    .then(|| v["fields"]["delivery"].as_str().map(str::to_string))
                    .flatten()
            });
        if found.is_some() {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    None
}

/// A production instance whose `stepup` tenant has `webhook` as its webhook_url, and a
/// production client of that tenant.
async fn production_stepup(webhook: &str) -> (TestApp, (String, String)) {
    let app = TestApp::spawn_on(Db::Sqlite, Environment::Production, Some(webhook)).await;
    let created = app
        .svc
        .admin()
        .create_client(NewClient {
            tenant: TenantId::parse("stepup").unwrap(),
            id: ClientId::parse("stepup-production").unwrap(),
            environment: Environment::Production,
            scopes: cardgate_core::scope::ScopeSet::parse("cards:read:any").unwrap(),
            person_id: None,
            access_token_format: AccessTokenFormat::Jwt,
            with_sdk_api_key: false,
        })
        .await
        .unwrap();
    let client = (
        created.client.id.to_string(),
        created.secret.expose().to_string(),
    );
    (app, client)
}

/// Re-imports the fixture with `webhook` as the `stepup` tenant's webhook_url.
async fn set_webhook(app: &TestApp, webhook: &str) {
    let plan = cardgate_core::import::parse(
        fixture(Some(webhook)).to_string().as_bytes(),
        app.svc.now_ms(),
    )
    .unwrap();
    app.svc.importer().import(plan).await.unwrap();
}

#[tokio::test]
async fn a_webhook_that_redirects_never_passes_the_code_and_signature_on() {
    for status in [307, 308, 301, 302, 303] {
        let second = listener(StatusCode::NO_CONTENT, None).await;
        let first = listener(
            StatusCode::from_u16(status).unwrap(),
            Some(second.url.clone()),
        )
        .await;
        let app = TestApp::spawn_with_webhook(&first.url).await;
        let session = app.mfa_session(STEPUP, CAROL, "sms").await;
        let sid = session["session_id"].as_str().unwrap();

        let outcome = delivery_outcome(sid).await;
        assert!(
            second.got.lock().unwrap().is_empty(),
            "{status}: the redirect's target received {:?}",
            second.got.lock().unwrap()
        );
        assert_eq!(
            outcome.as_deref(),
            Some("redirected"),
            "{status}: a redirect is a failed delivery"
        );
        let got = first.got.lock().unwrap().clone();
        assert_eq!(
            got.len(),
            1,
            "{status}: a redirect is not retried (it says the URL is wrong)"
        );
        let (method, _, sig, body) = &got[0];
        assert_eq!(method, Method::POST);
        let code = serde_json::from_slice::<Value>(body).unwrap()["code"]
            .as_str()
            .unwrap()
            .to_string();
        // The failure is logged without the code or its signature.
        assert_absent(logs().as_bytes(), &[&format!("\"{code}\""), sig], "the log");
    }
}

#[tokio::test]
async fn a_production_instance_refuses_a_webhook_aimed_inward_when_the_session_starts() {
    let v4 = knock("127.0.0.1:0").await;
    let v6 = knock("[::1]:0").await;
    let (p4, p6) = (v4.port, v6.port);
    let (app, client) = production_stepup("https://hooks.invalid/mfa").await;
    let client = (client.0.as_str(), client.1.as_str());
    let cases: Vec<(String, &str)> = vec![
        (format!("http://127.0.0.1:{p4}/hook"), "must use https"),
        ("http://hooks.invalid/mfa".into(), "must use https"),
        (format!("https://127.0.0.1:{p4}/hook"), "loopback"),
        (format!("https://127.1.2.3:{p4}/hook"), "loopback"),
        (format!("https://2130706433:{p4}/hook"), "loopback"),
        (format!("https://0x7f.1:{p4}/hook"), "loopback"),
        (format!("https://[::1]:{p6}/hook"), "loopback"),
        (format!("https://[::ffff:127.0.0.1]:{p4}/hook"), "loopback"),
        (format!("https://0.0.0.0:{p4}/hook"), "unspecified"),
        (format!("https://[::]:{p6}/hook"), "unspecified"),
        ("https://10.1.2.3/hook".into(), "private"),
        ("https://172.16.5.4/hook".into(), "private"),
        ("https://192.168.0.10/hook".into(), "private"),
        ("https://[fd12:3456::1]/hook".into(), "private"),
        ("https://100.64.0.1/hook".into(), "carrier-grade NAT"),
        ("https://169.254.10.20/hook".into(), "link-local"),
        ("https://[fe80::1]/hook".into(), "link-local"),
        ("https://224.0.0.1/hook".into(), "multicast"),
        ("https://[ff02::1]/hook".into(), "multicast"),
        ("https://255.255.255.255/hook".into(), "broadcast"),
        (
            "https://169.254.169.254/latest/meta-data/".into(),
            "metadata",
        ),
        (
            "https://[fd00:ec2::254]/latest/meta-data/".into(),
            "metadata",
        ),
        (
            "https://100.100.100.200/latest/meta-data/".into(),
            "metadata",
        ),
        ("https://[::ffff:169.254.169.254]/".into(), "metadata"),
        ("https://[::ffff:a9fe:a9fe]/".into(), "metadata"),
        ("https://[64:ff9b::a9fe:a9fe]/".into(), "metadata"),
        ("https://[64:ff9b::10.0.0.1]/".into(), "private"),
    ];
    for (url, reason) in &cases {
        set_webhook(&app, url).await;
        let (status, body) =
            status_and_json(app.post_mfa_session(client, CAROL, "sms").await).await;
        let description = body["error_description"].as_str().unwrap_or_default();
        assert_eq!(
            (status, body["error"].as_str()),
            (409, Some("unavailable_channel")),
            "{url}: {body}"
        );
        assert!(
            description.contains("production") && description.contains(reason),
            "{url}: {description}"
        );
    }
    let refusals = app
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e.action == "mfa.start" && e.outcome == "webhook_refused")
        .count();
    assert_eq!(refusals, cases.len(), "every refusal is audited");
    // A name is judged on the addresses it resolves to, when the code is sent.
    set_webhook(&app, "https://hooks.invalid/mfa").await;
    assert_eq!(
        app.post_mfa_session(client, CAROL, "sms").await.status(),
        201
    );
    assert_eq!(
        (
            v4.connections.load(Ordering::SeqCst),
            v6.connections.load(Ordering::SeqCst)
        ),
        (0, 0),
        "nothing connected to the loopback listeners"
    );
}

#[tokio::test]
async fn a_production_webhook_whose_name_resolves_to_loopback_is_refused_when_the_code_is_sent() {
    let local = knock("127.0.0.1:0").await;
    let (app, client) = production_stepup(&format!("https://localhost:{}/hook", local.port)).await;
    let session = app
        .mfa_session((client.0.as_str(), client.1.as_str()), CAROL, "sms")
        .await;
    let sid = session["session_id"].as_str().unwrap();

    let outcome = delivery_outcome(sid).await;
    assert_eq!(
        local.connections.load(Ordering::SeqCst),
        0,
        "no connection to the address the name resolved to"
    );
    assert_eq!(outcome.as_deref(), Some("refused"));
    let event = app
        .audit_events()
        .await
        .into_iter()
        .find(|e| e.action == "mfa.code_delivery")
        .expect("the refusal is audited");
    let details: Value = serde_json::from_str(&event.details).unwrap();
    assert_eq!(
        (event.outcome.as_str(), &details),
        (
            "destination_refused",
            &json!({"session": sid, "reason": "loopback"})
        )
    );
}

#[tokio::test]
async fn a_sandbox_instance_still_delivers_over_http_to_a_name_that_resolves_to_loopback() {
    let hook = listener(StatusCode::NO_CONTENT, None).await;
    let url = hook.url.replace("127.0.0.1", "localhost");
    let app = TestApp::spawn_with_webhook(&url).await;
    let session = app.mfa_session(STEPUP, CAROL, "email").await;
    let sid = session["session_id"].as_str().unwrap();
    for _ in 0..200 {
        if !hook.got.lock().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let got = hook.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "delivered once");
    let msg: Value = serde_json::from_slice(&got[0].3).unwrap();
    assert_eq!(msg["session_id"], sid);
}
