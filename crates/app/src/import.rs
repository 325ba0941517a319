//! Provisioning: the declarative, idempotent import (SPEC §6) and adding one card, in this
//! instance's environment.

use crate::{facade, AppError, Conflict, Entity, Invalid};
use cardgate_core::cards::CardSecrets;
use cardgate_core::import::{CardPlan, ImportError, ImportPlan};
use cardgate_core::secret::{Secret, SecretHash};
use cardgate_core::{
    Account, Card, Client, ClientId, Environment, Person, PersonId, Tenant, TenantId,
};
use cardgate_jose::aead::AeadKey;
use cardgate_jose::vault::{aad, MasterKey};
use cardgate_store::{DataKeyRow, Write, WriteSet};
use serde_json::json;
use std::collections::HashMap;

facade!(
    /// Provisioning: import a file, add a card.
    Importer,
    importer
);

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    pub tenants: usize,
    pub changes: usize,
}

fn seal_with(key: &AeadKey, aad: &str, plain: &[u8]) -> Result<Vec<u8>, AppError> {
    Ok(key.seal(aad.as_bytes(), plain)?)
}

fn open_with(key: &AeadKey, aad: &str, sealed: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    key.open(aad.as_bytes(), sealed).ok()
}

/// A fresh data key version for a tenant in one environment, sealed for storage. (Its
/// associated data names no environment: each environment's rows are unwrapped on their own.)
pub(crate) fn new_data_key_row(
    master: &MasterKey,
    tenant: &TenantId,
    env: Environment,
    version: i64,
    now_ms: i64,
) -> Result<DataKeyRow, AppError> {
    Ok(DataKeyRow {
        tenant_id: tenant.clone(),
        environment: env,
        version,
        key_enc: cardgate_jose::vault::new_data_key(master, tenant.as_str(), version)?,
        created_at_ms: now_ms,
    })
}

impl Importer<'_> {
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
            let (key_version, data_key) = match snap.keys.current_data_key(t.id.as_str()) {
                Some((v, k)) => (v, k.clone()),
                None => {
                    let row = new_data_key_row(self.master(), &t.id, env, 1, now)?;
                    let key = AeadKey::from_bytes(
                        &self
                            .master()
                            .open(&aad::data_key(t.id.as_str(), 1), &row.key_enc)?,
                    )?;
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
                    .open(&aad::webhook_secret(t.id.as_str()), enc)
                    .is_ok_and(|p| p[..] == *s.expose().as_bytes()),
                _ => false,
            };
            let webhook_secret_enc = match (&t.webhook_secret, same_webhook_secret) {
                (_, true) => existing_tenant.and_then(|e| e.webhook_secret_enc.clone()),
                (Some(s), false) => Some(
                    self.master()
                        .seal(&aad::webhook_secret(t.id.as_str()), s.expose().as_bytes())?,
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
                let payload_aad = aad::payload_key(c.id.as_str());
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
                    // Disabling or enabling (here as by `client disable`/`enable`) refuses every
                    // token issued before it.
                    tokens_not_before_ms: match existing {
                        Some(e) if c.disabled != e.disabled => now,
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
                        .data_key(t.id.as_str(), v)
                        .and_then(|k| {
                            open_with(k, &aad::totp(t.id.as_str(), &p.id.to_string(), v), enc)
                        })
                        .is_some_and(|plain| plain[..] == s[..]),
                    _ => false,
                };
                let (totp_secret_enc, version) = match (&p.totp_secret, same_totp, existing) {
                    (_, true, Some(e)) => (e.totp_secret_enc.clone(), e.key_version),
                    (Some(s), _, _) => (
                        Some(seal_with(
                            &data_key,
                            &aad::totp(t.id.as_str(), &p.id.to_string(), key_version),
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
                        .data_key(t.id.as_str(), e.key_version)
                        .and_then(|k| {
                            open_with(
                                k,
                                &aad::card(t.id.as_str(), &c.id.to_string(), e.key_version),
                                &e.vault,
                            )
                        })
                        .and_then(|plain| serde_json::from_slice::<CardSecrets>(&plain).ok())
                        .is_some_and(|s| s == c.secrets)
                });
                let (vault, version) = match (same_secrets, existing) {
                    (true, Some(e)) => (e.vault.clone(), e.key_version),
                    _ => {
                        let plain = zeroize::Zeroizing::new(
                            serde_json::to_vec(&c.secrets)
                                .map_err(|e| AppError::Internal(e.to_string()))?,
                        );
                        (
                            seal_with(
                                &data_key,
                                &aad::card(t.id.as_str(), &c.id.to_string(), key_version),
                                &plain,
                            )?,
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
            .map_err(AppError::from)?;
        self.reload().await?;
        Ok(report)
    }

    /// Adds one card (`cardgate card add`) to an existing tenant, in this instance's
    /// environment: its account must exist there and its cardholder hold that account; an
    /// existing card id is refused (change cards by import), also another environment's. The
    /// card data is sealed under the tenant's current data key of this environment.
    pub async fn add_card(&self, tenant: &TenantId, card: CardPlan) -> Result<(), AppError> {
        let env = self.env();
        self.snapshot().has_tenant(tenant)?;
        let account = self
            .store
            .get_account(tenant, env, card.account_id.as_str())
            .await?
            .ok_or(AppError::Invalid(Invalid::UnknownAccount))?;
        if !account.person_ids.contains(&card.person_id) {
            return Err(AppError::Invalid(Invalid::NotAHolder));
        }
        if self.store.get_card(tenant, env, &card.id).await?.is_some() {
            return Err(AppError::Conflict(Conflict::Exists(
                Entity::Card,
                card.id.to_string(),
            )));
        }
        if self
            .store
            .other_environment_ids(tenant, env)
            .await?
            .cards
            .contains(&card.id)
        {
            return Err(AppError::Conflict(Conflict::OtherEnvironment(
                Entity::Card,
                env,
            )));
        }
        let (version, vault) = self.seal_card(tenant, &card.id, &card.secrets)?;
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
}

/// An import fails either on the file's content (naming the field) or in the service.
#[derive(Debug, thiserror::Error)]
pub enum ImportErrorOr {
    #[error(transparent)]
    Invalid(#[from] ImportError),
    #[error(transparent)]
    Service(#[from] AppError),
}

impl From<cardgate_jose::JoseError> for ImportErrorOr {
    fn from(e: cardgate_jose::JoseError) -> Self {
        Self::Service(e.into())
    }
}

impl From<cardgate_store::StoreError> for ImportErrorOr {
    fn from(e: cardgate_store::StoreError) -> Self {
        Self::Service(e.into())
    }
}
