//! What this process remembers of cards, cardholders' names and card tokens, so that minting
//! and redeeming read nothing on the hot path. Nothing here is trusted blindly: a decision
//! made on a remembered card commits only with a `Guard::CardIs` that checks, in the same
//! transaction, that the card is still exactly as remembered, and every use of a remembered
//! token is counted by the `Guard::RedeemCardToken` of the store. A change made elsewhere (a
//! replica, an import) therefore refuses the guarded write, and the request is decided again
//! on a fresh read. Entries are bounded, and dropped whenever the configuration reloads.

use cardgate_core::tokens::{CardTokenRecord, TokenId};
use cardgate_core::{Card, CardId, PersonId, TenantId};
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

/// Entries per map before it is emptied (a crude bound that keeps memory flat).
const MAX_ENTRIES: usize = 50_000;

struct Bounded<K, V>(RwLock<HashMap<K, V>>);

impl<K: Eq + Hash, V: Clone> Bounded<K, V> {
    fn new() -> Self {
        Self(RwLock::new(HashMap::new()))
    }

    fn get(&self, k: &K) -> Option<V> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(k)
            .cloned()
    }

    fn put(&self, k: K, v: V) {
        let mut m = self.0.write().unwrap_or_else(|p| p.into_inner());
        if m.len() >= MAX_ENTRIES && !m.contains_key(&k) {
            m.clear();
        }
        m.insert(k, v);
    }

    fn remove(&self, k: &K) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).remove(k);
    }

    fn clear(&self) {
        self.0.write().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// Keyed by id alone (ids are UUIDs); an entry counts only for the tenant it belongs to.
/// Keyed by id alone (ids are UUIDs); an entry counts only for the tenant it belongs to.
pub(crate) struct HotCache {
    cards: Bounded<CardId, Arc<Card>>,
    names: Bounded<PersonId, (TenantId, Option<Arc<str>>)>,
    tokens: Bounded<TokenId, Arc<CardTokenRecord>>,
}

impl Default for HotCache {
    fn default() -> Self {
        Self {
            cards: Bounded::new(),
            names: Bounded::new(),
            tokens: Bounded::new(),
        }
    }
}

impl HotCache {
    pub fn card(&self, tenant: &TenantId, card: &CardId) -> Option<Arc<Card>> {
        self.cards.get(card).filter(|c| &c.tenant_id == tenant)
    }

    pub fn put_card(&self, card: Card) -> Arc<Card> {
        let card = Arc::new(card);
        self.cards.put(card.id, card.clone());
        card
    }

    pub fn forget_card(&self, card: &CardId) {
        self.cards.remove(card);
    }

    /// The display name of a cardholder: `Some(None)` when known to have none.
    pub fn name(&self, tenant: &TenantId, person: &PersonId) -> Option<Option<Arc<str>>> {
        self.names
            .get(person)
            .filter(|(t, _)| t == tenant)
            .map(|(_, n)| n)
    }

    pub fn put_name(&self, tenant: &TenantId, person: &PersonId, name: Option<&str>) {
        self.names
            .put(*person, (tenant.clone(), name.map(Arc::from)));
    }

    pub fn token(&self, id: &TokenId) -> Option<Arc<CardTokenRecord>> {
        self.tokens.get(id)
    }

    /// Remembers a token while it can still be used; forgets it once it cannot.
    pub fn put_token(&self, record: CardTokenRecord) {
        if record.revoked || record.use_limit.exhausted(record.uses_made) {
            self.tokens.remove(&record.id);
        } else {
            self.tokens.put(record.id, Arc::new(record));
        }
    }

    pub fn forget_token(&self, id: &TokenId) {
        self.tokens.remove(id);
    }

    pub fn clear(&self) {
        self.cards.clear();
        self.names.clear();
        self.tokens.clear();
    }
}
