//! A store that cannot answer: every surface answers 503 in its own shape with `Retry-After`
//! within about a second (never a 401, a 500 or a hang), `/readyz` says so while `/healthz`
//! stays a liveness check, store errors are counted, and service resumes without a restart
//! when the database returns — on SQLite through the fault-injecting store, and on a private
//! PostgreSQL cluster stopped under load.

use crate::cli::eventually;
use crate::faults::{assert_native_unavailable, spawn_faulty, Outage};
use crate::helpers::*;
use cardgate_app::STORE_WAIT;
use cardgate_core::Environment;
use futures::FutureExt;
use reqwest::Response;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Longer than any answer may take while the store is down: a hang detector, not a timing.
const HANG: Duration = Duration::from_secs(3);

const INTERACTION: &str = "outage-interaction-1";

fn fiserv_headers() -> Vec<(&'static str, String)> {
    vec![
        ("Authorization", basic(BACKEND.0, BACKEND.1)),
        ("Content-Type", "application/x-www-form-urlencoded".into()),
        ("x-fapi-financial-id", ACME_FI.into()),
        ("x-fapi-interaction-id", INTERACTION.into()),
    ]
}

fn fiserv_request(http: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
    let mut req = http
        .post(format!(
            "{base}/fiserv/cs/oauth2/v1/token?scope=cards:read:any"
        ))
        .body("grant_type=client_credentials");
    for (k, v) in fiserv_headers() {
        req = req.header(k, v);
    }
    req
}

fn equals_request(http: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
    http.get(format!(
        "{base}/equals/v2/cards/{CARD}/access-token?accountId=F50091"
    ))
    .header("Authorization", format!("ApiKey {BACKEND_KEY}"))
}

async fn fiserv_token(app: &TestApp) -> Response {
    fiserv_request(&app.http, &app.base).send().await.unwrap()
}

async fn equals_token(app: &TestApp) -> Response {
    equals_request(&app.http, &app.base).send().await.unwrap()
}

fn retry_after(res: &Response) -> Option<u64> {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Asserts a Fiserv answer is 503 `SERVICE_UNAVAILABLE` with `Retry-After` and the caller's
/// interaction id, echoed in the header and the body.
async fn assert_fiserv_unavailable(res: Response) {
    assert!(
        retry_after(&res).is_some_and(|s| s >= 1),
        "Fiserv Retry-After"
    );
    let echoed = res
        .headers()
        .get("x-fapi-interaction-id")
        .map(|v| v.to_str().unwrap().to_string());
    assert_eq!(echoed.as_deref(), Some(INTERACTION));
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body["interactionId"], INTERACTION, "{body}");
}

/// Asserts an Equals answer is 503 `SERVICE_UNAVAILABLE` with `Retry-After`.
async fn assert_equals_unavailable(res: Response) {
    assert!(
        retry_after(&res).is_some_and(|s| s >= 1),
        "Equals Retry-After"
    );
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "SERVICE_UNAVAILABLE", "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(body.as_object().unwrap().len(), 2, "{body}");
}

async fn readyz(app: &TestApp) -> u16 {
    app.http
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn healthz(app: &TestApp) -> u16 {
    app.http
        .get(app.url("/healthz"))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// The `cardgate_store_errors_total` lines of `/metrics`.
async fn store_error_metrics(app: &TestApp) -> Vec<String> {
    let text = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("cardgate_store_errors_total{"))
        .map(str::to_string)
        .collect()
}

/// The sum of every `cardgate_store_errors_total` series.
async fn store_errors_counted(app: &TestApp) -> u64 {
    store_error_metrics(app)
        .await
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Runs `request` and asserts it is answered within the hang detector.
async fn answered<F: std::future::Future<Output = Response>>(what: &str, request: F) -> Response {
    let started = Instant::now();
    let res = tokio::time::timeout(HANG, request)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {HANG:?}"));
    assert!(
        started.elapsed() < HANG,
        "{what} took {:?}",
        started.elapsed()
    );
    res
}

/// What was acknowledged before the outage, to use during and after it.
struct Before {
    /// A VIEW_CARD card token usable until it expires.
    card_token: String,
    /// An opaque access token, never presented yet (so no cache has verified it).
    opaque_access: String,
}

/// What was acknowledged before the outage; from here on, requests wait for the store as
/// long as in production.
async fn acknowledged_before(app: &TestApp) -> Before {
    let before = Before {
        card_token: app
            .card_token(
                BACKEND,
                CARD,
                json!({"operations": ["VIEW_CARD"], "single_use": false}),
            )
            .await,
        opaque_access: app.access_token(OPAQUE).await,
    };
    app.svc.set_store_wait(STORE_WAIT);
    before
}

/// Every surface, each with a request that needs the store, answers 503 in its own shape.
async fn assert_every_surface_unavailable(app: &TestApp, before: &Before) {
    let native_token = answered(
        "native token",
        app.post_token(BACKEND, &[("grant_type", "client_credentials")]),
    )
    .await;
    assert_native_unavailable(native_token, "native token").await;
    let mint = answered(
        "card token mint",
        app.post_card_token(BACKEND, CARD, json!({"operations": ["VIEW_CARD"]})),
    )
    .await;
    assert_native_unavailable(mint, "card token mint").await;
    let redeem = answered("redemption", app.get_details(&before.card_token, CARD)).await;
    assert_native_unavailable(redeem, "redemption").await;
    // An access token the store must look up is not "invalid" because the store is down.
    let bearer = answered(
        "mint with an opaque Bearer access token",
        app.http
            .post(app.url(&format!("/v1/cards/{CARD}/tokens")))
            .bearer_auth(&before.opaque_access)
            .json(&json!({"operations": ["VIEW_CARD"]}))
            .send()
            .map(Result::unwrap),
    )
    .await;
    assert_native_unavailable(bearer, "opaque Bearer access token").await;
    let introspected = answered(
        "introspection",
        app.http
            .post(app.url("/oauth2/introspect"))
            .basic_auth(OPAQUE.0, Some(OPAQUE.1))
            .form(&[("token", before.opaque_access.as_str())])
            .send()
            .map(Result::unwrap),
    )
    .await;
    assert_native_unavailable(introspected, "introspection").await;
    let revoked = answered("revocation", app.revoke(BACKEND, &before.card_token)).await;
    assert_native_unavailable(revoked, "revocation").await;
    let mfa = answered("MFA session", app.post_mfa_session(STEPUP, CAROL, "totp")).await;
    assert_native_unavailable(mfa, "MFA session").await;
    assert_fiserv_unavailable(answered("Fiserv", fiserv_token(app)).await).await;
    assert_equals_unavailable(answered("Equals", equals_token(app)).await).await;

    let ready = answered(
        "readyz",
        app.http.get(app.url("/readyz")).send().map(Result::unwrap),
    )
    .await;
    assert!(
        retry_after(&ready).is_some_and(|s| s >= 1),
        "readyz Retry-After"
    );
    assert_eq!(
        status_and_json(ready).await,
        (503, json!({"status": "unavailable"}))
    );
    assert_eq!(healthz(app).await, 200, "healthz is liveness only");
    let counted = store_error_metrics(app).await;
    assert!(
        counted.iter().any(|l| l.contains("kind=\"unavailable\"")),
        "store errors counted: {counted:?}"
    );
}

/// Every surface serves again, and what was acknowledged before the outage still works.
async fn assert_service_resumed(app: &TestApp, before: &Before) {
    assert_eq!(readyz(app).await, 200);
    // What works again, not how fast: a busy test machine may take a second for a commit.
    app.svc.set_store_wait(TEST_STORE_WAIT);
    let (status, body) = status_and_json(app.get_details(&before.card_token, CARD).await).await;
    assert_eq!((status, body["pan"].as_str()), (200, Some(PAN)), "{body}");
    let res = app
        .http
        .post(app.url(&format!("/v1/cards/{CARD}/tokens")))
        .bearer_auth(&before.opaque_access)
        .json(&json!({"operations": ["VIEW_CARD"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    assert_eq!(fiserv_token(app).await.status(), 200);
    assert_eq!(equals_token(app).await.status(), 200);
    app.access_token(BACKEND).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_surface_answers_503_in_its_own_shape_while_the_store_refuses_connections() {
    let (app, faulty) = spawn_faulty().await;
    let before = acknowledged_before(&app).await;
    assert_eq!(readyz(&app).await, 200);

    faulty.set_outage(Outage::Refusing);
    assert_every_surface_unavailable(&app, &before).await;

    faulty.set_outage(Outage::None);
    assert_service_resumed(&app, &before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_answering_is_answered_503_within_a_second_not_waited_out() {
    let (app, faulty) = spawn_faulty().await;
    let before = acknowledged_before(&app).await;

    faulty.set_outage(Outage::Silent);
    assert_every_surface_unavailable(&app, &before).await;

    faulty.set_outage(Outage::None);
    assert_service_resumed(&app, &before).await;
}

// ---- PostgreSQL stopped under load ------------------------------------------------------

use crate::pg_cluster::PrivateCluster;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Surface {
    NativeToken,
    CardMint,
    Redemption,
    Fiserv,
    Equals,
}

/// One answer the load got.
struct Answer {
    surface: Surface,
    status: u16,
    took: Duration,
    /// Whether a 503 was in the surface's shape (always true for other statuses).
    shaped: bool,
}

/// Concurrent requests on the native API, Fiserv and Equals until stopped; every answer is
/// recorded, and every token acknowledged is kept to be used after the outage.
struct Load {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<Answer>>>,
    /// Card tokens acknowledged (201 from the native API, 200 from Equals), never redeemed
    /// by the load itself.
    acknowledged: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Whether a 503 body is in the shape of its surface.
fn shaped(
    surface: Surface,
    status: u16,
    retry: Option<u64>,
    iid: Option<&str>,
    body: &Value,
) -> bool {
    if status != 503 {
        return true;
    }
    let retry_ok = retry.is_some_and(|s| s >= 1);
    retry_ok
        && match surface {
            Surface::NativeToken | Surface::CardMint | Surface::Redemption => {
                body["error"] == "temporarily_unavailable" && body["error_description"].is_string()
            }
            Surface::Fiserv => {
                body["code"] == "SERVICE_UNAVAILABLE"
                    && body["interactionId"] == INTERACTION
                    && iid == Some(INTERACTION)
            }
            Surface::Equals => body["code"] == "SERVICE_UNAVAILABLE" && body["message"].is_string(),
        }
}

impl Load {
    fn start(app: &TestApp) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut tasks = Vec::new();
        for surface in [
            Surface::NativeToken,
            Surface::CardMint,
            Surface::Redemption,
            Surface::Fiserv,
            Surface::Equals,
        ] {
            let (stop, answers, acknowledged) =
                (stop.clone(), answers.clone(), acknowledged.clone());
            let (http, base) = (http.clone(), app.base.clone());
            tasks.push(tokio::spawn(async move {
                let mut redeemable: Option<String> = None;
                // Paced, so the token endpoints stay within the tenant's rate limit (600 a
                // minute per client) for the whole test: a 429 would be a wrong answer here.
                let pace = match surface {
                    Surface::NativeToken | Surface::Fiserv => Duration::from_millis(50),
                    _ => Duration::from_millis(20),
                };
                let mut tick = tokio::time::interval(pace);
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let started = Instant::now();
                    let res = match surface {
                        Surface::NativeToken => http
                            .post(format!("{base}/oauth2/token"))
                            .basic_auth(OPAQUE.0, Some(OPAQUE.1))
                            .form(&[("grant_type", "client_credentials")])
                            .send()
                            .await,
                        Surface::CardMint => http
                            .post(format!("{base}/v1/cards/{CARD}/tokens"))
                            .basic_auth(BACKEND.0, Some(BACKEND.1))
                            .json(&json!({"operations": ["VIEW_CARD"], "single_use": false}))
                            .send()
                            .await,
                        Surface::Redemption => {
                            let token = match &redeemable {
                                Some(t) => t.clone(),
                                None => {
                                    let res = http
                                        .post(format!("{base}/v1/cards/{CARD}/tokens"))
                                        .basic_auth(BACKEND.0, Some(BACKEND.1))
                                        .json(&json!({"operations": ["VIEW_CARD"], "single_use": false}))
                                        .send()
                                        .await;
                                    match res {
                                        Ok(r) if r.status() == 201 => {
                                            let v: Value = r.json().await.unwrap();
                                            let t = v["token"].as_str().unwrap().to_string();
                                            redeemable = Some(t.clone());
                                            t
                                        }
                                        // The mint's own surface is measured by CardMint.
                                        _ => continue,
                                    }
                                }
                            };
                            http.get(format!("{base}/v1/cards/{CARD}/details"))
                                .bearer_auth(token)
                                .send()
                                .await
                        }
                        Surface::Fiserv => fiserv_request(&http, &base).send().await,
                        Surface::Equals => equals_request(&http, &base).send().await,
                    };
                    let took = started.elapsed();
                    let Ok(res) = res else {
                        answers.lock().unwrap().push(Answer { surface, status: 0, took, shaped: false });
                        continue;
                    };
                    let status = res.status().as_u16();
                    let retry = retry_after(&res);
                    let iid = res
                        .headers()
                        .get("x-fapi-interaction-id")
                        .map(|v| v.to_str().unwrap_or_default().to_string());
                    let body: Value = res.json().await.unwrap_or(Value::Null);
                    let ok = shaped(surface, status, retry, iid.as_deref(), &body);
                    let token = match (surface, status) {
                        (Surface::CardMint, 201) | (Surface::Equals, 200) => body["token"].as_str().map(str::to_string),
                        _ => None,
                    };
                    if let Some(t) = token {
                        acknowledged.lock().unwrap().push(t);
                    }
                    answers.lock().unwrap().push(Answer { surface, status, took, shaped: ok });
                }
            }));
        }
        Load {
            stop,
            answers,
            acknowledged,
            tasks,
        }
    }

    /// How many answers of `surface` had `status` (from the `from`-th answer on).
    fn count(&self, from: usize, surface: Surface, status: u16) -> usize {
        self.answers.lock().unwrap()[from..]
            .iter()
            .filter(|a| a.surface == surface && a.status == status)
            .count()
    }

    fn len(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    async fn finish(self) -> (Vec<Answer>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        let answers = std::mem::take(&mut *self.answers.lock().unwrap());
        let acknowledged = std::mem::take(&mut *self.acknowledged.lock().unwrap());
        (answers, acknowledged)
    }
}

const SURFACES: [Surface; 5] = [
    Surface::NativeToken,
    Surface::CardMint,
    Surface::Redemption,
    Surface::Fiserv,
    Surface::Equals,
];

fn success(surface: Surface) -> u16 {
    match surface {
        Surface::CardMint => 201,
        _ => 200,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_stopped_under_load_is_answered_503_on_every_surface_and_service_resumes() {
    let Some(cluster) = PrivateCluster::start().await else {
        return;
    };
    let app = TestApp::spawn_on(Db::Postgres(cluster.url()), Environment::Sandbox, None).await;
    let mut acknowledged = Vec::new();

    for mode in ["fast", "immediate"] {
        let before = acknowledged_before(&app).await;
        acknowledged.push(before.card_token.clone());
        let load = Load::start(&app);
        let from = 0;
        eventually(
            &format!("[{mode}] every surface serves under load"),
            Duration::from_secs(30),
            || {
                let done = SURFACES
                    .iter()
                    .all(|s| load.count(from, *s, success(*s)) >= 3);
                async move { done }
            },
        )
        .await;

        let errors_before = store_errors_counted(&app).await;
        cluster.pg_stop(mode).await;
        let stopped_at = load.len();
        eventually(
            &format!("[{mode}] every surface answers 503 under load"),
            Duration::from_secs(10),
            || {
                let done = SURFACES
                    .iter()
                    .all(|s| load.count(stopped_at, *s, 503) >= 1);
                async move { done }
            },
        )
        .await;
        // Fresh requests on every surface, /readyz and /healthz, while it is down.
        assert_every_surface_unavailable(&app, &before).await;
        assert!(
            store_errors_counted(&app).await > errors_before,
            "[{mode}] store errors counted"
        );

        let (answers, acked) = load.finish().await;
        acknowledged.extend(acked);
        for a in &answers {
            assert!(
                a.status == success(a.surface) || a.status == 503,
                "[{mode}] {:?} answered {} (only success or 503 may be)",
                a.surface,
                a.status
            );
            assert!(
                a.shaped,
                "[{mode}] {:?}: a 503 not in the surface's shape",
                a.surface
            );
            assert!(a.took < HANG, "[{mode}] {:?} took {:?}", a.surface, a.took);
        }

        let restarted = Instant::now();
        cluster.pg_start().await;
        eventually(
            &format!("[{mode}] readyz after the database returns"),
            Duration::from_secs(15),
            || {
                let app = &app;
                async move { readyz(app).await == 200 }
            },
        )
        .await;
        eprintln!(
            "[{mode}] {} answers under load; ready again {:?} after the database accepted connections",
            answers.len(),
            restarted.elapsed()
        );
        assert_service_resumed(&app, &before).await;
    }

    // No token acknowledged before or during the outages was lost.
    assert!(!acknowledged.is_empty());
    for token in &acknowledged {
        let (status, body) = status_and_json(app.get_details(token, CARD).await).await;
        assert_eq!(
            (status, body["pan"].as_str()),
            (200, Some(PAN)),
            "an acknowledged token: {body}"
        );
    }
}

// ---- the store stops answering in the middle of a request ---------------------------------

/// A wrong MFA code is counted by its commit; what the answer then says (a wrong code, or the
/// session's last) is read from the store. If the store stops answering right after that
/// commit, the request must still be answered within about a second — a 503, or the refusal
/// itself — never held until the database comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_mfa_code_is_answered_within_a_second_when_the_store_stops_answering_after_its_commit(
) {
    let (app, faulty) = spawn_faulty().await;
    let session = app.mfa_session(STEPUP, CAROL, "totp").await;
    let sid = session["session_id"].as_str().unwrap().to_string();
    let now = app.svc.now_ms();
    let valid: Vec<String> = [-30_000, 0, 30_000]
        .iter()
        .map(|d| cardgate_core::mfa::totp_at(TOTP_KEY, now + d))
        .collect();
    let wrong = (0..10)
        .map(|i| format!("{:06}", 100_000 + i))
        .find(|c| !valid.contains(c))
        .unwrap();
    app.svc.set_store_wait(STORE_WAIT);

    // The wrong code's write set is the next batch: hold it, stop the store, let it commit.
    faulty.plan(&[crate::faults::Fault::Hold]);
    let request = {
        let app_http = app.http.clone();
        let url = app.url(&format!("/v1/cards/{CARD_STEPUP}/tokens"));
        let body = json!({"operations": ["VIEW_CARD"], "mfa": {"session_id": sid, "code": wrong}});
        tokio::spawn(async move {
            let started = Instant::now();
            let res = tokio::time::timeout(
                HANG,
                app_http
                    .post(url)
                    .basic_auth(STEPUP.0, Some(STEPUP.1))
                    .json(&body)
                    .send(),
            )
            .await;
            (started.elapsed(), res)
        })
    };
    faulty.holding().await;
    faulty.set_outage(Outage::Silent);
    faulty.release();
    let (elapsed, res) = request.await.unwrap();
    faulty.set_outage(Outage::None);

    let res = res
        .unwrap_or_else(|_| panic!("a wrong MFA code got no answer within {HANG:?} while the store was silent after its commit"))
        .unwrap();
    assert!(elapsed < HANG, "answered after {elapsed:?}");
    let (status, body) = status_and_json(res).await;
    assert!(
        status == 503
            || (status == 403
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("mfa_"))),
        "{status} {body}"
    );
}
