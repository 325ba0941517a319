//! The in-memory directory of tenants, clients and keys (this environment's) that every
//! request reads (never the database). It is rebuilt when the store's config version
//! changes, which every replica polls for.

use super::keys::{KeyRing, MasterKey};
use super::ServiceError;
use cardgate_core::secret::SecretHash;
use cardgate_core::{Client, Environment, Tenant, TenantId};
use cardgate_store::Store;
use std::collections::HashMap;
use std::sync::Arc;

pub struct Snapshot {
    pub version: i64,
    pub tenants: HashMap<TenantId, Arc<Tenant>>,
    pub clients: HashMap<String, Arc<Client>>,
    pub by_api_key: HashMap<SecretHash, Arc<Client>>,
    pub by_sdk_api_key: HashMap<SecretHash, Arc<Client>>,
    pub keys: KeyRing,
}

impl Snapshot {
    pub async fn load(
        store: &dyn Store,
        master: &MasterKey,
        env: Environment,
        now_ms: i64,
    ) -> Result<Self, ServiceError> {
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
        let keys = KeyRing::build(
            master,
            env,
            &store.load_signing_keys(env).await?,
            &store.load_data_keys(env).await?,
            now_ms,
        )?;
        Ok(Self {
            version,
            tenants,
            clients,
            by_api_key,
            by_sdk_api_key,
            keys,
        })
    }

    pub fn tenant(&self, id: &TenantId) -> Result<&Arc<Tenant>, ServiceError> {
        self.tenants
            .get(id)
            .ok_or_else(|| ServiceError::Internal(format!("tenant {id} is missing")))
    }
}
