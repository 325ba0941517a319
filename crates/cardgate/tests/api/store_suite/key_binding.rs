//! Token records keep their key binding (`cnf.jkt`), bound or not, on both engines.

use super::{card_token, keyed_store, set_up_card, tid};
use crate::helpers::{fresh_postgres_db, postgres_admin_url};
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::SecretHash;
use cardgate_core::tokens::{AccessTokenRecord, TokenKind, UseLimit};
use cardgate_core::{ClientId, Environment};
use cardgate_store::{Store, Write, WriteSet};
use std::sync::Arc;

/// The RFC 7638 §3.1 example key's thumbprint.
const JKT: &str = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs";

async fn key_bindings_round_trip(store: &Arc<dyn Store>) {
    let backend = store.backend();
    let card = set_up_card(store).await;
    let access = |name: &[u8], cnf_jkt: Option<&str>| AccessTokenRecord {
        id: tid(name),
        hash: SecretHash::of(name),
        kind: TokenKind::Access,
        tenant_id: card.tenant_id.clone(),
        client_id: ClientId::parse("c1").unwrap(),
        environment: Environment::Sandbox,
        scopes: ScopeSet::of(["cards:read:any"]),
        issued_at_ms: 1,
        expires_at_ms: 2,
        revoked: false,
        cnf_jkt: cnf_jkt.map(str::to_string),
    };
    let card_tok = |name: &[u8], cnf_jkt: Option<&str>| {
        let mut t = card_token(tid(name), card.id, UseLimit::Once);
        t.cnf_jkt = cnf_jkt.map(str::to_string);
        t
    };
    let accesses = [access(b"bound a", Some(JKT)), access(b"unbound a", None)];
    let cards = [
        card_tok(b"bound c", Some(JKT)),
        card_tok(b"unbound c", None),
    ];
    let mut writes: Vec<Write> = accesses
        .iter()
        .map(|t| Write::InsertAccessToken(t.clone()))
        .collect();
    writes.extend(cards.iter().map(|t| Write::InsertCardToken(t.clone())));
    store.apply(&[WriteSet::of(writes)]).await.unwrap();
    for t in &accesses {
        assert_eq!(
            store
                .get_access_token(&t.id, Environment::Sandbox)
                .await
                .unwrap()
                .as_ref(),
            Some(t),
            "{backend}"
        );
    }
    for t in &cards {
        assert_eq!(
            store
                .get_card_token(&t.id, Environment::Sandbox)
                .await
                .unwrap()
                .as_ref(),
            Some(t),
            "{backend}"
        );
        assert_eq!(
            store
                .get_redemption(&t.id, Environment::Sandbox)
                .await
                .unwrap()
                .map(|r| r.token)
                .as_ref(),
            Some(t),
            "{backend}: a redemption reads the binding too"
        );
    }
}

#[tokio::test]
async fn token_records_keep_their_key_binding_bound_or_not_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = keyed_store(&format!("sqlite://{}/cnf.db", dir.path().display())).await;
    key_bindings_round_trip(&store).await;
}

#[tokio::test]
async fn token_records_keep_their_key_binding_bound_or_not_on_postgres() {
    let Some(admin) = postgres_admin_url() else {
        return;
    };
    let store = keyed_store(&fresh_postgres_db(&admin).await).await;
    key_bindings_round_trip(&store).await;
}
