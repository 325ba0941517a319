//! The widget pages (SPEC §5): their headers and refusals over HTTP, and the widgets driven in
//! headless Chromium by `tests/browser/widgets.mjs` (playwright-core), which must run in CI.

use crate::helpers::*;
use serde_json::json;
use std::path::PathBuf;

const HOST: &str = "http://127.0.0.1:9000";

async fn page(app: &TestApp, path: &str) -> reqwest::Response {
    app.http.get(app.url(path)).send().await.unwrap()
}

fn header<'a>(res: &'a reqwest::Response, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

#[tokio::test]
async fn widget_pages_are_framed_only_by_the_tenants_origin_with_strict_headers() {
    let app = TestApp::spawn().await;
    for widget in ["reveal", "get-pin", "set-pin", "activate"] {
        let res = page(
            &app,
            &format!("/widgets/v1/{widget}?tenant=acme&origin={HOST}"),
        )
        .await;
        assert_eq!(res.status(), 200, "{widget}");
        let csp = header(&res, "content-security-policy").to_string();
        assert!(csp.contains(&format!("frame-ancestors {HOST}")), "{csp}");
        assert!(
            csp.contains("script-src 'self'") && csp.contains("style-src 'self'"),
            "{csp}"
        );
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(
            !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
            "{csp}"
        );
        assert_eq!(header(&res, "cache-control"), "no-store");
        assert_eq!(header(&res, "referrer-policy"), "no-referrer");
        assert!(header(&res, "content-type").starts_with("text/html"));
        let html = res.text().await.unwrap();
        // No inline script, style or event handler that CSP would have to allow.
        assert!(
            !html.contains("<script>") && !html.contains("<style"),
            "{widget}"
        );
        assert!(
            !html.contains(" style=") && !html.contains(" onclick="),
            "{widget}"
        );
        assert!(html.contains(r#"<script src="/widgets/v1/widget.js" defer></script>"#));
        assert!(html.contains(&format!(r#"data-origin="{HOST}""#)));
    }
    for asset in ["embed.js", "widget.js", "widget.css"] {
        let res = page(&app, &format!("/widgets/v1/{asset}")).await;
        assert_eq!(res.status(), 200, "{asset}");
        assert_eq!(header(&res, "cache-control"), "no-store");
    }
    let embed = page(&app, "/widgets/v1/embed.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(embed.contains(r#"setAttribute('allow', 'clipboard-write')"#));
}

#[tokio::test]
async fn a_widget_page_for_an_origin_or_tenant_not_allowed_is_refused_and_framed_by_no_one() {
    let app = TestApp::spawn().await;
    let cases = [
        (
            "/widgets/v1/reveal?tenant=acme&origin=http://evil.example",
            403,
            "may not show",
        ),
        (
            "/widgets/v1/reveal?tenant=other&origin=http://127.0.0.1:9000",
            403,
            "may not show",
        ),
        (
            "/widgets/v1/reveal?tenant=nobody&origin=http://127.0.0.1:9000",
            404,
            "not valid",
        ),
        ("/widgets/v1/reveal?tenant=acme", 400, "incomplete"),
        ("/widgets/v1/reveal", 400, "incomplete"),
        ("/widgets/v1/reveal?tenant=a%20b&origin=x", 400, "malformed"),
        (
            "/widgets/v1/unknown?tenant=acme&origin=http://127.0.0.1:9000",
            404,
            "no such widget",
        ),
    ];
    for (path, status, message) in cases {
        let res = page(&app, path).await;
        assert_eq!(res.status(), status, "{path}");
        assert!(
            header(&res, "content-security-policy").contains("frame-ancestors 'none'"),
            "{path}"
        );
        assert_eq!(header(&res, "cache-control"), "no-store");
        let html = res.text().await.unwrap();
        assert!(html.contains(message), "{path}: {html}");
        assert!(html.contains(r#"data-widget="none""#), "{path}");
    }
}

/// A free port on 127.0.0.1 (bound and released: the browser script binds it again).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Why the browser test cannot run here, if it cannot: in CI that is a failure.
fn browser_missing(dir: &std::path::Path, chromium: &str) -> Option<String> {
    if !std::path::Path::new(chromium).exists() {
        return Some(format!("{chromium} is missing (apt-get install chromium)"));
    }
    if !dir.join("node_modules/playwright-core").exists() {
        return Some("tests/browser/node_modules is missing (npm ci in tests/browser)".into());
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        return Some("node is missing".into());
    }
    None
}

#[tokio::test]
async fn the_widgets_work_in_a_real_browser_and_keep_card_data_inside_the_frame() {
    let dir = repo_root().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if let Some(why) = browser_missing(&dir, &chromium) {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but the browser test cannot run: {why}");
        }
        eprintln!("SKIPPED: {why}");
        return;
    }
    let app = TestApp::spawn().await;
    let (host, evil) = (free_port(), free_port());
    let mut file = fixture(None);
    file["tenants"][0]["widget_origins"] = json!([format!("http://127.0.0.1:{host}")]);
    app.import(&file).await.unwrap();
    app.svc.reload().await.unwrap();
    let shots = std::env::var("CARDGATE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("docs/screenshots"));
    let out = tokio::process::Command::new("node")
        .arg("widgets.mjs")
        .current_dir(&dir)
        .env("CARDGATE_BASE", &app.base)
        .env("HOST_PORT", host.to_string())
        .env("EVIL_PORT", evil.to_string())
        .env("WIDGETS_KEY", WIDGETS_KEY)
        .env("BACKEND_BASIC", format!("{}:{}", BACKEND.0, BACKEND.1))
        .env("CARD", CARD)
        .env("CARD_INACTIVE", CARD_INACTIVE)
        .env("CARD_BOB", CARD_BOB)
        .env("PAN", PAN)
        .env("SCREENSHOTS", &shots)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(300), out)
        .await
        .expect("the browser test finished within 5 minutes")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success(),
        "the browser test failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("browser checks passed"), "{stdout}");
    // Nothing the browser did put card data, a PIN, a token or a key in the logs.
    assert_absent(
        logs().as_bytes(),
        &[PAN, WIDGETS_KEY, "\"5802\""],
        "the logs",
    );
}
