//! The card API scenarios: `card-pair` (mint a card token, then redeem it for the card
//! details) and `mfa-session` (start a TOTP step-up session for a cardholder).

use bytes::Bytes;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::{json_str_field, oauth, parse_json, Setup, Step};
use crate::config::MintAuth;
use crate::encode::{path_segment, snippet};
use crate::http::{hv, Fail, ReqSpec};

/// `POST /v1/cards/{id}/tokens` → 200/201 `{token}`, then `GET /v1/cards/{id}/details` with
/// `Bearer <token>` → 200 `{pan}` on the same connection; one iteration is one pair.
pub(super) async fn pair(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let cfg = setup.cfg;
    let b = setup.basic()?;
    let card = path_segment(cfg.card_id.as_deref().unwrap_or_default());
    let mint_auth = match cfg.mint_auth {
        MintAuth::Basic => b,
        MintAuth::Bearer => hv(&format!(
            "Bearer {}",
            oauth::fetch_access_token(setup, &b).await?
        ))?,
    };
    let mint = ReqSpec::new(
        Method::POST,
        &setup.path(&format!("/v1/cards/{card}/tokens")),
        vec![
            (AUTHORIZATION, mint_auth),
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ],
        Bytes::from(cfg.mint_body.clone()),
    )?;
    let redeem = ReqSpec::new(
        Method::GET,
        &setup.path(&format!("/v1/cards/{card}/details")),
        vec![(ACCEPT, HeaderValue::from_static("application/json"))],
        Bytes::new(),
    )?;
    let mint = Step::new("mint", mint, |status, body| {
        check_mint_response(status, body).map(Some)
    });
    let redeem = Step::new("redeem", redeem, |status, body| {
        check_details_response(status, body).map(|_| None)
    })
    .with_headers(|card_token| {
        let tok = card_token.ok_or("no card token to redeem")?;
        Ok(vec![(AUTHORIZATION, hv(&format!("Bearer {tok}"))?)])
    });

    let tok = setup
        .try_once(&mint, None, &format!("POST /v1/cards/{card}/tokens"))
        .await?;
    setup
        .try_once(
            &redeem,
            tok.as_deref(),
            &format!("GET /v1/cards/{card}/details"),
        )
        .await?;
    Ok(vec![mint, redeem])
}

pub(super) fn check_mint_response(status: StatusCode, body: &[u8]) -> Result<String, Fail> {
    if status != StatusCode::OK && status != StatusCode::CREATED {
        return Err(Fail::Status(status.as_u16(), snippet(body)));
    }
    let v = parse_json(body)?;
    json_str_field(&v, "token", body)
}

pub(super) fn check_details_response(status: StatusCode, body: &[u8]) -> Result<(), Fail> {
    if status != StatusCode::OK {
        return Err(Fail::Status(status.as_u16(), snippet(body)));
    }
    let v = parse_json(body)?;
    match v.get("pan") {
        Some(Value::String(s)) if !s.is_empty() => Ok(()),
        _ => Err(Fail::Invalid(format!(
            "no pan in details: {}",
            snippet(body)
        ))),
    }
}

/// `POST /v1/persons/{id}/mfa/sessions` `{"channel":"totp"}` → 201 `{session_id}`.
pub(super) async fn mfa_session(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let person = path_segment(setup.cfg.person_id.as_deref().unwrap_or_default());
    let spec = ReqSpec::new(
        Method::POST,
        &setup.path(&format!("/v1/persons/{person}/mfa/sessions")),
        vec![
            (AUTHORIZATION, setup.basic()?),
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ],
        Bytes::from_static(br#"{"channel":"totp"}"#),
    )?;
    let step = Step::new("request", spec, |status, body| {
        if status != StatusCode::CREATED {
            return Err(Fail::Status(status.as_u16(), snippet(body)));
        }
        let v = parse_json(body)?;
        json_str_field(&v, "session_id", body).map(|_| None)
    });
    setup
        .try_once(&step, None, &format!("POST /v1/persons/{person}/mfa/sessions"))
        .await?;
    Ok(vec![step])
}

/// `card-reveal`: one unlimited `VIEW_CARD` token minted first (preflight), then every
/// iteration `GET /v1/cards/{id}/details` with it: a plain reveal alone, the baseline of
/// `bankezy-reveal`.
pub(super) async fn reveal(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let cfg = setup.cfg;
    let card = path_segment(cfg.card_id.as_deref().unwrap_or_default());
    let mint = ReqSpec::new(
        Method::POST,
        &setup.path(&format!("/v1/cards/{card}/tokens")),
        vec![
            (AUTHORIZATION, setup.basic()?),
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
        ],
        Bytes::from_static(br#"{"operations":["VIEW_CARD"],"single_use":false,"ttl_seconds":3600}"#),
    )?;
    let mint = Step::new("mint", mint, |status, body| {
        check_mint_response(status, body).map(Some)
    });
    let token = setup
        .try_once(&mint, None, &format!("POST /v1/cards/{card}/tokens"))
        .await?
        .ok_or("no token minted")?;
    let redeem = ReqSpec::new(
        Method::GET,
        &setup.path(&format!("/v1/cards/{card}/details")),
        vec![
            (ACCEPT, HeaderValue::from_static("application/json")),
            (AUTHORIZATION, hv(&format!("Bearer {token}"))?),
        ],
        Bytes::new(),
    )?;
    let redeem = Step::new("request", redeem, |status, body| {
        check_details_response(status, body).map(|_| None)
    });
    setup
        .try_once(&redeem, None, &format!("GET /v1/cards/{card}/details"))
        .await?;
    Ok(vec![redeem])
}
