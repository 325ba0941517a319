//! The native card API: minting card tokens, MFA sessions, and redemption endpoints, one per
//! operation. Card data answers are `no-store` and can come back as a JWE for the device.

use super::{CardTokenBearer, ClientAuth, OAuthError};
use cardgate_app::cards::{MintInput, Redeemed};
use cardgate_app::Service;
use crate::wire;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_core::cards::Pin;
use cardgate_core::mfa::Channel;
use cardgate_core::tokens::{CardTokenRecord, TokenKind, UseLimit};
use cardgate_core::{CardId, Operation, PersonId};
use cardgate_jose::jwk::EcPublicJwk;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

pub const ENCRYPTION_JWK_HEADER: &str = "cardgate-encryption-jwk";

fn card_id(path: Result<Path<String>, PathRejection>) -> Result<CardId, OAuthError> {
    let Path(raw) = path.map_err(|_| OAuthError::bad_request("card_id is malformed"))?;
    CardId::parse(&raw).map_err(OAuthError::bad_request)
}

fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, OAuthError> {
    let body = wire::body(body).map_err(OAuthError::from_body)?;
    if wire::content_type(headers).as_deref() != Some("application/json") {
        return Err(OAuthError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request",
            "Content-Type must be application/json",
        ));
    }
    serde_json::from_slice(&body).map_err(|e| {
        OAuthError::bad_request(format!(
            "invalid JSON body: {}",
            cardgate_core::json_error_message(&e)
        ))
    })
}

fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaProof {
    session_id: String,
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MintBody {
    operations: Vec<String>,
    #[serde(default)]
    single_use: Option<bool>,
    #[serde(default)]
    max_uses: Option<u32>,
    #[serde(default)]
    ttl_seconds: Option<u32>,
    #[serde(default)]
    mfa: Option<MfaProof>,
}

/// `POST /v1/cards/{card_id}/tokens`
pub async fn mint(
    State(svc): State<Arc<Service>>,
    ClientAuth(principal): ClientAuth,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let card = card_id(path)?;
    let req: MintBody = json_body(&headers, body)?;
    let mut operations = Vec::new();
    for op in &req.operations {
        let op = Operation::parse(op)
            .ok_or_else(|| OAuthError::bad_request(format!("unknown operation {op:?}")))?;
        if !operations.contains(&op) {
            operations.push(op);
        }
    }
    let use_limit = match (req.single_use, req.max_uses) {
        (Some(true), Some(_)) => {
            return Err(OAuthError::bad_request(
                "single_use and max_uses exclude each other",
            ))
        }
        (_, Some(n)) => UseLimit::Count(n),
        (Some(false), None) => UseLimit::UntilExpiry,
        (Some(true) | None, None) => UseLimit::Once,
    };
    let input = MintInput {
        operations,
        use_limit,
        ttl_seconds: req.ttl_seconds,
        mfa: req.mfa.map(|m| (m.session_id, m.code)),
        kind: TokenKind::Card,
        scope_filter: None,
        person_hint: None,
        account_hint: None,
    };
    let minted = svc.mint_card_token(&principal, &card, input).await?;
    let ops: Vec<&str> = minted
        .record
        .operations
        .iter()
        .map(|o| o.as_str())
        .collect();
    let mut res = (
        StatusCode::CREATED,
        Json(json!({
            "token": minted.token.expose(),
            "token_type": "card_token",
            "card_id": card.to_string(),
            "operations": ops,
            "expires_in": (minted.expires_at_ms - minted.record.issued_at_ms) / 1000,
            "expires_at": rfc3339(minted.expires_at_ms),
            "max_uses": minted.record.use_limit.max_uses(),
        })),
    )
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaBody {
    channel: String,
}

/// `POST /v1/persons/{person_id}/mfa/sessions`
pub async fn start_mfa(
    State(svc): State<Arc<Service>>,
    ClientAuth(principal): ClientAuth,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let Path(raw) = path.map_err(|_| OAuthError::bad_request("person_id is malformed"))?;
    let person = PersonId::parse(&raw).map_err(OAuthError::bad_request)?;
    let req: MfaBody = json_body(&headers, body)?;
    let channel = Channel::parse(&req.channel)
        .ok_or_else(|| OAuthError::bad_request("channel must be totp, sms or email"))?;
    let session = svc.start_mfa_session(&principal, &person, channel).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "session_id": session.id.to_string(),
            "channel": channel.as_str(),
            "expires_at": rfc3339(session.expires_at_ms),
        })),
    )
        .into_response())
}

/// The recipient key for an encrypted answer: the `Cardgate-Encryption-Jwk` header
/// (base64url of the JWK's JSON), else the minting client's registered `encryption_jwk`.
fn recipient_key(
    svc: &Service,
    headers: &HeaderMap,
    record: &CardTokenRecord,
) -> Result<EcPublicJwk, OAuthError> {
    if let Some(h) = wire::header(headers, ENCRYPTION_JWK_HEADER) {
        let raw = cardgate_jose::b64::decode(h.trim().trim_end_matches('=')).map_err(|_| {
            OAuthError::bad_request("Cardgate-Encryption-Jwk must be base64url of a JWK")
        })?;
        let v: Value = serde_json::from_slice(&raw)
            .map_err(|_| OAuthError::bad_request("Cardgate-Encryption-Jwk is not JSON"))?;
        return EcPublicJwk::from_json(&v)
            .map_err(|e| OAuthError::bad_request(format!("Cardgate-Encryption-Jwk: {e}")));
    }
    svc.snapshot()
        .clients
        .get(record.client_id.as_str())
        .and_then(|c| c.settings.encryption_jwk.clone())
        .ok_or_else(|| OAuthError::bad_request("an encrypted answer needs a Cardgate-Encryption-Jwk header or a registered encryption_jwk"))
}

fn wants_jose(headers: &HeaderMap) -> bool {
    wire::header(headers, "accept").is_some_and(|a| {
        a.split(',')
            .any(|p| p.split(';').next().unwrap_or("").trim() == "application/jose")
    })
}

/// When the caller asks for a JWE, its recipient key — resolved before the token is spent,
/// so a bad key costs no use.
async fn answer_key(
    svc: &Service,
    headers: &HeaderMap,
    token: &str,
) -> Result<Option<EcPublicJwk>, OAuthError> {
    if !wants_jose(headers) {
        return Ok(None);
    }
    let record = svc.peek_card_token(token).await?;
    recipient_key(svc, headers, &record).map(Some)
}

/// Sends card data: JSON, or a compact JWE (`ECDH-ES+A256KW`/`A256GCM`) to `key`.
fn sensitive(key: Option<EcPublicJwk>, body: Value) -> Result<Response, OAuthError> {
    let mut res = if let Some(key) = key {
        let plain = zeroize::Zeroizing::new(body.to_string());
        let jwe = cardgate_jose::jwe::encrypt_ecdh_es_a256kw(&key, plain.as_bytes())
            .map_err(|e| OAuthError::bad_request(format!("cannot encrypt to that key: {e}")))?;
        ([(header::CONTENT_TYPE, "application/jose")], jwe).into_response()
    } else {
        Json(body).into_response()
    };
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(res)
}

/// `GET /v1/cards/{card_id}/details` — VIEW_CARD.
pub async fn details(
    State(svc): State<Arc<Service>>,
    CardTokenBearer(token): CardTokenBearer,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let card = card_id(path)?;
    let key = answer_key(&svc, &headers, &token).await?;
    let (_, redeemed) = svc.redeem(&token, &card, Operation::ViewCard, None).await?;
    let Redeemed::Details {
        secrets,
        cardholder_name,
    } = redeemed
    else {
        return Err(OAuthError::from(cardgate_app::ServiceError::Internal(
            "unexpected redemption".into(),
        )));
    };
    sensitive(
        key,
        json!({
            "pan": secrets.pan,
            "cvv": secrets.cvv,
            "expiry_month": secrets.expiry_month,
            "expiry_year": secrets.expiry_year,
            "cardholder_name": cardholder_name,
        }),
    )
}

/// `GET /v1/cards/{card_id}/pin` — GET_PIN.
pub async fn get_pin(
    State(svc): State<Arc<Service>>,
    CardTokenBearer(token): CardTokenBearer,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    let card = card_id(path)?;
    let key = answer_key(&svc, &headers, &token).await?;
    let (_, redeemed) = svc.redeem(&token, &card, Operation::GetPin, None).await?;
    let Redeemed::Pin(pin) = redeemed else {
        return Err(OAuthError::from(cardgate_app::ServiceError::Internal(
            "unexpected redemption".into(),
        )));
    };
    sensitive(key, json!({"pin": pin.expose()}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinBody {
    pin: String,
}

/// `PUT /v1/cards/{card_id}/pin` — SET_PIN.
pub async fn set_pin(
    State(svc): State<Arc<Service>>,
    CardTokenBearer(token): CardTokenBearer,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let card = card_id(path)?;
    let pin = match json_body::<PinBody>(&headers, body)
        .and_then(|req| Pin::parse(&req.pin).map_err(OAuthError::bad_request))
    {
        Ok(pin) => pin,
        Err(e) => {
            svc.audit_bad_redemption(&token, &card, Operation::SetPin, "invalid_pin")
                .await;
            return Err(e);
        }
    };
    svc.redeem(&token, &card, Operation::SetPin, Some(pin))
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::CACHE_CONTROL, "no-store")],
    )
        .into_response())
}

/// `POST /v1/cards/{card_id}/activate` — ACTIVATE.
pub async fn activate(
    State(svc): State<Arc<Service>>,
    CardTokenBearer(token): CardTokenBearer,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, OAuthError> {
    let card = card_id(path)?;
    svc.redeem(&token, &card, Operation::Activate, None).await?;
    sensitive(
        None,
        json!({"card_id": card.to_string(), "status": "ACTIVE"}),
    )
}

/// `GET /v1/cards/{card_id}/wallet-eligibility` — ADD_CARD_TO_WALLET.
pub async fn wallet(
    State(svc): State<Arc<Service>>,
    CardTokenBearer(token): CardTokenBearer,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, OAuthError> {
    let card = card_id(path)?;
    let (_, redeemed) = svc
        .redeem(&token, &card, Operation::AddCardToWallet, None)
        .await?;
    let Redeemed::Wallet {
        eligible,
        last4,
        status,
    } = redeemed
    else {
        return Err(OAuthError::from(cardgate_app::ServiceError::Internal(
            "unexpected redemption".into(),
        )));
    };
    sensitive(
        None,
        json!({"card_id": card.to_string(), "wallet_eligible": eligible, "last4": last4, "status": status.as_str()}),
    )
}
