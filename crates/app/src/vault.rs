//! The vault as the use cases see it: card data and TOTP secrets sealed under the tenant's
//! current data key of this environment, and opened with the version each row names (see
//! `cardgate_jose::vault` for the keys and their associated data).

use crate::{App, AppError};
use cardgate_core::cards::CardSecrets;
use cardgate_core::secret::Secret;
use cardgate_core::{Card, CardId, PersonId, TenantId};
use cardgate_jose::aead::AeadKey;
use cardgate_jose::vault::aad;
use cardgate_store::ClaimKey;
use zeroize::Zeroizing;

impl App {
    /// Data key `version` of `tenant` (this environment's).
    pub(crate) fn data_key(&self, tenant: &TenantId, version: i64) -> Result<AeadKey, AppError> {
        self.snapshot()
            .keys
            .data_key(tenant.as_str(), version)
            .cloned()
            .ok_or_else(|| {
                AppError::Internal(format!("data key {version} of tenant {tenant} is missing"))
            })
    }

    /// The data key new values of `tenant` are sealed with, and its version.
    pub(crate) fn current_data_key(&self, tenant: &TenantId) -> Result<(i64, AeadKey), AppError> {
        self.snapshot()
            .keys
            .current_data_key(tenant.as_str())
            .map(|(v, k)| (v, k.clone()))
            .ok_or_else(|| AppError::Internal(format!("tenant {tenant} has no data key")))
    }

    /// Makes sure the directory holds the data key a row was sealed with: a key created by
    /// another process (a rotation from the CLI) is loaded on first sight.
    pub(crate) async fn ensure_data_key(
        &self,
        tenant: &TenantId,
        version: i64,
    ) -> Result<(), AppError> {
        if self
            .snapshot()
            .keys
            .data_key(tenant.as_str(), version)
            .is_none()
        {
            self.reload().await?;
        }
        Ok(())
    }

    /// Seals a card's data under the tenant's current data key: `(version, envelope)`.
    pub(crate) fn seal_card(
        &self,
        tenant: &TenantId,
        card: &CardId,
        secrets: &CardSecrets,
    ) -> Result<(i64, Vec<u8>), AppError> {
        let (version, key) = self.current_data_key(tenant)?;
        Ok((
            version,
            Self::seal_card_with(&key, version, tenant, card, secrets)?,
        ))
    }

    /// Seals a card's data under data key `version`.
    pub(crate) fn seal_card_with(
        key: &AeadKey,
        version: i64,
        tenant: &TenantId,
        card: &CardId,
        secrets: &CardSecrets,
    ) -> Result<Vec<u8>, AppError> {
        let plain = Zeroizing::new(
            serde_json::to_vec(secrets).map_err(|e| AppError::Internal(e.to_string()))?,
        );
        let aad = aad::card(tenant.as_str(), &card.to_string(), version);
        Ok(key.seal(aad.as_bytes(), &plain)?)
    }

    /// Opens a card's data with the key version the row names.
    pub(crate) fn open_card(&self, card: &Card) -> Result<CardSecrets, AppError> {
        let key = self.data_key(&card.tenant_id, card.key_version)?;
        Self::open_card_with(&key, card)
    }

    /// Opens a card's data with `key`, if it is the row's.
    pub(crate) fn open_card_with(key: &AeadKey, card: &Card) -> Result<CardSecrets, AppError> {
        let aad = aad::card(
            card.tenant_id.as_str(),
            &card.id.to_string(),
            card.key_version,
        );
        let plain = key.open(aad.as_bytes(), &card.vault)?;
        serde_json::from_slice(&plain)
            .map_err(|_| AppError::Internal("vault entry is corrupt".into()))
    }

    /// Seals a person's TOTP secret under data key `version`.
    pub(crate) fn seal_totp(
        key: &AeadKey,
        version: i64,
        tenant: &TenantId,
        person: &PersonId,
        secret: &[u8],
    ) -> Result<Vec<u8>, AppError> {
        let aad = aad::totp(tenant.as_str(), &person.to_string(), version);
        Ok(key.seal(aad.as_bytes(), secret)?)
    }

    /// Opens a person's TOTP secret sealed under data key `version`.
    pub(crate) fn open_totp(
        key: &AeadKey,
        version: i64,
        tenant: &TenantId,
        person: &PersonId,
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AppError> {
        let aad = aad::totp(tenant.as_str(), &person.to_string(), version);
        Ok(key.open(aad.as_bytes(), sealed)?)
    }

    /// Seals the answer an idempotency key replays (a live token, so never kept in clear)
    /// under the tenant's current data key: the key version, then the envelope.
    pub(crate) fn seal_replay(
        &self,
        tenant: &TenantId,
        key: &ClaimKey,
        token: &Secret,
        expires_at_ms: i64,
    ) -> Result<Vec<u8>, AppError> {
        let (version, data_key) = self.current_data_key(tenant)?;
        let plain = Zeroizing::new(
            serde_json::to_vec(&Replay {
                token: token.expose().to_string(),
                expires_at_ms,
            })
            .map_err(|e| AppError::Internal(e.to_string()))?,
        );
        let aad = replay_aad(tenant, key, version);
        let mut out = version.to_be_bytes().to_vec();
        out.extend(data_key.seal(aad.as_bytes(), &plain)?);
        Ok(out)
    }

    /// Opens a replayed answer sealed by [`App::seal_replay`]: the token and its expiry.
    pub(crate) async fn open_replay(
        &self,
        tenant: &TenantId,
        key: &ClaimKey,
        sealed: &[u8],
    ) -> Result<(Secret, i64), AppError> {
        let corrupt = || AppError::Internal("a stored idempotent answer is corrupt".into());
        let (head, envelope) = sealed.split_at_checked(8).ok_or_else(corrupt)?;
        let version = i64::from_be_bytes(head.try_into().map_err(|_| corrupt())?);
        self.ensure_data_key(tenant, version).await?;
        let data_key = self.data_key(tenant, version)?;
        let aad = replay_aad(tenant, key, version);
        let plain = Zeroizing::new(data_key.open(aad.as_bytes(), envelope)?);
        let replay: Replay = serde_json::from_slice(&plain).map_err(|_| corrupt())?;
        Ok((Secret::new(replay.token.clone()), replay.expires_at_ms))
    }
}

/// What an idempotency key's claim holds, sealed.
#[derive(serde::Serialize, serde::Deserialize, zeroize::ZeroizeOnDrop)]
struct Replay {
    token: String,
    expires_at_ms: i64,
}

fn replay_aad(tenant: &TenantId, key: &ClaimKey, version: i64) -> String {
    format!(
        "cardgate:idempotent-answer:{tenant}:{}:{version}",
        cardgate_jose::digest::hex(&key.0)
    )
}
