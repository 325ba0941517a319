//! The OAuth2 scenarios: `token-*` (client_credentials) and `introspect-*`, and fetching an access token.

use bytes::Bytes;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::{expect_2xx, json_str_field, parse_json, Setup, Step};
use crate::encode::{form_encode, snippet};
use crate::http::{one, Fail, ReqSpec};

/// `POST /oauth2/token`, Basic auth, `grant_type=client_credentials` → 200 `{access_token}`.
pub(super) async fn token(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let cfg = setup.cfg;
    let b = setup.basic()?;
    let tok = fetch_access_token(setup, &b).await?;
    let jwt = looks_like_jwt(&tok);
    if cfg.scenario_name.ends_with("-jwt") && !jwt {
        eprintln!(
            "WARNING: {}: access_token does not look like a JWT: {}",
            cfg.scenario_name,
            snippet(tok.as_bytes())
        );
    }
    if cfg.scenario_name.ends_with("-opaque") && jwt {
        eprintln!(
            "WARNING: {}: access_token looks like a JWT, expected opaque",
            cfg.scenario_name
        );
    }
    let step = Step::new("request", token_request(setup, &b)?, |status, body| {
        check_token_response(status, body).map(|_| None)
    });
    Ok(vec![step])
}

/// One token first, then `POST /oauth2/introspect` `token=…` → 200 `{active: true}`.
pub(super) async fn introspect(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let b = setup.basic()?;
    let tok = fetch_access_token(setup, &b).await?;
    let spec = ReqSpec::new(
        Method::POST,
        &setup.path("/oauth2/introspect"),
        vec![
            (AUTHORIZATION, b),
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            ),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ],
        Bytes::from(format!("token={}", form_encode(&tok))),
    )?;
    let step = Step::new("request", spec, |status, body| {
        check_introspect_response(status, body).map(|_| None)
    });
    setup
        .try_once(&step, None, "POST /oauth2/introspect")
        .await?;
    Ok(vec![step])
}

/// A client_credentials access token, fetched once on a fresh connection.
pub(super) async fn fetch_access_token(
    setup: &Setup<'_>,
    basic: &HeaderValue,
) -> Result<String, String> {
    let spec = token_request(setup, basic)?;
    let (status, body) = one(&setup.cfg.authority, &setup.host, &spec, vec![]).await?;
    check_token_response(status, &body).map_err(|f| format!("POST /oauth2/token: {}", f.describe()))
}

pub(super) fn token_request(setup: &Setup<'_>, basic: &HeaderValue) -> Result<ReqSpec, String> {
    ReqSpec::new(
        Method::POST,
        &setup.path("/oauth2/token"),
        vec![
            (AUTHORIZATION, basic.clone()),
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            ),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ],
        Bytes::from_static(b"grant_type=client_credentials"),
    )
}

fn looks_like_jwt(tok: &str) -> bool {
    tok.split('.').count() == 3 && tok.starts_with("eyJ")
}

pub(super) fn check_token_response(status: StatusCode, body: &[u8]) -> Result<String, Fail> {
    expect_2xx(status, body)?;
    let v = parse_json(body)?;
    json_str_field(&v, "access_token", body)
}

fn check_introspect_response(status: StatusCode, body: &[u8]) -> Result<(), Fail> {
    expect_2xx(status, body)?;
    let v = parse_json(body)?;
    match v.get("active") {
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(Fail::Invalid(format!(
            "token not active: {}",
            snippet(body)
        ))),
    }
}
