//! Who is calling: client authentication by id + secret (Basic or form), by API key, or by
//! a Bearer access token. Secrets are compared as SHA-256 digests in constant time.

use super::{Service, ServiceError};
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::SecretHash;
use cardgate_core::Client;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("credentials are missing")]
    Missing,
    #[error("credentials are malformed: {0}")]
    Malformed(&'static str),
    /// Unknown client, wrong secret or key, or a credential of another environment.
    #[error("client authentication failed")]
    InvalidClient,
    #[error("the client is disabled")]
    Disabled,
    /// The access token is unknown, expired, revoked, or not for this environment.
    #[error("the access token is not valid")]
    InvalidToken,
}

/// An authenticated caller and the scopes it holds for this request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub client: Arc<Client>,
    pub scopes: ScopeSet,
}

impl Principal {
    pub fn actor(&self) -> String {
        format!("client:{}", self.client.id)
    }
}

/// A digest that no secret has, compared against when the client id is unknown so that
/// unknown ids and wrong secrets take the same time.
const DUMMY: SecretHash = SecretHash([0u8; 32]);

impl Service {
    fn usable(&self, client: &Arc<Client>) -> Result<Arc<Client>, AuthFailure> {
        if client.environment != self.env() {
            tracing::info!(client = %client.id, "credential of another environment refused");
            return Err(AuthFailure::InvalidClient);
        }
        if client.disabled {
            return Err(AuthFailure::Disabled);
        }
        Ok(client.clone())
    }

    /// Whether a token that `client` of `tenant` was issued at `issued_at_ms` may still be used
    /// here: the client exists in this environment, is not disabled, and was not disabled
    /// since the token was issued. Every token kind is checked with this, at every endpoint.
    pub(crate) fn issuer_allows(&self, client: &str, tenant: &str, issued_at_ms: i64) -> bool {
        self.snapshot().clients.get(client).is_some_and(|c| {
            c.tenant_id.as_str() == tenant
                && c.environment == self.env()
                && !c.disabled
                && issued_at_ms >= c.tokens_not_before_ms
        })
    }

    /// `client_secret_basic` / `client_secret_post` and Fiserv's Basic.
    pub fn authenticate_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<Arc<Client>, AuthFailure> {
        let snap = self.snapshot();
        match snap.clients.get(client_id) {
            Some(c) if c.secret_hash.matches(secret.as_bytes()) => self.usable(c),
            Some(_) => Err(AuthFailure::InvalidClient),
            None => {
                let _ = DUMMY.matches(secret.as_bytes());
                Err(AuthFailure::InvalidClient)
            }
        }
    }

    /// An API key (Equals `ApiKey`, Synctera/Treasury Prime `Bearer`, BankEzy `X-API-KEY`).
    pub fn authenticate_api_key(&self, key: &str) -> Result<Arc<Client>, AuthFailure> {
        let snap = self.snapshot();
        match snap.by_api_key.get(&SecretHash::of(key.as_bytes())) {
            Some(c) => self.usable(c),
            None => Err(AuthFailure::InvalidClient),
        }
    }

    /// A Bearer access token from `/oauth2/token` or Fiserv, with its granted scopes. A store
    /// that cannot look the token up is [`ServiceError::Unavailable`], never an invalid token.
    pub async fn authenticate_access_token(&self, token: &str) -> Result<Principal, ServiceError> {
        let invalid = || ServiceError::Auth(AuthFailure::InvalidToken);
        let access = self.verify_access_token(token).await?.ok_or_else(invalid)?;
        if !self.issuer_allows(&access.client_id, &access.tenant_id, access.iat * 1000) {
            return Err(invalid());
        }
        let snap = self.snapshot();
        let client = snap
            .clients
            .get(&access.client_id)
            .ok_or_else(invalid)?
            .clone();
        Ok(Principal {
            client,
            scopes: access.scopes.clone(),
        })
    }

    /// A principal holding all of `client`'s scopes.
    pub fn principal_of(client: Arc<Client>) -> Principal {
        let scopes = client.settings.scopes.clone();
        Principal { client, scopes }
    }
}
