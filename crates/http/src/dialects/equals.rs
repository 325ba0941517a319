//! Equals Money card access tokens (seed `equals-money-card-access-token.md`, SPEC §4.1):
//! `GET /equals/v2/cards/{cardId}/access-token?accountId=…`, answered with a single-use,
//! five-minute token for one operation on one card. Errors: `{"code", "message"}`.

use cardgate_app::cards::MintInput;
use cardgate_app::{AuthFailure, Principal, Service, ServiceError, RETRY_AFTER_SECONDS};
use crate::wire::{self, Authorization};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_core::cards::MintRefusal;
use cardgate_core::mfa::MfaCheck;
use cardgate_core::scope::{CARDS_READ_ANY, CARDS_READ_OWN};
use cardgate_core::tokens::{TokenKind, UseLimit};
use cardgate_core::{AccountId, CardId, Operation, PersonId};
use serde_json::json;
use std::sync::Arc;

const SCOPES: &[&str] = &[CARDS_READ_ANY, CARDS_READ_OWN];
const TTL_SECONDS: u32 = 300;

pub struct EqualsError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u64>,
}

impl EqualsError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for EqualsError {
    fn into_response(self) -> Response {
        let mut res = (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response();
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(r) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(r));
        }
        res
    }
}

impl From<ServiceError> for EqualsError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        match e {
            ServiceError::Auth(AuthFailure::Missing) => Self::new(
                S::UNAUTHORIZED,
                "UNAUTHORIZED",
                "the Authorization header is required",
            ),
            ServiceError::Auth(AuthFailure::Disabled) => {
                Self::new(S::FORBIDDEN, "FORBIDDEN", "the API key is disabled")
            }
            ServiceError::Auth(_) => {
                Self::new(S::FORBIDDEN, "FORBIDDEN", "the API key is not valid")
            }
            ServiceError::NotFound("card") => {
                Self::new(S::NOT_FOUND, "CARD_NOT_FOUND", "no such card")
            }
            ServiceError::NotFound(w) => {
                Self::new(S::NOT_FOUND, "NOT_FOUND", format!("{w} not found"))
            }
            ServiceError::Forbidden(m) => Self::new(S::FORBIDDEN, "PERSON_MISMATCH", m),
            ServiceError::BadRequest(m) => Self::bad("BAD_REQUEST", m),
            ServiceError::Mint(r) => match r {
                MintRefusal::ScopeMissing(_) => Self::new(
                    S::FORBIDDEN,
                    "INSUFFICIENT_SCOPE",
                    "the API key needs cards:read:any or cards:read:own",
                ),
                MintRefusal::NotOwnCard => Self::new(
                    S::FORBIDDEN,
                    "CARD_NOT_OWNED",
                    "the card is not the API key's cardholder's",
                ),
                MintRefusal::MfaRequired(_) => Self::new(
                    S::FORBIDDEN,
                    "MFA_REQUIRED",
                    "sessionId and token (the MFA code) are required for this operation",
                ),
                MintRefusal::CardState(_) | MintRefusal::AlreadyActive => {
                    Self::new(S::UNPROCESSABLE_ENTITY, "CARD_STATE", r.to_string())
                }
                other => Self::bad("BAD_REQUEST", other.to_string()),
            },
            ServiceError::Mfa(c) => match c {
                MfaCheck::WrongCode => {
                    Self::new(S::FORBIDDEN, "MFA_CODE_INVALID", "the MFA code is wrong")
                }
                MfaCheck::Locked => Self::new(
                    S::FORBIDDEN,
                    "MFA_SESSION_LOCKED",
                    "the MFA session is locked after too many wrong codes",
                ),
                MfaCheck::Expired => Self::new(
                    S::FORBIDDEN,
                    "MFA_SESSION_EXPIRED",
                    "the MFA session has expired",
                ),
                MfaCheck::PersonLocked => Self::new(
                    S::FORBIDDEN,
                    "MFA_LOCKED_OUT",
                    "too many failed step-up attempts for this cardholder; try again later",
                ),
                MfaCheck::AlreadyUsed => Self::new(
                    S::FORBIDDEN,
                    "MFA_SESSION_USED",
                    "the MFA session has already served a token",
                ),
                MfaCheck::NotApplicable => Self::new(
                    S::FORBIDDEN,
                    "MFA_SESSION_INVALID",
                    "no such MFA session for this cardholder",
                ),
            },
            ServiceError::RateLimited { .. } => Self::new(
                S::TOO_MANY_REQUESTS,
                "TOO_MANY_REQUESTS",
                "rate limit exceeded",
            ),
            ServiceError::Unavailable(cause) => {
                tracing::error!(%cause, kind = cause.kind(), "store unavailable");
                Self {
                    retry_after: Some(RETRY_AFTER_SECONDS),
                    ..Self::new(
                        S::SERVICE_UNAVAILABLE,
                        "SERVICE_UNAVAILABLE",
                        "the service is temporarily unavailable; retry later",
                    )
                }
            }
            ServiceError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                Self::new(S::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error")
            }
            other => Self::bad("BAD_REQUEST", other.to_string()),
        }
    }
}

pub async fn access_token(
    State(svc): State<Arc<Service>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, EqualsError> {
    let client = match wire::authorization(&headers) {
        Authorization::None => return Err(ServiceError::Auth(AuthFailure::Missing).into()),
        Authorization::ApiKey(k) | Authorization::Raw(k) => match svc.authenticate_api_key(&k) {
            Ok(c) => c,
            Err(e) => {
                svc.audit_refusal(
                    None,
                    "anonymous",
                    "equals.access_token",
                    "invalid_api_key",
                    "equals",
                )
                .await;
                return Err(ServiceError::Auth(e).into());
            }
        },
        _ => {
            return Err(EqualsError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "use Authorization: ApiKey <api key>",
            ))
        }
    };
    let principal = Service::principal_of(client);
    let (card, input) = match mint_input(&svc, &principal, path, query).await {
        Ok(v) => v,
        Err(e) => {
            // Refusals of the mint itself are audited where they are decided.
            if e.code != "PERSON_MISMATCH" {
                svc.audit_refusal(
                    Some(&principal.client.tenant_id),
                    principal.actor(),
                    "equals.access_token",
                    &e.code.to_ascii_lowercase(),
                    "equals",
                )
                .await;
            }
            return Err(e);
        }
    };
    let minted = svc.mint_card_token(&principal, &card, input).await?;
    let mut res = Json(json!({"token": minted.token.expose()})).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The card and the mint an authenticated Equals request asks for, or why it is malformed.
async fn mint_input(
    svc: &Service,
    principal: &Principal,
    path: Result<Path<String>, PathRejection>,
    query: Option<String>,
) -> Result<(CardId, MintInput), EqualsError> {
    if !SCOPES.iter().any(|s| principal.scopes.contains(s)) {
        return Err(ServiceError::Mint(MintRefusal::ScopeMissing(Operation::ViewCard)).into());
    }
    let Ok(Path(raw_card)) = path else {
        return Err(EqualsError::bad("INVALID_CARD_ID", "cardId must be a UUID"));
    };
    let card = CardId::parse(&raw_card).map_err(|_| {
        EqualsError::bad(
            "INVALID_CARD_ID",
            "cardId must be a UUID of at most 36 characters",
        )
    })?;
    let params = wire::params(query.unwrap_or_default().as_bytes())
        .map_err(|m| EqualsError::bad("BAD_REQUEST", m))?;
    let account = match params.get("accountId").map(String::as_str) {
        None | Some("") => {
            return Err(EqualsError::bad(
                "MISSING_ACCOUNT_ID",
                "accountId is required",
            ))
        }
        Some(a) => AccountId::parse(a)
            .map_err(|_| EqualsError::bad("INVALID_ACCOUNT_ID", "accountId is malformed"))?,
    };
    let person = match params.get("personId") {
        None => None,
        Some(p) => Some(PersonId::parse(p).map_err(|_| {
            EqualsError::bad(
                "INVALID_PERSON_ID",
                "personId must be a UUID of at most 36 characters",
            )
        })?),
    };
    if let (Some(p), Some(own)) = (person, principal.client.settings.person_id) {
        if p != own {
            svc.audit_refusal(
                Some(&principal.client.tenant_id),
                principal.actor(),
                "equals.access_token",
                "person_mismatch",
                format!("card:{card}"),
            )
            .await;
            return Err(EqualsError::new(
                StatusCode::FORBIDDEN,
                "PERSON_MISMATCH",
                "this API key acts only for its own cardholder",
            ));
        }
    }
    let operation = match params.get("operationName").map(String::as_str) {
        None | Some("VIEW_CARD") => Operation::ViewCard,
        Some("ADD_CARD_TO_WALLET") => Operation::AddCardToWallet,
        Some(_) => {
            return Err(EqualsError::bad(
                "INVALID_OPERATION",
                "operationName must be VIEW_CARD or ADD_CARD_TO_WALLET",
            ))
        }
    };
    let mfa = match (params.get("sessionId"), params.get("token")) {
        (Some(s), Some(t)) => Some((s.clone(), t.clone())),
        (None, None) => None,
        _ => {
            return Err(EqualsError::bad(
                "BAD_REQUEST",
                "sessionId and token go together",
            ))
        }
    };
    let ttl = svc
        .snapshot()
        .tenants
        .get(&principal.client.tenant_id)
        .map_or(TTL_SECONDS, |t| {
            TTL_SECONDS.min(t.settings.card_token_max_ttl_seconds)
        });
    let input = MintInput {
        operations: vec![operation],
        use_limit: UseLimit::Once,
        ttl_seconds: Some(ttl),
        mfa,
        kind: TokenKind::EqualsCard,
        scope_filter: Some(SCOPES),
        person_hint: person,
        account_hint: Some(account),
    };
    Ok((card, input))
}

/// Unknown paths and methods under `/equals`, in Equals' shape.
pub async fn no_route(method: axum::http::Method) -> EqualsError {
    if method == axum::http::Method::GET {
        EqualsError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no such resource")
    } else {
        EqualsError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "METHOD_NOT_ALLOWED",
            "use GET",
        )
    }
}
