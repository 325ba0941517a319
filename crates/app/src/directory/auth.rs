//! Who is calling: one authentication path for every surface. A surface says which
//! [`Credential`] the request carried (an id and secret, an API key, or an access token) and
//! how to record a failure; the directory decides, in constant time for secrets (SHA-256
//! digests compared with `subtle`), and audits the refusal — naming the client only if it
//! exists, never the credential.

use super::Directory;
use crate::AppError;
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
    /// A credential of a scheme the route does not take.
    #[error("this route does not take that Authorization scheme")]
    WrongScheme,
    /// Unknown client, wrong secret or key, or a credential of another environment.
    #[error("client authentication failed")]
    InvalidClient,
    #[error("the client is disabled")]
    Disabled,
    /// The access token is unknown, expired, revoked, or not for this environment.
    #[error("the access token is not valid")]
    InvalidToken,
}

/// A credential a request presented.
pub enum Credential<'a> {
    /// A client id and secret (HTTP Basic, `client_secret_post`).
    Secret { id: &'a str, secret: &'a str },
    /// An API key, however the surface carries it (`ApiKey`, a Bearer key, `X-API-KEY`).
    ApiKey(&'a str),
    /// An access token from `/oauth2/token` or Fiserv, as `Bearer`.
    AccessToken(&'a str),
    /// An access token presented as `Authorization: DPoP`, with the request's proofs.
    DPoPAccessToken {
        token: &'a str,
        proof: &'a crate::dpop::ProofInput,
    },
}

impl std::fmt::Debug for Credential<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Secret { .. } => "Credential::Secret(***)",
            Self::ApiKey(_) => "Credential::ApiKey(***)",
            Self::AccessToken(_) => "Credential::AccessToken(***)",
            Self::DPoPAccessToken { .. } => "Credential::DPoPAccessToken(***)",
        })
    }
}

/// An authenticated caller and the scopes it holds for this request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub client: Arc<Client>,
    pub scopes: ScopeSet,
    /// The thumbprint of the key a DPoP-bound access token was proven with on this request.
    pub dpop_jkt: Option<String>,
}

impl Principal {
    pub fn actor(&self) -> String {
        format!("client:{}", self.client.id)
    }

    /// A principal holding all of `client`'s scopes.
    pub fn of(client: Arc<Client>) -> Self {
        let scopes = client.settings.scopes.clone();
        Self {
            client,
            scopes,
            dpop_jkt: None,
        }
    }
}

/// A digest that no secret has, compared against when the client id is unknown so that
/// unknown ids and wrong secrets take the same time.
const DUMMY: SecretHash = SecretHash([0u8; 32]);

impl Directory<'_> {
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
    pub fn issuer_allows(&self, client: &str, tenant: &str, issued_at_ms: i64) -> bool {
        self.snapshot().clients.get(client).is_some_and(|c| {
            c.tenant_id.as_str() == tenant
                && c.environment == self.env()
                && !c.disabled
                && issued_at_ms >= c.tokens_not_before_ms
        })
    }

    /// Authenticates `credential`. A failure is audited as `action` (refusal `invalid_client`)
    /// on `subject` (`None`: the actor itself), under the client's tenant when the credential
    /// named a client that exists.
    /// A store that cannot look an access token up is [`AppError::Unavailable`], never an
    /// invalid token.
    pub async fn authenticate(
        &self,
        credential: Credential<'_>,
        action: &str,
        subject: Option<&str>,
    ) -> Result<Principal, AppError> {
        let (named, result) = match credential {
            Credential::Secret { id, secret } => {
                (Some(id), self.secret(id, secret).map(Principal::of))
            }
            Credential::ApiKey(key) => (None, self.api_key(key).map(Principal::of)),
            Credential::AccessToken(token) => match self.access_token(token, None).await {
                Err(AppError::Auth(failure)) => (None, Err(failure)),
                other => return other,
            },
            Credential::DPoPAccessToken { token, proof } => {
                match self.access_token(token, Some(proof)).await {
                    Err(AppError::Auth(failure)) => (None, Err(failure)),
                    other => return other,
                }
            }
        };
        match result {
            Ok(p) => Ok(p),
            Err(failure) => {
                let known = named.and_then(|id| {
                    self.snapshot()
                        .clients
                        .get(id)
                        .map(|c| (c.tenant_id.clone(), format!("client:{id}")))
                });
                let (tenant, actor) =
                    known.map_or((None, "anonymous".to_string()), |(t, a)| (Some(t), a));
                let subject = subject.map_or_else(|| actor.clone(), str::to_string);
                self.audit_refusal(tenant.as_ref(), actor, action, "invalid_client", subject)
                    .await;
                Err(AppError::Auth(failure))
            }
        }
    }

    /// `client_secret_basic` / `client_secret_post` and Fiserv's Basic.
    fn secret(&self, client_id: &str, secret: &str) -> Result<Arc<Client>, AuthFailure> {
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
    fn api_key(&self, key: &str) -> Result<Arc<Client>, AuthFailure> {
        let snap = self.snapshot();
        match snap.by_api_key.get(&SecretHash::of(key.as_bytes())) {
            Some(c) => self.usable(c),
            None => Err(AuthFailure::InvalidClient),
        }
    }

    /// An access token, with its granted scopes: as `Bearer` (`proof` `None`) only when it is
    /// bound to no key; as `DPoP` only when it is bound, with a proof of that key carrying its
    /// `ath` (RFC 9449 §7.1), whose `jti` is claimed here.
    async fn access_token(
        &self,
        token: &str,
        proof: Option<&crate::dpop::ProofInput>,
    ) -> Result<Principal, AppError> {
        let invalid = || AppError::Auth(AuthFailure::InvalidToken);
        let access = self
            .access_tokens()
            .verify(token)
            .await?
            .ok_or_else(invalid)?;
        if !self.issuer_allows(&access.client_id, &access.tenant_id, access.iat * 1000) {
            return Err(invalid());
        }
        let client = self
            .snapshot()
            .clients
            .get(&access.client_id)
            .ok_or_else(invalid)?
            .clone();
        let dpop_jkt = match (proof, &access.cnf_jkt) {
            (None, None) => None,
            (None, Some(_)) => return Err(crate::DpopError::BoundAsBearer.into()),
            (Some(_), None) => return Err(crate::DpopError::NotBound.into()),
            (Some(proof), Some(jkt)) => Some(
                self.dpop()
                    .check(proof, &client.tenant_id, Some(token), Some(jkt))
                    .await?,
            ),
        };
        Ok(Principal {
            client,
            scopes: access.scopes.clone(),
            dpop_jkt,
        })
    }
}
