//! Day-to-day administration: the idempotent import, client creation and disabling, key
//! rotation (signing keys and tenant data keys, re-encrypting the vault online) and audit
//! chain verification.

use super::cards::{totp_aad, vault_aad};
use super::keys::{new_data_key_row, new_signing_key_row};
use super::webhook::webhook_secret_aad;
use super::{Service, ServiceError};
use cardgate_core::audit::{ChainBreak, LinkRule, LogVerifier, KEYED_LINKS, LINKS_META_KEY};
use cardgate_core::cards::CardSecrets;
use cardgate_core::import::{CardPlan, ImportError, ImportPlan};
use cardgate_core::model::ClientSettings;
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::{Secret, SecretHash};
use cardgate_core::{
    AccessTokenFormat, Account, Card, Client, ClientId, Environment, Person, PersonId, Tenant,
    TenantId,
};
use cardgate_jose::aead::AeadKey;
use cardgate_store::{Guard, Write, WriteOutcome, WriteSet};
use serde_json::json;
use std::collections::HashMap;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub tenants: usize,
    pub changes: usize,
}

/// Secrets of a newly created client, shown once.
pub struct CreatedClient {
    pub client: Client,
    pub secret: Secret,
    pub api_key: Secret,
    pub sdk_api_key: Option<Secret>,
}

pub struct NewClient {
    pub tenant: TenantId,
    pub id: ClientId,
    pub environment: Environment,
    pub scopes: ScopeSet,
    pub person_id: Option<PersonId>,
    pub access_token_format: AccessTokenFormat,
    pub with_sdk_api_key: bool,
}

fn seal_with(key: &AeadKey, aad: &str, plain: &[u8]) -> Result<Vec<u8>, ServiceError> {
    key.seal(aad.as_bytes(), plain)
        .map_err(ServiceError::crypto)
}

fn open_with(key: &AeadKey, aad: &str, sealed: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    key.open(aad.as_bytes(), sealed).ok()
}

impl Service {
    /// Applies an import plan in one transaction. Persons, accounts and cards are created in
    /// this instance's environment (clients keep their own); an id that another environment
    /// already uses is refused. Unchanged entities are not rewritten (sealed values are
    /// compared in clear), so re-importing the same file changes nothing.
    pub async fn import(&self, plan: ImportPlan) -> Result<ImportReport, ImportErrorOr> {
        let snap = self.snapshot();
        let now = self.now_ms();
        let env = self.env();
        let mut writes = Vec::new();
        let mut report = ImportReport {
            tenants: plan.tenants.len(),
            changes: 0,
        };
        let mut api_keys: HashMap<SecretHash, ClientId> = snap
            .clients
            .values()
            .filter_map(|c| c.api_key_hash.map(|h| (h, c.id.clone())))
            .collect();

        for (ti, t) in plan.tenants.iter().enumerate() {
            let tp = format!("tenants[{ti}]");
            let existing_tenant = snap.tenants.get(&t.id);
            let mut changes = 0usize;
            // The tenant's data key: the current one, or a new version 1.
            let (key_version, data_key) = match snap.keys.current_data_key(&t.id) {
                Ok((v, k)) => (v, k.clone()),
                Err(_) => {
                    let row = new_data_key_row(self.master(), &t.id, env, 1, now)?;
                    let key = AeadKey::from_bytes(
                        &self
                            .master()
                            .open(&super::keys::data_key_aad(&t.id, 1), &row.key_enc)?,
                    )
                    .map_err(ServiceError::crypto)?;
                    writes.push(Write::InsertDataKey(row));
                    (1, key)
                }
            };

            let same_webhook_secret = match (
                &t.webhook_secret,
                existing_tenant.and_then(|e| e.webhook_secret_enc.as_ref()),
            ) {
                (None, None) => true,
                (Some(s), Some(enc)) => self
                    .master()
                    .open(&webhook_secret_aad(&t.id), enc)
                    .is_ok_and(|p| p[..] == *s.expose().as_bytes()),
                _ => false,
            };
            let webhook_secret_enc = match (&t.webhook_secret, same_webhook_secret) {
                (_, true) => existing_tenant.and_then(|e| e.webhook_secret_enc.clone()),
                (Some(s), false) => Some(
                    self.master()
                        .seal(&webhook_secret_aad(&t.id), s.expose().as_bytes())?,
                ),
                (None, false) => None,
            };
            let tenant = Tenant {
                id: t.id.clone(),
                settings: t.settings.clone(),
                webhook_secret_enc,
            };
            if existing_tenant.map(|e| e.as_ref()) != Some(&tenant) {
                // Inserted ahead of its data key so the foreign key holds.
                writes.insert(0, Write::UpsertTenant(tenant));
                changes += 1;
            }

            for (ci, c) in t.clients.iter().enumerate() {
                let cp = format!("{tp}.clients[{ci}]");
                let existing = snap.clients.get(c.id.as_str());
                if let Some(e) = existing {
                    if e.tenant_id != t.id {
                        return Err(ImportError {
                            path: format!("{cp}.id"),
                            message: "a client with this id belongs to another tenant".into(),
                        }
                        .into());
                    }
                }
                let api_key_hash = c.api_key.as_ref().map(Secret::hash);
                if let Some(h) = api_key_hash {
                    match api_keys.get(&h) {
                        Some(owner) if owner != &c.id => {
                            return Err(ImportError {
                                path: format!("{cp}.api_key"),
                                message: "this api_key is already another client's".into(),
                            }
                            .into())
                        }
                        _ => {
                            api_keys.insert(h, c.id.clone());
                        }
                    }
                }
                let payload_aad = format!("cardgate:payload-key:{}", c.id);
                let payload_key_enc = match (
                    &c.payload_key,
                    existing.and_then(|e| e.payload_key_enc.as_ref()),
                ) {
                    (None, _) => None,
                    (Some(k), Some(enc))
                        if self
                            .master()
                            .open(&payload_aad, enc)
                            .is_ok_and(|p| p[..] == *k.expose().as_bytes()) =>
                    {
                        Some(enc.clone())
                    }
                    (Some(k), _) => Some(self.master().seal(&payload_aad, k.expose().as_bytes())?),
                };
                let client = Client {
                    id: c.id.clone(),
                    tenant_id: t.id.clone(),
                    environment: c.environment,
                    secret_hash: c.secret.hash(),
                    api_key_hash,
                    sdk_api_key_hash: c.sdk_api_key.as_ref().map(Secret::hash),
                    payload_key_enc,
                    disabled: c.disabled,
                    // Disabling (here as by `client disable`) refuses every token held so far.
                    tokens_not_before_ms: match existing {
                        Some(e) if c.disabled && !e.disabled => now,
                        Some(e) => e.tokens_not_before_ms,
                        None => 0,
                    },
                    settings: c.settings.clone(),
                };
                if existing.map(|e| e.as_ref()) != Some(&client) {
                    writes.push(Write::UpsertClient(client));
                    changes += 1;
                }
            }

            // Ids are unique per tenant across environments: another environment's object is
            // never changed nor moved here.
            let elsewhere = self.store.other_environment_ids(&t.id, env).await?;
            let taken = |path: String, what: &str| -> ImportErrorOr {
                ImportError {
                    path,
                    message: format!(
                        "a {what} with this id exists in another environment (this import creates {what}s in {env})"
                    ),
                }
                .into()
            };
            let persons: HashMap<PersonId, Person> = self
                .store
                .list_persons(&t.id, env)
                .await?
                .into_iter()
                .map(|p| (p.id, p))
                .collect();
            for (pi, p) in t.persons.iter().enumerate() {
                if elsewhere.persons.contains(&p.id) {
                    return Err(taken(format!("{tp}.persons[{pi}].id"), "person"));
                }
                let existing = persons.get(&p.id);
                let same_totp = match (
                    &p.totp_secret,
                    existing
                        .and_then(|e| e.totp_secret_enc.as_ref().map(|enc| (enc, e.key_version))),
                ) {
                    (None, None) => true,
                    (Some(s), Some((enc, v))) => snap
                        .keys
                        .data_key(&t.id, v)
                        .ok()
                        .and_then(|k| open_with(k, &totp_aad(&t.id, &p.id, v), enc))
                        .is_some_and(|plain| plain[..] == s[..]),
                    _ => false,
                };
                let (totp_secret_enc, version) = match (&p.totp_secret, same_totp, existing) {
                    (_, true, Some(e)) => (e.totp_secret_enc.clone(), e.key_version),
                    (Some(s), _, _) => (
                        Some(seal_with(
                            &data_key,
                            &totp_aad(&t.id, &p.id, key_version),
                            s,
                        )?),
                        key_version,
                    ),
                    (None, _, _) => (None, key_version),
                };
                let person = Person {
                    id: p.id,
                    tenant_id: t.id.clone(),
                    environment: env,
                    profile: p.profile.clone(),
                    totp_secret_enc,
                    key_version: version,
                };
                if existing != Some(&person) {
                    writes.push(Write::UpsertPerson(person));
                    changes += 1;
                }
            }

            let accounts: HashMap<String, Account> = self
                .store
                .list_accounts(&t.id, env)
                .await?
                .into_iter()
                .map(|a| (a.id.to_string(), a))
                .collect();
            for (ai, a) in t.accounts.iter().enumerate() {
                if elsewhere.accounts.contains(&a.id) {
                    return Err(taken(format!("{tp}.accounts[{ai}].id"), "account"));
                }
                let account = Account {
                    id: a.id.clone(),
                    tenant_id: t.id.clone(),
                    environment: env,
                    account_number: a.account_number.clone(),
                    person_ids: a.person_ids.clone(),
                };
                if accounts.get(a.id.as_str()) != Some(&account) {
                    writes.push(Write::UpsertAccount(account));
                    changes += 1;
                }
            }

            let cards: HashMap<cardgate_core::CardId, Card> = self
                .store
                .list_cards(&t.id, env)
                .await?
                .into_iter()
                .map(|c| (c.id, c))
                .collect();
            for (ci, c) in t.cards.iter().enumerate() {
                if elsewhere.cards.contains(&c.id) {
                    return Err(taken(format!("{tp}.cards[{ci}].id"), "card"));
                }
                let existing = cards.get(&c.id);
                let same_secrets = existing.is_some_and(|e| {
                    snap.keys
                        .data_key(&t.id, e.key_version)
                        .ok()
                        .and_then(|k| {
                            open_with(k, &vault_aad(&t.id, &c.id, e.key_version), &e.vault)
                        })
                        .and_then(|plain| serde_json::from_slice::<CardSecrets>(&plain).ok())
                        .is_some_and(|s| s == c.secrets)
                });
                let (vault, version) = match (same_secrets, existing) {
                    (true, Some(e)) => (e.vault.clone(), e.key_version),
                    _ => {
                        let plain = zeroize::Zeroizing::new(
                            serde_json::to_vec(&c.secrets)
                                .map_err(|e| ServiceError::Internal(e.to_string()))?,
                        );
                        (
                            seal_with(&data_key, &vault_aad(&t.id, &c.id, key_version), &plain)?,
                            key_version,
                        )
                    }
                };
                let card = Card {
                    id: c.id,
                    tenant_id: t.id.clone(),
                    environment: env,
                    account_id: c.account_id.clone(),
                    person_id: c.person_id,
                    status: c.status,
                    wallet_eligible: c.wallet_eligible,
                    last4: c.secrets.last4(),
                    vault,
                    key_version: version,
                };
                if existing != Some(&card) {
                    writes.push(Write::UpsertCard(card));
                    changes += 1;
                }
            }
            if changes > 0 {
                writes.push(self.audit(
                    Some(&t.id),
                    "admin",
                    "import.applied",
                    "ok",
                    format!("tenant:{}", t.id),
                    json!({"changes": changes}),
                ));
            }
            report.changes += changes;
        }
        if writes.is_empty() {
            return Ok(report);
        }
        // Any change (cards and cardholders included) makes every replica reload and read
        // afresh what it remembers.
        writes.push(Write::BumpConfigVersion);
        self.store
            .apply(&[WriteSet::of(writes)])
            .await
            .map_err(ServiceError::from)?;
        self.reload().await?;
        Ok(report)
    }

    /// Adds one card (`cardgate card add`) to an existing tenant, in this instance's
    /// environment: its account must exist there and its cardholder hold that account; an
    /// existing card id is refused (change cards by import), also another environment's. The
    /// card data is sealed under the tenant's current data key of this environment.
    pub async fn add_card(&self, tenant: &TenantId, card: CardPlan) -> Result<(), ServiceError> {
        let snap = self.snapshot();
        let env = self.env();
        if !snap.tenants.contains_key(tenant) {
            return Err(ServiceError::NotFound("tenant"));
        }
        let account = self
            .store
            .get_account(tenant, env, card.account_id.as_str())
            .await?
            .ok_or_else(|| {
                ServiceError::BadRequest("card.account_id: no such account in this tenant".into())
            })?;
        if !account.person_ids.contains(&card.person_id) {
            return Err(ServiceError::BadRequest(
                "card.person_id: the cardholder must be a holder of the card's account".into(),
            ));
        }
        if self.store.get_card(tenant, env, &card.id).await?.is_some() {
            return Err(ServiceError::Conflict(format!(
                "card {} already exists (change cards with cardgate import)",
                card.id
            )));
        }
        if self
            .store
            .other_environment_ids(tenant, env)
            .await?
            .cards
            .contains(&card.id)
        {
            return Err(ServiceError::Conflict(format!(
                "card.id: a card with this id exists in another environment (card add creates cards in {env})"
            )));
        }
        let (version, key) = snap
            .keys
            .current_data_key(tenant)
            .map_err(|_| ServiceError::Internal("the tenant has no data key".into()))?;
        let plain = zeroize::Zeroizing::new(
            serde_json::to_vec(&card.secrets).map_err(|e| ServiceError::Internal(e.to_string()))?,
        );
        let vault = seal_with(key, &vault_aad(tenant, &card.id, version), &plain)?;
        let row = Card {
            id: card.id,
            tenant_id: tenant.clone(),
            environment: env,
            account_id: card.account_id,
            person_id: card.person_id,
            status: card.status,
            wallet_eligible: card.wallet_eligible,
            last4: card.secrets.last4(),
            vault,
            key_version: version,
        };
        let writes = vec![
            Write::UpsertCard(row),
            self.audit(
                Some(tenant),
                "admin",
                "card.added",
                "ok",
                format!("card:{}", card.id),
                json!({"status": card.status.as_str()}),
            ),
            Write::BumpConfigVersion,
        ];
        self.store.apply(&[WriteSet::of(writes)]).await?;
        self.reload().await?;
        Ok(())
    }

    /// Creates a client with generated secrets, returned once.
    pub async fn create_client(&self, new: NewClient) -> Result<CreatedClient, ServiceError> {
        let snap = self.snapshot();
        if !snap.tenants.contains_key(&new.tenant) {
            return Err(ServiceError::NotFound("tenant"));
        }
        if snap.clients.contains_key(new.id.as_str()) {
            return Err(ServiceError::Conflict(format!(
                "client {} already exists",
                new.id
            )));
        }
        if let Some(p) = &new.person_id {
            // The client acts in its own environment, so its cardholder must be there.
            if self
                .store
                .get_person(&new.tenant, new.environment, p)
                .await?
                .is_none()
            {
                return Err(ServiceError::NotFound("person"));
            }
        }
        let gen = |p: &str| Secret::generate(p).map_err(ServiceError::crypto);
        let secret = gen("cgs_")?;
        let api_key = gen("cgk_")?;
        let sdk_api_key = if new.with_sdk_api_key {
            Some(gen("cgsdk_")?)
        } else {
            None
        };
        let client = Client {
            id: new.id.clone(),
            tenant_id: new.tenant.clone(),
            environment: new.environment,
            secret_hash: secret.hash(),
            api_key_hash: Some(api_key.hash()),
            sdk_api_key_hash: sdk_api_key.as_ref().map(Secret::hash),
            payload_key_enc: None,
            disabled: false,
            tokens_not_before_ms: 0,
            settings: ClientSettings {
                scopes: new.scopes,
                person_id: new.person_id,
                encryption_jwk: None,
                access_token_format: new.access_token_format,
            },
        };
        let audit = self.audit(Some(&new.tenant), "admin", "client.created", "ok", format!("client:{}", new.id),
            json!({"scope": client.settings.scopes.to_string_list(), "environment": new.environment.as_str()}));
        self.commit(WriteSet::of(vec![
            Write::UpsertClient(client.clone()),
            Write::BumpConfigVersion,
            audit,
        ]))
        .await?;
        self.reload().await?;
        Ok(CreatedClient {
            client,
            secret,
            api_key,
            sdk_api_key,
        })
    }

    pub async fn set_client_disabled(
        &self,
        id: &ClientId,
        disabled: bool,
    ) -> Result<(), ServiceError> {
        let snap = self.snapshot();
        let client = snap
            .clients
            .get(id.as_str())
            .ok_or(ServiceError::NotFound("client"))?;
        let action = if disabled {
            "client.disabled"
        } else {
            "client.enabled"
        };
        let audit = self.audit(
            Some(&client.tenant_id),
            "admin",
            action,
            "ok",
            format!("client:{id}"),
            json!({}),
        );
        self.commit(WriteSet::of(vec![
            Write::SetClientDisabled {
                id: id.clone(),
                disabled,
                now_ms: self.now_ms(),
            },
            Write::BumpConfigVersion,
            audit,
        ]))
        .await?;
        self.reload().await
    }

    /// Makes a new signing key active for this environment. Older keys are retired but stay
    /// in the JWKS (and keep verifying) until their last token has expired.
    pub async fn rotate_signing_key(&self, actor: &str) -> Result<String, ServiceError> {
        let now = self.now_ms();
        let row = new_signing_key_row(self.master(), self.env(), now)?;
        let kid = row.kid.clone();
        let mut writes: Vec<Write> = self
            .store
            .load_signing_keys(self.env())
            .await?
            .into_iter()
            .filter(|k| k.retired_at_ms.is_none())
            .map(|k| Write::RetireSigningKey {
                kid: k.kid,
                at_ms: now,
            })
            .collect();
        writes.push(Write::InsertSigningKey(row));
        writes.push(Write::BumpConfigVersion);
        writes.push(self.audit(
            None,
            actor,
            "signing_key.rotated",
            "ok",
            format!("kid:{kid}"),
            json!({"environment": self.env().as_str()}),
        ));
        self.commit(WriteSet::of(writes)).await?;
        self.reload().await?;
        Ok(kid)
    }

    /// Creates a new data key version for `tenant` in this environment and re-seals every card
    /// and TOTP secret of this environment under it (another environment's keys and data are
    /// untouched). Reads keep working throughout: each row names the key version it uses.
    pub async fn rotate_data_key(&self, tenant: &TenantId) -> Result<(i64, usize), ServiceError> {
        let snap = self.snapshot();
        let env = self.env();
        if !snap.tenants.contains_key(tenant) {
            return Err(ServiceError::NotFound("tenant"));
        }
        let old = snap
            .keys
            .current_data_key(tenant)
            .map(|(v, _)| v)
            .unwrap_or(0);
        let now = self.now_ms();
        let version = old + 1;
        let row = new_data_key_row(self.master(), tenant, env, version, now)?;
        let audit = self.audit(
            Some(tenant),
            "admin",
            "data_key.rotated",
            "ok",
            format!("tenant:{tenant}"),
            json!({"version": version, "environment": env.as_str()}),
        );
        self.commit(WriteSet::of(vec![
            Write::InsertDataKey(row),
            Write::BumpConfigVersion,
            audit,
        ]))
        .await?;
        self.reload().await?;
        let mut resealed = 0;
        for listed in self.store.list_cards(tenant, env).await? {
            // Compare-and-swap on the sealed bytes; a concurrent PIN change wins, and the
            // card is re-read and re-sealed again (a few times at most).
            let mut card = listed;
            for _attempt in 0..5 {
                if card.key_version == version {
                    break;
                }
                let secrets = self.open_card(&card)?;
                let (v, vault) = self.seal_card(tenant, &card.id, &secrets)?;
                let guard = Guard::CardVault {
                    tenant: tenant.clone(),
                    card: card.id,
                    expect_vault: card.vault.clone(),
                    vault,
                    key_version: v,
                    now_ms: now,
                };
                if self
                    .commit(WriteSet::guarded(vec![guard], vec![], vec![]))
                    .await?
                    == WriteOutcome::Applied
                {
                    resealed += 1;
                    break;
                }
                match self.store.get_card(tenant, env, &card.id).await? {
                    Some(fresh) => card = fresh,
                    None => break,
                }
            }
        }
        let snap = self.snapshot();
        let (v, key) = snap.keys.current_data_key(tenant)?;
        for mut person in self.store.list_persons(tenant, env).await? {
            let Some(enc) = &person.totp_secret_enc else {
                continue;
            };
            if person.key_version == v {
                continue;
            }
            let old_key = snap.keys.data_key(tenant, person.key_version)?;
            let plain = old_key
                .open(
                    totp_aad(tenant, &person.id, person.key_version).as_bytes(),
                    enc,
                )
                .map_err(ServiceError::crypto)?;
            person.totp_secret_enc =
                Some(seal_with(key, &totp_aad(tenant, &person.id, v), &plain)?);
            person.key_version = v;
            self.commit(WriteSet::of(vec![Write::UpsertPerson(person)]))
                .await?;
            resealed += 1;
        }
        Ok((version, resealed))
    }

    /// Walks every audit chain, accepting only links made under the audit key. Returns the
    /// number of events, or where a chain breaks (a log not recorded as keyed fails too).
    pub async fn verify_audit(&self) -> Result<Result<i64, ChainBreak>, ServiceError> {
        if self.store.meta_get(LINKS_META_KEY).await?.as_deref() != Some(KEYED_LINKS) {
            return Ok(Err(ChainBreak::NotKeyed));
        }
        let rule = LinkRule::Keyed(self.master().audit_key());
        let mut verifier = LogVerifier::new(self.store.audit_heads().await?, rule);
        let mut after = (0, 0);
        loop {
            let page = self.store.audit_page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = (last.chain, last.seq);
            for ev in &page {
                if let Err(b) = verifier.push(ev) {
                    return Ok(Err(b));
                }
            }
        }
        // What was appended during the walk must be covered by the heads now.
        Ok(verifier.finish(&self.store.audit_heads().await?))
    }
}

/// An import fails either on the file's content (naming the field) or in the service.
#[derive(Debug, thiserror::Error)]
pub enum ImportErrorOr {
    #[error(transparent)]
    Invalid(#[from] ImportError),
    #[error(transparent)]
    Service(#[from] ServiceError),
}

impl From<cardgate_store::StoreError> for ImportErrorOr {
    fn from(e: cardgate_store::StoreError) -> Self {
        Self::Service(e.into())
    }
}
