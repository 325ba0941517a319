//! The `cardgate` binary as an operator uses it: help, import, client and key admin, audit
//! verification, the master-key rules, and `serve` (readiness, demo, graceful shutdown).

use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::future::Future;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

// ---- running the binary ------------------------------------------------------------------

/// Environment variables the binary reads; cleared so the developer's shell cannot leak in.
const CARDGATE_VARS: [&str; 7] = [
    "CARDGATE_DATABASE_URL",
    "CARDGATE_MASTER_KEY",
    "CARDGATE_ENVIRONMENT",
    "CARDGATE_LOG_FORMAT",
    "CARDGATE_LISTEN",
    "CARDGATE_PUBLIC_URL",
    "CARDGATE_LOG",
];

/// How a finished `cardgate` command ended.
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Debug for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "success: {}\n--- stdout\n{}\n--- stderr\n{}",
            self.success, self.stdout, self.stderr
        )
    }
}

fn command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_cardgate"));
    cmd.args(args).kill_on_drop(true).stdin(Stdio::null());
    for var in CARDGATE_VARS {
        cmd.env_remove(var);
    }
    cmd
}

/// Runs `cardgate ARGS` to completion (at most a minute).
pub async fn cardgate(args: &[&str]) -> CliOutput {
    let out = tokio::time::timeout(Duration::from_secs(60), command(args).output())
        .await
        .unwrap_or_else(|_| panic!("cardgate {args:?} did not finish within 60 s"))
        .unwrap();
    CliOutput {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs an admin command against `app`'s database with `app`'s master key.
pub async fn cardgate_on(app: &TestApp, args: &[&str]) -> CliOutput {
    let mut full = vec![
        "--database-url",
        &app.database_url,
        "--master-key",
        &app.master_key,
    ];
    full.extend_from_slice(args);
    cardgate(&full).await
}

/// The event count `cardgate audit verify` reports for an intact chain.
pub async fn verified_audit_count(database_url: &str, master_key: &str) -> i64 {
    let out = cardgate(&[
        "--database-url",
        database_url,
        "--master-key",
        master_key,
        "audit",
        "verify",
    ])
    .await;
    assert!(out.success, "{out:?}");
    let n = out
        .stdout
        .trim()
        .strip_prefix("audit chain intact: ")
        .and_then(|r| r.strip_suffix(" events"));
    n.and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {out:?}"))
}

/// A fresh base64 master key.
pub fn new_master_key() -> String {
    cardgate_jose::vault::MasterKey::generate()
        .unwrap()
        .to_base64()
}

/// A port nobody listens on right now (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every 50 ms until it holds; fails after `within`.
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn drain<R: tokio::io::AsyncRead + Unpin + Send + 'static>(
    pipe: Option<R>,
    into: Arc<Mutex<String>>,
) {
    let Some(pipe) = pipe else { return };
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut buf = into.lock().unwrap();
            buf.push_str(&line);
            buf.push('\n');
        }
    });
}

/// A `cardgate serve` child process on a free port; killed when dropped, so a failing test
/// leaves nothing running.
pub struct ServeChild {
    child: tokio::process::Child,
    pub base: String,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

impl ServeChild {
    /// Starts `cardgate serve` on `database_url` and waits until `/healthz` answers 200.
    pub async fn start(database_url: &str, master_key: &str, extra: &[&str]) -> ServeChild {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--database-url",
            database_url,
            "--master-key",
            master_key,
            "serve",
            "--listen",
            &listen,
        ];
        args.extend_from_slice(extra);
        let mut child = command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (stdout, stderr) = (Arc::default(), Arc::default());
        drain(child.stdout.take(), Arc::clone(&stdout));
        drain(child.stderr.take(), Arc::clone(&stderr));
        let mut server = ServeChild {
            child,
            base: format!("http://{listen}"),
            stdout,
            stderr,
        };
        server.wait_until_healthy().await;
        server
    }

    async fn wait_until_healthy(&mut self) {
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(res) = http.get(format!("{}/healthz", self.base)).send().await {
                if res.status() == StatusCode::OK {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "cardgate serve exited early ({status}); stderr:\n{}",
                    self.stderr()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "cardgate serve never became healthy; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

// ---- files -------------------------------------------------------------------------------

/// A small valid tenant: one client, person, account and card.
fn small_tenant(id: &str) -> Value {
    let person = uuid::Uuid::new_v4().to_string();
    json!({
        "id": id, "name": format!("Tenant {id}"), "financial_institution_id": "12345678",
        "clients": [{"id": format!("{id}-backend"), "secret": format!("{id}-backend-secret-0123456789abcdefghijklm"),
                     "api_key": format!("{id}-backend-apikey-0123456789abcdefghijklm"), "scopes": ["cards:read:any"]}],
        "persons": [{"id": person, "first_name": "Ada", "last_name": "Lovelace"}],
        "accounts": [{"id": "A1", "account_number": "1234567890", "person_ids": [person]}],
        "cards": [{"id": uuid::Uuid::new_v4().to_string(), "account_id": "A1", "person_id": person,
                   "pan": PAN, "cvv": CVV, "expiry": "2029-12", "pin": PIN, "status": "ACTIVE"}]
    })
}

fn write_json(dir: &std::path::Path, name: &str, doc: &Value) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    path.display().to_string()
}

fn sqlite_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}/x.db", dir.display())
}

/// The `kid` in a JWT's protected header.
fn jwt_kid(jwt: &str) -> String {
    let header = jwt.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &data_encoding::BASE64URL_NOPAD
            .decode(header.as_bytes())
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

/// The value after `label` on its own line of `text` (`label   value`).
fn printed(text: &str, label: &str) -> String {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(label))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{text}"))
}

// ---- tests -------------------------------------------------------------------------------

#[tokio::test]
async fn help_lists_every_command() {
    let out = cardgate(&["--help"]).await;
    assert!(out.success, "{out:?}");
    for command in ["serve", "import", "client", "card", "keys", "audit"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(command)),
            "--help does not list {command}: {out:?}"
        );
    }
    let audit = cardgate(&["audit", "--help"]).await;
    assert!(audit.success, "{audit:?}");
    for command in ["verify", "relink"] {
        assert!(
            audit
                .stdout
                .lines()
                .any(|l| l.trim_start().starts_with(command)),
            "audit --help does not list {command}: {audit:?}"
        );
    }
}

#[tokio::test]
async fn importing_the_same_file_twice_changes_nothing_the_second_time() {
    let dir = tempfile::tempdir().unwrap();
    let (db, key) = (sqlite_url(dir.path()), new_master_key());
    let file = write_json(dir.path(), "fixture.json", &fixture(None));

    let first = cardgate(&["--database-url", &db, "--master-key", &key, "import", &file]).await;
    assert!(first.success, "{first:?}");
    assert!(
        first.stdout.contains("change(s)") && !first.stdout.contains("nothing changed"),
        "{first:?}"
    );
    let events = verified_audit_count(&db, &key).await;

    let second = cardgate(&["--database-url", &db, "--master-key", &key, "import", &file]).await;
    assert!(second.success, "{second:?}");
    assert!(second.stdout.contains("nothing changed"), "{second:?}");
    assert_eq!(
        verified_audit_count(&db, &key).await,
        events,
        "a no-op import must not add audit events"
    );
    let tenants = open_store(&db, &key).await.load_tenants().await.unwrap();
    assert_eq!(tenants.len(), 4);
}

#[tokio::test]
async fn a_bad_import_file_is_refused_as_a_whole_naming_the_field() {
    type Spoil = fn(&mut Value);
    let cases: &[(&str, Spoil, &str)] = &[
        (
            "a PAN failing Luhn",
            |t| t["cards"][0]["pan"] = json!("4111111111111112"),
            "tenants[1].cards[0].pan",
        ),
        (
            "a CVV of 2 digits",
            |t| t["cards"][0]["cvv"] = json!("12"),
            "tenants[1].cards[0].cvv",
        ),
        (
            "an expiry in the past",
            |t| t["cards"][0]["expiry"] = json!("2020-01"),
            "tenants[1].cards[0].expiry",
        ),
        (
            "a PIN with letters",
            |t| t["cards"][0]["pin"] = json!("12ab"),
            "tenants[1].cards[0].pin",
        ),
        (
            "a secret shorter than 32 chars",
            |t| t["clients"][0]["secret"] = json!("short-secret-0123456789"),
            "tenants[1].clients[0].secret",
        ),
        (
            "a card of an unknown account",
            |t| t["cards"][0]["account_id"] = json!("NOPE42"),
            "tenants[1].cards[0].account_id",
        ),
        (
            "an unknown scope",
            |t| t["clients"][0]["scopes"] = json!(["cards:read:all"]),
            "tenants[1].clients[0].scopes[0]",
        ),
        (
            "an API key another client has",
            |t| t["clients"][0]["api_key"] = json!("alpha-backend-apikey-0123456789abcdefghijklm"),
            "tenants[1].clients[0].api_key",
        ),
        (
            "a PAN given as a number",
            |t| t["cards"][0]["pan"] = json!(4012888888881881_u64),
            "tenants[1].cards[0].pan",
        ),
        (
            "a PIN given as a number",
            |t| t["cards"][0]["pin"] = json!(9753),
            "tenants[1].cards[0].pin",
        ),
        (
            "a date of birth that does not exist",
            |t| t["persons"][0]["dob"] = json!("1988-02-30"),
            "tenants[1].persons[0].dob",
        ),
        // serde reports unknown fields by line and column, naming the field itself.
        (
            "an unknown JSON field",
            |t| t["cards"][0]["colour"] = json!("blue"),
            "colour",
        ),
    ];
    for (what, spoil, field) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (db, key) = (sqlite_url(dir.path()), new_master_key());
        let mut bad = small_tenant("beta");
        spoil(&mut bad);
        // A valid tenant first: refusing "as a whole" means it is not written either.
        let file = write_json(
            dir.path(),
            "bad.json",
            &json!({"tenants": [small_tenant("alpha"), bad]}),
        );

        let out = cardgate(&["--database-url", &db, "--master-key", &key, "import", &file]).await;
        assert!(!out.success, "{what}: accepted\n{out:?}");
        assert!(
            out.stderr.contains("error:") && out.stderr.contains(field),
            "{what}: stderr does not name {field}\n{out:?}"
        );
        assert!(
            !out.stderr.contains("4012888888881881") && !out.stderr.contains("9753"),
            "{what}: the refusal repeats card data\n{out:?}"
        );
        let tenants = open_store(&db, &key).await.load_tenants().await.unwrap();
        assert!(
            tenants.is_empty(),
            "{what}: the import wrote {} tenant(s)",
            tenants.len()
        );
    }
}

#[tokio::test]
async fn an_unknown_import_field_is_named_by_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = small_tenant("beta");
    bad["cards"][0]["colour"] = json!("blue");
    let file = write_json(dir.path(), "bad.json", &json!({"tenants": [bad]}));
    let out = cardgate(&[
        "--database-url",
        &sqlite_url(dir.path()),
        "--master-key",
        &new_master_key(),
        "import",
        &file,
    ])
    .await;
    assert!(!out.success, "{out:?}");
    assert!(out.stderr.contains("tenants[0].cards[0].colour"), "{out:?}");
}

#[tokio::test]
async fn client_create_prints_working_credentials_once_and_stores_only_their_hashes() {
    let app = TestApp::spawn().await;
    let out = cardgate_on(
        &app,
        &[
            "client",
            "create",
            "--tenant",
            "acme",
            "--id",
            "cli-made",
            "--scopes",
            "cards:read:any cards:widgets",
        ],
    )
    .await;
    assert!(out.success, "{out:?}");
    let secret = printed(&out.stdout, "client_secret:");
    let api_key = printed(&out.stdout, "api_key:");
    assert!(secret.len() >= 32 && api_key.len() >= 32, "{out:?}");
    assert_eq!(out.stdout.matches(&secret).count(), 1);
    assert_eq!(out.stdout.matches(&api_key).count(), 1);
    assert!(!out.stderr.contains(&secret) && !out.stderr.contains(&api_key));

    // The running app picks the new client up from the database.
    let client = ("cli-made", secret.as_str());
    eventually(
        "the app knows the new client",
        Duration::from_secs(5),
        || async {
            app.post_token(client, &[("grant_type", "client_credentials")])
                .await
                .status()
                == StatusCode::OK
        },
    )
    .await;
    let token = app.access_token(client).await;
    assert_eq!(app.introspect(client, &token).await["active"], true);
    let res = app
        .get_equals_token(Some(&format!("ApiKey {api_key}")), CARD, "accountId=F50091")
        .await;
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "{body}");
    assert!(body["token"].is_string());

    assert_absent(&app.database_bytes(), &[&secret, &api_key], "the database");
}

#[tokio::test]
async fn client_disable_stops_a_running_apps_client_and_client_enable_restores_it() {
    let app = TestApp::spawn().await;
    let status_of_token_request = || async {
        let (status, body) = status_and_json(
            app.post_token(BACKEND, &[("grant_type", "client_credentials")])
                .await,
        )
        .await;
        (
            status,
            body["error"].as_str().unwrap_or_default().to_string(),
        )
    };
    assert_eq!(status_of_token_request().await.0, 200);

    let out = cardgate_on(&app, &["client", "disable", BACKEND.0]).await;
    assert!(out.success, "{out:?}");
    eventually(
        "the disabled client is refused",
        Duration::from_secs(5),
        || async { status_of_token_request().await == (401, "invalid_client".to_string()) },
    )
    .await;

    let out = cardgate_on(&app, &["client", "enable", BACKEND.0]).await;
    assert!(out.success, "{out:?}");
    eventually(
        "the enabled client gets tokens again",
        Duration::from_secs(5),
        || async { status_of_token_request().await.0 == 200 },
    )
    .await;
}

#[tokio::test]
async fn keys_rotate_keeps_old_jwts_valid_and_signs_new_ones_with_the_new_key() {
    let app = TestApp::spawn().await;
    let old = app.access_token(BACKEND).await;
    let old_kid = jwt_kid(&old);

    let out = cardgate_on(&app, &["keys", "rotate"]).await;
    assert!(out.success, "{out:?}");
    let new_kid = out
        .stdout
        .trim()
        .strip_prefix("new signing key ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected output: {out:?}"))
        .to_string();
    assert_ne!(new_kid, old_kid);

    let published_kids = || async {
        let jwks: Value = app
            .http
            .get(app.url("/.well-known/jwks.json"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    eventually(
        "the JWKS publishes the new key",
        Duration::from_secs(5),
        || async { published_kids().await.len() == 2 },
    )
    .await;
    let kids = published_kids().await;
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );

    assert_eq!(
        app.introspect(BACKEND, &old).await["active"],
        true,
        "a JWT signed before the rotation"
    );
    let new = app.access_token(BACKEND).await;
    assert_eq!(jwt_kid(&new), new_kid);
    assert_eq!(app.introspect(BACKEND, &new).await["active"], true);
}

#[tokio::test]
async fn production_refuses_to_start_without_a_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let listen = format!("127.0.0.1:{}", free_port());
    let out = cardgate(&[
        "--environment",
        "production",
        "--database-url",
        &db,
        "serve",
        "--listen",
        &listen,
    ])
    .await;
    assert!(!out.success, "{out:?}");
    let said = out.stderr.to_lowercase().replace(['-', '_'], " ");
    assert!(
        said.contains("error:") && said.contains("master key"),
        "{out:?}"
    );
    assert!(
        !dir.path().join("master.key").exists(),
        "production must not generate a key"
    );
}

#[tokio::test]
async fn sandbox_without_a_master_key_generates_one_next_to_the_database_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let file = write_json(
        dir.path(),
        "small.json",
        &json!({"tenants": [small_tenant("solo")]}),
    );

    let out = cardgate(&["--database-url", &db, "import", &file]).await;
    assert!(out.success, "{out:?}");
    assert!(out.stderr.contains("WARNING"), "{out:?}");
    let key_file = dir.path().join("master.key");
    let key = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(
        data_encoding::BASE64
            .decode(key.trim().as_bytes())
            .unwrap()
            .len(),
        32
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o077,
            0,
            "master.key is readable by others"
        );
    }

    // The next run reuses that key: the vault still opens, so re-importing changes nothing.
    let again = cardgate(&["--database-url", &db, "import", &file]).await;
    assert!(again.success, "{again:?}");
    assert!(again.stdout.contains("nothing changed"), "{again:?}");
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key);
}

#[tokio::test]
async fn serve_answers_healthz_and_shuts_down_gracefully_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServeChild::start(&sqlite_url(dir.path()), &new_master_key(), &[]).await;
    // A kept-alive client connection must not hold the shutdown up.
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(server.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Nor may a client that stops halfway through its request: the server waits for it at
    // most its shutdown grace (10 s), not for as long as the client stays connected.
    let addr = server.base.trim_start_matches("http://").to_string();
    let mut stalled = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut stalled,
        b"POST /oauth2/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\ngrant",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;

    let pid = server.child.id().unwrap().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "cardgate serve did not stop within 20 s of SIGTERM; stderr:\n{}",
                server.stderr()
            )
        })
        .unwrap();
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        server.stderr()
    );
    drop(stalled);
}

#[tokio::test]
async fn serve_demo_prints_credentials_and_curl_lines_whose_equals_flow_works() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServeChild::start(&sqlite_url(dir.path()), &new_master_key(), &["--demo"]).await;
    let out = server.stdout();
    let secret = printed(&out, "client_secret:");
    let api_key = printed(&out, "api_key:");
    assert_eq!(printed(&out, "client_id:"), "demo-backend");
    assert!(!secret.is_empty() && !api_key.is_empty());
    for path in [
        "/oauth2/token",
        "/fiserv/cs/oauth2/v1/token",
        "/equals/v2/cards/",
    ] {
        assert!(
            out.lines().any(|l| l.contains("curl ") && l.contains(path)),
            "no curl line for {path}:\n{out}"
        );
    }

    // Follow the printed Equals lines: `CT=$(curl -s 'URL' -H 'Authorization: ApiKey KEY' | …)`.
    let equals_line = out
        .lines()
        .find(|l| l.contains("/equals/v2/cards/"))
        .unwrap();
    let quoted: Vec<&str> = equals_line.split('\'').skip(1).step_by(2).collect();
    let url = quoted
        .iter()
        .find(|q| q.starts_with(&server.base))
        .unwrap_or_else(|| panic!("no URL in {equals_line}"));
    let auth = quoted
        .iter()
        .find_map(|q| q.strip_prefix("Authorization: "))
        .unwrap_or_else(|| panic!("no header in {equals_line}"));
    assert!(
        auth.contains(&api_key),
        "the Equals line does not use the printed api_key"
    );
    let http = reqwest::Client::new();
    let res = http
        .get(*url)
        .header("Authorization", auth)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "{body}");
    let token = body["token"].as_str().unwrap();

    let redeem_line = out
        .lines()
        .skip_while(|l| !l.contains("/equals/v2/cards/"))
        .find(|l| l.contains("/details"))
        .unwrap();
    let details_url = redeem_line.split_whitespace().last().unwrap();
    assert!(
        details_url.starts_with(&server.base) && details_url.ends_with("/details"),
        "{redeem_line}"
    );
    let res = http
        .get(details_url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let (status, body) = status_and_json(res).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["pan"], PAN);
    crate::synctera::follow_the_demo_lines(&server, &out, &api_key).await;
}

#[tokio::test]
async fn log_format_json_writes_json_log_lines_to_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    let file = write_json(
        dir.path(),
        "small.json",
        &json!({"tenants": [small_tenant("logs")]}),
    );
    // Without a master key the sandbox logs a warning: something to look at.
    let out = cardgate(&[
        "--log-format",
        "json",
        "--database-url",
        &db,
        "import",
        &file,
    ])
    .await;
    assert!(out.success, "{out:?}");
    let log_lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.starts_with("WARNING:") && !l.trim().is_empty())
        .collect();
    assert!(!log_lines.is_empty(), "{out:?}");
    for line in &log_lines {
        let v: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(
            v["level"].is_string() && v["timestamp"].is_string(),
            "{line}"
        );
    }
    assert!(
        log_lines
            .iter()
            .any(|l| l.contains("\"WARN\"") && l.contains("master key")),
        "{out:?}"
    );
}

#[tokio::test]
async fn serve_refuses_a_bad_address_or_public_url_before_creating_anything() {
    let dir = tempfile::tempdir().unwrap();
    let db = sqlite_url(dir.path());
    for (args, says) in [
        (
            vec!["serve", "--listen", "nonsense"],
            "cannot listen on nonsense",
        ),
        (
            vec![
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--public-url",
                "not a url",
            ],
            "--public-url must be an http:// or https:// URL",
        ),
    ] {
        let mut all = vec!["--database-url", db.as_str()];
        all.extend(args);
        let out = cardgate(&all).await;
        assert!(!out.success, "{out:?}");
        assert!(out.stderr.contains(says), "{out:?}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "nothing was created: {out:?}"
        );
    }
}

#[tokio::test]
async fn card_add_puts_a_working_card_in_a_running_apps_tenant_and_refuses_bad_ones() {
    let app = TestApp::spawn().await;
    let dir = tempfile::tempdir().unwrap();
    let new_card = "11111111-2222-4333-8444-000000000001";
    let card = json!({"id": new_card, "account_id": "F50092", "person_id": BOB,
        "pan": "4000056655665556", "cvv": "321", "expiry": "2031-04", "status": "ACTIVE"});
    let file = write_json(dir.path(), "card.json", &card);
    let out = cardgate_on(&app, &["card", "add", "--tenant", "acme", &file]).await;
    assert!(out.success, "{out:?}");
    assert!(!out.stdout.contains("4000056655665556") && !out.stderr.contains("4000056655665556"));
    // The running app reads it: a token for it reveals the new card's data.
    let token = app
        .card_token(BACKEND, new_card, json!({"operations": ["VIEW_CARD"]}))
        .await;
    let details: Value = app
        .get_details(&token, new_card)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (details["pan"].as_str(), details["cvv"].as_str()),
        (Some("4000056655665556"), Some("321"))
    );

    let events = app.audit_events().await.len();
    for (what, spoil, says) in [
        ("the same id again", json!({}), "already exists"),
        (
            "a PAN failing Luhn",
            json!({"id": "11111111-2222-4333-8444-000000000002", "pan": "4000056655665557"}),
            "card.pan",
        ),
        (
            "a PAN as a number",
            json!({"id": "11111111-2222-4333-8444-000000000002", "pan": 4012888888881881_u64}),
            "card.pan",
        ),
        (
            "an unknown account",
            json!({"id": "11111111-2222-4333-8444-000000000002", "account_id": "NOPE42"}),
            "card.account_id",
        ),
        (
            "a cardholder who does not hold the account",
            json!({"id": "11111111-2222-4333-8444-000000000002", "person_id": ADA}),
            "card.person_id",
        ),
    ] {
        let mut bad = card.clone();
        for (k, v) in spoil.as_object().unwrap() {
            bad[k] = v.clone();
        }
        let file = write_json(dir.path(), "bad.json", &bad);
        let out = cardgate_on(&app, &["card", "add", "--tenant", "acme", &file]).await;
        assert!(!out.success, "{what}: accepted {out:?}");
        assert!(out.stderr.contains(says), "{what}: {out:?}");
        assert!(
            !out.stderr.contains("4000056655665557") && !out.stderr.contains("4012888888881881"),
            "{what}: {out:?}"
        );
    }
    assert_eq!(
        app.audit_events().await.len(),
        events,
        "the refusals wrote nothing"
    );
    let out = cardgate_on(&app, &["card", "add", "--tenant", "nope", &file]).await;
    assert!(!out.success && out.stderr.contains("tenant"), "{out:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_data_folder_and_its_database_files_are_private_to_their_owner() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| {
        std::fs::metadata(path)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
            .permissions()
            .mode()
            & 0o777
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("state").join("cardgate");
    let db = format!("sqlite://{}/x.db", data.display());
    let file = write_json(
        dir.path(),
        "small.json",
        &json!({"tenants": [small_tenant("solo")]}),
    );

    // An import into a folder that does not exist yet, without a master key (sandbox).
    let out = cardgate(&["--database-url", &db, "import", &file]).await;
    assert!(out.success, "{out:?}");
    for folder in [dir.path().join("state"), data.clone()] {
        assert_eq!(mode(&folder), 0o700, "{}", folder.display());
    }
    for name in ["x.db", "master.key"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}");
    }

    // A running server has the write-ahead log and its index open beside the database.
    let key = std::fs::read_to_string(data.join("master.key")).unwrap();
    let server = ServeChild::start(&db, key.trim(), &[]).await;
    for name in ["x.db", "x.db-wal", "x.db-shm"] {
        assert_eq!(mode(&data.join(name)), 0o600, "{name}\n{}", server.stderr());
    }
}
