//! The directory: this environment's tenants, clients and keys, held in memory (every request
//! reads them from here, never from the database) and rebuilt when the store's config version
//! changes, which every replica polls for; and who is calling ([`auth`]).

mod auth;

pub use auth::{AuthFailure, Credential, Principal};

use crate::{facade, AppError, Entity};
use cardgate_core::secret::SecretHash;
use cardgate_core::tokens::MAX_SIGNED_TOKEN_TTL_SECONDS;
use cardgate_core::{Client, Environment, Tenant, TenantId};
use cardgate_jose::vault::{KeyRing, MasterKey, SealedDataKey, SealedSigningKey};
use cardgate_store::Store;
use std::collections::HashMap;
use std::sync::Arc;

facade!(
    /// Who is calling, and what the directory knows of tenants and clients.
    Directory,
    directory
);

pub struct Snapshot {
    pub version: i64,
    pub tenants: HashMap<TenantId, Arc<Tenant>>,
    pub clients: HashMap<String, Arc<Client>>,
    pub by_api_key: HashMap<SecretHash, Arc<Client>>,
    pub by_sdk_api_key: HashMap<SecretHash, Arc<Client>>,
    pub keys: KeyRing,
    /// BankEzy: each client's payload key (by client id) and each tenant's server keys.
    pub sdk: crate::sdk::SdkKeys,
}

impl Snapshot {
    pub async fn load(
        store: &dyn Store,
        master: &MasterKey,
        env: Environment,
        now_ms: i64,
    ) -> Result<Self, AppError> {
        let version = store.config_version().await?;
        let tenants: HashMap<_, _> = store
            .load_tenants()
            .await?
            .into_iter()
            .map(|t| (t.id.clone(), Arc::new(t)))
            .collect();
        let mut clients = HashMap::new();
        let mut by_api_key = HashMap::new();
        let mut by_sdk_api_key = HashMap::new();
        for c in store.load_clients().await? {
            let c = Arc::new(c);
            if let Some(h) = c.api_key_hash {
                by_api_key.insert(h, c.clone());
            }
            if let Some(h) = c.sdk_api_key_hash {
                by_sdk_api_key.insert(h, c.clone());
            }
            clients.insert(c.id.as_str().to_string(), c);
        }
        let signing_rows = store.load_signing_keys(env).await?;
        let data_rows = store.load_data_keys(env).await?;
        let signing: Vec<SealedSigningKey<'_>> = signing_rows
            .iter()
            .filter(|r| r.environment == env)
            .map(|r| SealedSigningKey {
                kid: &r.kid,
                private_enc: &r.private_enc,
                public_jwk: &r.public_jwk,
                created_at_ms: r.created_at_ms,
                retired_at_ms: r.retired_at_ms,
            })
            .collect();
        let data: Vec<SealedDataKey<'_>> = data_rows
            .iter()
            .filter(|r| r.environment == env)
            .map(|r| SealedDataKey {
                tenant: r.tenant_id.as_str(),
                version: r.version,
                key_enc: &r.key_enc,
            })
            .collect();
        let keys = KeyRing::build(
            master,
            &signing,
            &data,
            now_ms,
            MAX_SIGNED_TOKEN_TTL_SECONDS * 1000,
        )?;
        let sdk = crate::sdk::SdkKeys::load(store, master, env, clients.values()).await?;
        Ok(Self {
            version,
            tenants,
            clients,
            by_api_key,
            by_sdk_api_key,
            keys,
            sdk,
        })
    }

    /// A tenant every client and row refers to; missing only if the directory is corrupt.
    pub fn tenant(&self, id: &TenantId) -> Result<&Arc<Tenant>, AppError> {
        self.tenants
            .get(id)
            .ok_or_else(|| AppError::Internal(format!("tenant {id} is missing")))
    }

    pub fn has_tenant(&self, id: &TenantId) -> Result<(), AppError> {
        self.tenants
            .contains_key(id)
            .then_some(())
            .ok_or(AppError::NotFound(Entity::Tenant))
    }
}
