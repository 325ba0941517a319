//! `cardgate serve` as an operator starts it: the master-key rules, readiness, the demo, log
//! formats, refused settings, graceful shutdown and private data files.

use super::*;

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
