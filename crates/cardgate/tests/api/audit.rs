//! The audit log: what it records, that `cardgate audit verify` finds any edit, removal,
//! reorder or truncation, and that no event carries a secret, token or card data.

use crate::cli::{cardgate_on, verified_audit_count};
use crate::helpers::*;
use cardgate_core::audit::StoredAuditEvent;
use serde_json::json;

const WRONG_SECRET: &str = "acme-backend-wrong-secret-0123456789abcdefg";

/// Tokens issued and used along the way, for leak checks.
pub struct Activity {
    tokens: Vec<String>,
}

/// A token issued, a wrong secret refused, card tokens minted and redeemed, a spent token
/// refused, a PIN changed, an Equals token issued and an access token revoked.
pub async fn some_activity(app: &TestApp) -> Activity {
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

        let db = sqlite_file(&app.database_url);
        for sql in *statements {
            let done = db.execute(sql, []).unwrap();
            assert_eq!(done, 1, "{what}: {sql}");
        }
        drop(db);

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

// ---- what someone with only SQL access can do ---------------------------------------------

/// The hash before the first event under the old, unkeyed rule.
const ZEROS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored event, read with plain SQL.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    chain: i64,
    seq: i64,
    ts_ms: i64,
    tenant_id: Option<String>,
    environment: String,
    actor: String,
    action: String,
    outcome: String,
    subject: String,
    details: String,
    prev_hash: String,
    hash: String,
}

/// A bound value.
enum Val<'a> {
    Int(i64),
    Text(&'a str),
}

/// A plain SQL connection to a test database, the access an attacker would have: no
/// cardgate code in between.
pub enum Sql {
    Sqlite(std::sync::Mutex<rusqlite::Connection>),
    Postgres(sqlx::PgPool),
}

macro_rules! event_row {
    ($r:expr) => {{
        let r = $r;
        Row {
            chain: r.get("chain"),
            seq: r.get("seq"),
            ts_ms: r.get("ts_ms"),
            tenant_id: r.get("tenant_id"),
            environment: r.get("environment"),
            actor: r.get("actor"),
            action: r.get("action"),
            outcome: r.get("outcome"),
            subject: r.get("subject"),
            details: r.get("details"),
            prev_hash: r.get("prev_hash"),
            hash: r.get("hash"),
        }
    }};
}

macro_rules! bind_all {
    ($q:expr, $args:expr) => {{
        let mut q = $q;
        for a in $args {
            q = match a {
                Val::Int(v) => q.bind(*v),
                Val::Text(v) => q.bind(*v),
            };
        }
        q
    }};
}

impl Sql {
    pub async fn connect(url: &str) -> Sql {
        if url.starts_with("sqlite:") {
            Sql::Sqlite(std::sync::Mutex::new(sqlite_file(url)))
        } else {
            Sql::Postgres(sqlx::PgPool::connect(url).await.unwrap())
        }
    }

    pub async fn close(&self) {
        if let Sql::Postgres(p) = self {
            p.close().await;
        }
    }

    /// Runs one statement (`$1`, `$2`, … in order); how many rows it changed.
    async fn run(&self, sql: &str, args: &[Val<'_>]) -> u64 {
        match self {
            Sql::Sqlite(c) => {
                let params: Vec<&dyn rusqlite::ToSql> = args
                    .iter()
                    .map(|a| match a {
                        Val::Int(v) => v as &dyn rusqlite::ToSql,
                        Val::Text(v) => v as &dyn rusqlite::ToSql,
                    })
                    .collect();
                c.lock().unwrap().execute(sql, params.as_slice()).unwrap() as u64
            }
            Sql::Postgres(p) => bind_all!(sqlx::query(sql), args)
                .execute(p)
                .await
                .unwrap()
                .rows_affected(),
        }
    }

    /// The integers a one-column query returns.
    async fn ints(&self, sql: &str) -> Vec<i64> {
        match self {
            Sql::Sqlite(c) => sqlite_rows(c, sql, |r| r.get(0)),
            Sql::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
        }
    }

    /// Every event, in `(chain, seq)` order.
    pub async fn events(&self) -> Vec<Row> {
        let sql = "SELECT * FROM audit_events ORDER BY chain, seq";
        match self {
            Sql::Sqlite(c) => sqlite_rows(c, sql, |r| {
                let r = SqliteRow(r);
                Ok(event_row!(r))
            }),
            Sql::Postgres(p) => {
                use sqlx::Row as _;
                sqlx::query(sql)
                    .fetch_all(p)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| event_row!(r))
                    .collect()
            }
        }
    }

    /// Every head and the meta table (the rest of what an attacker could change).
    async fn heads_and_meta(&self) -> (Vec<(i64, i64, String)>, Vec<(String, String)>) {
        let (heads, meta) = (
            "SELECT id, seq, hash FROM audit_head ORDER BY id",
            "SELECT key, value FROM meta ORDER BY key",
        );
        match self {
            Sql::Sqlite(c) => (
                sqlite_rows(c, heads, |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))),
                sqlite_rows(c, meta, |r| Ok((r.get(0)?, r.get(1)?))),
            ),
            Sql::Postgres(p) => (
                sqlx::query_as(heads).fetch_all(p).await.unwrap(),
                sqlx::query_as(meta).fetch_all(p).await.unwrap(),
            ),
        }
    }
}

/// Every row `sql` returns, mapped.
fn sqlite_rows<T>(
    c: &std::sync::Mutex<rusqlite::Connection>,
    sql: &str,
    map: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Vec<T> {
    let c = c.lock().unwrap();
    let mut st = c.prepare(sql).unwrap();
    let rows = st.query_map([], map).unwrap();
    rows.collect::<rusqlite::Result<Vec<T>>>().unwrap()
}

/// A SQLite row read by column name, as `event_row!` reads it.
struct SqliteRow<'a, 'r>(&'a rusqlite::Row<'r>);

impl SqliteRow<'_, '_> {
    fn get<T: rusqlite::types::FromSql>(&self, column: &str) -> T {
        self.0.get(column).unwrap()
    }
}

/// The old, unkeyed link, written out here as an attacker with database access would compute
/// it (no cardgate code): hex SHA-256 of the length-prefixed previous hash, the sequence number
/// and timestamp (big-endian), and the length-prefixed text fields.
fn unkeyed_hash(prev: &str, e: &Row) -> String {
    let mut buf = Vec::new();
    let field = |buf: &mut Vec<u8>, s: &str| {
        buf.extend_from_slice(&(s.len() as u64).to_be_bytes());
        buf.extend_from_slice(s.as_bytes());
    };
    field(&mut buf, prev);
    buf.extend_from_slice(&e.seq.to_be_bytes());
    buf.extend_from_slice(&e.ts_ms.to_be_bytes());
    for f in [
        e.tenant_id.as_deref().unwrap_or(""),
        &e.environment,
        &e.actor,
        &e.action,
        &e.outcome,
        &e.subject,
        &e.details,
    ] {
        field(&mut buf, f);
    }
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, &buf).as_ref())
}

/// Re-links `chain` from event `from` on with the old rule (after the stored hash of the event
/// before it, or the all-zero genesis), and moves its head to the result.
async fn rewrite_unkeyed(db: &Sql, chain: i64, from: i64) {
    let events: Vec<Row> = db
        .events()
        .await
        .into_iter()
        .filter(|e| e.chain == chain)
        .collect();
    let mut prev = events
        .iter()
        .find(|e| e.seq == from - 1)
        .map_or(ZEROS.to_string(), |e| e.hash.clone());
    let mut last = from - 1;
    for e in events.iter().filter(|e| e.seq >= from) {
        let hash = unkeyed_hash(&prev, e);
        db.run(
            "UPDATE audit_events SET prev_hash = $1, hash = $2 WHERE chain = $3 AND seq = $4",
            &[
                Val::Text(&prev),
                Val::Text(&hash),
                Val::Int(chain),
                Val::Int(e.seq),
            ],
        )
        .await;
        (prev, last) = (hash, e.seq);
    }
    db.run(
        "UPDATE audit_head SET seq = $1, hash = $2 WHERE id = $3",
        &[Val::Int(last), Val::Text(&prev), Val::Int(chain)],
    )
    .await;
}

/// Turns a database's log into one written before keyed links: every chain linked with the
/// old rule from the all-zero genesis, and no record of the keyed format.
pub async fn make_unkeyed(db: &Sql) {
    for chain in db.ints("SELECT id FROM audit_head ORDER BY id").await {
        rewrite_unkeyed(db, chain, 1).await;
    }
    db.run("DELETE FROM meta WHERE key = 'audit_links'", &[])
        .await;
}

/// Makes the database what one from before keyed links really is: its log linked by the old
/// rule, and its master key check in the old form — which takes the master key to write.
pub async fn make_from_before_keyed_links(db: &Sql, master_key: &str) {
    make_unkeyed(db).await;
    let old_check = cardgate_jose::vault::MasterKey::parse(master_key)
        .unwrap()
        .check_value();
    db.run(
        "UPDATE meta SET value = $1 WHERE key = 'master_key_check'",
        &[Val::Text(&old_check)],
    )
    .await;
}

/// The first refusal in chain 1: an event whose outcome a cover-up would change.
async fn first_refusal(db: &Sql) -> i64 {
    db.ints("SELECT MIN(seq) FROM audit_events WHERE chain = 1 AND outcome <> 'ok'")
        .await[0]
}

/// Asserts that `relinked` is `unkeyed` with every link remade, followed by the one event
/// that records the re-link.
pub fn assert_relinked(unkeyed: &[Row], relinked: &[Row]) {
    assert_eq!(
        relinked.len(),
        unkeyed.len() + 1,
        "one event records the re-link"
    );
    let record = relinked
        .iter()
        .find(|e| !unkeyed.iter().any(|u| (u.chain, u.seq) == (e.chain, e.seq)))
        .unwrap();
    assert_eq!(
        (record.action.as_str(), record.outcome.as_str()),
        ("audit.relinked", "ok")
    );
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&record.details).unwrap()["events"],
        unkeyed.len()
    );
    for old in unkeyed {
        let new = relinked
            .iter()
            .find(|e| (e.chain, e.seq) == (old.chain, old.seq))
            .unwrap();
        let content = |e: &Row| Row {
            prev_hash: String::new(),
            hash: String::new(),
            ..e.clone()
        };
        assert_eq!(content(old), content(new), "the re-link changes links only");
        assert_ne!(
            old.hash, new.hash,
            "event {} of chain {} re-linked",
            old.seq, old.chain
        );
    }
}

#[tokio::test]
async fn a_log_rewritten_with_only_sql_access_fails_audit_verify() {
    enum Rewrite {
        EditThenRelink,
        ResetChain,
    }
    let cases = [
        (
            "an event's details edited, its link and every later one recomputed with the unkeyed rule, the head moved",
            Rewrite::EditThenRelink,
        ),
        (
            "chain 1 emptied and its head set back to the all-zero genesis",
            Rewrite::ResetChain,
        ),
    ];
    for (what, rewrite) in cases {
        let app = TestApp::spawn().await;
        some_activity(&app).await;
        assert!(verified_audit_count(&app.database_url, &app.master_key).await > 4);

        let db = Sql::connect(&app.database_url).await;
        match rewrite {
            Rewrite::EditThenRelink => {
                let seq = first_refusal(&db).await;
                let edited = db
                    .run(
                        "UPDATE audit_events SET outcome = 'ok', details = '{}' WHERE chain = 1 AND seq = $1",
                        &[Val::Int(seq)],
                    )
                    .await;
                assert_eq!(edited, 1, "{what}");
                rewrite_unkeyed(&db, 1, seq).await;
            }
            Rewrite::ResetChain => {
                db.run("DELETE FROM audit_events WHERE chain = 1", &[])
                    .await;
                db.run(
                    "UPDATE audit_head SET seq = 0, hash = $1 WHERE id = 1",
                    &[Val::Text(ZEROS)],
                )
                .await;
            }
        }
        db.close().await;

        let out = cardgate_on(&app, &["audit", "verify"]).await;
        assert!(!out.success, "{what}: verify passed\n{out:?}");
        assert!(out.stderr.contains("audit chain broken"), "{what}\n{out:?}");
    }
}

#[tokio::test]
async fn an_unkeyed_log_is_relinked_when_serve_starts_and_then_verifies() {
    let app = TestApp::spawn().await;
    some_activity(&app).await;
    let db = Sql::connect(&app.database_url).await;
    make_from_before_keyed_links(&db, &app.master_key).await;
    let unkeyed = db.events().await;

    let server = crate::cli::ServeChild::start(&app.database_url, &app.master_key, &[]).await;
    let relinked = db.events().await;
    assert!(
        server.stderr().contains("re-linked under the audit key"),
        "{}",
        server.stderr()
    );
    drop(server);
    db.close().await;
    assert_relinked(&unkeyed, &relinked);
    assert_eq!(
        verified_audit_count(&app.database_url, &app.master_key).await,
        relinked.len() as i64
    );
}

#[tokio::test]
async fn audit_relink_relinks_an_unkeyed_log_once() {
    let app = TestApp::spawn().await;
    some_activity(&app).await;
    let db = Sql::connect(&app.database_url).await;
    make_from_before_keyed_links(&db, &app.master_key).await;
    let unkeyed = db.events().await;

    let out = cardgate_on(&app, &["audit", "relink"]).await;
    assert!(out.success, "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("re-linked {} events", unkeyed.len())),
        "{out:?}"
    );
    assert_relinked(&unkeyed, &db.events().await);
    let again = cardgate_on(&app, &["audit", "relink"]).await;
    assert!(again.success, "{again:?}");
    assert!(again.stdout.contains("already keyed"), "{again:?}");
    db.close().await;
    assert_eq!(
        verified_audit_count(&app.database_url, &app.master_key).await,
        unkeyed.len() as i64 + 1
    );
}

#[tokio::test]
async fn a_broken_unkeyed_log_is_never_relinked_and_serve_refuses_to_start_naming_the_break() {
    let app = TestApp::spawn().await;
    some_activity(&app).await;
    let db = Sql::connect(&app.database_url).await;
    make_from_before_keyed_links(&db, &app.master_key).await;
    let seq = first_refusal(&db).await;
    db.run(
        "UPDATE audit_events SET outcome = 'ok' WHERE chain = 1 AND seq = $1",
        &[Val::Int(seq)],
    )
    .await;
    let before = (db.events().await, db.heads_and_meta().await);

    let listen = format!("127.0.0.1:{}", crate::cli::free_port());
    let serve = cardgate_on(&app, &["serve", "--listen", &listen]).await;
    let relink = cardgate_on(&app, &["audit", "relink"]).await;
    let verify = cardgate_on(&app, &["audit", "verify"]).await;
    // `audit verify` changes nothing and re-links nothing: it says the log predates keyed
    // links.
    assert!(!verify.success, "{verify:?}");
    assert!(
        verify.stderr.contains("not keyed") || verify.stderr.contains("predates"),
        "{verify:?}"
    );
    for (command, out) in [("serve", serve), ("audit relink", relink)] {
        assert!(
            !out.success,
            "{command} accepted a broken unkeyed log\n{out:?}"
        );
        assert!(
            out.stderr.contains(&format!("chain 1, event {seq}"))
                && out.stderr.contains("not re-linked"),
            "{command} does not name the break\n{out:?}"
        );
    }
    assert_eq!(
        (db.events().await, db.heads_and_meta().await),
        before,
        "nothing was re-linked"
    );
}

/// Someone with write access to a keyed database but not the master key covers up a refusal,
/// then makes the whole log look older than keyed links (every chain re-linked with the old
/// unkeyed rule from zeros, the `audit_links` record deleted) — all of it plain SQL. No
/// command may turn that into a log that verifies: a database that was keyed once must not
/// be re-linked on the word of a row anyone with SQL access can delete.
#[tokio::test]
async fn a_cover_up_disguised_as_a_log_from_before_keyed_links_fails_audit_verify() {
    let app = TestApp::spawn().await;
    some_activity(&app).await;
    assert!(verified_audit_count(&app.database_url, &app.master_key).await > 4);

    let db = Sql::connect(&app.database_url).await;
    let seq = first_refusal(&db).await;
    let edited = db
        .run(
            "UPDATE audit_events SET outcome = 'ok', details = '{}' WHERE chain = 1 AND seq = $1",
            &[Val::Int(seq)],
        )
        .await;
    assert_eq!(edited, 1);
    make_unkeyed(&db).await;
    db.close().await;

    let out = cardgate_on(&app, &["audit", "verify"]).await;
    assert!(
        !out.success,
        "the covered-up log (chain 1, event {seq} turned from a refusal into 'ok') verifies\n{out:?}"
    );
}
