//! Test harness: a real cardgate on a port-0 listener with a fresh database per test,
//! verb-named request helpers, a captured log, and the fixture tenants.

use cardgate_app::{App, Settings};
use cardgate_core::Environment;
use cardgate_jose::vault::MasterKey;
use cardgate_store::Store;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

pub const ACME_FI: &str = "12345678";
pub const BACKEND: (&str, &str) = ("acme-backend", "acme-backend-secret-0123456789abcdefghijkl");
pub const BACKEND_KEY: &str = "acme-backend-apikey-0123456789abcdefghijklm";
pub const OPAQUE: (&str, &str) = ("acme-opaque", "acme-opaque-secret-0123456789abcdefghijklm");
pub const OWN: (&str, &str) = ("acme-own", "acme-own-secret-0123456789abcdefghijklmnop");
pub const OWN_KEY: &str = "acme-own-apikey-0123456789abcdefghijklmnopq";
pub const WIDGETS_KEY: &str = "acme-widgets-apikey-0123456789abcdefghijklm";
pub const PROD: (&str, &str) = ("acme-prod", "acme-prod-secret-0123456789abcdefghijklmno");
pub const OTHER: (&str, &str) = (
    "other-backend",
    "other-backend-secret-0123456789abcdefghijk",
);
pub const OTHER_KEY: &str = "other-backend-apikey-0123456789abcdefghijkl";
pub const STEPUP: (&str, &str) = (
    "stepup-backend",
    "stepup-backend-secret-0123456789abcdefghij",
);
pub const STEPUP_KEY: &str = "stepup-backend-apikey-0123456789abcdefghijk";
pub const SLOW: (&str, &str) = ("slow-backend", "slow-backend-secret-0123456789abcdefghijkl");
pub const WEBHOOK_SECRET: &str = "stepup-webhook-secret-0123456789abcdefghij";

pub const ADA: &str = "775596ae-2624-40af-a9dc-9756110a4a04";
pub const BOB: &str = "0f8a1e52-6f0b-4a57-9c4e-2b7d3c9a1e01";
pub const CAROL: &str = "5b2f7c1d-3e4a-4b6c-8d9e-0a1b2c3d4e5f";
pub const CARD: &str = "e9293471-5eb3-4dbc-916c-dbaf9e2deefd";
pub const CARD_INACTIVE: &str = "0b3f1c9e-55c4-4a8e-9d3e-8c1f2a7b6d10";
pub const CARD_BOB: &str = "7c6b5a49-3827-4615-9f4e-3d2c1b0a9f8e";
pub const CARD_TERMINATED: &str = "a1b2c3d4-e5f6-4789-9abc-def012345678";
pub const CARD_OTHER: &str = "c0ffee00-1234-4abc-9def-0123456789ab";
pub const CARD_STEPUP: &str = "d15ea5e0-aaaa-4bbb-8ccc-dddddddddddd";
pub const PAN: &str = "4111111111111111";
pub const PAN_BOB: &str = "5555555555554444";
pub const CVV: &str = "123";
pub const PIN: &str = "2468";
/// Base32 TOTP secret of Ada and Carol ("12345678901234567890", RFC 6238's test key).
pub const TOTP_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
pub const TOTP_KEY: &[u8] = b"12345678901234567890";

/// The test server's client timeouts: short, so the slow-client tests end quickly.
pub const TEST_TIMEOUTS: cardgate_http::Timeouts = cardgate_http::Timeouts {
    headers: std::time::Duration::from_secs(2),
    body: std::time::Duration::from_secs(1),
    shutdown: std::time::Duration::from_secs(1),
};

/// How long a test server's requests wait for the store before answering 503. Longer than
/// the production bound (`service::STORE_WAIT`, 1 s): on a loaded test machine an fsync can
/// take that long, and only the outage tests are about that bound (they set it back).
pub const TEST_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The fixture: tenants acme (no step-up), other, stepup (VIEW_CARD needs MFA) and slow
/// (2 token requests a minute).
pub fn fixture(webhook_url: Option<&str>) -> Value {
    json!({"tenants": [
        {"id": "acme", "name": "Acme Card Program", "financial_institution_id": ACME_FI,
         "widget_origins": ["http://127.0.0.1:9000"], "mfa_required_for": [],
         "clients": [
            {"id": BACKEND.0, "secret": BACKEND.1, "api_key": BACKEND_KEY, "environment": "sandbox",
             "scopes": ["cards:read:any", "cards:widgets"], "access_token_format": "jwt"},
            {"id": OPAQUE.0, "secret": OPAQUE.1, "environment": "sandbox",
             "scopes": ["cards:read:any"], "access_token_format": "opaque"},
            {"id": OWN.0, "secret": OWN.1, "api_key": OWN_KEY, "scopes": ["cards:read:own"], "person_id": ADA},
            {"id": "acme-widgets", "secret": "acme-widgets-secret-0123456789abcdefghijklm", "api_key": WIDGETS_KEY, "scopes": ["cards:widgets"]},
            {"id": PROD.0, "secret": PROD.1, "environment": "production", "scopes": ["cards:read:any"]}],
         "persons": [
            {"id": ADA, "first_name": "Ada", "last_name": "Lovelace", "email": "ada@example.com",
             "isd_code": "44", "mobile_number": "7700900123", "dob": "1988-05-15", "totp_secret": TOTP_SECRET},
            {"id": BOB, "first_name": "Bob", "last_name": "Babbage"}],
         "accounts": [
            {"id": "F50091", "account_number": "1234567890", "person_ids": [ADA]},
            {"id": "F50092", "account_number": "1234567891", "person_ids": [BOB]}],
         "cards": [
            {"id": CARD, "account_id": "F50091", "person_id": ADA, "pan": PAN, "cvv": CVV, "expiry": "2029-12",
             "pin": PIN, "status": "ACTIVE", "wallet_eligible": true},
            {"id": CARD_INACTIVE, "account_id": "F50091", "person_id": ADA, "pan": "4012888888881881", "cvv": "456",
             "expiry": "2030-01", "status": "INACTIVE"},
            {"id": CARD_BOB, "account_id": "F50092", "person_id": BOB, "pan": PAN_BOB, "cvv": "789",
             "expiry": "2030-02", "pin": "9753", "status": "ACTIVE"},
            {"id": CARD_TERMINATED, "account_id": "F50091", "person_id": ADA, "pan": "4000056655665556", "cvv": "111",
             "expiry": "2030-03", "status": "TERMINATED"}]},
        {"id": "other", "name": "Other Program", "financial_institution_id": "87654321",
         "clients": [{"id": OTHER.0, "secret": OTHER.1, "api_key": OTHER_KEY, "scopes": ["cards:read:any", "cards:widgets"]}],
         "persons": [{"id": "11111111-2222-4333-8444-555555555555", "first_name": "Oscar", "last_name": "Other"}],
         "accounts": [{"id": "O1", "account_number": "99", "person_ids": ["11111111-2222-4333-8444-555555555555"]}],
         "cards": [{"id": CARD_OTHER, "account_id": "O1", "person_id": "11111111-2222-4333-8444-555555555555",
                    "pan": "6011111111111117", "cvv": "222", "expiry": "2031-01", "status": "ACTIVE"}]},
        {"id": "stepup", "name": "Step-up Bank", "mfa_required_for": ["VIEW_CARD"],
         "webhook_url": webhook_url, "webhook_secret": WEBHOOK_SECRET,
         "clients": [{"id": STEPUP.0, "secret": STEPUP.1, "api_key": STEPUP_KEY, "scopes": ["cards:read:any", "cards:widgets"]}],
         "persons": [{"id": CAROL, "first_name": "Carol", "last_name": "Shaw", "email": "carol@example.com",
                      "isd_code": "1", "mobile_number": "5550100", "totp_secret": TOTP_SECRET}],
         "accounts": [{"id": "S1", "account_number": "42", "person_ids": [CAROL]}],
         "cards": [{"id": CARD_STEPUP, "account_id": "S1", "person_id": CAROL, "pan": "4242424242424242", "cvv": "333",
                    "expiry": "2031-02", "pin": "8642", "status": "ACTIVE"}]},
        {"id": "slow", "name": "Slow Program", "financial_institution_id": "11112222", "rate_limit_per_minute": 2,
         "clients": [{"id": SLOW.0, "secret": SLOW.1, "scopes": ["cards:read:any"]}]}
    ]})
}

/// Every secret of the fixture, for leak checks.
pub fn fixture_secrets() -> Vec<&'static str> {
    vec![
        BACKEND.1,
        BACKEND_KEY,
        OPAQUE.1,
        OWN.1,
        OWN_KEY,
        WIDGETS_KEY,
        PROD.1,
        OTHER.1,
        OTHER_KEY,
        STEPUP.1,
        STEPUP_KEY,
        SLOW.1,
        WEBHOOK_SECRET,
    ]
}

// ---- captured logs -------------------------------------------------------------------

#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

static LOGS: OnceLock<LogBuffer> = OnceLock::new();

fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = LogBuffer::default();
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(tracing_subscriber::EnvFilter::new(
                "debug,sqlx=info,hyper=info,reqwest=info,h2=info,rustls=info",
            ))
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// Everything every in-process server has logged so far (JSON lines, level debug).
pub fn logs() -> String {
    LOGS.get()
        .map(|b| String::from_utf8_lossy(&b.0.lock().unwrap()).into_owned())
        .unwrap_or_default()
}

// ---- databases ------------------------------------------------------------------------

/// The PostgreSQL server for the PostgreSQL suite: `CARDGATE_TEST_POSTGRES_URL`. In CI
/// (`CI=true`) it is required; elsewhere the PostgreSQL tests say they are skipped.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("CARDGATE_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("CI=true but CARDGATE_TEST_POSTGRES_URL is not set: the PostgreSQL suite must run in CI")
        }
        _ => {
            eprintln!("SKIPPED: set CARDGATE_TEST_POSTGRES_URL to run the PostgreSQL suite");
            None
        }
    }
}

/// A plain connection to a test's SQLite database file (`sqlite://PATH`), with no cardgate code
/// in between.
pub fn sqlite_file(database_url: &str) -> rusqlite::Connection {
    let path = database_url
        .trim_start_matches("sqlite://")
        .trim_start_matches("sqlite:");
    rusqlite::Connection::open(path).unwrap()
}

/// A fresh, empty PostgreSQL database; returns its URL.
pub async fn fresh_postgres_db(admin_url: &str) -> String {
    use sqlx::Connection;
    let name = format!("cg_test_{}", uuid::Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (base, _) = admin_url
        .rsplit_once('/')
        .expect("URL with a database name");
    format!("{base}/{name}")
}

/// The store at `database_url`, its audit links made under `master_key`'s audit key.
pub async fn open_store(database_url: &str, master_key: &str) -> Arc<dyn cardgate_store::Store> {
    let audit_key = cardgate_app::audit_key(&MasterKey::parse(master_key).unwrap());
    cardgate_store::connect(database_url, audit_key)
        .await
        .unwrap()
}

pub enum Db {
    Sqlite,
    Postgres(String),
}

// ---- the app --------------------------------------------------------------------------

pub struct TestApp {
    pub base: String,
    pub svc: Arc<App>,
    pub http: reqwest::Client,
    pub database_url: String,
    pub master_key: String,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// A server on SQLite with the fixture imported.
    pub async fn spawn() -> TestApp {
        Self::spawn_on(Db::Sqlite, Environment::Sandbox, None).await
    }

    /// A server whose `stepup` tenant delivers MFA codes to `webhook`.
    pub async fn spawn_with_webhook(webhook: &str) -> TestApp {
        Self::spawn_on(Db::Sqlite, Environment::Sandbox, Some(webhook)).await
    }

    pub async fn spawn_on(db: Db, env: Environment, webhook: Option<&str>) -> TestApp {
        Self::spawn_with(db, env, webhook, |store| store).await
    }

    /// A sandbox server on SQLite whose store is `wrap` around the real one (fault injection).
    pub async fn spawn_wrapped(wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> TestApp {
        Self::spawn_with(Db::Sqlite, Environment::Sandbox, None, wrap).await
    }

    async fn spawn_with(
        db: Db,
        env: Environment,
        webhook: Option<&str>,
        wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>,
    ) -> TestApp {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let database_url = match db {
            Db::Sqlite => format!("sqlite://{}/cardgate.db", dir.path().display()),
            Db::Postgres(url) => url,
        };
        let master = MasterKey::generate().unwrap();
        let master_key = master.to_base64();
        let store = wrap(open_store(&database_url, &master_key).await);
        let app = Self::start_on(store, &database_url, &master_key, env, dir).await;
        let plan =
            cardgate_core::import::parse(fixture(webhook).to_string().as_bytes(), app.svc.now_ms())
                .unwrap();
        app.svc.importer().import(plan).await.unwrap();
        app
    }

    /// Another instance on the same database (another replica, or another environment).
    pub async fn replica(&self, env: Environment) -> TestApp {
        Self::start(
            &self.database_url,
            &self.master_key,
            env,
            tempfile::tempdir().unwrap(),
        )
        .await
    }

    /// An instance on an existing database, importing nothing.
    pub async fn open(database_url: &str, master_key: &str, env: Environment) -> TestApp {
        init_logs();
        Self::start(database_url, master_key, env, tempfile::tempdir().unwrap()).await
    }

    /// Imports an import file (as JSON) in this instance's environment.
    pub async fn import(
        &self,
        file: &Value,
    ) -> Result<cardgate_app::import::ImportReport, cardgate_app::import::ImportErrorOr> {
        let plan =
            cardgate_core::import::parse(file.to_string().as_bytes(), self.svc.now_ms()).unwrap();
        self.svc.importer().import(plan).await
    }

    async fn start(
        database_url: &str,
        master_key: &str,
        env: Environment,
        dir: tempfile::TempDir,
    ) -> TestApp {
        let store = open_store(database_url, master_key).await;
        Self::start_on(store, database_url, master_key, env, dir).await
    }

    async fn start_on(
        store: Arc<dyn Store>,
        database_url: &str,
        master_key: &str,
        env: Environment,
        dir: tempfile::TempDir,
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let settings = Settings {
            environment: env,
            public_url: base.clone(),
        };
        let courier = cardgate_http::courier::HttpCourier::new(env).unwrap();
        let svc = App::start(
            store,
            MasterKey::parse(master_key).unwrap(),
            settings,
            courier,
        )
        .await
        .unwrap();
        svc.set_store_wait(TEST_STORE_WAIT);
        svc.spawn_pollers(std::time::Duration::from_millis(200));
        let router = cardgate_http::router(svc.clone());
        tokio::spawn(cardgate_http::serve(
            listener,
            router,
            TEST_TIMEOUTS,
            std::future::pending(),
        ));
        TestApp {
            base,
            svc,
            http: reqwest::Client::new(),
            database_url: database_url.to_string(),
            master_key: master_key.to_string(),
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The SQLite database file and its WAL, as bytes (for leak checks).
    pub fn database_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for suffix in ["", "-wal"] {
            if let Ok(b) = std::fs::read(self.dir.path().join(format!("cardgate.db{suffix}"))) {
                out.extend(b);
            }
        }
        out
    }

    // -- OAuth2 ---------------------------------------------------------------------------

    pub async fn post_token(&self, client: (&str, &str), form: &[(&str, &str)]) -> Response {
        self.http
            .post(self.url("/oauth2/token"))
            .basic_auth(client.0, Some(client.1))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// A client_credentials access token for `client` (asserts success).
    pub async fn access_token(&self, client: (&str, &str)) -> String {
        let res = self
            .post_token(client, &[("grant_type", "client_credentials")])
            .await;
        assert_eq!(res.status(), StatusCode::OK);
        res.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub async fn introspect(&self, client: (&str, &str), token: &str) -> Value {
        let res = self
            .http
            .post(self.url("/oauth2/introspect"))
            .basic_auth(client.0, Some(client.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        res.json().await.unwrap()
    }

    pub async fn revoke(&self, client: (&str, &str), token: &str) -> Response {
        self.http
            .post(self.url("/oauth2/revoke"))
            .basic_auth(client.0, Some(client.1))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap()
    }

    // -- card tokens ----------------------------------------------------------------------

    pub async fn post_card_token(&self, client: (&str, &str), card: &str, body: Value) -> Response {
        self.http
            .post(self.url(&format!("/v1/cards/{card}/tokens")))
            .basic_auth(client.0, Some(client.1))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    /// Mints a card token (asserts success) and returns it.
    pub async fn card_token(&self, client: (&str, &str), card: &str, body: Value) -> String {
        let res = self.post_card_token(client, card, body).await;
        let status = res.status();
        let v: Value = res.json().await.unwrap();
        assert_eq!(status, StatusCode::CREATED, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    pub async fn get_details(&self, token: &str, card: &str) -> Response {
        self.http
            .get(self.url(&format!("/v1/cards/{card}/details")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_pin(&self, token: &str, card: &str) -> Response {
        self.http
            .get(self.url(&format!("/v1/cards/{card}/pin")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn put_pin(&self, token: &str, card: &str, pin: &str) -> Response {
        self.http
            .put(self.url(&format!("/v1/cards/{card}/pin")))
            .bearer_auth(token)
            .json(&json!({"pin": pin}))
            .send()
            .await
            .unwrap()
    }

    pub async fn post_activate(&self, token: &str, card: &str) -> Response {
        self.http
            .post(self.url(&format!("/v1/cards/{card}/activate")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn get_wallet(&self, token: &str, card: &str) -> Response {
        self.http
            .get(self.url(&format!("/v1/cards/{card}/wallet-eligibility")))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_mfa_session(
        &self,
        client: (&str, &str),
        person: &str,
        channel: &str,
    ) -> Response {
        self.http
            .post(self.url(&format!("/v1/persons/{person}/mfa/sessions")))
            .basic_auth(client.0, Some(client.1))
            .json(&json!({"channel": channel}))
            .send()
            .await
            .unwrap()
    }

    /// Starts an MFA session that must be created (201): its JSON (`session_id`, …).
    pub async fn mfa_session(&self, client: (&str, &str), person: &str, channel: &str) -> Value {
        let res = self.post_mfa_session(client, person, channel).await;
        assert_eq!(
            res.status(),
            201,
            "MFA session for {person} by {}",
            client.0
        );
        res.json().await.unwrap()
    }

    // -- dialects -------------------------------------------------------------------------

    pub async fn get_equals_token(&self, auth: Option<&str>, card: &str, query: &str) -> Response {
        let mut req = self
            .http
            .get(self.url(&format!("/equals/v2/cards/{card}/access-token?{query}")));
        if let Some(a) = auth {
            req = req.header("Authorization", a);
        }
        req.send().await.unwrap()
    }

    pub async fn post_fiserv_token(
        &self,
        scope: &str,
        headers: &[(&str, &str)],
        body: &'static str,
    ) -> Response {
        let mut req = self
            .http
            .post(self.url(&format!("/fiserv/cs/oauth2/v1/token?scope={scope}")))
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        req.send().await.unwrap()
    }

    /// The audit log as stored, for checks.
    pub async fn audit_events(&self) -> Vec<cardgate_core::audit::StoredAuditEvent> {
        self.svc.store.audit_page((0, 0), 100_000).await.unwrap()
    }
}

/// `Authorization: Basic` value.
pub fn basic(id: &str, secret: &str) -> String {
    format!(
        "Basic {}",
        data_encoding::BASE64.encode(format!("{id}:{secret}").as_bytes())
    )
}

/// Status and body of a response, for table tests.
pub async fn status_and_json(res: Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The current TOTP code for the fixture's TOTP key, at the service's clock.
pub fn totp_now(app: &TestApp) -> String {
    cardgate_core::mfa::totp_at(TOTP_KEY, app.svc.now_ms())
}

/// Asserts that none of `needles` appears in `haystack`.
pub fn assert_absent(haystack: &[u8], needles: &[&str], what: &str) {
    for n in needles {
        let found = haystack.windows(n.len()).any(|w| w == n.as_bytes());
        assert!(
            !found,
            "{what} contains a secret ({}…)",
            &n[..n.len().min(6)]
        );
    }
}
