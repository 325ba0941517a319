//! The native card API: minting card tokens, MFA sessions, and redemption endpoints, one per
//! operation. Card data answers are `no-store` and can come back as a JWE for the device.

use super::error::OAuthErrorBody;
use super::{OAuthError, ResourceError};
use crate::auth::{Caller, CardBearer, ClientOrToken, Presented};
use crate::wire;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{OriginalUri, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use cardgate_app::cards::{CardTokenRequest, Redeemed};
use cardgate_app::App;
use cardgate_core::cards::Pin;
use cardgate_core::mfa::Channel;
use cardgate_core::tokens::{CardTokenRecord, TokenKind, UseLimit};
use cardgate_core::{CardId, Operation, PersonId};
use cardgate_jose::jwk::EcPublicJwk;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use utoipa::ToSchema;

pub const ENCRYPTION_JWK_HEADER: &str = "cardgate-encryption-jwk";

type Client = Caller<ResourceError, ClientOrToken>;
type CardToken = Presented<ResourceError, CardBearer>;

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

/// A GET that redeems or mints refuses HEAD: it would spend a use and drop the answer.
fn refuse_head(method: &Method) -> Result<(), OAuthError> {
    if method == Method::HEAD {
        return Err(OAuthError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not accept that method",
        ));
    }
    Ok(())
}

/// A card operation, as every surface names it.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationName {
    ViewCard,
    AddCardToWallet,
    Activate,
    GetPin,
    SetPin,
}

/// How a step-up code reaches the cardholder.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum ChannelName {
    Totp,
    Sms,
    Email,
}

/// A step-up proof.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaProof {
    /// An MFA session of the card's cardholder (`POST /v1/persons/{id}/mfa/sessions`).
    session_id: String,
    /// The code: TOTP, or the one delivered by SMS or email.
    code: String,
}

/// `POST /v1/cards/{card_id}/tokens`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    /// What the token allows (repeats count once).
    #[schema(value_type = Vec<OperationName>, min_items = 1)]
    operations: Vec<String>,
    /// Single use (the default); `false` without `max_uses`: unlimited until expiry.
    #[serde(default)]
    single_use: Option<bool>,
    /// How many uses; at most the tenant's `card_token_max_uses` (default 100). Not with
    /// `single_use: true`.
    #[serde(default, deserialize_with = "wire::whole_number")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    max_uses: Option<u32>,
    /// Lifetime in seconds; defaults to the tenant's `card_token_ttl_seconds` (300), at most
    /// its `card_token_max_ttl_seconds` (3600).
    #[serde(default, deserialize_with = "wire::whole_number")]
    #[schema(value_type = Option<u32>, minimum = 1)]
    ttl_seconds: Option<u32>,
    /// Required when an operation is in the tenant's `mfa_required_for`.
    #[serde(default)]
    #[schema(nullable)]
    mfa: Option<MfaProof>,
}

/// A minted card token.
#[derive(Serialize, ToSchema)]
pub struct MintedBody {
    /// `cgct_…`: shown once, stored only as a SHA-256 digest.
    token: String,
    /// `card_token`, or `DPoP` when the token is bound to the key of the request's proof (then
    /// it is redeemed with `Authorization: DPoP` and a proof of that key).
    token_type: &'static str,
    #[schema(format = "uuid")]
    card_id: String,
    #[schema(value_type = Vec<OperationName>)]
    operations: Vec<&'static str>,
    /// Seconds.
    expires_in: i64,
    /// RFC 3339.
    #[schema(format = DateTime)]
    expires_at: String,
    /// `null`: unlimited until expiry.
    max_uses: Option<i64>,
}

/// Mints a card token. The caller is a client: Basic `id:secret`, `ApiKey <api_key>`, or
/// `Bearer <access token>` from `/oauth2/token` or Fiserv.
#[utoipa::path(post, path = "/v1/cards/{card_id}/tokens", tag = "cards",
    params(("card_id" = String, Path, format = "uuid", max_length = 36, description = "The card's UUID")),
    request_body(content = MintBody, content_type = "application/json"),
    security(("basic" = []), ("apiKey" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Minted", body = MintedBody),
        (status = 400, description = "`invalid_request`: a malformed body, card id or `Authorization`", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 401, description = "`invalid_client` (no, unknown or disabled credentials, or a scheme other than Basic, ApiKey or Bearer), `invalid_token` (the access token)", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 403, description = "`insufficient_scope`, `access_denied`, `mfa_required`, `mfa_invalid_code`, `mfa_locked`, `mfa_expired`, `mfa_used`, `mfa_invalid_session`, `mfa_locked_out`", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 404, description = "`not_found`: no such card here", body = OAuthErrorBody),
        (status = 409, description = "`card_state`, `conflict`", body = OAuthErrorBody),
        (status = 413, description = "Body over 64 KiB", body = OAuthErrorBody),
        (status = 415, description = "Not `application/json`", body = OAuthErrorBody),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody,
            headers(("Retry-After" = u64))),
    ))]
pub async fn mint(
    State(app): State<Arc<App>>,
    client: Client,
    path: Result<Path<String>, PathRejection>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ResourceError> {
    let card = card_id(path)?;
    let req: MintBody = json_body(&headers, body)?;
    let mut operations = Vec::new();
    for op in &req.operations {
        let op =
            Operation::parse(op).ok_or_else(|| OAuthError::bad_request("unknown operation"))?;
        if !operations.contains(&op) {
            operations.push(op);
        }
    }
    let use_limit = match (req.single_use, req.max_uses) {
        (Some(true), Some(_)) => {
            return Err(
                OAuthError::bad_request("single_use and max_uses exclude each other").into(),
            )
        }
        (_, Some(n)) => UseLimit::Count(n),
        (Some(false), None) => UseLimit::UntilExpiry,
        (Some(true) | None, None) => UseLimit::Once,
    };
    let request = CardTokenRequest {
        card,
        kind: TokenKind::Card,
        operations,
        use_limit,
        ttl_seconds: req.ttl_seconds,
        mfa: req.mfa.map(|m| (m.session_id, m.code)),
        account: None,
        person: None,
    };
    // RFC 9449: the token is bound to the key the caller proved — its DPoP-bound access
    // token's (that proof was claimed when it authenticated), or a `DPoP` proof sent with
    // client credentials, whose `jti` is claimed in the mint's own commit.
    let cards = app.card_tokens();
    let minted = match &client.principal.dpop_jkt {
        Some(jkt) => {
            cards
                .mint_bound(&client.principal, request, Some(jkt.clone()))
                .await?
        }
        None if headers.contains_key("dpop") => {
            let input = crate::auth::proof_input_of(&Method::POST, uri.path(), &headers);
            let proof = app
                .dpop()
                .verify(&input, &client.principal.client.tenant_id, None, None)
                .map_err(cardgate_app::AppError::from)?;
            cards.mint_proven(&client.principal, request, proof).await?
        }
        None => cards.mint(&client.principal, request).await?,
    };
    let mut res = (
        StatusCode::CREATED,
        Json(MintedBody {
            token: minted.token.expose().to_string(),
            token_type: if minted.record.cnf_jkt.is_some() {
                "DPoP"
            } else {
                "card_token"
            },
            card_id: card.to_string(),
            operations: minted
                .record
                .operations
                .iter()
                .map(|o| o.as_str())
                .collect(),
            expires_in: (minted.expires_at_ms - minted.record.issued_at_ms) / 1000,
            expires_at: rfc3339(minted.expires_at_ms),
            max_uses: minted.record.use_limit.max_uses(),
        }),
    )
        .into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// `POST /v1/persons/{person_id}/mfa/sessions`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaBody {
    #[schema(value_type = ChannelName)]
    channel: String,
}

/// A started MFA session.
#[derive(Serialize, ToSchema)]
pub struct MfaSessionBody {
    #[schema(format = "uuid")]
    session_id: String,
    #[schema(value_type = ChannelName)]
    channel: &'static str,
    /// RFC 3339; sessions live 5 minutes.
    #[schema(format = DateTime)]
    expires_at: String,
}

/// Starts an MFA session for a cardholder: TOTP, or a 6-digit code POSTed to the tenant's
/// webhook (SMS, email). Needs a card scope; counts against the client's rate limit.
#[utoipa::path(post, path = "/v1/persons/{person_id}/mfa/sessions", tag = "mfa",
    params(("person_id" = String, Path, format = "uuid", max_length = 36, description = "The cardholder's UUID")),
    request_body(content = MfaBody, content_type = "application/json"),
    security(("basic" = []), ("apiKey" = []), ("bearer" = [])),
    responses(
        (status = 201, description = "Started", body = MfaSessionBody),
        (status = 400, description = "`invalid_request`: a malformed body, person id or `Authorization`, or no authenticator, phone or email for that channel", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 401, description = "`invalid_client` (no, unknown or disabled credentials, or a scheme other than Basic, ApiKey or Bearer), `invalid_token` (the access token)", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 403, description = "`access_denied`: no card scope", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 404, description = "`not_found`: no such person here", body = OAuthErrorBody),
        (status = 409, description = "`unavailable_channel`: the tenant's webhook is missing or not usable in this environment", body = OAuthErrorBody),
        (status = 413, description = "Body over 64 KiB", body = OAuthErrorBody),
        (status = 415, description = "Not `application/json`", body = OAuthErrorBody),
        (status = 429, description = "`rate_limited`", body = OAuthErrorBody,
            headers(("Retry-After" = u64))),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody,
            headers(("Retry-After" = u64))),
    ))]
pub async fn start_mfa(
    State(app): State<Arc<App>>,
    client: Client,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ResourceError> {
    let Path(raw) = path.map_err(|_| OAuthError::bad_request("person_id is malformed"))?;
    let person = PersonId::parse(&raw).map_err(OAuthError::bad_request)?;
    let req: MfaBody = json_body(&headers, body)?;
    let channel = Channel::parse(&req.channel)
        .ok_or_else(|| OAuthError::bad_request("channel must be totp, sms or email"))?;
    let session = app
        .mfa()
        .start_session(&client.principal, &person, channel)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(MfaSessionBody {
            session_id: session.id.to_string(),
            channel: channel.as_str(),
            expires_at: rfc3339(session.expires_at_ms),
        }),
    )
        .into_response())
}

/// The recipient key for an encrypted answer: the `Cardgate-Encryption-Jwk` header
/// (base64url of the JWK's JSON), else the minting client's registered `encryption_jwk`.
fn recipient_key(
    app: &App,
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
    app.snapshot()
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
    app: &Arc<App>,
    headers: &HeaderMap,
    token: &str,
) -> Result<Option<EcPublicJwk>, ResourceError> {
    if !wants_jose(headers) {
        return Ok(None);
    }
    let record = app.card_tokens().peek_card_token(token).await?;
    Ok(Some(recipient_key(app, headers, &record)?))
}

/// Sends card data: JSON, or a compact JWE (`ECDH-ES+A256KW`/`A256GCM`) to `key`.
fn sensitive(key: Option<EcPublicJwk>, body: Value) -> Result<Response, ResourceError> {
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

fn unexpected() -> ResourceError {
    cardgate_app::AppError::Internal("unexpected redemption".into()).into()
}

/// Card details (`VIEW_CARD`).
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct DetailsBody {
    pan: String,
    cvv: String,
    #[schema(minimum = 1, maximum = 12)]
    expiry_month: u8,
    expiry_year: u16,
    cardholder_name: String,
}

/// `VIEW_CARD`: the card's PAN, CVV and expiry. With `Accept: application/jose`, a compact
/// JWE to the `Cardgate-Encryption-Jwk` header's key or the minting client's `encryption_jwk`.
#[utoipa::path(get, path = "/v1/cards/{card_id}/details", tag = "redemption",
    params(
        ("card_id" = String, Path, format = "uuid", max_length = 36),
        ("Cardgate-Encryption-Jwk" = Option<String>, Header, nullable = false,
            description = "With `Accept: application/jose`: base64url of the P-256 public JWK to encrypt to"),
    ),
    security(("cardToken" = [])),
    responses(
        (status = 200, description = "The card data: JSON, or with `Accept: application/jose` a compact JWE of it",
            content((DetailsBody = "application/json"), (String = "application/jose"))),
        (status = 400, description = "`invalid_request`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 401, description = "`invalid_token`: none, or not a card token (another scheme), or unknown, expired, used up, revoked", body = OAuthErrorBody,
            headers(("WWW-Authenticate" = String))),
        (status = 403, description = "`insufficient_scope`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "`not_found`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 405, description = "HEAD: it would spend a use", body = OAuthErrorBody),
        (status = 409, description = "`card_state`, `conflict`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn details(
    State(app): State<Arc<App>>,
    method: Method,
    card_token: CardToken,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ResourceError> {
    refuse_head(&method)?;
    let card = card_id(path)?;
    let token = card_token.token;
    let key = answer_key(&app, &headers, &token).await?;
    let (_, redeemed) = app
        .card_tokens()
        .redeem_presented(&token, &card_token.scheme, &card, Operation::ViewCard, None)
        .await?;
    let Redeemed::Details {
        secrets,
        cardholder_name,
    } = redeemed
    else {
        return Err(unexpected());
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

/// A PIN.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinBody {
    /// 4 to 12 digits.
    #[schema(pattern = "^[0-9]{4,12}$")]
    pin: String,
}

/// `GET_PIN`: the card's PIN (also as a JWE, like details).
#[utoipa::path(get, path = "/v1/cards/{card_id}/pin", tag = "redemption",
    params(
        ("card_id" = String, Path, format = "uuid", max_length = 36),
        ("Cardgate-Encryption-Jwk" = Option<String>, Header, nullable = false,
            description = "With `Accept: application/jose`: base64url of the P-256 public JWK to encrypt to"),
    ),
    security(("cardToken" = [])),
    responses(
        (status = 200, description = "The PIN: JSON, or with `Accept: application/jose` a compact JWE of it",
            content((PinBody = "application/json"), (String = "application/jose"))),
        (status = 400, description = "`invalid_request`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 401, description = "`invalid_token`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "`insufficient_scope`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "`not_found`: the card has no PIN", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 405, description = "HEAD", body = OAuthErrorBody),
        (status = 409, description = "`card_state`, `conflict`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn get_pin(
    State(app): State<Arc<App>>,
    method: Method,
    card_token: CardToken,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ResourceError> {
    refuse_head(&method)?;
    let card = card_id(path)?;
    let token = card_token.token;
    let key = answer_key(&app, &headers, &token).await?;
    let (_, redeemed) = app
        .card_tokens()
        .redeem_presented(&token, &card_token.scheme, &card, Operation::GetPin, None)
        .await?;
    let Redeemed::Pin(pin) = redeemed else {
        return Err(unexpected());
    };
    sensitive(key, json!({"pin": pin.expose()}))
}

/// `SET_PIN`: sets the card's PIN.
#[utoipa::path(put, path = "/v1/cards/{card_id}/pin", tag = "redemption",
    params(("card_id" = String, Path, format = "uuid", max_length = 36)),
    request_body(content = PinBody, content_type = "application/json"),
    security(("cardToken" = [])),
    responses(
        (status = 204, description = "Set"),
        (status = 400, description = "`invalid_request`: not 4–12 digits", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 401, description = "`invalid_token`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "`insufficient_scope`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "`not_found`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "`card_state`, `conflict`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 413, description = "Body over 64 KiB", body = OAuthErrorBody),
        (status = 415, description = "Not `application/json`", body = OAuthErrorBody),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn set_pin(
    State(app): State<Arc<App>>,
    card_token: CardToken,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ResourceError> {
    let card = card_id(path)?;
    let token = card_token.token;
    let pin = match json_body::<PinBody>(&headers, body)
        .and_then(|req| Pin::parse(&req.pin).map_err(OAuthError::bad_request))
    {
        Ok(pin) => pin,
        Err(e) => {
            app.card_tokens()
                .audit_bad_redemption(&token, &card, Operation::SetPin, "invalid_pin")
                .await;
            return Err(e.into());
        }
    };
    app.card_tokens()
        .redeem_presented(
            &token,
            &card_token.scheme,
            &card,
            Operation::SetPin,
            Some(pin),
        )
        .await?;
    Ok((
        StatusCode::NO_CONTENT,
        [(header::CACHE_CONTROL, "no-store")],
    )
        .into_response())
}

/// An activated card.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct ActivatedBody {
    #[schema(format = "uuid")]
    card_id: String,
    /// `ACTIVE`.
    status: String,
}

/// `ACTIVATE`: `INACTIVE` → `ACTIVE`.
#[utoipa::path(post, path = "/v1/cards/{card_id}/activate", tag = "redemption",
    params(("card_id" = String, Path, format = "uuid", max_length = 36)),
    security(("cardToken" = [])),
    responses(
        (status = 200, description = "Activated", body = ActivatedBody),
        (status = 400, description = "`invalid_request`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 401, description = "`invalid_token`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "`insufficient_scope`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "`not_found`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 409, description = "`card_state` (already active …), `conflict`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn activate(
    State(app): State<Arc<App>>,
    card_token: CardToken,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ResourceError> {
    let card = card_id(path)?;
    app.card_tokens()
        .redeem_presented(
            &card_token.token,
            &card_token.scheme,
            &card,
            Operation::Activate,
            None,
        )
        .await?;
    sensitive(
        None,
        json!({"card_id": card.to_string(), "status": "ACTIVE"}),
    )
}

/// Wallet eligibility.
#[derive(Serialize, ToSchema)]
#[allow(dead_code)]
pub struct WalletBody {
    #[schema(format = "uuid")]
    card_id: String,
    wallet_eligible: bool,
    #[schema(pattern = "^[0-9]{4}$")]
    last4: String,
    status: String,
}

/// `ADD_CARD_TO_WALLET`: whether the card may go into a digital wallet.
#[utoipa::path(get, path = "/v1/cards/{card_id}/wallet-eligibility", tag = "redemption",
    params(("card_id" = String, Path, format = "uuid", max_length = 36)),
    security(("cardToken" = [])),
    responses(
        (status = 200, description = "Eligibility", body = WalletBody),
        (status = 400, description = "`invalid_request`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 401, description = "`invalid_token`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 403, description = "`insufficient_scope`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 404, description = "`not_found`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 405, description = "HEAD", body = OAuthErrorBody),
        (status = 409, description = "`card_state`, `conflict`", body = OAuthErrorBody, headers(("WWW-Authenticate" = String))),
        (status = 503, description = "`temporarily_unavailable`", body = OAuthErrorBody, headers(("Retry-After" = u64))),
    ))]
pub async fn wallet(
    State(app): State<Arc<App>>,
    method: Method,
    card_token: CardToken,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ResourceError> {
    refuse_head(&method)?;
    let card = card_id(path)?;
    let (_, redeemed) = app
        .card_tokens()
        .redeem_presented(
            &card_token.token,
            &card_token.scheme,
            &card,
            Operation::AddCardToWallet,
            None,
        )
        .await?;
    let Redeemed::Wallet {
        eligible,
        last4,
        status,
    } = redeemed
    else {
        return Err(unexpected());
    };
    sensitive(
        None,
        json!({"card_id": card.to_string(), "wallet_eligible": eligible, "last4": last4, "status": status.as_str()}),
    )
}
