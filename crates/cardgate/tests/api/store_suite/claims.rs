//! The claim-once guard on both engines: a key is claimed once until its claim expires, and a
//! repeat gets what the first claimant stored; a batch decided in bulk is decided as one by one
//! would; a burst of concurrent claimants (through the group committer, and on two stores
//! sharing one database) has exactly one winner; expired claims are purged, and only they.

use super::{audit, is_card, keyed_store, set_up_card, tid};
use crate::helpers::{fresh_postgres_db, postgres_admin_url};
use cardgate_core::audit::AuditKey;
use cardgate_core::tokens::UseLimit;
use cardgate_core::Card;
use cardgate_store::committer::Committer;
use cardgate_store::{
    ClaimKey, Guard, GuardKind, Store, StoredClaim, Write, WriteOutcome, WriteSet,
};
use std::sync::Arc;
use WriteOutcome::Applied;

const NS: &str = "test.idempotency";

fn bytes(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// A claim of `name` in `namespace` by a request with fingerprint `fp`, storing `value`,
/// made at `now_ms` and held until `expires_at_ms`.
fn claim_in(
    namespace: &'static str,
    name: &str,
    fp: &str,
    value: Option<&str>,
    now_ms: i64,
    expires_at_ms: i64,
) -> Guard {
    Guard::Claim {
        namespace,
        key: ClaimKey::of(&[name.as_bytes()]),
        fingerprint: bytes(fp),
        value: value.map(bytes),
        now_ms,
        expires_at_ms,
    }
}

fn claim(name: &str, fp: &str, value: Option<&str>, now_ms: i64, expires_at_ms: i64) -> Guard {
    claim_in(NS, name, fp, value, now_ms, expires_at_ms)
}

/// A set that claims with `g`: audited `claimed` when it holds, `repeated` when it is taken.
fn claiming(g: Guard) -> WriteSet {
    WriteSet::guarded(vec![g], vec![audit("claimed")], vec![audit("repeated")])
}

fn taken(fp: &str, value: Option<&str>, expires_at_ms: i64) -> WriteOutcome {
    WriteOutcome::Taken(StoredClaim {
        fingerprint: bytes(fp),
        value: value.map(bytes),
        expires_at_ms,
    })
}

/// How many audit events of `action` the store holds.
async fn audited(store: &Arc<dyn Store>, action: &str) -> usize {
    let (mut after, mut n) = ((0, 0), 0);
    loop {
        let page = store.audit_page(after, 100).await.unwrap();
        let Some(last) = page.last() else { return n };
        after = (last.chain, last.seq);
        n += page.iter().filter(|e| e.action == action).count();
    }
}

/// Applies each set in a batch of its own.
async fn one_by_one(store: &Arc<dyn Store>, sets: Vec<WriteSet>) -> Vec<WriteOutcome> {
    let mut out = Vec::new();
    for set in sets {
        out.extend(store.apply(&[set]).await.unwrap());
    }
    out
}

/// The guard's outcomes, one set at a time.
async fn claim_outcomes(store: &Arc<dyn Store>) {
    let backend = store.backend();
    let apply = |g: Guard| {
        let store = store.clone();
        async move { store.apply(&[claiming(g)]).await.unwrap() }
    };
    assert_eq!(
        apply(claim("k1", "fp-a", Some("response a"), 1_000, 61_000)).await,
        vec![Applied],
        "{backend}: a free key is claimed"
    );
    assert_eq!(
        apply(claim("k1", "fp-b", Some("response b"), 2_000, 62_000)).await,
        vec![taken("fp-a", Some("response a"), 61_000)],
        "{backend}: a taken key answers with what its first claimant stored"
    );
    assert_eq!(
        apply(claim_in("test.other", "k1", "fp-c", None, 2_000, 62_000)).await,
        vec![Applied],
        "{backend}: the same key in another namespace is another claim"
    );
    assert_eq!(
        apply(claim_in(
            "test.other",
            "k1",
            "fp-d",
            Some("d"),
            3_000,
            63_000
        ))
        .await,
        vec![taken("fp-c", None, 62_000)],
        "{backend}: a claim that stored no value"
    );
    assert_eq!(
        apply(claim("k1", "fp-e", None, 60_999, 120_000)).await,
        vec![taken("fp-a", Some("response a"), 61_000)],
        "{backend}: held until its last millisecond"
    );
    assert_eq!(
        apply(claim("k1", "fp-f", Some("response f"), 61_000, 121_000)).await,
        vec![Applied],
        "{backend}: an expired claim is taken over"
    );
    assert_eq!(
        apply(claim("k1", "fp-g", None, 61_001, 121_001)).await,
        vec![taken("fp-f", Some("response f"), 121_000)],
        "{backend}: and then answers with what the new claimant stored"
    );
    assert_eq!(
        (
            audited(store, "claimed").await,
            audited(store, "repeated").await
        ),
        (3, 4),
        "{backend}: a taken claim applies the set's refusal, not its writes"
    );

    // A later guard that fails undoes the claim; an earlier one that fails leaves the key free.
    let unknown_token = || Guard::RedeemCardToken {
        id: tid(b"no such token"),
        now_ms: 1_000,
    };
    let claim_then_fail = WriteSet::guarded(
        vec![claim("k2", "fp", None, 1_000, 60_000), unknown_token()],
        vec![],
        vec![],
    );
    let fail_then_claim = WriteSet::guarded(
        vec![unknown_token(), claim("k3", "fp", None, 1_000, 60_000)],
        vec![],
        vec![],
    );
    assert_eq!(
        store
            .apply(&[claim_then_fail, fail_then_claim])
            .await
            .unwrap(),
        vec![WriteOutcome::refused(GuardKind::RedeemCardToken); 2],
        "{backend}"
    );
    assert_eq!(
        store
            .apply(&[
                claiming(claim("k2", "fp-2", None, 2_000, 60_000)),
                claiming(claim("k3", "fp-3", None, 2_000, 60_000)),
            ])
            .await
            .unwrap(),
        vec![Applied, Applied],
        "{backend}: neither key was kept claimed by the refused sets"
    );

    // A taken claim is answered as taken whatever the set's fallback (which is not decided),
    // and as a precondition it writes nothing at all.
    let with_fallback = claiming(claim("k1", "fp-h", None, 62_000, 122_000))
        .or_else(WriteSet::of(vec![audit("fallback")]));
    let as_precondition =
        WriteSet::guarded(vec![], vec![audit("claimed")], vec![audit("repeated")])
            .with_preconditions(vec![claim("k1", "fp-i", None, 62_000, 122_000)]);
    assert_eq!(
        store
            .apply(&[with_fallback, as_precondition])
            .await
            .unwrap(),
        vec![
            taken("fp-f", Some("response f"), 121_000),
            taken("fp-f", Some("response f"), 121_000)
        ],
        "{backend}"
    );
    assert_eq!(
        (
            audited(store, "fallback").await,
            audited(store, "repeated").await
        ),
        (0, 5),
        "{backend}: only the set with a fallback audited its refusal"
    );
}

/// The sets of the bulk scenario in `ns`: claims of a live, an expired and a free key, claims
/// and a mint behind card checks that hold or fail. `card` holds; `stale` does not.
fn bulk_batch(ns: &'static str, card: &Card, stale: &Card) -> Vec<WriteSet> {
    let at = |name: &str| {
        claim_in(
            ns,
            name,
            &format!("{name} again"),
            Some(name),
            10_000,
            70_000,
        )
    };
    let mint = WriteSet::of(vec![
        Write::InsertCardToken(super::card_token(
            tid(format!("{ns} mint").as_bytes()),
            card.id,
            UseLimit::Once,
        )),
        audit("minted"),
    ])
    .with_preconditions(vec![is_card(card)]);
    vec![
        claiming(at("live")),
        claiming(at("old")),
        claiming(at("new")),
        claiming(at("checked")).with_preconditions(vec![is_card(card)]),
        claiming(at("stale")).with_preconditions(vec![is_card(stale)]),
        mint,
        claiming(at("last")),
    ]
}

/// A batch of claims is decided in bulk (one statement for its card checks and one for its
/// claims on PostgreSQL) exactly as one set at a time would be, and a batch that claims one
/// key twice is decided in order.
async fn claims_in_bulk(store: &Arc<dyn Store>) {
    let backend = store.backend();
    let card = set_up_card(store).await;
    let mut stale = card.clone();
    stale.vault.push(1);
    let seed = |ns: &'static str| {
        vec![
            claiming(claim_in(ns, "live", "seed", Some("seeded"), 1_000, 50_000)),
            claiming(claim_in(ns, "old", "seed", Some("seeded"), 1_000, 5_000)),
        ]
    };
    let expected = vec![
        taken("seed", Some("seeded"), 50_000),
        Applied,
        Applied,
        Applied,
        WriteOutcome::Stale(GuardKind::CardIs),
        Applied,
        Applied,
    ];
    one_by_one(store, seed("test.bulk")).await;
    assert_eq!(
        store
            .apply(&bulk_batch("test.bulk", &card, &stale))
            .await
            .unwrap(),
        expected,
        "{backend}: in bulk"
    );
    one_by_one(store, seed("test.single")).await;
    assert_eq!(
        one_by_one(store, bulk_batch("test.single", &card, &stale)).await,
        expected,
        "{backend}: one by one"
    );
    // Both left the same claims behind.
    for ns in ["test.bulk", "test.single"] {
        let again: Vec<WriteSet> = ["live", "old", "new", "checked", "stale", "last"]
            .iter()
            .map(|name| claiming(claim_in(ns, name, "later", None, 11_000, 70_000)))
            .collect();
        assert_eq!(
            store.apply(&again).await.unwrap(),
            vec![
                taken("seed", Some("seeded"), 50_000),
                taken("old again", Some("old"), 70_000),
                taken("new again", Some("new"), 70_000),
                taken("checked again", Some("checked"), 70_000),
                Applied,
                taken("last again", Some("last"), 70_000),
            ],
            "{backend}: what {ns} left claimed"
        );
    }
    let twice = |fp: &str| claiming(claim("twice", fp, Some(fp), 1_000, 60_000));
    assert_eq!(
        store
            .apply(&[twice("first"), twice("second"), twice("third")])
            .await
            .unwrap(),
        vec![
            Applied,
            taken("first", Some("first"), 60_000),
            taken("first", Some("first"), 60_000)
        ],
        "{backend}: one key twice in a batch, decided in order"
    );
}

/// Claims of `p1`…`p6` expiring at different times: a purge deletes the expired ones in
/// batches of at most its limit, and only them.
async fn purge(store: &Arc<dyn Store>) {
    let backend = store.backend();
    let expiries = [
        ("p1", 10),
        ("p2", 20),
        ("p3", 30),
        ("p4", 15),
        ("p5", 15),
        ("p6", 15),
    ];
    let seed: Vec<WriteSet> = expiries
        .iter()
        .map(|(name, exp)| claiming(claim(name, "fp", Some(name), 1, *exp)))
        .collect();
    assert_eq!(store.apply(&seed).await.unwrap(), vec![Applied; 6]);
    let mut purged = Vec::new();
    loop {
        let n = store.purge_expired_claims(20, 2).await.unwrap();
        purged.push(n);
        if n < 2 {
            break;
        }
    }
    assert_eq!(
        purged,
        vec![2, 2, 1],
        "{backend}: the five claims expired by 20, two at a time"
    );
    assert_eq!(
        store
            .apply(&[claiming(claim("p3", "later", None, 25, 100))])
            .await
            .unwrap(),
        vec![taken("fp", Some("p3"), 30)],
        "{backend}: the claim still held is kept"
    );
    assert_eq!(
        store.purge_expired_claims(1_000, 100).await.unwrap(),
        1,
        "{backend}: it was the only one left"
    );
}

/// 50 concurrent claimants of one key, spread over `stores`' group committers: exactly one
/// wins, and every other one is answered with the winner's record.
async fn one_winner(stores: &[Arc<dyn Store>], what: &str) {
    let committers: Vec<Committer> = stores.iter().cloned().map(Committer::spawn).collect();
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let committer = committers[i % committers.len()].clone();
            let set = claiming(claim(
                "burst",
                &format!("fp {i}"),
                Some(&format!("value {i}")),
                1_000,
                60_000,
            ));
            tokio::spawn(async move { (i, committer.submit(set).await.unwrap()) })
        })
        .collect();
    let outcomes: Vec<(usize, WriteOutcome)> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .collect();
    let winners: Vec<usize> = outcomes
        .iter()
        .filter(|(_, o)| *o == Applied)
        .map(|(i, _)| *i)
        .collect();
    assert_eq!(winners.len(), 1, "{what}: {outcomes:?}");
    let w = winners[0];
    let answer = taken(&format!("fp {w}"), Some(&format!("value {w}")), 60_000);
    for (i, outcome) in outcomes.iter().filter(|(i, _)| *i != w) {
        assert_eq!(outcome, &answer, "{what}: claimant {i}");
    }
}

/// Two stores apply a batch of the same ten keys at the same moment (each batch decided in
/// bulk): every key has exactly one winner, and the other store gets its record.
async fn two_batches_at_once(a: &Arc<dyn Store>, b: &Arc<dyn Store>) {
    let batch = |who: &str| -> Vec<WriteSet> {
        (0..10)
            .map(|k| claiming(claim(&format!("shared {k}"), who, Some(who), 1_000, 60_000)))
            .collect()
    };
    let (from_a, from_b) = (batch("a"), batch("b"));
    let (out_a, out_b) = tokio::join!(a.apply_as(0, &from_a), b.apply_as(1, &from_b));
    let (out_a, out_b) = (out_a.unwrap(), out_b.unwrap());
    for (k, pair) in out_a.iter().zip(&out_b).enumerate() {
        let expected = match pair.0 {
            Applied => (Applied, taken("a", Some("a"), 60_000)),
            _ => (taken("b", Some("b"), 60_000), Applied),
        };
        assert_eq!((pair.0.clone(), pair.1.clone()), expected, "key {k}");
    }
}

/// Another store on the database at `url` (keyed by the first).
async fn second_store(url: &str) -> Arc<dyn Store> {
    cardgate_store::connect(url, AuditKey::new(&[7; 32]))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_key_is_claimed_once_until_it_expires_and_a_repeat_gets_what_the_first_claimant_stored_on_sqlite(
) {
    let dir = tempfile::tempdir().unwrap();
    let url = |name: &str| format!("sqlite://{}/{name}.db", dir.path().display());
    claim_outcomes(&keyed_store(&url("outcomes")).await).await;
    claims_in_bulk(&keyed_store(&url("bulk")).await).await;
    purge(&keyed_store(&url("purge")).await).await;
}

#[tokio::test]
async fn a_key_is_claimed_once_until_it_expires_and_a_repeat_gets_what_the_first_claimant_stored_on_postgres(
) {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    claim_outcomes(&keyed_store(&fresh_postgres_db(&admin).await).await).await;
    claims_in_bulk(&keyed_store(&fresh_postgres_db(&admin).await).await).await;
    purge(&keyed_store(&fresh_postgres_db(&admin).await).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_claims_of_one_key_have_one_winner_on_sqlite_with_one_or_two_stores() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/burst.db", dir.path().display());
    let a = keyed_store(&url).await;
    one_winner(std::slice::from_ref(&a), "one store").await;
    let other = format!("sqlite://{}/burst2.db", dir.path().display());
    let (c, d) = (keyed_store(&other).await, second_store(&other).await);
    one_winner(&[c, d], "two stores on one file").await;
    let (e, f) = (second_store(&other).await, second_store(&other).await);
    two_batches_at_once(&e, &f).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_claims_of_one_key_have_one_winner_on_postgres_with_one_or_two_stores() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let a = keyed_store(&fresh_postgres_db(&admin).await).await;
    one_winner(std::slice::from_ref(&a), "one store, two writers").await;
    let url = fresh_postgres_db(&admin).await;
    let (c, d) = (keyed_store(&url).await, second_store(&url).await);
    one_winner(&[c, d], "two stores on one database").await;
    // Stores of this runtime: the committers' runtimes, where the first two opened some of
    // their connections, have ended with them.
    let (e, f) = (second_store(&url).await, second_store(&url).await);
    two_batches_at_once(&e, &f).await;
}

/// Claimants whose keys another transaction has claimed but not yet committed (as another
/// replica mid-commit would have): they wait for that commit and then get its record, alone
/// (one statement per guard) and in a batch (the bulk statement).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimant_on_postgres_waits_for_an_earlier_claimants_commit_and_gets_its_record() {
    use sqlx::{Connection, Executor};
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let url = fresh_postgres_db(&admin).await;
    let store = keyed_store(&url).await;
    let mut watcher = sqlx::PgConnection::connect(&url).await.unwrap();
    for keys in [vec!["alone"], vec!["batch 1", "batch 2"]] {
        let mut first = sqlx::PgConnection::connect(&url).await.unwrap();
        first.execute("BEGIN").await.unwrap();
        for k in &keys {
            sqlx::query(
                "INSERT INTO claims (namespace, key, fingerprint, value, created_at, expires_at) \
                 VALUES ($1, $2, 'first', 'first value', 1000, 60000)",
            )
            .bind(NS)
            .bind(&ClaimKey::of(&[k.as_bytes()]).0[..])
            .execute(&mut first)
            .await
            .unwrap();
        }
        let sets: Vec<WriteSet> = keys
            .iter()
            .map(|k| claiming(claim(k, "second", Some("second value"), 2_000, 62_000)))
            .collect();
        let second = {
            let store = store.clone();
            tokio::spawn(async move { store.apply(&sets).await.unwrap() })
        };
        // Until the second claimant waits for the first's row lock.
        let waiting = "SELECT count(*) FROM pg_stat_activity \
                       WHERE datname = current_database() AND wait_event_type = 'Lock'";
        let started = std::time::Instant::now();
        while sqlx::query_scalar::<_, i64>(waiting)
            .fetch_one(&mut watcher)
            .await
            .unwrap()
            == 0
        {
            assert!(
                started.elapsed().as_secs() < 10,
                "{keys:?}: the second claimant never waited"
            );
            assert!(!second.is_finished(), "{keys:?}: decided without waiting");
        }
        first.execute("COMMIT").await.unwrap();
        assert_eq!(
            second.await.unwrap(),
            vec![taken("first", Some("first value"), 60_000); keys.len()],
            "{keys:?}"
        );
    }
}
