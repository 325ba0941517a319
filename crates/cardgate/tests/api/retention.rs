//! Running for months (issue 14), on both engines: the purger deletes what expired a grace
//! period ago and nothing that could still be presented; replicas purge side by side without
//! failing or counting a row twice; the audit log is exported (resumably, without gaps),
//! pruned only once exported and past its retention, and verifies from its checkpoint; the
//! figures reach `cardgate status` and /metrics. Time moves by the app's clock, not by sleeps.

use crate::cli::cardgate_on;
use crate::helpers::*;
use cardgate_app::retention::export::{verify_export, ExportRange, Since};
use cardgate_app::{App, RetentionSettings};
use cardgate_core::audit::ChainBreak;
use cardgate_core::Environment;
use cardgate_store::{ClaimKey, Expiring, Guard, MarkKind, WriteSet};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// A sandbox app on SQLite, and (when PostgreSQL is configured) one on a fresh PostgreSQL
/// database.
async fn apps() -> Vec<TestApp> {
    let mut apps = vec![TestApp::spawn().await];
    if let Some(admin) = postgres_admin_url() {
        let url = fresh_postgres_db(&admin).await;
        apps.push(TestApp::spawn_on(Db::Postgres(url), Environment::Sandbox, None).await);
    }
    apps
}

fn fast(grace_secs: u64, batch: i64) -> RetentionSettings {
    RetentionSettings {
        grace: Duration::from_secs(grace_secs),
        batch,
        pause: Duration::ZERO,
        ..RetentionSettings::default()
    }
}

async fn rows(svc: &Arc<App>, kind: Expiring) -> i64 {
    let now = svc.now_ms();
    svc.store.expiring_stats(kind, now, now).await.unwrap().rows
}

fn purged(report: &cardgate_app::retention::PurgeReport, kind: Expiring) -> u64 {
    report
        .purged
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or(0, |(_, n)| *n)
}

async fn claim(svc: &Arc<App>, key: &str, expires_at_ms: i64) {
    let g = Guard::Claim {
        namespace: "test.retention",
        key: ClaimKey::of(&[key.as_bytes()]),
        fingerprint: vec![1],
        value: None,
        now_ms: svc.now_ms(),
        expires_at_ms,
    };
    svc.store
        .apply(&[WriteSet::guarded(vec![g], vec![], vec![])])
        .await
        .unwrap();
}

#[tokio::test]
async fn expired_rows_are_purged_after_the_grace_and_nothing_that_could_still_be_presented() {
    for app in apps().await {
        let svc = &app.svc;
        let engine = svc.store.backend();
        svc.retention().set_settings(fast(5, 2));
        let t0 = svc.now_ms();
        let opaque = app.access_token(OPAQUE).await;
        let jwt = app.access_token(BACKEND).await;
        assert_eq!(app.revoke(BACKEND, &jwt).await.status(), 200);
        let short = app
            .card_token(
                BACKEND,
                CARD,
                json!({"operations": ["GET_PIN"], "ttl_seconds": 60}),
            )
            .await;
        let long = app
            .card_token(
                BACKEND,
                CARD,
                json!({"operations": ["GET_PIN"], "ttl_seconds": 3600}),
            )
            .await;
        app.mfa_session(STEPUP, CAROL, "totp").await;
        claim(svc, "a", t0 + 60_000).await;
        assert_eq!(rows(svc, Expiring::Revocations).await, 1, "{engine}");

        // One second before the short token expires: nothing is purged, and it still works.
        let expiry = |kind| async move {
            let now = svc.now_ms();
            let s = svc.store.expiring_stats(kind, now, now).await.unwrap();
            s.oldest_expiry_ms.unwrap()
        };
        let until = |at: i64| Duration::from_millis(u64::try_from(at - svc.now_ms()).unwrap());
        let short_expiry = expiry(Expiring::CardTokens).await;
        svc.clock.advance(until(short_expiry - 1000));
        let r = svc.retention().purge_once().await.unwrap();
        assert_eq!(r.rows(), 0, "{engine}: {r:?}");
        assert_eq!(app.get_pin(&short, CARD).await.status(), 200, "{engine}");
        // Expired but within the grace period: kept.
        svc.clock.advance(Duration::from_secs(3));
        assert_eq!(
            svc.retention().purge_once().await.unwrap().rows(),
            0,
            "{engine}"
        );
        // Past the grace: the short card token and the claim go, in batches of two.
        svc.clock.advance(Duration::from_secs(5));
        let r = svc.retention().purge_once().await.unwrap();
        assert_eq!(purged(&r, Expiring::CardTokens), 1, "{engine}: {r:?}");
        assert_eq!(purged(&r, Expiring::Claims), 1, "{engine}: {r:?}");
        assert_eq!(r.rows(), 2, "{engine}: {r:?}");
        assert_eq!(app.get_pin(&long, CARD).await.status(), 200, "{engine}");

        // The revoked JWT stays revoked until it would have expired, its entry kept; the MFA
        // session (five minutes) is gone by then.
        svc.clock
            .advance(until(expiry(Expiring::Revocations).await - 5000));
        let r = svc.retention().purge_once().await.unwrap();
        assert_eq!(purged(&r, Expiring::Revocations), 0, "{engine}: {r:?}");
        assert_eq!(purged(&r, Expiring::MfaSessions), 1, "{engine}: {r:?}");
        assert_eq!(rows(svc, Expiring::Revocations).await, 1, "{engine}");
        assert_eq!(
            app.introspect(BACKEND, &jwt).await["active"],
            false,
            "{engine}"
        );
        assert_eq!(
            app.introspect(OPAQUE, &opaque).await["active"],
            true,
            "{engine}"
        );

        // Past every expiry and the grace: everything goes; nothing comes back to life.
        svc.clock.advance(Duration::from_secs(3600));
        let r = svc.retention().purge_once().await.unwrap();
        for kind in [
            Expiring::AccessTokens,
            Expiring::Revocations,
            Expiring::CardTokens,
        ] {
            assert_eq!(purged(&r, kind), 1, "{engine}: {kind:?} in {r:?}");
        }
        for kind in Expiring::ALL {
            assert_eq!(rows(svc, kind).await, 0, "{engine}: {kind:?}");
        }
        assert_eq!(app.introspect(BACKEND, &jwt).await["active"], false);
        assert_eq!(app.introspect(OPAQUE, &opaque).await["active"], false);
        assert_eq!(app.get_pin(&long, CARD).await.status(), 401, "{engine}");

        // The counters and gauges say so; no token reaches the metrics or the logs.
        svc.retention().refresh_gauges().await.unwrap();
        let metrics = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "cardgate_purged_rows_total{kind=\"card_token\"} 2",
            "cardgate_rows{kind=\"card_token\"} 0",
            "cardgate_purge_backlog_rows{kind=\"access_token\"} 0",
            "cardgate_audit_retention_seconds 31536000",
        ] {
            assert!(
                metrics.contains(line),
                "{engine}: no {line:?} in\n{metrics}"
            );
        }
        let mut secrets = fixture_secrets();
        secrets.extend([opaque.as_str(), jwt.as_str(), short.as_str(), long.as_str()]);
        assert_absent(metrics.as_bytes(), &secrets, "/metrics");
        assert_absent(logs().as_bytes(), &secrets, "the log");
    }
}

/// Inserts `n` card token rows that expired long ago, with plain SQL.
async fn insert_expired_card_tokens(app: &TestApp, n: i64) {
    const COLS: &str = "id, hash, kind, tenant_id, client_id, environment, card_id, person_id, \
                        operations, issued_at, expires_at, max_uses, uses_made, revoked";
    if app.database_url.starts_with("sqlite") {
        let db = sqlite_file(&app.database_url);
        db.execute(
            &format!(
                "WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ?1) \
                 INSERT INTO card_tokens ({COLS}) SELECT CAST(printf('%032d', g) AS BLOB), x'00', \
                 'card_token', 'acme', 'acme-backend', 'sandbox', NULL, NULL, '', 0, g, 1, 0, 0 FROM s"
            ),
            [n],
        )
        .unwrap();
    } else {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&app.database_url)
            .await
            .unwrap();
        sqlx::query(&format!(
            "INSERT INTO card_tokens ({COLS}) SELECT decode(lpad(to_hex(g), 32, '0'), 'hex'), '\\x00'::bytea, \
             'card_token', 'acme', 'acme-backend', 'sandbox', NULL, NULL, '', 0, g, 1, 0, false \
             FROM generate_series(1, $1::int8) g"
        ))
        .bind(n)
        .execute(&mut db)
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn two_replicas_purging_at_once_neither_fail_nor_count_a_row_twice() {
    for app in apps().await {
        let engine = app.svc.store.backend();
        let other = app.replica(Environment::Sandbox).await;
        insert_expired_card_tokens(&app, 3000).await;
        for a in [&app.svc, &other.svc] {
            a.retention().set_settings(fast(0, 100));
        }
        // Issuance goes on while both purge.
        let (ra, rb) = (app.svc.retention(), other.svc.retention());
        let (a, b, ()) = tokio::join!(ra.purge_once(), rb.purge_once(), async {
            for _ in 0..10 {
                app.card_token(BACKEND, CARD, json!({"operations": ["GET_PIN"]}))
                    .await;
            }
        });
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(
            purged(&a, Expiring::CardTokens) + purged(&b, Expiring::CardTokens),
            3000,
            "{engine}: {a:?} {b:?}"
        );
        assert_eq!(rows(&app.svc, Expiring::CardTokens).await, 10, "{engine}");
        let metrics = |svc: &Arc<App>| svc.metrics.render();
        let counted: u64 = [&app.svc, &other.svc]
            .iter()
            .map(|s| {
                metrics(s)
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("cardgate_purged_rows_total{kind=\"card_token\"} ")
                    })
                    .map_or(0, |v| v.parse().unwrap())
            })
            .sum();
        assert_eq!(counted, 3000, "{engine}");
    }
}

/// Exports with `range` into a buffer.
async fn export(svc: &Arc<App>, range: ExportRange) -> Vec<u8> {
    export_counted(svc, range).await.0
}

/// Exports with `range` into a buffer; also says how many events it wrote.
async fn export_counted(svc: &Arc<App>, range: ExportRange) -> (Vec<u8>, i64) {
    let mut out = Vec::new();
    let ranges = svc
        .retention()
        .export(&mut out, range, |_| Ok(()))
        .await
        .unwrap();
    (out, ranges.iter().map(|r| r.to_seq - r.from_seq + 1).sum())
}

fn range(since: Since) -> ExportRange {
    ExportRange {
        since,
        until_ms: None,
        limit: None,
    }
}

fn verify(
    app: &TestApp,
    files: &[&[u8]],
) -> Result<cardgate_app::retention::export::VerifiedExport, String> {
    let master = cardgate_jose::vault::MasterKey::parse(&app.master_key).unwrap();
    let key = cardgate_app::audit_key(&master);
    verify_export(
        &key,
        files.iter().map(|f| std::io::Cursor::new(*f)).collect(),
    )
}

async fn verify_db(app: &TestApp) -> Result<i64, ChainBreak> {
    let master = cardgate_jose::vault::MasterKey::parse(&app.master_key).unwrap();
    cardgate_app::admin::verify_audit_log(app.svc.store.as_ref(), &master)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_audit_log_is_exported_pruned_once_exported_and_old_and_verifies_from_its_checkpoint() {
    for app in apps().await {
        let svc = &app.svc;
        let engine = svc.store.backend();
        svc.retention().set_settings(RetentionSettings {
            audit_retention: Duration::from_secs(3600),
            ..fast(0, 7)
        });
        for _ in 0..5 {
            app.access_token(BACKEND).await;
        }
        let before = svc.store.audit_stats().await.unwrap().events;
        let first = export(svc, range(Since::All)).await;
        let v = verify(&app, &[&first]).unwrap();
        assert_eq!(v.events as i64, before, "{engine}");
        let exported = String::from_utf8(first.clone()).unwrap();
        assert!(
            exported.contains("\"action\":\"access_token.issued\""),
            "{exported}"
        );
        assert_absent(&first, &fixture_secrets(), "the export");

        // Not old enough yet: nothing is pruned.
        assert_eq!(svc.retention().purge_once().await.unwrap().audit_pruned, 0);
        // Events made after the export stay, however old; exported ones past the retention go.
        app.access_token(BACKEND).await;
        svc.clock.advance(Duration::from_secs(2 * 3600));
        let r = svc.retention().purge_once().await.unwrap();
        assert_eq!(r.audit_pruned as i64, before, "{engine}: {r:?}");
        let left = verify_db(&app)
            .await
            .unwrap_or_else(|b| panic!("{engine}: {b}"));
        let stats = svc.store.audit_stats().await.unwrap();
        assert_eq!(left, stats.events, "{engine}");
        assert!(
            stats.events >= 2,
            "{engine}: the unexported events and the prune's record"
        );
        let marks = svc.store.audit_marks().await.unwrap();
        assert!(marks.iter().any(|m| m.kind == MarkKind::Pruned), "{engine}");

        // The next export continues the first; together they verify, and so does each alone.
        let second = export(svc, range(Since::Last)).await;
        let both = verify(&app, &[&first, &second]).unwrap();
        assert_eq!(both.events as i64, before + stats.events, "{engine}");
        verify(&app, &[&second]).unwrap();
        // Out of order, or with the first missing its seal, they do not.
        assert!(verify(&app, &[&second, &first]).is_err(), "{engine}");
        let cut = &first[..first.len() - first.rsplit(|b| *b == b'{').next().unwrap().len() - 1];
        let e = verify(&app, &[cut]).unwrap_err();
        assert!(
            e.contains("not sealed") || e.contains("seal"),
            "{engine}: {e}"
        );
        // An edited event fails on its own link.
        let edited = String::from_utf8(second.clone())
            .unwrap()
            .replacen("\"ok\"", "\"denied\"", 1);
        assert!(verify(&app, &[edited.as_bytes()]).is_err(), "{engine}");

        // A checkpoint moved by a database writer (without the key) breaks the log.
        let pruned = marks.iter().find(|m| m.kind == MarkKind::Pruned).unwrap();
        let mut forged = pruned.clone();
        forged.seq += 1;
        assert!(svc
            .store
            .set_audit_mark(&forged, Some(pruned.seq))
            .await
            .unwrap());
        assert!(
            matches!(verify_db(&app).await, Err(ChainBreak::Checkpoint { .. })),
            "{engine}"
        );
    }
}

/// Fails every write after `left` bytes: an export cut off half-way.
struct Cut {
    out: Vec<u8>,
    left: usize,
}

impl std::io::Write for Cut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other("disk full"));
        }
        let n = buf.len().min(self.left);
        self.left -= n;
        self.out.extend_from_slice(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn an_interrupted_export_is_resumed_without_gaps() {
    for app in apps().await {
        let svc = &app.svc;
        let engine = svc.store.backend();
        for _ in 0..6 {
            app.access_token(BACKEND).await;
        }
        // Cut off half-way: the output is incomplete (and fails verification), and the store
        // does not record it as exported.
        let mut cut = Cut {
            out: Vec::new(),
            left: 1500,
        };
        let failed = svc
            .retention()
            .export(&mut cut, range(Since::Last), |_| Ok(()))
            .await;
        assert!(failed.is_err(), "{engine}");
        assert!(verify(&app, &[&cut.out]).is_err(), "{engine}");
        assert!(
            svc.store.audit_marks().await.unwrap().is_empty(),
            "{engine}"
        );

        // Resumed a few events at a time, each run where the last one ended, until a run finds
        // only the record of the run before it.
        let mut files = Vec::new();
        loop {
            let limited = ExportRange {
                limit: Some(4),
                ..range(Since::Last)
            };
            let (part, events) = export_counted(svc, limited).await;
            files.push(part);
            if events <= 1 {
                break;
            }
            assert!(files.len() < 20, "{engine}: the export does not catch up");
        }
        assert!(files.len() >= 3, "{engine}");
        let all: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
        let v = verify(&app, &all).unwrap_or_else(|e| panic!("{engine}: {e}"));
        // Every event of every chain from the first on, once.
        let mut spanned = 0;
        for (chain, (first, last)) in &v.chains {
            assert_eq!(*first, 1, "{engine}: chain {chain}");
            spanned += last - first + 1;
        }
        assert_eq!(v.events as i64, spanned, "{engine}");
        if engine == "sqlite" {
            // A file left out is a gap.
            let gap: Vec<&[u8]> = [all[0], all[2]].to_vec();
            let e = verify(&app, &gap).unwrap_err();
            assert!(e.contains("expected sequence"), "{e}");
        }
    }
}

#[tokio::test]
async fn status_and_export_from_the_command_line() {
    let app = TestApp::spawn().await;
    app.card_token(
        BACKEND,
        CARD,
        json!({"operations": ["GET_PIN"], "ttl_seconds": 60}),
    )
    .await;
    let out = cardgate_on(&app, &["status", "--audit-retention-days", "90"]).await;
    assert!(out.success, "{out:?}");
    for text in [
        "card_token",
        "retention 90 days",
        "last export: never",
        "incremental",
    ] {
        assert!(out.stdout.contains(text), "no {text:?} in {out:?}");
    }
    let file = app.dir.path().join("audit-1.jsonl");
    let path = file.to_str().unwrap();
    let out = cardgate_on(&app, &["audit", "export", "--out", path]).await;
    assert!(out.success, "{out:?}");
    assert!(out.stderr.contains("recorded as exported"), "{out:?}");
    let out = cardgate_on(&app, &["audit", "verify", "--file", path]).await;
    assert!(
        out.success && out.stdout.contains("export intact"),
        "{out:?}"
    );
    // Never overwrites an export.
    let out = cardgate_on(&app, &["audit", "export", "--out", path]).await;
    assert!(!out.success, "{out:?}");
    let out = cardgate_on(&app, &["status"]).await;
    assert!(out.stdout.contains("exported through event"), "{out:?}");
    let bad = cardgate_on(&app, &["audit", "export", "--since", "yesterday"]).await;
    assert!(!bad.success && bad.stderr.contains("RFC 3339"), "{bad:?}");
}
