//! Day-to-day administration: clients (create, disable, enable), key rotation (signing keys,
//! and tenant data keys re-encrypting the vault online) and the audit log's verification.

use crate::{facade, App, AppError, Conflict, Entity};
use cardgate_core::audit::{ChainBreak, LinkRule, LogVerifier};
use cardgate_core::model::ClientSettings;
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::Secret;
use cardgate_core::{AccessTokenFormat, Client, ClientId, Environment, PersonId, TenantId};
use cardgate_store::{Guard, SigningKeyRow, Write, WriteOutcome, WriteSet};
use serde_json::json;

facade!(
    /// Administration: clients, key rotation, the audit log.
    Admin,
    admin
);

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

impl Admin<'_> {
    /// Creates a client with generated secrets, returned once.
    pub async fn create_client(&self, new: NewClient) -> Result<CreatedClient, AppError> {
        let snap = self.snapshot();
        snap.has_tenant(&new.tenant)?;
        if snap.clients.contains_key(new.id.as_str()) {
            return Err(AppError::Conflict(Conflict::Exists(
                Entity::Client,
                new.id.to_string(),
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
                return Err(AppError::NotFound(Entity::Person));
            }
        }
        let gen = |p: &str| Secret::generate(p).map_err(AppError::from);
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

    pub async fn set_client_disabled(&self, id: &ClientId, disabled: bool) -> Result<(), AppError> {
        let snap = self.snapshot();
        let client = snap
            .clients
            .get(id.as_str())
            .ok_or(AppError::NotFound(Entity::Client))?;
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
    pub async fn rotate_signing_key(&self, actor: &str) -> Result<String, AppError> {
        let now = self.now_ms();
        let (kid, private_enc, public_jwk) = cardgate_jose::vault::new_signing_key(self.master())?;
        let row = SigningKeyRow {
            kid,
            environment: self.env(),
            private_enc,
            public_jwk,
            created_at_ms: now,
            retired_at_ms: None,
        };
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
    pub async fn rotate_data_key(&self, tenant: &TenantId) -> Result<(i64, usize), AppError> {
        let snap = self.snapshot();
        let env = self.env();
        snap.has_tenant(tenant)?;
        let old = snap
            .keys
            .current_data_key(tenant.as_str())
            .map_or(0, |(v, _)| v);
        let now = self.now_ms();
        let version = old + 1;
        let row = crate::import::new_data_key_row(self.master(), tenant, env, version, now)?;
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
        let (v, key) = self.current_data_key(tenant)?;
        for mut person in self.store.list_persons(tenant, env).await? {
            let Some(enc) = &person.totp_secret_enc else {
                continue;
            };
            if person.key_version == v {
                continue;
            }
            let old_key = self.data_key(tenant, person.key_version)?;
            let plain = App::open_totp(&old_key, person.key_version, tenant, &person.id, enc)?;
            person.totp_secret_enc = Some(App::seal_totp(&key, v, tenant, &person.id, &plain)?);
            person.key_version = v;
            self.commit(WriteSet::of(vec![Write::UpsertPerson(person)]))
                .await?;
            resealed += 1;
        }
        Ok((version, resealed))
    }

    /// Walks every audit chain ([`verify_audit_log`]).
    pub async fn verify_audit(&self) -> Result<Result<i64, ChainBreak>, AppError> {
        verify_audit_log(self.store.as_ref(), self.master()).await
    }
}

/// Walks every audit chain of `store`, changing nothing, accepting only links made under the
/// audit key: the number of events, or where a chain breaks. Whether the log must be keyed
/// is read from the master key check ([`crate::KeyCheck`]), not from a marker a database
/// writer could delete: a log from before keyed links fails as `NotKeyed` until re-linked.
pub async fn verify_audit_log(
    store: &dyn cardgate_store::Store,
    master: &cardgate_jose::vault::MasterKey,
) -> Result<Result<i64, ChainBreak>, AppError> {
    if matches!(
        crate::KeyCheck::read(store, master).await?,
        crate::KeyCheck::BeforeKeyedLinks
    ) {
        return Ok(Err(ChainBreak::NotKeyed));
    }
    let key = crate::audit_key(master);
    // A chain pruned while it was walked starts later than the walk expected: walked again
    // from the new checkpoint.
    let mut attempts = 0;
    loop {
        attempts += 1;
        let marks = store.audit_marks().await?;
        let starts = match crate::retention::checkpoints(&key, &marks) {
            Ok(starts) => starts,
            Err(b) => return Ok(Err(b)),
        };
        let rule = LinkRule::Keyed(key.clone());
        let mut verifier = LogVerifier::starting_at(store.audit_heads().await?, rule, &starts);
        let mut after = (0, 0);
        let mut broken = None;
        'walk: loop {
            let page = store.audit_page(after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = (last.chain, last.seq);
            for ev in &page {
                if let Err(b) = verifier.push(ev) {
                    broken = Some(b);
                    break 'walk;
                }
            }
        }
        // What was appended during the walk must be covered by the heads now.
        let outcome = match broken {
            Some(b) => Err(b),
            None => verifier.finish(&store.audit_heads().await?),
        };
        if outcome.is_ok() || attempts == 3 || store.audit_marks().await? == marks {
            return Ok(outcome);
        }
    }
}
