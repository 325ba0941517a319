//! The audit log when two PostgreSQL replicas append to one chain.

use super::*;

/// Verifies every chain of `store`'s audit log, reading `page` events at a time: how many
/// events it holds.
pub(super) async fn verify_all(
    store: &Arc<dyn Store>,
    page: i64,
) -> Result<i64, cardgate_core::audit::ChainBreak> {
    let heads = store.audit_heads().await.unwrap();
    let mut v = LogVerifier::new(heads.clone(), LinkRule::Keyed(audit_key()));
    let mut after = (0, 0);
    loop {
        let events = store.audit_page(after, page).await.unwrap();
        let Some(last) = events.last() else { break };
        after = (last.chain, last.seq);
        for ev in &events {
            v.push(ev)?;
        }
    }
    v.finish(&heads)
}

#[tokio::test]
async fn two_postgres_replicas_appending_to_one_audit_chain_keep_it_intact() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    // Two stores on one database, both as writer 0 (chain 1): each one's remembered head of
    // the chain goes stale whenever the other appends.
    let url = fresh_postgres_db(&admin).await;
    let a = keyed_store(&url).await;
    let b = cardgate_store::connect(&url, audit_key()).await.unwrap();
    let one = |action: &str| vec![WriteSet::of(vec![audit(action), audit(action)])];
    a.apply_as(0, &one("a1")).await.unwrap();
    b.apply_as(0, &one("b1")).await.unwrap();
    a.apply_as(0, &one("a2")).await.unwrap(); // a's remembered head is b's predecessor
    b.apply_as(0, &one("b2")).await.unwrap();
    assert_eq!(verify_all(&a, 50).await, Ok(8), "alternating appends");
    // And concurrently, many at a time from both.
    let work = (0..40).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        async move { store.apply_as(0, &one("concurrent")).await.map(|_| ()) }
    });
    for r in futures::future::join_all(work).await {
        r.unwrap();
    }
    assert_eq!(verify_all(&b, 50).await, Ok(88), "concurrent appends");
    let heads = a.audit_heads().await.unwrap();
    assert_eq!(
        heads.iter().map(|h| (h.chain, h.seq)).collect::<Vec<_>>(),
        vec![(1, 88), (2, 0), (3, 0), (4, 0)],
        "every event went to chain 1, numbered without a gap"
    );
}
