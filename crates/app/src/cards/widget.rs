//! Widget tokens (Synctera's `widget_token`, SPEC §4.2): a one-time token that opens one widget
//! on one card, minted by the card-token rules, and the `Idempotency-Key` that makes a retry
//! answer with the same token. The key is claimed in the same commit as the token
//! ([`cardgate_store::Guard::Claim`]), so concurrent retries — on any replica — mint once; the
//! answer a retry gets back is kept sealed under the tenant's data key.

use super::mint::{MintOutcome, Once};
use super::{CardTokenRequest, CardTokens};
use crate::{AppError, Conflict, Principal};
use cardgate_core::secret::Secret;
use cardgate_core::tokens::{TokenKind, UseLimit};
use cardgate_core::{CardId, Operation, TenantId};
use cardgate_store::{ClaimKey, Guard, StoredClaim, WriteOutcome, WriteSet};

/// How long an idempotency key holds its answer.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 24 * 3600 * 1000;

const NAMESPACE: &str = "widget_token.idempotency";

/// A widget token request: the widget (as the operation it performs) on a card.
pub struct WidgetTokenRequest {
    pub card: CardId,
    pub operation: Operation,
    /// The client's `Idempotency-Key`, if it sent one.
    pub idempotency_key: Option<String>,
}

/// A widget token, minted now or replayed for a retried idempotency key.
pub struct WidgetToken {
    pub tenant: TenantId,
    pub token: Secret,
    pub expires_at_ms: i64,
    /// The answer of an earlier request with the same key (no new grant).
    pub replayed: bool,
}

impl std::fmt::Debug for WidgetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WidgetToken(***)")
    }
}

impl CardTokens<'_> {
    /// Mints a one-time widget token, or answers a retried idempotency key with the token its
    /// first request got; the same key with another request is refused.
    pub async fn widget_token(
        &self,
        principal: &Principal,
        request: WidgetTokenRequest,
    ) -> Result<WidgetToken, AppError> {
        let tenant = principal.client.tenant_id.clone();
        let mint = CardTokenRequest {
            card: request.card,
            kind: TokenKind::SyncteraWidget,
            operations: vec![request.operation],
            use_limit: UseLimit::Once,
            ttl_seconds: None,
            mfa: None,
            account: None,
            person: None,
        };
        let once = request.idempotency_key.map(|key| Once {
            namespace: NAMESPACE,
            key: ClaimKey::of(&[
                self.env().as_str().as_bytes(),
                tenant.as_str().as_bytes(),
                principal.client.id.as_str().as_bytes(),
                key.as_bytes(),
            ]),
            fingerprint: cardgate_jose::digest::sha256(
                format!("{}|{}", request.card, request.operation.as_str()).as_bytes(),
            )
            .to_vec(),
            ttl_ms: IDEMPOTENCY_WINDOW_MS,
        });
        match self.mint_once(principal, mint, once.as_ref()).await {
            Ok(MintOutcome::Minted(m)) => Ok(WidgetToken {
                tenant,
                token: m.token,
                expires_at_ms: m.expires_at_ms,
                replayed: false,
            }),
            Ok(MintOutcome::Taken(stored)) => match once {
                Some(once) => self
                    .replay(&tenant, &once, stored)
                    .await?
                    .ok_or_else(|| AppError::Internal("an idempotency key holds no answer".into())),
                None => Err(AppError::Internal(
                    "a mint without a claim was taken".into(),
                )),
            },
            // A refusal on the card as it is now: a retry whose first request got a token
            // (before the card changed) is still answered with that token.
            Err(e @ (AppError::Mint(_) | AppError::NotFound(_))) => match once {
                Some(once) => match self.probe(&once).await? {
                    Some(stored) => Ok(self.replay(&tenant, &once, stored).await?.ok_or(e)?),
                    None => Err(e),
                },
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The answer stored under a claimed key, for the request that presents it again.
    async fn replay(
        &self,
        tenant: &TenantId,
        once: &Once,
        stored: StoredClaim,
    ) -> Result<Option<WidgetToken>, AppError> {
        if stored.fingerprint != once.fingerprint {
            return Err(AppError::Conflict(Conflict::IdempotencyKeyReused));
        }
        let Some(sealed) = stored.value else {
            return Ok(None);
        };
        let (token, expires_at_ms) = self.open_replay(tenant, &once.key, &sealed).await?;
        Ok(Some(WidgetToken {
            tenant: tenant.clone(),
            token,
            expires_at_ms,
            replayed: true,
        }))
    }

    /// Whether the key is held by an earlier request, without holding it: a claim that
    /// expires as it is made (taken over by the next claimant), or what the holder stored.
    async fn probe(&self, once: &Once) -> Result<Option<StoredClaim>, AppError> {
        let now = self.now_ms();
        let claim = Guard::Claim {
            namespace: once.namespace,
            key: once.key,
            fingerprint: once.fingerprint.clone(),
            value: None,
            now_ms: now,
            expires_at_ms: now,
        };
        match self
            .commit(WriteSet::guarded(vec![claim], vec![], vec![]))
            .await?
        {
            WriteOutcome::Taken(stored) => Ok(Some(stored)),
            _ => Ok(None),
        }
    }
}
