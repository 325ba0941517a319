//! Synctera widget-token scenarios (issue 11), each against the native card-token mint of the
//! same run: `card-mint` (native, `ApiKey`), `widget-token` (no key), `widget-token-fresh-key`
//! (a new `Idempotency-Key` every request) and `widget-token-retry-key` (one key, retried).

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use hyper::header::{HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, StatusCode};

use super::{json_str_field, parse_json, Scenario, Setup, Step};
use crate::encode::{path_segment, snippet};
use crate::http::{hv, Fail, ReqSpec};

static NEXT_KEY: AtomicU64 = AtomicU64::new(0);

fn api_key(setup: &Setup<'_>) -> Result<String, String> {
    setup
        .cfg
        .api_key
        .clone()
        .ok_or_else(|| "--api-key is required".to_string())
}

/// `POST /v1/cards/{id}/tokens` with `ApiKey <key>` → 201 `{token}`: one card token and one
/// audit event, the work a widget token does too.
pub(super) async fn mint(setup: &Setup<'_>) -> Result<Vec<Step>, String> {
    let card = path_segment(setup.cfg.card_id.as_deref().unwrap_or_default());
    let spec = ReqSpec::new(
        Method::POST,
        &setup.path(&format!("/v1/cards/{card}/tokens")),
        vec![
            (AUTHORIZATION, hv(&format!("ApiKey {}", api_key(setup)?))?),
            (CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ],
        Bytes::from(setup.cfg.mint_body.clone()),
    )?;
    let step = Step::new("request", spec, |status, body| {
        token(status, body, "token").map(|_| None)
    });
    setup
        .try_once(&step, None, &format!("POST /v1/cards/{card}/tokens"))
        .await?;
    Ok(vec![step])
}

/// `POST /synctera/v1/cards/{id}/widget_token?widget_type=REVEAL` → 200 `{tenant,
/// widget_token}`, with no, a fresh or a retried `Idempotency-Key`.
pub(super) async fn widget(setup: &Setup<'_>, scenario: Scenario) -> Result<Vec<Step>, String> {
    let card = path_segment(setup.cfg.card_id.as_deref().unwrap_or_default());
    let spec = ReqSpec::new(
        Method::POST,
        &setup.path(&format!(
            "/synctera/v1/cards/{card}/widget_token?widget_type=REVEAL"
        )),
        vec![
            (AUTHORIZATION, hv(&format!("Bearer {}", api_key(setup)?))?),
            (ACCEPT, HeaderValue::from_static("application/json")),
        ],
        Bytes::new(),
    )?;
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let run = format!("bench-{}-{since_epoch}", std::process::id());
    let step = Step::new("request", spec, |status, body| {
        token(status, body, "widget_token").map(|_| None)
    });
    let idem = HeaderName::from_static("idempotency-key");
    let step = match scenario {
        Scenario::WidgetFreshKey => step.with_headers(move |_| {
            let n = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
            Ok(vec![(idem.clone(), hv(&format!("{run}-{n}"))?)])
        }),
        Scenario::WidgetRetryKey => {
            let key = hv(&format!("{run}-retried"))?;
            step.with_headers(move |_| Ok(vec![(idem.clone(), key.clone())]))
        }
        _ => step,
    };
    setup
        .try_once(&step, None, &format!("POST /synctera/v1/cards/{card}/widget_token"))
        .await?;
    Ok(vec![step])
}

fn token(status: StatusCode, body: &[u8], field: &str) -> Result<String, Fail> {
    if status != StatusCode::OK && status != StatusCode::CREATED {
        return Err(Fail::Status(status.as_u16(), snippet(body)));
    }
    let v = parse_json(body)?;
    json_str_field(&v, field, body)
}
