//! OAuth2 access tokens: issuance (RFC 6749 §4.4, as RFC 9068 JWTs or opaque), verification,
//! introspection (RFC 7662) and revocation (RFC 7009), for every kind of token.

use crate::{facade, AppError, Denial, Principal};
use cardgate_core::scope::ScopeSet;
use cardgate_core::secret::{Secret, SecretHash};
use cardgate_core::tokens::{
    mint_token, AccessClaims, AccessTokenRecord, CardTokenRecord, PresentedToken, TokenId,
    TokenKind, ACCESS_TOKEN_TTL_SECONDS, CARD_TOKEN_PREFIX, OPAQUE_ACCESS_TOKEN_PREFIX,
};
use cardgate_core::AccessTokenFormat;
use cardgate_jose::es256::sign_compact;
use cardgate_jose::jwt::UnverifiedJwt;
use cardgate_store::{Write, WriteSet};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

facade!(
    /// OAuth2 access tokens: issue, verify, introspect (any token kind), revoke.
    AccessTokens,
    access_tokens
);

/// Verified access tokens by the digest of the token, so that introspection and Bearer
/// authentication skip signature checks and database reads for tokens already seen. Expiry,
/// revocation and the issuing client are checked every time.
#[derive(Default)]
pub(crate) struct TokenCache {
    access: RwLock<HashMap<SecretHash, Arc<VerifiedAccess>>>,
}

const TOKEN_CACHE_MAX: usize = 100_000;

/// What a client asks a token endpoint for.
pub struct IssueRequest<'a> {
    /// The scope asked for (`None`: all of the client's).
    pub scope: Option<&'a str>,
    /// Which endpoint asks: `Access` (`/oauth2/token`) or `FiservAccess`.
    pub kind: TokenKind,
    /// Fiserv's `x-fapi-financial-id`, which must be the client's tenant's.
    pub financial_institution_id: Option<&'a str>,
}

/// A freshly issued access token; `token` is shown to the client once and never stored.
pub struct IssuedAccessToken {
    pub token: Secret,
    pub expires_in: u32,
    pub scopes: ScopeSet,
    pub issued_at_ms: i64,
}

/// What a valid access token says.
#[derive(Debug, Clone)]
pub struct VerifiedAccess {
    pub client_id: String,
    pub tenant_id: String,
    pub scopes: ScopeSet,
    pub iat: i64,
    pub exp: i64,
    /// `jti` of a JWT, or the id (hex) of an opaque token: the id revocation uses.
    pub token_id: String,
    pub jwt: Option<Arc<AccessClaims>>,
    /// The stored id of an opaque token.
    pub opaque: Option<TokenId>,
    /// The RFC 7638 thumbprint of the key the token is bound to (`cnf.jkt`), if any.
    pub cnf_jkt: Option<String>,
}

/// A presented card token split into its id and digest: a `cgct_…` token, or a Treasury Prime
/// UX Toolkit JWT (its `jti` is the stored token's id in hex; the whole JWT's digest is what
/// is stored, so a forged or altered JWT matches nothing). `None`: neither.
pub fn present_card_token(token: &str) -> Option<PresentedToken> {
    if token.starts_with(CARD_TOKEN_PREFIX) {
        return PresentedToken::parse(token, CARD_TOKEN_PREFIX);
    }
    let payload = token.split('.').nth(1)?;
    if token.len() > 4096 || !token.starts_with("eyJ") {
        return None;
    }
    let claims: Value = serde_json::from_slice(&cardgate_jose::b64::decode(payload).ok()?).ok()?;
    if claims.get("knd").and_then(Value::as_str) != Some(TokenKind::TreasuryPrimeUxt.as_str()) {
        return None;
    }
    let jti = claims.get("jti").and_then(Value::as_str)?;
    let raw = data_encoding::HEXLOWER.decode(jti.as_bytes()).ok()?;
    Some(PresentedToken {
        id: TokenId::from_slice(&raw)?,
        hash: SecretHash::of(token.as_bytes()),
    })
}

/// How audit events refer to an opaque or card token: its public id, which cannot be used.
pub fn token_ref(id: &TokenId) -> String {
    id.to_hex()
}

impl AccessTokens<'_> {
    /// Issues an access token to an authenticated client: its tenant's financial institution
    /// when the endpoint names one, its rate limit, and the scope it asks for (⊆ its scopes).
    pub async fn issue(
        &self,
        principal: &Principal,
        request: IssueRequest<'_>,
    ) -> Result<IssuedAccessToken, AppError> {
        self.issue_bound(principal, request, None).await
    }

    /// [`AccessTokens::issue`], the token bound to the key of a checked DPoP proof when one is
    /// given (RFC 9449 §5, §6): the proof's `jti` is claimed in the same commit as the issuance.
    pub async fn issue_bound(
        &self,
        principal: &Principal,
        request: IssueRequest<'_>,
        proof: Option<crate::dpop::CheckedProof>,
    ) -> Result<IssuedAccessToken, AppError> {
        let (cnf_jkt, claim) = match proof {
            Some(p) => (Some(p.jkt), Some(p.claim)),
            None => (None, None),
        };
        let client = &principal.client;
        let kind = request.kind;
        let actor = format!("client:{}", client.id);
        let action = match kind {
            TokenKind::FiservAccess => "fiserv.token.issue",
            _ => "access_token.issue",
        };
        if let Some(fi) = request.financial_institution_id {
            let tenant_fi = self
                .snapshot()
                .tenant(&client.tenant_id)?
                .settings
                .financial_institution_id
                .clone();
            if tenant_fi.as_deref() != Some(fi) {
                self.audit_refusal(
                    Some(&client.tenant_id),
                    actor.clone(),
                    action,
                    "financial_id_mismatch",
                    actor,
                )
                .await;
                return Err(AppError::Denied(Denial::FinancialInstitution));
            }
        }
        self.check_rate(client.id.as_str(), &client.tenant_id)?;
        let scopes = match client.settings.scopes.grant(request.scope) {
            Ok(s) => s,
            Err(e) => {
                self.audit_refusal(
                    Some(&client.tenant_id),
                    actor,
                    action,
                    "invalid_scope",
                    format!("client:{}", client.id),
                )
                .await;
                return Err(AppError::Scope(e));
            }
        };
        let now = self.now_ms();
        let iat = now / 1000;
        let exp = iat + i64::from(ACCESS_TOKEN_TTL_SECONDS);
        let (token, audit_details, writes) = match client.settings.access_token_format {
            AccessTokenFormat::Jwt => {
                let snap = self.snapshot();
                let key = snap
                    .keys
                    .active
                    .clone()
                    .ok_or_else(|| AppError::Internal("no signing key".into()))?;
                let jti = cardgate_jose::b64::encode(
                    &cardgate_jose::digest::random::<16>().map_err(AppError::from)?,
                );
                let claims = AccessClaims {
                    iss: self.settings.public_url.clone(),
                    sub: client.id.to_string(),
                    aud: self.settings.public_url.clone(),
                    client_id: client.id.to_string(),
                    scope: scopes.to_string_list(),
                    iat,
                    exp,
                    jti: jti.clone(),
                    tid: client.tenant_id.to_string(),
                    env: self.env(),
                    knd: kind.as_str().to_string(),
                    cnf: cnf_jkt
                        .clone()
                        .map(|jkt| cardgate_core::tokens::Confirmation { jkt }),
                };
                let payload =
                    serde_json::to_vec(&claims).map_err(|e| AppError::Internal(e.to_string()))?;
                let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": key.kid});
                let token = sign_compact(&key, &header, &payload).map_err(AppError::from)?;
                (
                    Secret::new(token),
                    json!({"format": "jwt", "jti": jti, "kid": key.kid, "scope": claims.scope, "kind": kind.as_str(), "dpop": cnf_jkt.is_some()}),
                    vec![],
                )
            }
            AccessTokenFormat::Opaque => {
                let minted = mint_token(OPAQUE_ACCESS_TOKEN_PREFIX, now).map_err(AppError::from)?;
                let record = AccessTokenRecord {
                    id: minted.id,
                    hash: minted.hash,
                    kind,
                    tenant_id: client.tenant_id.clone(),
                    client_id: client.id.clone(),
                    environment: self.env(),
                    scopes: scopes.clone(),
                    issued_at_ms: iat * 1000,
                    expires_at_ms: exp * 1000,
                    revoked: false,
                    cnf_jkt: cnf_jkt.clone(),
                };
                let details = json!({"format": "opaque", "token_ref": token_ref(&record.id), "scope": scopes.to_string_list(), "kind": kind.as_str(), "dpop": cnf_jkt.is_some()});
                (
                    minted.token,
                    details,
                    vec![Write::InsertAccessToken(record)],
                )
            }
        };
        let mut writes = writes;
        writes.push(self.audit(
            Some(&client.tenant_id),
            actor,
            "access_token.issued",
            "ok",
            format!("client:{}", client.id),
            audit_details,
        ));
        let set = WriteSet::of(writes).with_preconditions(claim.into_iter().collect());
        match self.commit(set).await? {
            cardgate_store::WriteOutcome::Applied => {}
            cardgate_store::WriteOutcome::Taken(_) => {
                return Err(crate::DpopError::InvalidProof(crate::dpop::REPLAYED).into())
            }
            other => return Err(crate::cards::unexpected(&other)),
        }
        self.metrics.token_issued(kind.as_str());
        Ok(IssuedAccessToken {
            token,
            expires_in: ACCESS_TOKEN_TTL_SECONDS,
            scopes,
            issued_at_ms: now,
        })
    }

    /// Checks an access token (JWT or opaque): signature, type, environment, expiry,
    /// revocation. `None` when it is not valid; an error only when the store could not tell
    /// (an opaque token is looked up). Verified tokens are cached; expiry and revocation are
    /// checked every time.
    pub async fn verify(&self, token: &str) -> Result<Option<Arc<VerifiedAccess>>, AppError> {
        // One digest serves as the cache key for both formats (and is the opaque token's id).
        let key = SecretHash::of(token.as_bytes());
        let cached = self
            .tokens
            .access
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        let access = match cached {
            Some(a) => a,
            None => {
                let Some(a) = self.verify_uncached(token).await? else {
                    return Ok(None);
                };
                let a = Arc::new(a);
                let mut cache = self
                    .tokens
                    .access
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                if cache.len() >= TOKEN_CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, a.clone());
                a
            }
        };
        if access.exp <= self.now_ms() / 1000 || self.is_revoked(&access.token_id) {
            return Ok(None);
        }
        Ok(Some(access))
    }

    async fn verify_uncached(&self, token: &str) -> Result<Option<VerifiedAccess>, AppError> {
        if token.starts_with(OPAQUE_ACCESS_TOKEN_PREFIX) {
            let Some(presented) = PresentedToken::parse(token, OPAQUE_ACCESS_TOKEN_PREFIX) else {
                return Ok(None);
            };
            let Some(record) = self
                .read(self.store.get_access_token(&presented.id, self.env()))
                .await?
            else {
                return Ok(None);
            };
            if !presented.matches(&record.hash)
                || record.environment != self.env()
                || record.revoked
            {
                return Ok(None);
            }
            return Ok(Some(VerifiedAccess {
                client_id: record.client_id.to_string(),
                tenant_id: record.tenant_id.to_string(),
                scopes: record.scopes,
                iat: record.issued_at_ms / 1000,
                exp: record.expires_at_ms / 1000,
                token_id: presented.id.to_hex(),
                jwt: None,
                opaque: Some(presented.id),
                cnf_jkt: record.cnf_jkt,
            }));
        }
        let Ok(claims) = self.verify_jwt_signature(token) else {
            return Ok(None);
        };
        let Ok(scopes) = ScopeSet::parse(&claims.scope) else {
            return Ok(None);
        };
        Ok(Some(VerifiedAccess {
            client_id: claims.client_id.clone(),
            tenant_id: claims.tid.clone(),
            scopes,
            iat: claims.iat,
            exp: claims.exp,
            token_id: claims.jti.clone(),
            cnf_jkt: claims.cnf.as_ref().map(|c| c.jkt.clone()),
            jwt: Some(Arc::new(claims)),
            opaque: None,
        }))
    }

    fn verify_jwt_signature(&self, token: &str) -> Result<AccessClaims, ()> {
        let jwt = UnverifiedJwt::parse(token).map_err(|_| ())?;
        if jwt.header.get("typ").and_then(Value::as_str) != Some("at+jwt") {
            return Err(());
        }
        let snap = self.snapshot();
        let key = snap.keys.verifying.get(jwt.kid().ok_or(())?).ok_or(())?;
        jwt.verify(key).map_err(|_| ())?;
        let claims: AccessClaims = serde_json::from_value(jwt.claims.clone()).map_err(|_| ())?;
        let kind_ok = matches!(
            TokenKind::parse(&claims.knd),
            Some(TokenKind::Access | TokenKind::FiservAccess)
        );
        if claims.env != self.env() || !kind_ok {
            return Err(());
        }
        Ok(claims)
    }

    /// The stored record of a presented card token, if it is one of this environment (its id
    /// is known here and its digest matches, compared in constant time). Another
    /// environment's token is not found, exactly like an unknown one.
    pub async fn find_card_token(&self, token: &str) -> Result<Option<CardTokenRecord>, AppError> {
        let Some(presented) = present_card_token(token) else {
            return Ok(None);
        };
        Ok(self
            .read(self.store.get_card_token(&presented.id, self.env()))
            .await?
            .filter(|t| presented.matches(&t.hash)))
    }

    /// RFC 7662: what `caller` may know about `token`. Tokens of other tenants, other
    /// environments, or that are expired, revoked or used up are simply inactive; a store that
    /// cannot tell is an error, not an inactive token.
    pub async fn introspect(&self, caller: &Principal, token: &str) -> Result<Value, AppError> {
        let inactive = Ok(json!({"active": false}));
        let tenant = caller.client.tenant_id.as_str();
        if present_card_token(token).is_some() {
            let Some(t) = self.find_card_token(token).await? else {
                return inactive;
            };
            let now = self.now_ms();
            if t.tenant_id.as_str() != tenant
                || t.environment != self.env()
                || !self
                    .directory()
                    .issuer_allows(t.client_id.as_str(), tenant, t.issued_at_ms)
                || t.revoked
                || t.expires_at_ms <= now
                || t.use_limit.exhausted(t.uses_made)
            {
                return inactive;
            }
            let ops: Vec<&str> = t.operations.iter().map(|o| o.as_str()).collect();
            let mut v = json!({
                "active": true,
                "token_type": if t.cnf_jkt.is_some() { "DPoP" } else { "card_token" },
                "client_id": t.client_id.as_str(),
                "scope": ops.join(" "),
                "iat": t.issued_at_ms / 1000,
                "exp": t.expires_at_ms / 1000,
                "iss": self.settings.public_url,
                "operations": ops,
                "uses_made": t.uses_made,
                "max_uses": t.use_limit.max_uses(),
            });
            if let Some(c) = t.card_id {
                v["sub"] = json!(c.to_string());
                v["card_id"] = json!(c.to_string());
            } else if let Some(p) = t.person_id {
                v["sub"] = json!(p.to_string());
                v["person_id"] = json!(p.to_string());
            }
            if let Some(jkt) = &t.cnf_jkt {
                v["cnf"] = json!({ "jkt": jkt });
            }
            return Ok(v);
        }
        let Some(a) = self.verify(token).await? else {
            return inactive;
        };
        if a.tenant_id != tenant
            || !self
                .directory()
                .issuer_allows(&a.client_id, tenant, a.iat * 1000)
        {
            return inactive;
        }
        let mut v = json!({
            "active": true,
            "token_type": if a.cnf_jkt.is_some() { "DPoP" } else { "Bearer" },
            "client_id": a.client_id,
            "sub": a.client_id,
            "scope": a.scopes.to_string_list(),
            "iat": a.iat,
            "exp": a.exp,
            "iss": self.settings.public_url,
            "aud": self.settings.public_url,
        });
        if let Some(c) = &a.jwt {
            v["jti"] = json!(c.jti);
        }
        if let Some(jkt) = &a.cnf_jkt {
            v["cnf"] = json!({ "jkt": jkt });
        }
        Ok(v)
    }

    /// RFC 7009: revokes `token` if it belongs to `caller`'s tenant and this environment;
    /// otherwise does nothing. The answer is the same either way, so revocation reveals
    /// nothing about foreign tokens.
    pub async fn revoke(&self, caller: &Principal, token: &str) -> Result<(), AppError> {
        let tenant = &caller.client.tenant_id;
        let actor = caller.actor();
        let now = self.now_ms();
        if present_card_token(token).is_some() {
            if let Some(t) = self.find_card_token(token).await? {
                if &t.tenant_id == tenant && !t.revoked {
                    let subject = match (t.card_id, t.person_id) {
                        (Some(c), _) => format!("card:{c}"),
                        (None, Some(p)) => format!("person:{p}"),
                        _ => String::new(),
                    };
                    let audit = self.audit(
                        Some(tenant),
                        actor,
                        "card_token.revoked",
                        "ok",
                        subject,
                        json!({"token_ref": token_ref(&t.id)}),
                    );
                    self.commit(WriteSet::of(vec![
                        Write::RevokeCardToken { id: t.id },
                        audit,
                    ]))
                    .await?;
                    self.hot.forget_token(&t.id);
                }
            }
            return Ok(());
        }
        let Some(a) = self.verify(token).await? else {
            return Ok(());
        };
        if a.tenant_id != tenant.as_str() {
            return Ok(());
        }
        let mut writes = vec![Write::AddRevocation {
            token_id: a.token_id.clone(),
            tenant: tenant.clone(),
            now_ms: now,
            expires_at_ms: a.exp * 1000,
        }];
        if let Some(id) = a.opaque {
            writes.push(Write::RevokeAccessToken { id });
        }
        writes.push(self.audit(
            Some(tenant),
            actor,
            "access_token.revoked",
            "ok",
            format!("client:{}", a.client_id),
            json!({"token_ref": a.token_id}),
        ));
        self.commit(WriteSet::of(writes)).await?;
        self.mark_revoked(a.token_id.clone(), a.exp * 1000);
        Ok(())
    }
}
