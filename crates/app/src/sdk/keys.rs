//! BankEzy's keys, held in the directory: each client's payload key (SPEC §4.5.1) and each
//! tenant's static P-256 server key versions, unwrapped from the master key at load. A new
//! server key version is created once across replicas (a claim-once guard on the version).

use super::SdkTokens;
use crate::AppError;
use cardgate_core::{Client, Environment, TenantId};
use cardgate_jose::aead::AeadKey;
use cardgate_jose::ecdh::StaticKey;
use cardgate_jose::vault::{aad, MasterKey};
use cardgate_store::{ClaimKey, Guard, SdkServerKeyRow, Store, Write, WriteOutcome, WriteSet};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One version of a tenant's server key.
pub struct ServerKey {
    pub version: i64,
    /// The JWK thumbprint of the public half: the `kid` of the JWEs it makes.
    pub kid: String,
    pub key: StaticKey,
    /// `serverPubKey` as BankEzy sends it: the public JWK as JSON, standard base64.
    pub server_pub_key: String,
}

#[derive(Default)]
pub struct SdkKeys {
    payload: HashMap<String, AeadKey>,
    server: HashMap<TenantId, BTreeMap<i64, Arc<ServerKey>>>,
}

fn server_key_aad(tenant: &TenantId, env: Environment, version: i64) -> String {
    format!("cardgate:sdk-server-key:{tenant}:{env}:{version}")
}

impl SdkKeys {
    /// Unwraps the payload keys of `clients` and `env`'s server keys. A payload key that does
    /// not open is left out (its client's requests are refused), never fatal.
    pub async fn load<'a>(
        store: &dyn Store,
        master: &MasterKey,
        env: Environment,
        clients: impl Iterator<Item = &'a Arc<Client>>,
    ) -> Result<Self, AppError> {
        let mut keys = Self::default();
        for c in clients {
            let Some(enc) = &c.payload_key_enc else {
                continue;
            };
            let opened = master
                .open(&aad::payload_key(c.id.as_str()), enc)
                .ok()
                .and_then(|text| {
                    let text = std::str::from_utf8(&text).ok()?.trim_end_matches('=');
                    let bytes = zeroize::Zeroizing::new(cardgate_jose::b64::decode(text).ok()?);
                    AeadKey::from_bytes(&bytes).ok()
                });
            match opened {
                Some(k) => {
                    keys.payload.insert(c.id.as_str().to_string(), k);
                }
                None => tracing::warn!(client = %c.id, "the client's payload key does not open"),
            }
        }
        for row in store.load_sdk_server_keys(env).await? {
            let aad = server_key_aad(&row.tenant_id, env, row.version);
            let scalar = master.open(&aad, &row.private_enc)?;
            let key = StaticKey::from_bytes(&scalar)?;
            let public = key.public_jwk();
            let json = serde_json::to_vec(
                &json!({"kty": public.kty, "crv": public.crv, "x": public.x, "y": public.y}),
            )
            .map_err(|e| AppError::Internal(e.to_string()))?;
            let server_key = ServerKey {
                version: row.version,
                kid: public.thumbprint(),
                server_pub_key: cardgate_jose::b64::encode_std(&json),
                key,
            };
            keys.server
                .entry(row.tenant_id)
                .or_default()
                .insert(row.version, Arc::new(server_key));
        }
        Ok(keys)
    }

    /// The client's payload key, if it has one.
    pub fn payload_key(&self, client: &str) -> Option<&AeadKey> {
        self.payload.get(client)
    }

    /// The version new tokens of `tenant` are issued with.
    pub fn current(&self, tenant: &TenantId) -> Option<Arc<ServerKey>> {
        self.server.get(tenant)?.values().next_back().cloned()
    }

    pub fn version(&self, tenant: &TenantId, version: i64) -> Option<Arc<ServerKey>> {
        self.server.get(tenant)?.get(&version).cloned()
    }
}

impl SdkTokens<'_> {
    /// Gives `tenant` a new server key version in this environment: new SDK tokens are issued
    /// with it; tokens issued before keep theirs until they expire. Returns the new version.
    pub async fn rotate_server_key(&self, tenant: &TenantId, actor: &str) -> Result<i64, AppError> {
        self.snapshot().has_tenant(tenant)?;
        let env = self.env();
        let version = self
            .snapshot()
            .sdk
            .current(tenant)
            .map_or(1, |k| k.version + 1);
        let key = StaticKey::generate()?;
        let now = self.now_ms();
        let row = SdkServerKeyRow {
            tenant_id: tenant.clone(),
            environment: env,
            version,
            private_enc: self
                .master()
                .seal(&server_key_aad(tenant, env, version), &key.to_bytes())?,
            public_jwk: serde_json::to_string(key.public_jwk())
                .map_err(|e| AppError::Internal(e.to_string()))?,
            created_at_ms: now,
        };
        let once = Guard::Claim {
            namespace: "bankezy.server_key",
            key: ClaimKey::of(&[
                tenant.as_str().as_bytes(),
                env.as_str().as_bytes(),
                &version.to_be_bytes(),
            ]),
            fingerprint: Vec::new(),
            value: None,
            now_ms: now,
            expires_at_ms: i64::MAX,
        };
        let audit = self.audit(
            Some(tenant),
            actor,
            "bankezy.server_key.rotated",
            "ok",
            format!("tenant:{tenant}"),
            json!({"version": version, "environment": env.as_str(), "kid": key.public_jwk().thumbprint()}),
        );
        let set = WriteSet::guarded(
            vec![once],
            vec![
                Write::InsertSdkServerKey(row),
                Write::BumpConfigVersion,
                audit,
            ],
            vec![],
        );
        let outcome = self.commit(set).await?;
        self.reload().await?;
        match outcome {
            WriteOutcome::Applied => Ok(version),
            // Another process created this version first: it is the current one now.
            WriteOutcome::Taken(_) => Ok(version),
            other => Err(crate::cards::unexpected(&other)),
        }
    }

    /// The tenant's current server key, created on first use.
    pub(super) async fn current_server_key(
        &self,
        tenant: &TenantId,
    ) -> Result<Arc<ServerKey>, AppError> {
        if let Some(k) = self.snapshot().sdk.current(tenant) {
            return Ok(k);
        }
        self.rotate_server_key(tenant, "system").await?;
        self.snapshot()
            .sdk
            .current(tenant)
            .ok_or_else(|| AppError::Internal(format!("tenant {tenant} has no SDK server key")))
    }

    /// Server key `version` of `tenant`, reloading once if this process has not seen it yet.
    pub(super) async fn server_key(
        &self,
        tenant: &TenantId,
        version: i64,
    ) -> Result<Arc<ServerKey>, AppError> {
        if let Some(k) = self.snapshot().sdk.version(tenant, version) {
            return Ok(k);
        }
        self.reload().await?;
        self.snapshot()
            .sdk
            .version(tenant, version)
            .ok_or_else(|| AppError::Internal(format!("SDK server key {version} is missing")))
    }
}
