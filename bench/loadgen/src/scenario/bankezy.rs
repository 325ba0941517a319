//! The BankEzy scenarios: `bankezy-token`, the partner server's encrypted token call (each
//! iteration a body of its own, pre-sealed with a fresh `referenceId`, from `--bodies`), and
//! `bankezy-reveal`, the SDK's encrypted card reveal with one token.

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Method, StatusCode};

use super::{Bodies, Setup, Step};
use crate::encode::{path_segment, snippet};
use crate::http::{hv, Fail, ReqSpec};

const TOKEN_PATH: &str = "/bankezy/token-service/client/server/new/v2/token";

fn expect_jwe(status: StatusCode, body: &[u8]) -> Result<Option<String>, Fail> {
    if status != StatusCode::OK {
        return Err(Fail::Status(status.as_u16(), snippet(body)));
    }
    // A compact JWE: five base64url parts.
    if body.iter().filter(|b| **b == b'.').count() != 4 {
        return Err(Fail::Invalid(format!("not a compact JWE: {}", snippet(body))));
    }
    Ok(None)
}

pub(super) async fn token(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let cfg = setup.cfg;
    let file = cfg.bodies.as_deref().unwrap_or_default();
    let text = std::fs::read_to_string(file).map_err(|e| format!("--bodies {file}: {e}"))?;
    let all: Vec<Bytes> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| Bytes::from(l.trim().to_string()))
        .collect();
    if all.len() < 2 {
        return Err(format!("--bodies {file}: needs at least 2 sealed requests"));
    }
    let spec = ReqSpec::new(
        Method::POST,
        &setup.path(TOKEN_PATH),
        vec![
            (
                HeaderName::from_static("x-api-key"),
                hv(cfg.api_key.as_deref().unwrap_or_default())?,
            ),
            (CONTENT_TYPE, HeaderValue::from_static("text/plain")),
        ],
        all[0].clone(),
    )?;
    let step = Step::new("request", spec, expect_jwe);
    // The preflight spends the first body; the load takes the others in turn.
    setup.try_once(&step, None, &format!("POST {TOKEN_PATH}")).await?;
    Ok(vec![step.with_bodies(Bodies::new(all, 1))])
}

pub(super) async fn reveal(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let cfg = setup.cfg;
    let card = path_segment(cfg.card_id.as_deref().unwrap_or_default());
    let path = format!("/bankezy/token-service/sdk/v1/cards/{card}/details");
    let spec = ReqSpec::new(
        Method::GET,
        &setup.path(&path),
        vec![
            (
                HeaderName::from_static("x-api-key"),
                hv(cfg.sdk_api_key.as_deref().unwrap_or_default())?,
            ),
            (
                HeaderName::from_static("x-api-token"),
                hv(cfg.sdk_token.as_deref().unwrap_or_default())?,
            ),
        ],
        Bytes::new(),
    )?;
    let step = Step::new("request", spec, expect_jwe);
    setup.try_once(&step, None, &format!("GET {path}")).await?;
    Ok(vec![step])
}
